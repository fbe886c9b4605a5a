"""Blockwise attention in pure JAX: online softmax over key blocks, O(N·block) memory.

The outer loop runs over (batch, kv head) pairs one at a time, so every block product is a plain
2-D matmul over tiles that stay in cache: on a CPU that is what makes it faster than dense XLA
attention even at lengths where the N×N matrix fits in memory.  Each query tile loops over only the
key blocks `masks.key_block_range` names; blocks that the mask leaves whole skip the element mask.
Grouped-query heads are folded into the rows of a tile, so one pass over a key/value head serves
all its query heads.

The backward pass recomputes the probabilities from the saved logsumexp once per (query tile, key
block) pair: a single sequential pass over query tiles finishes each tile's dQ and adds its share
to dK and dV.  Being sequential it needs no atomics and is bitwise deterministic; the Pallas
kernels, whose tiles run in parallel, split it into separate dK/dV and dQ passes instead.

Layout: q `[batch, q_heads, q_padded, d]`, k/v `[batch, kv_heads, k_padded, d]`, lengths padded
to whole blocks (see `masks.Plan`).

Padded batches: optional int32 `kv_lengths` / `q_lengths` `[batch]` are traced, so each (batch, kv
head) slice gets its own lengths beside the static Plan: keys past its kv length are masked and the
key-block loops stop at the last block that holds a real key; query tiles wholly past its q length
visit no block (the caller zeroes the padding rows that share a tile with real ones).
"""

import jax
import jax.numpy as jnp

from afx.kernels.attention import blocks, masks


def _rows(x, start, size, axis: int = 0):
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _over_heads(fn, lengths: dict, *arrays):
  """`fn(lengths, *slices)` on each (batch, kv head) slice of `arrays` `[batch, kv_heads, ...]`, one after
  another; `lengths` maps names to `[batch]` arrays, each slice getting its batch row's scalar."""
  batch, kv_heads = arrays[0].shape[:2]
  flat = [x.reshape(batch * kv_heads, *x.shape[2:]) for x in arrays]
  per_head = {name: jnp.repeat(jnp.asarray(x, jnp.int32), kv_heads) for name, x in lengths.items()}
  out = jax.lax.map(lambda xs: fn(xs[0], *xs[1:]), (per_head, *flat))
  return jax.tree_util.tree_map(lambda y: y.reshape(batch, kv_heads, *y.shape[1:]), out)


