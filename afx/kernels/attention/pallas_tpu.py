"""Blockwise attention as Mosaic TPU Pallas kernels (forward, dK/dV, dQ); `interpret=True` runs them on CPU.

Grid `(batch, q_heads, tile, visit)`: the last axis walks the key blocks `masks.key_block_range` gives
the tile (its length is the most any tile visits).  The key/value index map clamps the block index
into that range, so steps past the end re-use the resident block (no DMA) and `pl.when` skips their
arithmetic; blocks left whole by the mask run without one.  Row statistics live in VMEM scratch
broadcast across the 128 lanes, as Mosaic tiles vectors; the logsumexp leaves the forward kernel
the same way and is cut to `[batch, heads, seq]` outside.  The dK/dV kernel walks query tiles per
key block (`masks.query_block_range`) and writes per-query-head gradients that are summed over the
query heads of a group outside the kernel: no atomics, deterministic.

Layout: q `[batch, q_heads, q_padded, d]`, k/v `[batch, kv_heads, k_padded, d]`; block_k a multiple
of 128 and block_q of 8 on real TPUs.  `interpret=True` uses the generic interpreter;
`interpret=pltpu.InterpretParams()` the TPU interpreter, which also models VMEM and the block
pipeline (in jax 0.10 it cannot run under vmap).
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from afx.kernels.attention import masks

LANES = 128
_PARALLEL_3_ARBITRARY_1 = pltpu.CompilerParams(
    dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _dot(a, b, contract_a: int, contract_b: int):
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _lanes_to(x, width: int):
  """A lane-broadcast `[rows, 128]` statistic widened or cut to `[rows, width]`."""
  if width == LANES:
    return x
  if width < LANES:
    return x[:, :width]
  return jnp.tile(x, (1, width // LANES))


def _clamped(index, lo, hi, count: int):
  """`index` kept inside `[lo, hi)` (and the array), so out-of-range steps re-use a resident block."""
  return jnp.clip(jnp.minimum(index, hi - 1), 0, count - 1)


def _when_visible(plan, q_block, k_block, visible, step):
  """Run `step(mask)` for a visible block, with its element mask only when the block needs one."""
  needs_mask = masks.block_needs_mask(plan, q_block, k_block)

  @pl.when(visible & needs_mask)
  def _():
    step(masks.block_mask(plan, q_block, k_block))

  @pl.when(visible & jnp.logical_not(needs_mask))
  def _():
    step(None)


def _forward_kernel(q_ref, k_ref, v_ref, out_ref, lse_ref, m_ref, l_ref, acc_ref, *, plan: masks.Plan):
  q_block, visit = pl.program_id(2), pl.program_id(3)
  lo, hi = masks.key_block_range(plan, q_block)
  k_block = lo + visit

  @pl.when(visit == 0)
  def _():
    m_ref[...] = jnp.full(m_ref.shape, masks.MASK_VALUE, jnp.float32)
    l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)
    acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

  def step(mask):
    s = _dot(q_ref[...], k_ref[...], 1, 1) * plan.scale
    if mask is not None:
      s = jnp.where(mask, s, masks.MASK_VALUE)
    m_prev = m_ref[...]
    m_next = jnp.maximum(m_prev, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - _lanes_to(m_next, plan.block_k))
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    alpha = jnp.exp(m_prev - m_next)
    l_ref[...] = alpha * l_ref[...] + p.sum(axis=1, keepdims=True)
    acc_ref[...] = acc_ref[...] * _lanes_to(alpha, acc_ref.shape[1]) + _dot(p.astype(v_ref.dtype), v_ref[...], 1, 0)
    m_ref[...] = m_next

  _when_visible(plan, q_block, k_block, k_block < hi, step)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _():
    l = l_ref[...]
    empty = l == 0.0
    safe_l = jnp.where(empty, 1.0, l)
    out_ref[...] = (acc_ref[...] / _lanes_to(safe_l, acc_ref.shape[1])).astype(out_ref.dtype)
    lse_ref[...] = jnp.where(empty, -jnp.inf, m_ref[...] + jnp.log(safe_l))


def _probabilities(plan, q, k, lse, mask):
  s = _dot(q, k, 1, 1) * plan.scale
  p = jnp.exp(s - _lanes_to(jnp.where(jnp.isfinite(lse), lse, 0.0), plan.block_k))
  return p if mask is None else jnp.where(mask, p, 0.0)


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_acc, dv_acc, *,
                 plan: masks.Plan):
  k_block, visit = pl.program_id(2), pl.program_id(3)
  lo, hi = masks.query_block_range(plan, k_block)
  q_block = lo + visit

  @pl.when(visit == 0)
  def _():
    dk_acc[...] = jnp.zeros(dk_acc.shape, jnp.float32)
    dv_acc[...] = jnp.zeros(dv_acc.shape, jnp.float32)

  def step(mask):
    q, do = q_ref[...], do_ref[...]
    p = _probabilities(plan, q, k_ref[...], lse_ref[...], mask)
    dv_acc[...] += _dot(p.astype(do.dtype), do, 0, 0)
    ds = p * (_dot(do, v_ref[...], 1, 1) - _lanes_to(delta_ref[...], plan.block_k))
    dk_acc[...] += _dot(ds.astype(q.dtype), q, 0, 0) * plan.scale

  _when_visible(plan, q_block, k_block, q_block < hi, step)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _():
    dk_ref[...] = dk_acc[...]
    dv_ref[...] = dv_acc[...]


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_acc, *, plan: masks.Plan):
  q_block, visit = pl.program_id(2), pl.program_id(3)
  lo, hi = masks.key_block_range(plan, q_block)
  k_block = lo + visit

  @pl.when(visit == 0)
  def _():
    dq_acc[...] = jnp.zeros(dq_acc.shape, jnp.float32)

  def step(mask):
    k = k_ref[...]
    p = _probabilities(plan, q_ref[...], k, lse_ref[...], mask)
    ds = p * (_dot(do_ref[...], v_ref[...], 1, 1) - _lanes_to(delta_ref[...], plan.block_k))
    dq_acc[...] += _dot(ds.astype(k.dtype), k, 1, 0) * plan.scale

  _when_visible(plan, q_block, k_block, k_block < hi, step)

  @pl.when(visit == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = dq_acc[...].astype(dq_ref.dtype)


def _specs(plan: masks.Plan, groups: int, head_dim: int, *, by_query_tile: bool):
  """BlockSpecs for (query-row arrays, key/value arrays, lane statistics) on a grid whose third axis
  walks query tiles (forward, dQ) or key blocks (dK/dV) and whose fourth axis walks the visits."""
  def tile_and_block(tile_or_block, visit):
    if by_query_tile:
      lo, hi = masks.key_block_range(plan, tile_or_block)
      return tile_or_block, _clamped(lo + visit, lo, hi, plan.num_k_blocks)
    lo, hi = masks.query_block_range(plan, tile_or_block)
    return _clamped(lo + visit, lo, hi, plan.num_q_blocks), tile_or_block

  def rows(b, h, i, j):
    return b, h, tile_and_block(i, j)[0], 0

  def keys(b, h, i, j):
    return b, h // groups, tile_and_block(i, j)[1], 0

  query_spec = pl.BlockSpec((None, None, plan.block_q, head_dim), rows)
  key_spec = pl.BlockSpec((None, None, plan.block_k, head_dim), keys)
  stat_spec = pl.BlockSpec((None, None, plan.block_q, LANES), rows)
  return query_spec, key_spec, stat_spec


def _grid(plan, batch, q_heads, *, by_query_tile: bool):
  if by_query_tile:
    return batch, q_heads, plan.num_q_blocks, max(1, masks.max_key_blocks_per_tile(plan))
  return batch, q_heads, plan.num_k_blocks, max(1, masks.max_query_tiles_per_block(plan))


def forward(q, k, v, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  groups = q_heads // k.shape[1]
  query_spec, key_spec, stat_spec = _specs(plan, groups, head_dim, by_query_tile=True)
  out, lse = pl.pallas_call(
      functools.partial(_forward_kernel, plan=plan),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=_grid(plan, batch, q_heads, by_query_tile=True),
          in_specs=[query_spec, key_spec, key_spec],
          out_specs=[query_spec, stat_spec],
          scratch_shapes=[pltpu.VMEM((plan.block_q, LANES), jnp.float32),
                          pltpu.VMEM((plan.block_q, LANES), jnp.float32),
                          pltpu.VMEM((plan.block_q, head_dim), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, q_heads, plan.q_padded, LANES), jnp.float32)],
      compiler_params=_PARALLEL_3_ARBITRARY_1,
      interpret=interpret,
  )(q, k, v)
  return out, lse[..., 0]


def backward(q, k, v, out, logsumexp, d_out, d_logsumexp, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  kv_heads = k.shape[1]
  groups = q_heads // kv_heads
  delta = (jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
           - d_logsumexp.astype(jnp.float32))
  to_lanes = lambda x: jnp.broadcast_to(x[..., None], (*x.shape, LANES))
  lse_lanes, delta_lanes = to_lanes(logsumexp), to_lanes(delta)

  query_spec, key_spec, stat_spec = _specs(plan, groups, head_dim, by_query_tile=False)
  # Per query head, so that the heads of a group never write the same block.
  per_head_key_spec = pl.BlockSpec((None, None, plan.block_k, head_dim), lambda b, h, i, j: (b, h, i, 0))
  dk, dv = pl.pallas_call(
      functools.partial(_dkdv_kernel, plan=plan),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=_grid(plan, batch, q_heads, by_query_tile=False),
          in_specs=[query_spec, key_spec, key_spec, query_spec, stat_spec, stat_spec],
          out_specs=[per_head_key_spec, per_head_key_spec],
          scratch_shapes=[pltpu.VMEM((plan.block_k, head_dim), jnp.float32),
                          pltpu.VMEM((plan.block_k, head_dim), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((batch, q_heads, plan.k_padded, head_dim), jnp.float32)] * 2,
      compiler_params=_PARALLEL_3_ARBITRARY_1,
      interpret=interpret,
  )(q, k, v, d_out, lse_lanes, delta_lanes)
  sum_groups = lambda x, like: x.reshape(batch, kv_heads, groups, *x.shape[2:]).sum(axis=2).astype(like.dtype)

  query_spec, key_spec, stat_spec = _specs(plan, groups, head_dim, by_query_tile=True)
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, plan=plan),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=0, grid=_grid(plan, batch, q_heads, by_query_tile=True),
          in_specs=[query_spec, key_spec, key_spec, query_spec, stat_spec, stat_spec],
          out_specs=query_spec,
          scratch_shapes=[pltpu.VMEM((plan.block_q, head_dim), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_PARALLEL_3_ARBITRARY_1,
      interpret=interpret,
  )(q, k, v, d_out, lse_lanes, delta_lanes)
  return dq, sum_groups(dk, k), sum_groups(dv, v)
