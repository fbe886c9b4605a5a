"""Pre-LayerNorm Transformer blocks: self-attention (`TransformerBlock`) and encoder-decoder (`DecoderBlock`)."""

import flax.linen as nn
import jax.numpy as jnp

from afx.errors import ConfigError
from afx.layers.attention import MultiHeadAttention, attention_cache

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
  each residual branch (ESPnet's `DecoderLayer` with `normalize_before`).

  `__call__` runs whole (teacher-forced) sequences; `decode_step` runs one position from a self-attention
  key/value cache (`empty_cache`) and the memory's cross-attention keys/values (`project_memory`), for inference.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_impl: str | None = None
  layer_norm_epsilon: float = 1e-12
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.norm_self = nn.LayerNorm(self.layer_norm_epsilon)
    self.self_attention = MultiHeadAttention(self.num_heads, causal=True, attention_impl=self.attention_impl,
                                             dtype=self.dtype)
    self.norm_cross = nn.LayerNorm(self.layer_norm_epsilon)
    self.cross_attention = MultiHeadAttention(self.num_heads, attention_impl=self.attention_impl, dtype=self.dtype)
    self.norm_mlp = nn.LayerNorm(self.layer_norm_epsilon)
    self.mlp = MlpBlock(self.mlp_dim, self.dropout_rate, activation=self.activation, dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)

  def __call__(self, x, memory, memory_lengths, *, train: bool, lengths=None):
    """`x [batch, L, d]` (rows valid up to `lengths`) attending to `memory [batch, M, d_m]` valid up to
    `memory_lengths`."""
    drop = lambda y: self.dropout(y, deterministic=not train)
    x = x + drop(self.self_attention(self.norm_self(x), kv_lengths=lengths))
    x = x + drop(self.cross_attention(self.norm_cross(x), memory=memory, kv_lengths=memory_lengths))
    return x + drop(self.mlp(self.norm_mlp(x), train=train))

  def empty_cache(self, batch: int, slots: int, features: int) -> dict:
    """Self-attention keys and values of no position yet: `{"key", "value"}`, each zeros
    `[batch, heads, slots, features / heads]` (`slots` positions can be decoded)."""
    cache = attention_cache(batch, slots, self.num_heads, features // self.num_heads, self.dtype)
    return {"key": cache["key"], "value": cache["value"]}

  def project_memory(self, memory) -> dict:
    """Cross-attention keys and values of `memory [batch, M, d_m]`, `{"key", "value"}` each
    `[batch, heads, M, head_dim]`: computed once, read by every `decode_step`."""
    return self.cross_attention.project_memory(memory)

  def decode_step(self, x, cache, memory_kv, memory_lengths, step):
    """One position: `x [n, 1, d]` at position `step` (int32 scalar, may be traced), `cache` holding the
    self-attention keys/values of positions 0..step − 1 in its first slots (`empty_cache` at step 0),
    `memory_kv` from `project_memory` of `batch` memories valid up to `memory_lengths [batch]`, where
    n = batch × hypotheses and each memory's hypotheses are consecutive rows of x (beam search reads one
    copy of each utterance's memory).  Returns `(y [n, 1, d], cache)` with this position's keys/values
    written into slot `step`; y is `__call__`'s row `step` (no dropout)."""
    slots = jnp.arange(cache["key"].shape[2])
    # MultiHeadAttention's cache marks filled slots by position (−1: empty); slot j holds position j.
    y, cache = self.self_attention(self.norm_self(x), positions=jnp.reshape(step, (1,)),
                                   cache={**cache, "position": jnp.where(slots < step, slots, -1)})
    x = x + y
    # Each memory's hypotheses are its queries: [batch, hypotheses, d].
    queries = self.norm_cross(x).reshape(memory_lengths.shape[0], -1, x.shape[-1])
    x = x + self.cross_attention(queries, memory_kv=memory_kv, kv_lengths=memory_lengths).reshape(x.shape)
    return x + self.mlp(self.norm_mlp(x), train=False), {"key": cache["key"], "value": cache["value"]}
