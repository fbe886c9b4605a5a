"""Pre-LayerNorm Transformer blocks."""

import flax.linen as nn
import jax.numpy as jnp

from afx.layers.attention import MultiHeadAttention


class MlpBlock(nn.Module):
  """Dense(hidden) → GELU (tanh approximation, or exact erf as in BERT/ViT checkpoints) → dropout → Dense(features)."""
  hidden: int
  dropout_rate: float = 0.0
  approximate_gelu: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    features = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype)(x)
    x = nn.gelu(x, approximate=self.approximate_gelu)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(features, dtype=self.dtype)(x)


class TransformerBlock(nn.Module):
  """x + Attention(LN(x)); x + MLP(LN(x)), with dropout on both residual branches.

  With `cache` (decoding one position, see `MultiHeadAttention`) it returns `(x, new_cache)`.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  causal: bool = False
  window: int | None = None
  rotary: bool = False
  attention_impl: str | None = None
  layer_norm_epsilon: float = 1e-6
  approximate_gelu: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, positions=None, cache=None):
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    attention = MultiHeadAttention(self.num_heads, causal=self.causal, window=self.window, rotary=self.rotary,
                                   attention_impl=self.attention_impl, dtype=self.dtype)
    y = attention(nn.LayerNorm(self.layer_norm_epsilon)(x), positions=positions, cache=cache)
    if cache is not None:
      y, cache = y
    x = x + drop(y)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, self.approximate_gelu, dtype=self.dtype)(
        nn.LayerNorm(self.layer_norm_epsilon)(x), train=train)
    x = x + drop(y)
    return x if cache is None else (x, cache)
