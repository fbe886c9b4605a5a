"""Pre-LayerNorm Transformer blocks."""

import flax.linen as nn
import jax.numpy as jnp

from afx.layers.attention import MultiHeadAttention


class MlpBlock(nn.Module):
  """Dense(hidden) → GELU → dropout → Dense(features)."""
  hidden: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    features = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype)(x)
    x = nn.gelu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(features, dtype=self.dtype)(x)


class TransformerBlock(nn.Module):
  """x + Attention(LN(x)); x + MLP(LN(x)), with dropout on both residual branches."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  causal: bool = False
  window: int | None = None
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    y = MultiHeadAttention(self.num_heads, causal=self.causal, window=self.window,
                           attention_impl=self.attention_impl, dtype=self.dtype)(nn.LayerNorm()(x))
    x = x + drop(y)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, dtype=self.dtype)(nn.LayerNorm()(x), train=train)
    return x + drop(y)
