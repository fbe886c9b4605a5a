"""Dense attention in float32 at the highest matmul precision: the oracle every other path is tested against.

Padding: with `q_lengths` `[batch]`, query rows `i >= q_lengths[b]` of batch row b are padding and see
no key; with `kv_lengths` `[batch]`, only keys `j < kv_lengths[b]` are visible.  Lengths are traced
int32 arrays and combine with the causal and window masks.  A `bias` is added to the scaled logits
before any of these masks, so a masked logit stays masked whatever its bias.
"""

import jax
import jax.numpy as jnp


def allowed_mask(q_len: int, k_len: int, *, causal: bool, window: int | None, q_lengths=None,
                 kv_lengths=None) -> jax.Array | None:
  """Boolean mask of the key positions each query may see, or None for all.

  `[q_len, k_len]`, or `[batch, q_len, k_len]` when lengths are given.  Query i sits at position
  i + (k_len - q_len), so a query block aligned to the end of the keys (as in cached decoding) sees
  the same keys as in the full sequence.
  """
  if not causal and window is None and q_lengths is None and kv_lengths is None:
    return None
  offset = k_len - q_len
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(k_len)[None, :]
  allowed = jnp.ones((q_len, k_len), bool)
  if causal or window is not None:
    allowed &= k_pos <= q_pos
  if window is not None:
    allowed &= k_pos > q_pos - window
  if q_lengths is None and kv_lengths is None:
    return allowed
  allowed = allowed[None]
  if q_lengths is not None:
    allowed &= jnp.arange(q_len)[None, :, None] < jnp.asarray(q_lengths)[:, None, None]
  if kv_lengths is not None:
    allowed &= k_pos[None] < jnp.asarray(kv_lengths)[:, None, None]
  return allowed


def rows_that_see_a_key(q_len: int, k_len: int, *, causal: bool, window: int | None, q_lengths=None,
                        kv_lengths=None) -> jax.Array:
  """Boolean `[batch or 1, q_len]`: whether each query sees at least one key under `allowed_mask`.

  Computed from the first and last visible key of each row, without the `[q_len, k_len]` mask.
  """
  q_pos = jnp.arange(q_len) + (k_len - q_len)
  last = q_pos if causal or window is not None else jnp.full((q_len,), k_len - 1)
  last = jnp.minimum(last, k_len - 1)[None]
  first = jnp.zeros((q_len,), jnp.int32) if window is None else jnp.maximum(q_pos - window + 1, 0)
  if kv_lengths is not None:
    last = jnp.minimum(last, jnp.asarray(kv_lengths)[:, None] - 1)
  sees = first[None] <= last
  if q_lengths is not None:
    sees &= jnp.arange(q_len)[None] < jnp.asarray(q_lengths)[:, None]
  return sees


def attention(q, k, v, *, causal=False, window=None, scale=None, q_lengths=None, kv_lengths=None, bias=None,
              return_logsumexp=False, return_weights=False):
  """Dense softmax attention over `[batch, seq, heads, head_dim]` inputs.

  `bias` (optional, broadcastable to `[batch, heads, q_len, k_len]`) is added, in float32, to the logits
  `scale · q·k`.  Key/value heads may divide the query heads (grouped-query attention).  Rows whose every key is
  masked (padding queries among them) return zeros (and a logsumexp of -inf) rather than NaN.
  Returns the output, then the logsumexp `[batch, heads, q_len]` and the float32 probabilities
  `[batch, heads, q_len, k_len]` when asked for.
  """
  out_dtype = q.dtype
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  head_dim = q.shape[-1]
  scale = head_dim**-0.5 if scale is None else scale
  groups = q.shape[2] // k.shape[2]
  k = jnp.repeat(k, groups, axis=2)
  v = jnp.repeat(v, groups, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST) * scale
  if bias is not None:
    logits = logits + jnp.asarray(bias, jnp.float32)
  allowed = allowed_mask(q.shape[1], k.shape[1], causal=causal, window=window, q_lengths=q_lengths,
                         kv_lengths=kv_lengths)
  if allowed is not None:
    logits = jnp.where(allowed if allowed.ndim == 2 else allowed[:, None], logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  weights = jnp.exp(logits - row_max)
  denom = jnp.sum(weights, axis=-1, keepdims=True)
  probs = weights / jnp.where(denom == 0, 1.0, denom)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=jax.lax.Precision.HIGHEST).astype(out_dtype)
  results = [out]
  if return_logsumexp:  # [batch, heads, q_len]
    results.append(jnp.where(denom[..., 0] > 0, jnp.log(denom[..., 0]) + row_max[..., 0], -jnp.inf))
  if return_weights:
    results.append(probs)
  return results[0] if len(results) == 1 else tuple(results)
