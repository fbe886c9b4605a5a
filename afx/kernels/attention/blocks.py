"""The arithmetic of one (query tile, key block) pair, on 2-D arrays.

Shared by the pure-JAX blockwise path (which vmaps it over batch and heads) and the Pallas GPU
kernel (which runs it per program).  Softmax statistics are float32; matmuls accumulate in float32.
Row statistics `m` (running max) start at `MASK_VALUE`, so all arithmetic stays finite; masked
probabilities are set to exactly zero, so a fully masked row ends with `l == 0`, output 0 and
logsumexp -inf.
"""

import jax
import jax.numpy as jnp

from afx.kernels.attention.masks import MASK_VALUE


def _dot(a, b, contract_a: int, contract_b: int):
  precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)


def scores(q, k, scale: float):
  """`[rows, keys]` float32 logits of `q [rows, d]` against `k [keys, d]`."""
  return _dot(q, k, 1, 1) * scale


def initial_state(rows: int, head_dim: int):
  return (jnp.full((rows,), MASK_VALUE, jnp.float32), jnp.zeros((rows,), jnp.float32),
          jnp.zeros((rows, head_dim), jnp.float32))


def forward_step(state, s, v, mask=None):
  """Online-softmax update of `(m, l, acc)` with logits `s [rows, keys]` and values `v [keys, d]`."""
  m, l, acc = state
  if mask is not None:
    s = jnp.where(mask, s, MASK_VALUE)
  m_new = jnp.maximum(m, s.max(axis=-1))
  p = jnp.exp(s - m_new[:, None])
  if mask is not None:
    p = jnp.where(mask, p, 0.0)
  alpha = jnp.exp(m - m_new)
  l_new = alpha * l + p.sum(axis=-1)
  acc_new = alpha[:, None] * acc + _dot(p.astype(v.dtype), v, 1, 0)
  return m_new, l_new, acc_new


def forward_finish(state):
  """Output `[rows, d]` (float32) and natural-log logsumexp `[rows]` from the final state."""
  m, l, acc = state
  empty = l == 0.0
  out = acc / jnp.where(empty, 1.0, l)[:, None]
  logsumexp = jnp.where(empty, -jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))
  return out, logsumexp


def probabilities(s, logsumexp, mask=None):
  """Softmax probabilities recomputed from logits and the saved logsumexp."""
  p = jnp.exp(s - jnp.where(jnp.isfinite(logsumexp), logsumexp, 0.0)[:, None])
  return p if mask is None else jnp.where(mask, p, 0.0)


def logit_gradient(p, do, v, delta):
  """dS = P ∘ (dO·Vᵀ − δ), with δ = rowsum(dO ∘ O) − (cotangent of the logsumexp)."""
  return p * (_dot(do, v, 1, 1) - delta[:, None])


def dkdv_step(dk, dv, q, k, v, do, logsumexp, delta, scale: float, mask=None):
  """Add one query tile's contribution to dK and dV of one key block (float32 accumulators)."""
  p = probabilities(scores(q, k, scale), logsumexp, mask)
  dv = dv + _dot(p.astype(do.dtype), do, 0, 0)
  ds = logit_gradient(p, do, v, delta)
  return dk + _dot(ds.astype(q.dtype), q, 0, 0) * scale, dv


def dq_step(dq, q, k, v, do, logsumexp, delta, scale: float, mask=None):
  """Add one key block's contribution to dQ of one query tile (float32 accumulator)."""
  p = probabilities(scores(q, k, scale), logsumexp, mask)
  ds = logit_gradient(p, do, v, delta)
  return dq + _dot(ds.astype(k.dtype), k, 1, 0) * scale


def gradient_step(q, k, v, do, logsumexp, delta, scale: float, mask=None):
  """(dQ, dK, dV) contributions of one (query tile, key block) pair from one recomputation of the
  probabilities: what a sequential backward pass adds up (float32)."""
  p = probabilities(scores(q, k, scale), logsumexp, mask)
  ds = logit_gradient(p, do, v, delta)
  return (_dot(ds.astype(k.dtype), k, 1, 0) * scale, _dot(ds.astype(q.dtype), q, 0, 0) * scale,
          _dot(p.astype(do.dtype), do, 0, 0))
