"""Blockwise attention in pure JAX: online softmax over key blocks, O(N·block) memory.

Each query tile loops over only the key blocks `masks.key_block_range` names; blocks that the mask
leaves whole skip the element mask.  Grouped-query heads are folded into the rows of a tile, so one
pass over a key/value head serves all its query heads.  The backward pass recomputes the
probabilities from the saved logsumexp: a dK/dV pass loops over query tiles per key block, a dQ pass
over key blocks per query tile; both are sequential, so results are bitwise deterministic.

Layout: q `[batch, q_heads, q_padded, d]`, k/v `[batch, kv_heads, k_padded, d]`, lengths padded
to whole blocks (see `masks.Plan`).
"""

import functools

import jax
import jax.numpy as jnp

from afx.kernels.attention import blocks, masks

# The block math is written for one (batch, kv head); vmap it over both.
_per_head = lambda f: jax.vmap(jax.vmap(f))


def _rows(x, start, size, axis):
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def forward(q, k, v, plan: masks.Plan, interpret: bool = False):
  del interpret
  batch, kv_heads, _, head_dim = k.shape
  groups = q.shape[1] // kv_heads
  rows = groups * plan.block_q
  q = q.reshape(batch, kv_heads, groups, plan.q_padded, head_dim)

  def query_tile(q_block):
    q_tile = _rows(q, q_block * plan.block_q, plan.block_q, 3).reshape(batch, kv_heads, rows, head_dim)

    def visit(k_block, state, masked):
      k_tile = _rows(k, k_block * plan.block_k, plan.block_k, 2)
      v_tile = _rows(v, k_block * plan.block_k, plan.block_k, 2)
      s = _per_head(functools.partial(blocks.scores, scale=plan.scale))(q_tile, k_tile)
      mask = masks.block_mask(plan, q_block, k_block, rows) if masked else None
      return _per_head(lambda st, s_, v_: blocks.forward_step(st, s_, v_, mask))(state, s, v_tile)

    init = _per_head(lambda _: blocks.initial_state(rows, head_dim))(jnp.zeros((batch, kv_heads)))
    state = masks.visit_blocks(masks.key_block_range(plan, q_block), masks.interior_key_range(plan, q_block),
                               visit, init)
    out, logsumexp = _per_head(blocks.forward_finish)(state)
    return (out.reshape(batch, kv_heads, groups, plan.block_q, head_dim).astype(q.dtype),
            logsumexp.reshape(batch, kv_heads, groups, plan.block_q))

  out, logsumexp = jax.lax.map(query_tile, jnp.arange(plan.num_q_blocks))
  out = jnp.moveaxis(out, 0, 3).reshape(batch, kv_heads * groups, plan.q_padded, head_dim)
  logsumexp = jnp.moveaxis(logsumexp, 0, 3).reshape(batch, kv_heads * groups, plan.q_padded)
  return out, logsumexp


def backward(q, k, v, out, logsumexp, d_out, d_logsumexp, plan: masks.Plan, interpret: bool = False):
  del interpret
  batch, kv_heads, _, head_dim = k.shape
  groups = q.shape[1] // kv_heads
  rows = groups * plan.block_q
  delta = (jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
           - d_logsumexp.astype(jnp.float32))
  grouped = lambda x: x.reshape(batch, kv_heads, groups, plan.q_padded, *x.shape[3:])
  q_g, do_g, lse_g, delta_g = grouped(q), grouped(d_out), grouped(logsumexp), grouped(delta)

  def query_rows(x, q_block):
    tile = _rows(x, q_block * plan.block_q, plan.block_q, 3)
    return tile.reshape(batch, kv_heads, rows, *x.shape[4:])

  def key_block_grads(k_block):
    k_tile = _rows(k, k_block * plan.block_k, plan.block_k, 2)
    v_tile = _rows(v, k_block * plan.block_k, plan.block_k, 2)

    def visit(q_block, grads, masked):
      tiles = [query_rows(x, q_block) for x in (q_g, do_g, lse_g, delta_g)]
      mask = masks.block_mask(plan, q_block, k_block, rows) if masked else None
      return _per_head(lambda dk, dv, q_, do_, lse_, delta_, k_, v_: blocks.dkdv_step(
          dk, dv, q_, k_, v_, do_, lse_, delta_, plan.scale, mask))(*grads, *tiles, k_tile, v_tile)

    zeros = jnp.zeros((batch, kv_heads, plan.block_k, head_dim), jnp.float32)
    return masks.visit_blocks(masks.query_block_range(plan, k_block), masks.interior_query_range(plan, k_block),
                              visit, (zeros, zeros))

  def query_tile_grad(q_block):
    tiles = [query_rows(x, q_block) for x in (q_g, do_g, lse_g, delta_g)]

    def visit(k_block, dq, masked):
      k_tile = _rows(k, k_block * plan.block_k, plan.block_k, 2)
      v_tile = _rows(v, k_block * plan.block_k, plan.block_k, 2)
      mask = masks.block_mask(plan, q_block, k_block, rows) if masked else None
      return _per_head(lambda dq_, q_, do_, lse_, delta_, k_, v_: blocks.dq_step(
          dq_, q_, k_, v_, do_, lse_, delta_, plan.scale, mask))(dq, *tiles, k_tile, v_tile)

    zeros = jnp.zeros((batch, kv_heads, rows, head_dim), jnp.float32)
    dq = masks.visit_blocks(masks.key_block_range(plan, q_block), masks.interior_key_range(plan, q_block),
                            visit, zeros)
    return dq.reshape(batch, kv_heads, groups, plan.block_q, head_dim)

  dk, dv = jax.lax.map(key_block_grads, jnp.arange(plan.num_k_blocks))
  dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
  dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
  dq = jax.lax.map(query_tile_grad, jnp.arange(plan.num_q_blocks))
  dq = jnp.moveaxis(dq, 0, 3).reshape(q.shape)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)
