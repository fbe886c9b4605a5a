"""Dense attention in float32 at the highest matmul precision: the oracle every other path is tested against."""

import jax
import jax.numpy as jnp


def allowed_mask(q_len: int, k_len: int, *, causal: bool, window: int | None) -> jax.Array | None:
  """Boolean `[q_len, k_len]` mask of the key positions each query may see, or None for all.

  Query i sits at position i + (k_len - q_len), so a query block aligned to the end of the keys
  (as in cached decoding) sees the same keys as in the full sequence.
  """
  if not causal and window is None:
    return None
  offset = k_len - q_len
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(k_len)[None, :]
  allowed = jnp.ones((q_len, k_len), bool)
  if causal or window is not None:
    allowed &= k_pos <= q_pos
  if window is not None:
    allowed &= k_pos > q_pos - window
  return allowed


def attention(q, k, v, *, causal=False, window=None, scale=None, return_logsumexp=False):
  """Dense softmax attention over `[batch, seq, heads, head_dim]` inputs.

  Key/value heads may divide the query heads (grouped-query attention).  Rows whose every key is
  masked return zeros (and a logsumexp of -inf) rather than NaN.
  """
  out_dtype = q.dtype
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  head_dim = q.shape[-1]
  scale = head_dim**-0.5 if scale is None else scale
  groups = q.shape[2] // k.shape[2]
  k = jnp.repeat(k, groups, axis=2)
  v = jnp.repeat(v, groups, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST) * scale
  allowed = allowed_mask(q.shape[1], k.shape[1], causal=causal, window=window)
  if allowed is not None:
    logits = jnp.where(allowed, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  weights = jnp.exp(logits - row_max)
  denom = jnp.sum(weights, axis=-1, keepdims=True)
  probs = weights / jnp.where(denom == 0, 1.0, denom)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=jax.lax.Precision.HIGHEST)
  if not return_logsumexp:
    return out.astype(out_dtype)
  logsumexp = jnp.where(denom[..., 0] > 0, jnp.log(denom[..., 0]) + row_max[..., 0], -jnp.inf)
  return out.astype(out_dtype), logsumexp  # logsumexp: [batch, heads, q_len]
