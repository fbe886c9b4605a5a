"""Pre-LayerNorm Transformer blocks: self-attention (`TransformerBlock`) and encoder-decoder (`DecoderBlock`)."""

import flax.linen as nn
import jax.numpy as jnp

from afx.errors import ConfigError
from afx.layers.attention import MultiHeadAttention

ACTIVATIONS = ("gelu", "relu", "swish")


def activation_function(name: str, *, approximate_gelu: bool = True):
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=approximate_gelu)
  if name == "relu":
    return nn.relu
  if name == "swish":
    return nn.swish
  raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class MlpBlock(nn.Module):
  """Dense(hidden) → activation → dropout → Dense(features).

  The activation is GELU (tanh approximation, or exact erf as in BERT/ViT checkpoints), ReLU (the
  Transformer's and ESPnet's) or Swish (the Conformer's).
  """
  hidden: int
  dropout_rate: float = 0.0
  approximate_gelu: bool = True
  activation: str = "gelu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    features = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype)(x)
    x = activation_function(self.activation, approximate_gelu=self.approximate_gelu)(x)
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
  activation: str = "gelu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, positions=None, cache=None, lengths=None):
    """`lengths [batch]` (optional): keys past each row's length are padding, never attended to."""
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    attention = MultiHeadAttention(self.num_heads, causal=self.causal, window=self.window, rotary=self.rotary,
                                   attention_impl=self.attention_impl, dtype=self.dtype)
    y = attention(nn.LayerNorm(self.layer_norm_epsilon)(x), positions=positions, cache=cache, kv_lengths=lengths)
    if cache is not None:
      y, cache = y
    x = x + drop(y)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, self.approximate_gelu, self.activation, dtype=self.dtype)(
        nn.LayerNorm(self.layer_norm_epsilon)(x), train=train)
    x = x + drop(y)
    return x if cache is None else (x, cache)


class DecoderBlock(nn.Module):
  """x + SelfAttention(LN(x)) (causal); x + CrossAttention(LN(x), memory); x + MLP(LN(x)), with dropout on
  each residual branch (ESPnet's `DecoderLayer` with `normalize_before`)."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_impl: str | None = None
  layer_norm_epsilon: float = 1e-12
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, memory, memory_lengths, *, train: bool, lengths=None):
    """`x [batch, L, d]` (rows valid up to `lengths`) attending to `memory [batch, M, d_m]` valid up to
    `memory_lengths`."""
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    norm = lambda name: nn.LayerNorm(self.layer_norm_epsilon, name=name)
    self_attention = MultiHeadAttention(self.num_heads, causal=True, attention_impl=self.attention_impl,
                                        dtype=self.dtype, name="self_attention")
    x = x + drop(self_attention(norm("norm_self")(x), kv_lengths=lengths))
    cross_attention = MultiHeadAttention(self.num_heads, attention_impl=self.attention_impl, dtype=self.dtype,
                                         name="cross_attention")
    x = x + drop(cross_attention(norm("norm_cross")(x), memory=memory, kv_lengths=memory_lengths))
    y = MlpBlock(self.mlp_dim, self.dropout_rate, activation=self.activation, dtype=self.dtype, name="mlp")(
        norm("norm_mlp")(x), train=train)
    return x + drop(y)
