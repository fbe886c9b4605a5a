"""Which key blocks a query tile visits, and which visited blocks need an element mask.

Shared by every blockwise implementation (pure JAX, Pallas TPU, Pallas GPU) so that the forward,
dK/dV and dQ passes of all of them visit exactly the same (query tile, key block) pairs.

Positions: query row i sits at position i + q_offset, with q_offset = k_len - q_len (queries aligned
to the end of the keys, as in cached decoding); key j at position j.  Query q may see key k when
k < k_len, and, if causal, k <= q, and, with a window W, k > q - W.  The functions take Python ints
or traced int32 scalars (grid indices inside kernels) alike.

Padding (pure-JAX blockwise only): the Plan stays static while a (batch, head)'s lengths are traced
scalars passed beside it.  With `kv_length`, keys k >= kv_length are masked too and key blocks wholly
past it are not visited; with `q_length`, query tiles wholly past it visit no block (their rows are
padding, which the caller zeroes).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Finite, so that a fully masked row never computes inf - inf.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def _cdiv(a: int, b: int) -> int:
  return -(-a // b)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static description of one blockwise attention call (hashable: a jit/custom_vjp static argument)."""
  q_len: int
  k_len: int
  block_q: int
  block_k: int
  causal: bool
  window: int | None
  scale: float

  @property
  def masked(self) -> bool:
    return self.causal or self.window is not None

  @property
  def q_offset(self) -> int:
    return self.k_len - self.q_len

  @property
  def num_q_blocks(self) -> int:
    return _cdiv(self.q_len, self.block_q)

  @property
  def num_k_blocks(self) -> int:
    return _cdiv(self.k_len, self.block_k)

  @property
  def q_padded(self) -> int:
    return self.num_q_blocks * self.block_q

  @property
  def k_padded(self) -> int:
    return self.num_k_blocks * self.block_k


def _is_static(*values) -> bool:
  return all(isinstance(v, (int, np.integer, bool, np.bool_)) for v in values)


def _minimum(a, b):
  return min(a, b) if _is_static(a, b) else jnp.minimum(a, b)


def _clip(x, low: int, high: int):
  return max(low, min(high, x)) if _is_static(x) else jnp.clip(x, low, high)


