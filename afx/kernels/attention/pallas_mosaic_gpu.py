"""Blockwise attention as Mosaic GPU kernels for Hopper (H100/H200): forward, dK/dV, dQ.

Each kernel runs three warpgroups per CTA: two compute warpgroups, each owning 64 rows of the
CTA's 128-row tile, and one memory warpgroup that streams the blocks the tile visits
(`masks.key_block_range` / `masks.query_block_range`) into a ring of `STAGES` shared-memory slots
with TMA copies.  "Ready" barriers tell the compute warpgroups a slot has landed, "free" barriers
(two arrivals) tell the memory warpgroup both have read it, so loads run ahead of the matmuls.
Matmuls are `wgmma` from swizzled shared memory (and the probabilities from registers); masked
edge blocks and unmasked interior blocks run as separate loops (`masks.visit_blocks`).  In the
forward pass the two compute warpgroups take turns on the tensor cores (ping-pong, as in
FlashAttention-3), so one's softmax hides behind the other's matmuls, and causal grids start with
the longest query tiles.  The
backward pass is a dK/dV kernel (a CTA per 128-key block, walking 64-row query tiles, writing
per-query-head float32 gradients summed per group outside) and a dQ kernel: no atomics,
deterministic.

`interpret=True` runs the kernels on CPU in JAX's Mosaic GPU interpreter, which simulates shared
memory, barriers and TMA (and can check for races); lowering for CUDA (`.lower(lowering_platforms=
("cuda",))`) checks the shared-memory transforms and layouts without a GPU.

Layout: q `[batch, q_heads, q_padded, d]`, k/v `[batch, kv_heads, k_padded, d]` in bfloat16 or
float16; head_dim 64 or 128; block_q = block_k = 128.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from afx.errors import ConfigError
from afx.kernels.attention import masks

ROWS = 64  # rows of one warpgroup's wgmma tile
COMPUTE_WARPGROUPS = 2
BLOCK = ROWS * COMPUTE_WARPGROUPS
STAGES = 2
# Registers per thread: the memory warpgroup only issues TMA copies, so it hands its share to the
# two compute warpgroups, which hold the float32 accumulators (2 × 232 + 40 <= 3 × 170 per thread).
COMPUTE_REGISTERS, MEMORY_REGISTERS = 232, 40
LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)


def check_supported(dtype, head_dim: int, block_q: int, block_k: int):
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    raise ConfigError(f"attention_impl='pallas_mosaic_gpu' takes bfloat16 or float16 inputs, got {jnp.dtype(dtype)}; "
                      "use 'pallas_gpu' or 'xla' for float32")
  if head_dim not in (64, 128):  # larger heads overflow the 227 KiB of shared memory at these blocks
    raise ConfigError(f"attention_impl='pallas_mosaic_gpu' needs head_dim 64 or 128, got {head_dim}")
  if (block_q, block_k) != (BLOCK, BLOCK):
    raise ConfigError(f"attention_impl='pallas_mosaic_gpu' runs {BLOCK}x{BLOCK} blocks, got block_q={block_q}, "
                      f"block_k={block_k}; leave them unset")


@functools.cache
def _register_layout_cast_on_cpu():
  """The GPU interpreter traces kernel bodies into CPU code, where `layout_cast` (which only tells the
  GPU lowering a register layout) has no rule in jax 0.10: on CPU it is the identity."""
  from jax.interpreters import mlir
  from jax._src.pallas.mosaic_gpu import core as gpu_core
  mlir.register_lowering(gpu_core.layout_cast_p, lambda ctx, x, new_layout: [x], platform="cpu")


def interpret_params(**kwargs):
  """Parameters of JAX's Mosaic GPU interpreter (e.g. `detect_races=True`), for `interpret=`."""
  params = getattr(plgpu, "InterpretGPUParams", None)  # exported after jax 0.10
  if params is None:
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams as params
  return params(**kwargs)


def _interpreter(interpret):
  """`interpret=True` or interpreter parameters as `plgpu.kernel` takes them; None on a GPU."""
  if not interpret:
    return None
  _register_layout_cast_on_cpu()
  return interpret_params() if interpret is True else interpret


def _swizzled(shape, dtype):
  """Shared memory for a TMA-loaded tile that `wgmma` reads: 128-byte swizzle in (8, 128 bytes) tiles."""
  columns = 128 // jnp.dtype(dtype).itemsize
  return plgpu.SMEM(shape, dtype, transforms=(plgpu.TilingTransform((8, columns)), plgpu.SwizzleTransform(128)))