def _grouped(x, kv_heads: int):
  """`[batch, q_heads, ...]` → `[batch, kv_heads, groups, ...]`."""
  return x.reshape(x.shape[0], kv_heads, x.shape[1] // kv_heads, *x.shape[2:])


def _query_tile(x, q_block: int, plan: masks.Plan):
  """Rows of query tile `q_block` of `x [groups, q_padded, ...]`, the groups folded: `[groups·block_q, ...]`."""
  tile = _rows(x, q_block * plan.block_q, plan.block_q, axis=1)
  return tile.reshape(-1, *x.shape[2:])


def _key_tiles(k, v, k_block: int, plan: masks.Plan):
  start = k_block * plan.block_k
  return _rows(k, start, plan.block_k), _rows(v, start, plan.block_k)


def _tile_mask(plan: masks.Plan, q_block, k_block, rows: int, masked: bool, lengths: dict):
  return masks.block_mask(plan, q_block, k_block, rows, kv_length=lengths.get("kv_length")) if masked else None


def _visited(plan: masks.Plan, q_block, lengths: dict):
  """The visited and interior key-block ranges of query tile `q_block` (see `masks.visit_blocks`)."""
  return (masks.key_block_range(plan, q_block, **lengths), masks.interior_key_range(plan, q_block, **lengths))


def _forward_head(q, k, v, plan: masks.Plan, lengths: dict):
  """One kv head: q `[groups, q_padded, d]`, k/v `[k_padded, d]` → out, logsumexp `[groups, q_padded]`.

  `lengths`: this head's traced `kv_length` and `q_length` scalars, where given."""
  groups, _, head_dim = q.shape
  rows = groups * plan.block_q

  def query_tile(q_block):
    q_tile = _query_tile(q, q_block, plan)

    def visit(k_block, state, masked):
      k_tile, v_tile = _key_tiles(k, v, k_block, plan)
      mask = _tile_mask(plan, q_block, k_block, rows, masked, lengths)
      return blocks.forward_step(state, blocks.scores(q_tile, k_tile, plan.scale), v_tile, mask)

    state = masks.visit_blocks(*_visited(plan, q_block, lengths), visit, blocks.initial_state(rows, head_dim))
    out, logsumexp = blocks.forward_finish(state)
    return out.reshape(groups, plan.block_q, head_dim).astype(q.dtype), logsumexp.reshape(groups, plan.block_q)

  out, logsumexp = jax.lax.map(query_tile, jnp.arange(plan.num_q_blocks))  # [q_blocks, groups, block_q, ...]
  return (jnp.moveaxis(out, 0, 1).reshape(q.shape), jnp.moveaxis(logsumexp, 0, 1).reshape(groups, plan.q_padded))


def _backward_head(q, k, v, d_out, logsumexp, delta, plan: masks.Plan, lengths: dict):
  """One kv head's (dq, dk, dv); `delta = rowsum(dO ∘ O) − d_logsumexp`, shapes as in `_forward_head`."""
  groups, _, head_dim = q.shape
  rows = groups * plan.block_q

  def query_tile(kv_grads, q_block):
    q_tile, do_tile, lse_tile, delta_tile = (_query_tile(x, q_block, plan) for x in (q, d_out, logsumexp, delta))

    def visit(k_block, grads, masked):
      dq, dk, dv = grads
      k_tile, v_tile = _key_tiles(k, v, k_block, plan)
      mask = _tile_mask(plan, q_block, k_block, rows, masked, lengths)
      dq_part, dk_part, dv_part = blocks.gradient_step(q_tile, k_tile, v_tile, do_tile, lse_tile, delta_tile,
                                                       plan.scale, mask)
      start = k_block * plan.block_k
      add = lambda total, part: jax.lax.dynamic_update_slice_in_dim(
          total, _rows(total, start, plan.block_k) + part, start, axis=0)
      return dq + dq_part, add(dk, dk_part), add(dv, dv_part)

    dq = jnp.zeros((rows, head_dim), jnp.float32)
    dq, dk, dv = masks.visit_blocks(*_visited(plan, q_block, lengths), visit, (dq, *kv_grads))
    return (dk, dv), dq.reshape(groups, plan.block_q, head_dim)

  zeros = jnp.zeros((plan.k_padded, head_dim), jnp.float32)
  (dk, dv), dq = jax.lax.scan(query_tile, (zeros, zeros), jnp.arange(plan.num_q_blocks))
  return jnp.moveaxis(dq, 0, 1).reshape(q.shape), dk, dv


def _lengths(q_lengths, kv_lengths) -> dict:
  """The given `[batch]` lengths under the names the per-head functions and `masks` take."""
  named = {"q_length": q_lengths, "kv_length": kv_lengths}
  return {name: x for name, x in named.items() if x is not None}


def forward(q, k, v, plan: masks.Plan, interpret: bool = False, *, q_lengths=None, kv_lengths=None):
  """`(out [b, hq, q_padded, d], logsumexp [b, hq, q_padded])`; optional int32 `[batch]` lengths."""
  del interpret
  kv_heads = k.shape[1]
  head = lambda lengths, q_, k_, v_: _forward_head(q_, k_, v_, plan, lengths)
  out, logsumexp = _over_heads(head, _lengths(q_lengths, kv_lengths), _grouped(q, kv_heads), k, v)
  return out.reshape(q.shape), logsumexp.reshape(q.shape[:3])


def backward(q, k, v, out, logsumexp, d_out, d_logsumexp, plan: masks.Plan, interpret: bool = False, *,
             q_lengths=None, kv_lengths=None):
  del interpret
  kv_heads = k.shape[1]
  delta = (jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
           - d_logsumexp.astype(jnp.float32))
  grouped = [_grouped(x, kv_heads) for x in (q, d_out, logsumexp, delta)]
  head = lambda lengths, q_, k_, v_, do_, lse_, delta_: _backward_head(q_, k_, v_, do_, lse_, delta_, plan, lengths)
  dq, dk, dv = _over_heads(head, _lengths(q_lengths, kv_lengths), grouped[0], k, v, *grouped[1:])
  return dq.reshape(q.shape).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)
