"""Blockwise attention as Pallas GPU kernels (Triton lowering); `interpret=True` runs them on CPU.

One program per (query tile, batch, query head) loops over its key blocks with `masks.visit_blocks`
(masked edges, unmasked interior) using the block arithmetic of `blocks`, shared with the pure-JAX
path.  The backward pass is a dK/dV kernel (one program per key block, looping over query tiles,
writing per-query-head gradients that are summed per group outside) and a dQ kernel: no atomics,
deterministic.

The Triton lowering is deprecated from jax 0.11 and reaches about half of cuDNN's speed on Hopper;
the warp-specialised Mosaic GPU kernels of `pallas_mosaic_gpu` are the path meant for H100/H200.
Layout: q `[batch, q_heads, q_padded, d]`, k/v `[batch, kv_heads, k_padded, d]`; block sizes and
head_dim powers of two.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from afx.kernels.attention import blocks, masks


def _compiler_params(head_dim: int):
  return pl_triton.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


def _forward_kernel(q_ref, k_ref, v_ref, out_ref, lse_ref, *, plan: masks.Plan):
  q_block = pl.program_id(0)
  q = q_ref[...]

  def visit(k_block, state, masked):
    start = pl.multiple_of(k_block * plan.block_k, plan.block_k)
    s = blocks.scores(q, k_ref[pl.ds(start, plan.block_k), :], plan.scale)
    mask = masks.block_mask(plan, q_block, k_block) if masked else None
    return blocks.forward_step(state, s, v_ref[pl.ds(start, plan.block_k), :], mask)

  state = masks.visit_blocks(masks.key_block_range(plan, q_block), masks.interior_key_range(plan, q_block),
                             visit, blocks.initial_state(plan.block_q, q.shape[-1]))
  out, logsumexp = blocks.forward_finish(state)
  out_ref[...] = out.astype(out_ref.dtype)
  lse_ref[...] = logsumexp


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, plan: masks.Plan):
  k_block = pl.program_id(0)
  k, v = k_ref[...], v_ref[...]

  def visit(q_block, grads, masked):
    rows = pl.ds(pl.multiple_of(q_block * plan.block_q, plan.block_q), plan.block_q)
    mask = masks.block_mask(plan, q_block, k_block) if masked else None
    return blocks.dkdv_step(*grads, q_ref[rows, :], k, v, do_ref[rows, :], lse_ref[rows], delta_ref[rows],
                            plan.scale, mask)

  zeros = jnp.zeros(k.shape, jnp.float32)
  dk, dv = masks.visit_blocks(masks.query_block_range(plan, k_block), masks.interior_query_range(plan, k_block),
                              visit, (zeros, zeros))
  dk_ref[...] = dk
  dv_ref[...] = dv


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, plan: masks.Plan):
  q_block = pl.program_id(0)
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

  def visit(k_block, dq, masked):
    keys = pl.ds(pl.multiple_of(k_block * plan.block_k, plan.block_k), plan.block_k)
    mask = masks.block_mask(plan, q_block, k_block) if masked else None
    return blocks.dq_step(dq, q, k_ref[keys, :], v_ref[keys, :], do, lse, delta, plan.scale, mask)

  dq = masks.visit_blocks(masks.key_block_range(plan, q_block), masks.interior_key_range(plan, q_block),
                          visit, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _tile(size: int, head_dim: int | None, head_of):
  """BlockSpec of one `size`-row tile (the grid's first axis walks tiles) of head `head_of(h)`."""
  shape = (None, None, size) if head_dim is None else (None, None, size, head_dim)
  tail = () if head_dim is None else (0,)
  return pl.BlockSpec(shape, lambda i, b, h: (b, head_of(h), i, *tail))


def _whole(length: int, head_dim: int | None, head_of):
  """BlockSpec of a head's whole sequence, which the kernel slices itself."""
  shape = (None, None, length) if head_dim is None else (None, None, length, head_dim)
  tail = () if head_dim is None else (0,)
  return pl.BlockSpec(shape, lambda i, b, h: (b, head_of(h), 0, *tail))


def forward(q, k, v, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  groups = q_heads // k.shape[1]
  same, kv = (lambda h: h), (lambda h: h // groups)
  return pl.pallas_call(
      functools.partial(_forward_kernel, plan=plan),
      grid=(plan.num_q_blocks, batch, q_heads),
      in_specs=[_tile(plan.block_q, head_dim, same), _whole(plan.k_padded, head_dim, kv),
                _whole(plan.k_padded, head_dim, kv)],
      out_specs=[_tile(plan.block_q, head_dim, same), _tile(plan.block_q, None, same)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, q_heads, plan.q_padded), jnp.float32)],
      compiler_params=_compiler_params(head_dim),
      interpret=interpret,
  )(q, k, v)


def backward(q, k, v, out, logsumexp, d_out, d_logsumexp, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  kv_heads = k.shape[1]
  groups = q_heads // kv_heads
  same, kv = (lambda h: h), (lambda h: h // groups)
  delta = (jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
           - d_logsumexp.astype(jnp.float32))

  dk, dv = pl.pallas_call(
      functools.partial(_dkdv_kernel, plan=plan),
      grid=(plan.num_k_blocks, batch, q_heads),
      in_specs=[_whole(plan.q_padded, head_dim, same), _tile(plan.block_k, head_dim, kv),
                _tile(plan.block_k, head_dim, kv), _whole(plan.q_padded, head_dim, same),
                _whole(plan.q_padded, None, same), _whole(plan.q_padded, None, same)],
      out_specs=[_tile(plan.block_k, head_dim, same)] * 2,
      out_shape=[jax.ShapeDtypeStruct((batch, q_heads, plan.k_padded, head_dim), jnp.float32)] * 2,
      compiler_params=_compiler_params(head_dim),
      interpret=interpret,
  )(q, k, v, d_out, logsumexp, delta)
  sum_groups = lambda x, like: x.reshape(batch, kv_heads, groups, *x.shape[2:]).sum(axis=2).astype(like.dtype)

  dq = pl.pallas_call(
      functools.partial(_dq_kernel, plan=plan),
      grid=(plan.num_q_blocks, batch, q_heads),
      in_specs=[_tile(plan.block_q, head_dim, same), _whole(plan.k_padded, head_dim, kv),
                _whole(plan.k_padded, head_dim, kv), _tile(plan.block_q, head_dim, same),
                _tile(plan.block_q, None, same), _tile(plan.block_q, None, same)],
      out_specs=_tile(plan.block_q, head_dim, same),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_compiler_params(head_dim),
      interpret=interpret,
  )(q, k, v, d_out, logsumexp, delta)
  return dq, sum_groups(dk, k), sum_groups(dv, v)