def _value(x):
  return x if isinstance(x, jax.Array) else x[...]


def _matmul(a, b, shape, interpret: bool, transpose_b: bool = False, after_issue=lambda: None):
  """`a @ b` (or `a @ bᵀ`) in float32: `wgmma` with `a` from shared memory or registers and `b` from
  shared memory; `after_issue()` runs once the wgmma is issued, before waiting for its result.

  JAX's GPU interpreter cannot run this `wgmma` (jax 0.10 reads no transposed operand, 0.11 no
  scoped accumulator), so in interpret mode the product is an ordinary dot of the loaded values; the
  CUDA lowering test covers the wgmma.
  """
  if interpret:
    product = jax.lax.dot_general(_value(a), _value(b), (((1,), (1 if transpose_b else 0,)), ((), ())),
                                  preferred_element_type=jnp.float32)
    after_issue()
    return product
  b = b.transpose((1, 0)) if transpose_b else b

  def run(acc_ref):
    plgpu.wgmma(acc_ref, a, b)
    after_issue()
    return acc_ref[...]
  return pl.run_scoped(run, plgpu.ACC(shape, jnp.float32))


def _matmul_add(acc, a, b, interpret: bool, after_issue=lambda: None):
  """`acc + a @ b`, accumulating in the wgmma registers on a GPU."""
  if interpret:
    return acc + _matmul(a, b, acc.shape, interpret, after_issue=after_issue)

  def run(acc_ref):
    plgpu.wgmma(acc_ref, a, b)
    after_issue()
  return pl.run_state(run)(plgpu.ACC.init(acc))


def _rows(x):
  """A per-row statistic as the row layout of a wgmma tile."""
  return plgpu.layout_cast(x, plgpu.Layout.WGMMA.reduce(1))


def _tile(x):
  return plgpu.layout_cast(x, plgpu.Layout.WGMMA)


def _along_rows(x, shape):
  return jax.lax.broadcast_in_dim(x, shape, [0])


def _along_columns(x, shape):
  return jax.lax.broadcast_in_dim(x, shape, [1])


def _allowed(plan: masks.Plan, q_first, k_first, shape):
  """Boolean wgmma-layout tile of the allowed (query, key) pairs, rows from `q_first`, keys from `k_first`."""
  iota = lambda dim: plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=plgpu.Layout.WGMMA)
  return masks.allowed_pairs(plan, q_first + iota(0), k_first + iota(1))


def _free_logsumexp(lse):
  """Logsumexp with -inf (a row that sees no key) replaced by 0, in log2 units."""
  return jnp.where(lse == -jnp.inf, 0.0, lse) * LOG2_E


def _release(*free_slots, fence: bool):
  """Hand ring slots back to the memory warpgroup once this warpgroup has read them.

  TMA refills a slot through the async proxy, so reads of it by generic loads (`ref[...]`) must be
  ordered before that write by a proxy fence (`commit_smem`).  `wgmma` reads through the async proxy
  and needs none on a GPU; JAX's interpreter records every read as generic, so there it needs one too.
  """
  if fence:
    plgpu.commit_smem()
  for slot in free_slots:
    plgpu.barrier_arrive(slot)


def _stream(ref_slices, smem, ready, free, lo, hi):
  """Memory warpgroup: TMA-copy `ref_slices(i)` for i in `[lo, hi)` into the slot ring `smem`.

  `ref_slices(i)` is a tuple of GMEM refs, `smem`, `ready` and `free` tuples of the same length of
  slot-indexed shared buffers and barriers.
  """
  def load(i, slot):
    for src, dst, barrier in zip(ref_slices(i), smem, ready):
      plgpu.copy_gmem_to_smem(src, dst.at[slot], barrier.at[slot])

  plgpu.set_max_registers(MEMORY_REGISTERS, action="decrease")

  def wait_free(slot):
    for barrier in free:
      plgpu.barrier_wait(barrier.at[slot])

  for slot in range(STAGES):
    pl.when(lo + slot < hi)(functools.partial(load, lo + slot, slot))

  @pl.loop(lo + STAGES, jnp.maximum(hi, lo + STAGES))
  def _(i):
    slot = jax.lax.rem(i - lo, STAGES)
    wait_free(slot)
    load(i, slot)

  # Wait for the last reads of every slot too, so that each barrier's phases are all observed.
  @pl.loop(jnp.maximum(lo, hi - STAGES), hi)
  def _(i):
    wait_free(jax.lax.rem(i - lo, STAGES))