def key_block_range(plan: Plan, q_block, *, kv_length=None, q_length=None):
  """`(lo, hi)`: the key blocks `lo <= j < hi` that query tile `q_block` visits (empty if lo >= hi).

  These are the blocks that intersect `[q0 - W + 1, q1]` in key positions, where q0 and q1 are the
  positions of the tile's first and last real query: padded query rows past `q_len` (or a traced
  `q_length`) do not widen the range.  Blocks wholly past a traced `kv_length` are left out.
  """
  q_rows = plan.q_len if q_length is None else _minimum(plan.q_len, q_length)
  lo, hi = 0, plan.num_k_blocks
  q_first = q_block * plan.block_q + plan.q_offset
  if plan.masked:
    q_last = _minimum(q_first + plan.block_q - 1, q_rows - 1 + plan.q_offset)
    hi = _clip(q_last // plan.block_k + 1, 0, plan.num_k_blocks)
  if plan.window is not None:
    lo = _clip((q_first - plan.window + 1) // plan.block_k, 0, plan.num_k_blocks)
  if kv_length is None and q_length is None:
    return lo, hi
  if kv_length is not None:
    hi = _minimum(hi, _ceil_div(kv_length, plan.block_k))
  return lo, _select(q_block * plan.block_q >= q_rows, lo, _maximum(lo, hi))  # a tile of padding rows: empty


def query_block_range(plan: Plan, k_block):
  """`(lo, hi)`: the query tiles whose `key_block_range` contains key block `k_block`."""
  if not plan.masked:
    return 0, plan.num_q_blocks
  k_first = k_block * plan.block_k
  lo = _clip((k_first - plan.q_offset) // plan.block_q, 0, plan.num_q_blocks)
  if plan.window is None:
    return lo, plan.num_q_blocks
  k_last = k_first + plan.block_k - 1
  hi = _clip((k_last + plan.window - 1 - plan.q_offset) // plan.block_q + 1, 0, plan.num_q_blocks)
  return lo, hi


def _maximum(a, b):
  return max(a, b) if _is_static(a, b) else jnp.maximum(a, b)


def _select(condition, if_true, if_false):
  if _is_static(condition):
    return if_true if condition else if_false
  return jnp.where(condition, if_true, if_false)


def _floor_div(a, b: int):
  return a // b  # Python ints and jnp int32 both round toward -inf


def _ceil_div(a, b: int):
  return -_floor_div(-a, b)


def _within(lo, hi, inner_lo, inner_hi):
  """`[inner_lo, inner_hi)` cut to `[lo, hi)`; an empty result is `(hi, hi)`."""
  inner_lo, inner_hi = _maximum(inner_lo, lo), _minimum(inner_hi, hi)
  empty = inner_lo >= inner_hi
  if _is_static(inner_lo, inner_hi):
    return (hi, hi) if empty else (inner_lo, inner_hi)
  return jnp.where(empty, hi, inner_lo), jnp.where(empty, hi, inner_hi)


def interior_key_range(plan: Plan, q_block, *, kv_length=None, q_length=None):
  """`(ilo, ihi)` inside `key_block_range`: the key blocks of this tile that need no element mask.

  The visited blocks outside it, `[lo, ilo)` and `[ihi, hi)`, are the masked ones, so kernels can
  run three plain loops instead of branching per block.
  """
  lo, hi = key_block_range(plan, q_block, kv_length=kv_length, q_length=q_length)
  inner_hi = plan.k_len // plan.block_k  # blocks that end before the padding
  if kv_length is not None:
    inner_hi = _minimum(inner_hi, _floor_div(kv_length, plan.block_k))
  inner_lo = 0
  if plan.masked:
    q_first = q_block * plan.block_q + plan.q_offset
    inner_hi = _minimum(inner_hi, _floor_div(q_first + 1, plan.block_k))
    if plan.window is not None:
      inner_lo = _floor_div(q_first + plan.block_q - 1 - plan.window, plan.block_k) + 1
  return _within(lo, hi, inner_lo, inner_hi)


def interior_query_range(plan: Plan, k_block):
  """`(ilo, ihi)` inside `query_block_range`: the query tiles for which this key block needs no mask."""
  lo, hi = query_block_range(plan, k_block)
  inner_lo = 0
  # A key block that reaches into the padding needs its mask for every query tile.
  inner_hi = _minimum(plan.num_q_blocks, (plan.k_len // plan.block_k - k_block) * plan.num_q_blocks)
  if plan.masked:
    k_first = k_block * plan.block_k
    inner_lo = _ceil_div(k_first + plan.block_k - 1 - plan.q_offset, plan.block_q)
    if plan.window is not None:
      inner_hi = _minimum(inner_hi, _ceil_div(k_first - plan.block_q + 1 - plan.q_offset + plan.window, plan.block_q))
  return _within(lo, hi, inner_lo, inner_hi)


def max_key_blocks_per_tile(plan: Plan) -> int:
  """The most key blocks any query tile visits (the length of a kernel's key-block grid axis)."""
  return max(max(0, hi - lo) for lo, hi in (key_block_range(plan, i) for i in range(plan.num_q_blocks)))


def max_query_tiles_per_block(plan: Plan) -> int:
  return max(max(0, hi - lo) for lo, hi in (query_block_range(plan, j) for j in range(plan.num_k_blocks)))


def block_needs_mask(plan: Plan, q_block, k_block, *, kv_length=None):
  """False when every (query, key) pair of the block is allowed: interior blocks skip the mask."""
  k_first = k_block * plan.block_k
  k_len = plan.k_len if kv_length is None else _minimum(plan.k_len, kv_length)
  touches_padding = k_first + plan.block_k > k_len
  if not plan.masked:
    return touches_padding
  q_first = q_block * plan.block_q + plan.q_offset
  q_last = q_first + plan.block_q - 1
  partial = k_first + plan.block_k - 1 > q_first  # some key lies after some query
  if plan.window is not None:
    partial = partial | (k_first <= q_last - plan.window)  # some key lies before some window
  return touches_padding | partial


def allowed_pairs(plan: Plan, q_pos, k_pos, *, kv_length=None):
  """Whether query position `q_pos` may see key position `k_pos` (elementwise on arrays of positions)."""
  allowed = k_pos < plan.k_len
  if kv_length is not None:
    allowed = allowed & (k_pos < kv_length)
  if plan.masked:
    allowed = allowed & (k_pos <= q_pos)
  if plan.window is not None:
    allowed = allowed & (k_pos > q_pos - plan.window)
  return allowed


def block_mask(plan: Plan, q_block, k_block, rows: int | None = None, *, kv_length=None):
  """Boolean `[rows, block_k]` of the allowed pairs; rows beyond `block_q` repeat the tile (query groups)."""
  shape = (plan.block_q, plan.block_k)  # 2-D iotas: what Mosaic and Triton lower directly
  q_pos = q_block * plan.block_q + plan.q_offset + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
  k_pos = k_block * plan.block_k + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
  allowed = allowed_pairs(plan, q_pos, k_pos, kv_length=kv_length)
  if rows is not None and rows != plan.block_q:
    allowed = jnp.tile(allowed, (rows // plan.block_q, 1))
  return allowed


def visit_blocks(visited, interior, step, carry):
  """Run `step(index, carry, masked)` over `visited = (lo, hi)`: masked on `[lo, ilo)` and `[ihi, hi)`,
  without a mask on `interior = (ilo, ihi)`.  Three plain loops, no per-block branch."""
  (lo, hi), (inner_lo, inner_hi) = visited, interior
  masked = lambda index, value: step(index, value, True)
  plain = lambda index, value: step(index, value, False)
  carry = jax.lax.fori_loop(lo, inner_lo, masked, carry)
  carry = jax.lax.fori_loop(inner_lo, inner_hi, plain, carry)
  return jax.lax.fori_loop(inner_hi, hi, masked, carry)
