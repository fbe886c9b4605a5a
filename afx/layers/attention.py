"""Multi-head self-attention whose core is `afx.kernels.attention.dot_product_attention`.

The same parameters serve training over whole sequences and autoregressive decoding one position
at a time from a key/value cache (`attention_cache`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.kernels.attention import dot_product_attention
from afx.layers.positional import rotary_embedding


def attention_cache(batch_size: int, length: int, kv_heads: int, head_dim: int, dtype=jnp.float32) -> dict:
  """An empty key/value cache: a ring of `length` slots; `position` is −1 for an empty slot."""
  zeros = jnp.zeros((batch_size, length, kv_heads, head_dim), dtype)
  return {"key": zeros, "value": zeros, "position": jnp.full((length,), -1, jnp.int32)}


def cached_attention(q, keys, values, visible):
  """One query step `[batch, 1, heads, head_dim]` over cached `[batch, slots, kv_heads, head_dim]`.

  `visible` `[slots]` marks the slots the query may see; grouped-query heads share their kv head.
  """
  groups = q.shape[2] // keys.shape[2]
  keys, values = jnp.repeat(keys, groups, axis=2), jnp.repeat(values, groups, axis=2)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), keys.astype(jnp.float32))
  scores = jnp.where(visible, scores / jnp.sqrt(q.shape[-1]).astype(jnp.float32), -jnp.inf)
  weights = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, values.astype(jnp.float32)).astype(q.dtype)


class MultiHeadAttention(nn.Module):
  """Self-attention over `[batch, seq, features]` with a choosable attention implementation.

  Attributes:
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention); None means `num_heads`.
    causal, window: masking, as in `dot_product_attention`.
    rotary: rotate queries and keys by their positions (relative position information).
    attention_impl: implementation name passed to `dot_product_attention` (None: backend default).
  """
  num_heads: int
  num_kv_heads: int | None = None
  causal: bool = False
  window: int | None = None
  rotary: bool = False
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, positions=None, cache=None):
    """Whole sequence: `x` `[batch, seq, features]` → `[batch, seq, features]`.

    Decoding (`cache` given): `x` is `[batch, 1, features]` at absolute position `positions`
    (`[1]` int32, may be traced); returns the output and the cache with this position written
    into slot `position % slots`.  Causal attention sees the cached positions ≤ this one (and
    within `window`).
    """
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f"features ({features}) must be divisible by num_heads ({self.num_heads})")
    head_dim = features // self.num_heads
    kv_heads = self.num_kv_heads or self.num_heads
    dense = lambda heads, name: nn.DenseGeneral((heads, head_dim), dtype=self.dtype, name=name)
    q = dense(self.num_heads, "query")(x)
    k = dense(kv_heads, "key")(x)
    v = dense(kv_heads, "value")(x)
    if self.rotary:
      positions = jnp.arange(x.shape[1]) if positions is None else positions
      q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
    project = nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, name="out")
    if cache is None:
      return project(dot_product_attention(q, k, v, causal=self.causal, window=self.window,
                                           implementation=self.attention_impl))
    position = positions[0]
    slot = position % cache["position"].shape[0]
    cache = {"key": cache["key"].at[:, slot].set(k[:, 0].astype(cache["key"].dtype)),
             "value": cache["value"].at[:, slot].set(v[:, 0].astype(cache["value"].dtype)),
             "position": cache["position"].at[slot].set(position)}
    visible = (cache["position"] >= 0) & (cache["position"] <= position)
    if self.window is not None:
      visible &= cache["position"] > position - self.window
    return project(cached_attention(q, cache["key"], cache["value"], visible)), cache