def _query_tile(plan: masks.Plan):
  """This CTA's query tile.  Under a causal mask the last tiles visit the most key blocks, so they
  start first: the short tiles fill in behind them and the GPU's last wave is short."""
  index = jax.lax.axis_index("tile")
  return plan.num_q_blocks - 1 - index if plan.masked else index


def _stream_key_blocks(plan: masks.Plan, k_head, v_head, smem, ready, free, lo, hi):
  """Memory warpgroup of the passes that walk key blocks: K and V blocks `[lo, hi)` of one head."""
  keys = lambda j: pl.ds(j * plan.block_k, plan.block_k)
  _stream(lambda j: (k_head.at[keys(j)], v_head.at[keys(j)]), smem, ready, free, lo, hi)


def _forward_kernel(q_ref, k_ref, v_ref, out_ref, lse_ref, q_smem, k_smem, v_smem, lse_smem, q_ready, turn, k_ready,
                    v_ready, k_free, v_free, *, plan: masks.Plan, groups: int, interpret: bool):
  tile, head, batch = _query_tile(plan), jax.lax.axis_index("head"), jax.lax.axis_index("batch")
  warpgroup = jax.lax.axis_index("warpgroup")
  lo, hi = masks.key_block_range(plan, tile)
  interior = masks.interior_key_range(plan, tile)
  head_dim = q_ref.shape[-1]

  @pl.when(warpgroup < COMPUTE_WARPGROUPS)
  def _compute():
    plgpu.set_max_registers(COMPUTE_REGISTERS, action="increase")
    row0 = tile * BLOCK + warpgroup * ROWS
    q_tile = q_smem.at[warpgroup]
    plgpu.copy_gmem_to_smem(q_ref.at[batch, head, pl.ds(row0, ROWS)], q_tile, q_ready.at[warpgroup])
    plgpu.barrier_wait(q_ready.at[warpgroup])
    score_scale = plan.scale * LOG2_E  # exp2 of log2-scaled logits
    # Ping-pong: the two warpgroups take turns to issue their matmuls, so that one's softmax runs
    # while the other's matmuls hold the tensor cores.  Warpgroup 1 hands warpgroup 0 the first turn.
    my_turn = lambda: plgpu.barrier_wait(turn.at[warpgroup])
    hand_over = lambda: plgpu.barrier_arrive(turn.at[1 - warpgroup])
    pl.when(warpgroup == 1)(hand_over)

    def visit(k_block, state, masked):
      m, l, acc = state
      slot = jax.lax.rem(k_block - lo, STAGES)
      plgpu.barrier_wait(k_ready.at[slot])
      my_turn()
      s = _matmul(q_tile, k_smem.at[slot], (ROWS, plan.block_k), interpret, transpose_b=True, after_issue=hand_over)
      _release(k_free.at[slot], fence=interpret)
      s = s * score_scale
      if masked:
        allowed = _allowed(plan, row0 + plan.q_offset, k_block * plan.block_k, s.shape)
        s = jnp.where(allowed, s, masks.MASK_VALUE)
      m_new = jnp.maximum(m, s.max(axis=1))
      p = jnp.exp2(s - _along_rows(m_new, s.shape))
      if masked:
        p = jnp.where(allowed, p, 0.0)
      alpha = jnp.exp2(m - m_new)
      l = l * alpha + p.sum(axis=1)
      acc = acc * _along_rows(alpha, acc.shape)
      plgpu.barrier_wait(v_ready.at[slot])
      my_turn()
      acc = _matmul_add(acc, p.astype(v_smem.dtype), v_smem.at[slot], interpret, after_issue=hand_over)
      _release(v_free.at[slot], fence=interpret)
      return m_new, l, acc

    state = (_rows(jnp.full((ROWS,), masks.MASK_VALUE, jnp.float32)), _rows(jnp.zeros((ROWS,), jnp.float32)),
             _tile(jnp.zeros((ROWS, head_dim), jnp.float32)))
    m, l, acc = masks.visit_blocks((lo, hi), interior, visit, state)
    pl.when(warpgroup == 0)(my_turn)  # warpgroup 1's last hand-over
    empty = l == 0.0
    safe_l = jnp.where(empty, 1.0, l)
    q_tile[...] = (acc / _along_rows(safe_l, acc.shape)).astype(q_tile.dtype)
    lse_smem.at[warpgroup][...] = jnp.where(empty, -jnp.inf, m * LN_2 + jnp.log(safe_l))
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(q_tile, out_ref.at[batch, head, pl.ds(row0, ROWS)])
    plgpu.copy_smem_to_gmem(lse_smem.at[warpgroup], lse_ref.at[batch, head, pl.ds(row0, ROWS)])
    plgpu.wait_smem_to_gmem(0)

  @pl.when(warpgroup == COMPUTE_WARPGROUPS)
  def _memory():
    _stream_key_blocks(plan, k_ref.at[batch, head // groups], v_ref.at[batch, head // groups], (k_smem, v_smem),
                       (k_ready, v_ready), (k_free, v_free), lo, hi)


def _kernel(body, out_type, scratch, grid, interpret):
  return plgpu.kernel(body, out_type=out_type, scratch_types=scratch, grid=grid, grid_names=("tile", "head", "batch"),
                      num_threads=COMPUTE_WARPGROUPS + 1, thread_name="warpgroup",
                      compiler_params=plgpu.CompilerParams(approx_math=True), interpret=_interpreter(interpret))


def _ring(count: int = 1):
  """`count` ring barriers (one per stage) that TMA completes, and their two-arrival "free" partners."""
  ready = [plgpu.Barrier(num_barriers=STAGES) for _ in range(count)]
  free = [plgpu.Barrier(num_arrivals=COMPUTE_WARPGROUPS, num_barriers=STAGES) for _ in range(count)]
  return ready, free


def forward(q, k, v, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  check_supported(q.dtype, head_dim, plan.block_q, plan.block_k)
  (k_ready, v_ready), (k_free, v_free) = _ring(2)
  scratch = [_swizzled((COMPUTE_WARPGROUPS, ROWS, head_dim), q.dtype),
             _swizzled((STAGES, plan.block_k, head_dim), k.dtype),
             _swizzled((STAGES, plan.block_k, head_dim), v.dtype),
             plgpu.SMEM((COMPUTE_WARPGROUPS, ROWS), jnp.float32),
             plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS), plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS),
             k_ready, v_ready, k_free, v_free]
  out_type = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, q_heads, plan.q_padded), jnp.float32))
  body = functools.partial(_forward_kernel, plan=plan, groups=q_heads // k.shape[1], interpret=interpret)
  return _kernel(body, out_type, scratch, (plan.num_q_blocks, q_heads, batch), interpret)(q, k, v)


def _vector(ref, layout):
  """A 1-D float32 statistic from shared memory, in the row (`reduce(1)`) or column (`reduce(0)`)
  layout of a wgmma tile."""
  return plgpu.layout_cast(ref[...], layout)


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, k_smem, v_smem, q_smem, do_smem,
                 lse_smem, delta_smem, grad_smem, k_ready, v_ready, q_ready, do_ready, lse_ready, delta_ready, q_free,
                 do_free, lse_free, delta_free, *, plan: masks.Plan, groups: int, interpret: bool):
  k_block, head, batch = jax.lax.axis_index("tile"), jax.lax.axis_index("head"), jax.lax.axis_index("batch")
  warpgroup = jax.lax.axis_index("warpgroup")
  tiles = dataclasses.replace(plan, block_q=ROWS)  # this kernel walks 64-row query tiles
  lo, hi = masks.query_block_range(tiles, k_block)
  interior = masks.interior_query_range(tiles, k_block)
  head_dim = q_ref.shape[-1]
  columns = plgpu.Layout.WGMMA.reduce(0)

  @pl.when(warpgroup < COMPUTE_WARPGROUPS)
  def _compute():
    plgpu.set_max_registers(COMPUTE_REGISTERS, action="increase")
    key0 = k_block * plan.block_k + warpgroup * ROWS
    k_tile, v_tile = k_smem.at[warpgroup], v_smem.at[warpgroup]
    kv_head = head // groups
    plgpu.copy_gmem_to_smem(k_ref.at[batch, kv_head, pl.ds(key0, ROWS)], k_tile, k_ready.at[warpgroup])
    plgpu.copy_gmem_to_smem(v_ref.at[batch, kv_head, pl.ds(key0, ROWS)], v_tile, v_ready.at[warpgroup])
    plgpu.barrier_wait(k_ready.at[warpgroup])
    plgpu.barrier_wait(v_ready.at[warpgroup])
    shape = (ROWS, ROWS)  # [keys, queries]: the transposed probabilities

    def visit(q_tile, grads, masked):
      dk, dv = grads
      slot = jax.lax.rem(q_tile - lo, STAGES)
      plgpu.barrier_wait(lse_ready.at[slot])
      plgpu.barrier_wait(delta_ready.at[slot])
      lse = _free_logsumexp(_vector(lse_smem.at[slot], columns))
      delta = _vector(delta_smem.at[slot], columns)
      _release(lse_free.at[slot], delta_free.at[slot], fence=True)
      plgpu.barrier_wait(q_ready.at[slot])
      s_t = _matmul(k_tile, q_smem.at[slot], shape, interpret, transpose_b=True) * (plan.scale * LOG2_E)
      p_t = jnp.exp2(s_t - _along_columns(lse, shape))
      if masked:
        allowed_t = plgpu.broadcasted_iota(jnp.int32, shape, 0, layout=plgpu.Layout.WGMMA) + key0
        q_pos = plgpu.broadcasted_iota(jnp.int32, shape, 1, layout=plgpu.Layout.WGMMA) + q_tile * ROWS + plan.q_offset
        p_t = jnp.where(masks.allowed_pairs(plan, q_pos, allowed_t), p_t, 0.0)
      plgpu.barrier_wait(do_ready.at[slot])
      dv = _matmul_add(dv, p_t.astype(do_smem.dtype), do_smem.at[slot], interpret)
      dp_t = _matmul(v_tile, do_smem.at[slot], shape, interpret, transpose_b=True)
      _release(do_free.at[slot], fence=interpret)
      ds_t = p_t * (dp_t - _along_columns(delta, shape))
      dk = _matmul_add(dk, ds_t.astype(q_smem.dtype), q_smem.at[slot], interpret)
      _release(q_free.at[slot], fence=interpret)
      return dk, dv

    zeros = _tile(jnp.zeros((ROWS, head_dim), jnp.float32))
    dk, dv = masks.visit_blocks((lo, hi), interior, visit, (zeros, zeros))
    grad_tile = grad_smem.at[warpgroup]
    for grad, grad_ref in ((dk * plan.scale, dk_ref), (dv, dv_ref)):
      grad_tile[...] = grad
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(grad_tile, grad_ref.at[batch, head, pl.ds(key0, ROWS)])
      plgpu.wait_smem_to_gmem(0)

  @pl.when(warpgroup == COMPUTE_WARPGROUPS)
  def _memory():
    rows = lambda i: pl.ds(i * ROWS, ROWS)
    _stream(lambda i: (q_ref.at[batch, head, rows(i)], do_ref.at[batch, head, rows(i)],
                       lse_ref.at[batch, head, rows(i)], delta_ref.at[batch, head, rows(i)]),
            (q_smem, do_smem, lse_smem, delta_smem), (q_ready, do_ready, lse_ready, delta_ready),
            (q_free, do_free, lse_free, delta_free), lo, hi)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, q_smem, do_smem, lse_smem, delta_smem, k_smem,
               v_smem, q_ready, do_ready, lse_ready, delta_ready, k_ready, v_ready, k_free, v_free, *,
               plan: masks.Plan, groups: int, interpret: bool):
  tile, head, batch = _query_tile(plan), jax.lax.axis_index("head"), jax.lax.axis_index("batch")
  warpgroup = jax.lax.axis_index("warpgroup")
  lo, hi = masks.key_block_range(plan, tile)
  interior = masks.interior_key_range(plan, tile)
  head_dim = q_ref.shape[-1]
  rows = plgpu.Layout.WGMMA.reduce(1)

  @pl.when(warpgroup < COMPUTE_WARPGROUPS)
  def _compute():
    plgpu.set_max_registers(COMPUTE_REGISTERS, action="increase")
    row0 = tile * BLOCK + warpgroup * ROWS
    own = (q_smem, do_smem, lse_smem, delta_smem)
    for src, dst, barrier in zip((q_ref, do_ref, lse_ref, delta_ref), own, (q_ready, do_ready, lse_ready, delta_ready)):
      plgpu.copy_gmem_to_smem(src.at[batch, head, pl.ds(row0, ROWS)], dst.at[warpgroup], barrier.at[warpgroup])
      plgpu.barrier_wait(barrier.at[warpgroup])
    q_tile, do_tile = q_smem.at[warpgroup], do_smem.at[warpgroup]
    lse = _free_logsumexp(_vector(lse_smem.at[warpgroup], rows))
    delta = _vector(delta_smem.at[warpgroup], rows)
    shape = (ROWS, plan.block_k)

    def visit(k_block, dq, masked):
      slot = jax.lax.rem(k_block - lo, STAGES)
      plgpu.barrier_wait(k_ready.at[slot])
      s = _matmul(q_tile, k_smem.at[slot], shape, interpret, transpose_b=True) * (plan.scale * LOG2_E)
      p = jnp.exp2(s - _along_rows(lse, shape))
      if masked:
        p = jnp.where(_allowed(plan, row0 + plan.q_offset, k_block * plan.block_k, shape), p, 0.0)
      plgpu.barrier_wait(v_ready.at[slot])
      dp = _matmul(do_tile, v_smem.at[slot], shape, interpret, transpose_b=True)
      _release(v_free.at[slot], fence=interpret)
      ds = p * (dp - _along_rows(delta, shape))
      dq = _matmul_add(dq, ds.astype(k_smem.dtype), k_smem.at[slot], interpret)
      _release(k_free.at[slot], fence=interpret)
      return dq

    dq = masks.visit_blocks((lo, hi), interior, visit, _tile(jnp.zeros((ROWS, head_dim), jnp.float32)))
    q_tile[...] = (dq * plan.scale).astype(q_tile.dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(q_tile, dq_ref.at[batch, head, pl.ds(row0, ROWS)])
    plgpu.wait_smem_to_gmem(0)

  @pl.when(warpgroup == COMPUTE_WARPGROUPS)
  def _memory():
    _stream_key_blocks(plan, k_ref.at[batch, head // groups], v_ref.at[batch, head // groups], (k_smem, v_smem),
                       (k_ready, v_ready), (k_free, v_free), lo, hi)


def backward(q, k, v, out, logsumexp, d_out, d_logsumexp, plan: masks.Plan, interpret: bool = False):
  batch, q_heads, _, head_dim = q.shape
  kv_heads = k.shape[1]
  groups = q_heads // kv_heads
  check_supported(q.dtype, head_dim, plan.block_q, plan.block_k)
  delta = (jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
           - d_logsumexp.astype(jnp.float32))
  d_out = d_out.astype(q.dtype)
  own = lambda dtype: _swizzled((COMPUTE_WARPGROUPS, ROWS, head_dim), dtype)
  stats = lambda count: plgpu.SMEM((count, ROWS), jnp.float32)
  per_warpgroup = lambda: plgpu.Barrier(num_barriers=COMPUTE_WARPGROUPS)

  ready, free = _ring(4)
  grad_type = jax.ShapeDtypeStruct((batch, q_heads, plan.k_padded, head_dim), jnp.float32)
  dkdv_scratch = [own(k.dtype), own(v.dtype), _swizzled((STAGES, ROWS, head_dim), q.dtype),
                  _swizzled((STAGES, ROWS, head_dim), q.dtype), stats(STAGES), stats(STAGES),
                  own(jnp.float32), per_warpgroup(), per_warpgroup(), *ready, *free]
  body = functools.partial(_dkdv_kernel, plan=plan, groups=groups, interpret=interpret)
  dk, dv = _kernel(body, [grad_type, grad_type], dkdv_scratch, (plan.num_k_blocks, q_heads, batch), interpret)(
      q, k, v, d_out, logsumexp, delta)

  (k_ready, v_ready), (k_free, v_free) = _ring(2)
  dq_scratch = [own(q.dtype), own(q.dtype), stats(COMPUTE_WARPGROUPS), stats(COMPUTE_WARPGROUPS),
                _swizzled((STAGES, plan.block_k, head_dim), k.dtype), _swizzled((STAGES, plan.block_k, head_dim), v.dtype),
                *(per_warpgroup() for _ in range(4)), k_ready, v_ready, k_free, v_free]
  body = functools.partial(_dq_kernel, plan=plan, groups=groups, interpret=interpret)
  dq = _kernel(body, jax.ShapeDtypeStruct(q.shape, q.dtype), dq_scratch, (plan.num_q_blocks, q_heads, batch),
               interpret)(q, k, v, d_out, logsumexp, delta)
  sum_groups = lambda x, like: x.reshape(batch, kv_heads, groups, *x.shape[2:]).sum(axis=2).astype(like.dtype)
  return dq, sum_groups(dk, k), sum_groups(dv, v)
