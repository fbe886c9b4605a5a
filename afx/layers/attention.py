"""Multi-head self-attention whose core is `afx.kernels.attention.dot_product_attention`."""

import flax.linen as nn
import jax.numpy as jnp

from afx.kernels.attention import dot_product_attention


class MultiHeadAttention(nn.Module):
  """Self-attention over `[batch, seq, features]` with a choosable attention implementation.

  Attributes:
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention); None means `num_heads`.
    causal, window: masking, as in `dot_product_attention`.
    attention_impl: implementation name passed to `dot_product_attention` (None: backend default).
  """
  num_heads: int
  num_kv_heads: int | None = None
  causal: bool = False
  window: int | None = None
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f"features ({features}) must be divisible by num_heads ({self.num_heads})")
    head_dim = features // self.num_heads
    kv_heads = self.num_kv_heads or self.num_heads
    dense = lambda heads, name: nn.DenseGeneral((heads, head_dim), dtype=self.dtype, name=name)
    q = dense(self.num_heads, "query")(x)
    k = dense(kv_heads, "key")(x)
    v = dense(kv_heads, "value")(x)
    out = dot_product_attention(q, k, v, causal=self.causal, window=self.window,
                                implementation=self.attention_impl)
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, name="out")(out)
