"""Multi-head self- and cross-attention whose core is `afx.kernels.attention.dot_product_attention`.

The same parameters serve training over whole sequences and autoregressive decoding one position
at a time from a key/value cache (`attention_cache`).  Cross-attention (an encoder-decoder's decoder
attending over the encoder output, `memory`) projects the memory once with `project_memory` and
reuses its keys and values at every decoding step.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.kernels.attention import dot_product_attention
from afx.layers.positional import rotary_embedding


def attention_cache(batch_size: int, length: int, kv_heads: int, head_dim: int, dtype=jnp.float32) -> dict:
  """An empty key/value cache: a ring of `length` slots, keys and values `[batch, kv_heads, length, head_dim]`;
  `position` is −1 for an empty slot."""
  zeros = jnp.zeros((batch_size, kv_heads, length, head_dim), dtype)
  return {"key": zeros, "value": zeros, "position": jnp.full((length,), -1, jnp.int32)}


def heads_major(x):
  """`[batch, seq, heads, head_dim]` → `[batch, heads, seq, head_dim]`, the layout of decoding's keys and values.

  A decoding step's query reads every cached key and value; stored sequence-major, XLA:CPU transposes the
  whole cache (and the projected memory) into this layout at every step, which took 80 % of a Transformer
  decoder's beam-search step."""
  return jnp.swapaxes(x, 1, 2)


def cached_attention(q, keys, values, visible):
  """Queries `q [batch, q_len, heads, head_dim]` over `keys`/`values` `[batch, kv_heads, slots, head_dim]`
  (`heads_major`), seeing the slots where `visible` (broadcastable to `[batch, slots]`) holds; a query that
  sees no slot gives 0.  Grouped-query heads share their kv head (query head i reads kv head i // groups)."""
  batch, q_len, heads, head_dim = q.shape
  kv_heads, slots = keys.shape[1], keys.shape[2]
  grouped = q.reshape(batch, q_len, kv_heads, heads // kv_heads, head_dim).astype(jnp.float32)
  scores = jnp.einsum("bqkgd,bksd->bkgqs", grouped, keys.astype(jnp.float32)) * head_dim ** -0.5
  visible = jnp.broadcast_to(visible, (batch, slots))[:, None, None, None, :]
  weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
  weights = jnp.where(jnp.any(visible, axis=-1, keepdims=True), weights, 0.0)
  out = jnp.einsum("bkgqs,bksd->bqkgd", weights, values.astype(jnp.float32))
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


class MultiHeadAttention(nn.Module):
  """Self-attention over `[batch, seq, features]`, or cross-attention over a `memory`, with a choosable
  attention implementation.

  Parameters: `query`, `key`, `value` (`[in, heads, head_dim]` kernels) and `out`; `key` and `value`
  project `x` in self-attention and the memory in cross-attention.

  Attributes:
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention); None means `num_heads`.
    causal, window: masking of self-attention, as in `dot_product_attention`.
    rotary: rotate queries and keys of self-attention by their positions (relative position information).
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
  def _dense(self, name: str, x, features, axis=-1):
    """Projection `name` of `x`, created on first use.  Flax allows one compact method, so `__call__` and
    `project_memory` both reach the parameters (`query`, `key`, `value`, `out`) through this one."""
    return nn.DenseGeneral(features, axis=axis, dtype=self.dtype, name=name)(x)

  def _head_dim(self, features: int | None) -> int:
    if features is None:  # cross-attention's memory alone does not tell the query width: the key kernel does
      if not self.has_variable("params", "key"):
        raise ValueError("project_memory needs the layer's parameters (initialise it on x and memory first) "
                         "or the query width, features=")
      return nn.unbox(self.variables["params"]["key"]["kernel"]).shape[-1]
    if features % self.num_heads:
      raise ValueError(f"features ({features}) must be divisible by num_heads ({self.num_heads})")
    return features // self.num_heads

  def _keys_values(self, source, head_dim: int):
    kv_heads = self.num_kv_heads or self.num_heads
    return (self._dense("key", source, (kv_heads, head_dim)), self._dense("value", source, (kv_heads, head_dim)))

  def project_memory(self, memory, *, features: int | None = None) -> dict:
    """Cross-attention keys and values of `memory` `[batch, m, features_m]`, to pass as `memory_kv`.

    Returns `{"key", "value"}`, each `[batch, kv_heads, m, head_dim]` (`heads_major`): an autoregressive
    decoder projects the encoder output once and reuses it at every step.  `features` (the width of `x`)
    is needed only before the parameters exist.
    """
    key, value = self._keys_values(memory, self._head_dim(features))
    return {"key": heads_major(key), "value": heads_major(value)}

  def __call__(self, x, *, positions=None, cache=None, memory=None, memory_kv=None, q_lengths=None,
               kv_lengths=None, return_weights: bool = False):
    """Whole sequence: `x` `[batch, seq, features]` → `[batch, seq, features]`.

    Cross-attention: with `memory` `[batch, m, features_m]`, keys and values come from the memory
    (causal, window and rotary apply to self-attention only); `memory_kv` is the same memory already
    projected by `project_memory` (e.g. `x` of one decoding step `[batch, 1, features]`), attended by
    `cached_attention` (no `return_weights`).

    Padding: `kv_lengths` int32 `[batch]` hides keys `j >= kv_lengths[b]` (memory positions, or
    self-attention positions); `q_lengths` int32 `[batch]` marks rows `i >= q_lengths[b]` of `x` as
    padding, whose attention output is 0 (so the layer gives the `out` bias there).  With
    `return_weights` it returns `(output, weights)`, the float32 probabilities `[batch, heads, seq, keys]`
    (dense implementations only, see `dot_product_attention`).

    Decoding (`cache` given): `x` is `[batch, 1, features]` at absolute position `positions`
    (`[1]` int32, may be traced); returns the output and the cache with this position written
    into slot `position % slots`.  Causal attention sees the cached positions ≤ this one (and
    within `window`).
    """
    features = x.shape[-1]
    head_dim = self._head_dim(features)
    if memory is not None and memory_kv is not None:
      raise ValueError("pass either memory or its projection memory_kv, not both")
    cross = memory is not None or memory_kv is not None
    if cache is not None and (cross or q_lengths is not None or kv_lengths is not None or return_weights):
      raise ValueError("cached decoding is self-attention over the cache: it takes no memory, lengths or "
                       "return_weights (cross-attention decodes with memory_kv and no cache)")
    if memory_kv is not None and return_weights:
      raise ValueError("return_weights needs memory, not its projection memory_kv")
    q = self._dense("query", x, (self.num_heads, head_dim))
    project = lambda y: self._dense("out", y, features, axis=(-2, -1))
    if memory_kv is not None:
      slots = memory_kv["key"].shape[2]
      visible = True if kv_lengths is None else jnp.arange(slots) < jnp.asarray(kv_lengths)[:, None]
      attended = cached_attention(q, memory_kv["key"], memory_kv["value"], visible)
      if q_lengths is not None:
        attended = jnp.where((jnp.arange(x.shape[1]) < jnp.asarray(q_lengths)[:, None])[..., None, None], attended, 0)
      return project(attended)
    if cross:
      k, v = self._keys_values(memory, head_dim)
      causal, window = False, None
    else:
      k, v = self._keys_values(x, head_dim)
      causal, window = self.causal, self.window
      if self.rotary:
        positions = jnp.arange(x.shape[1]) if positions is None else positions
        q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
    if cache is None:
      attended = dot_product_attention(q, k, v, causal=causal, window=window, implementation=self.attention_impl,
                                       q_lengths=q_lengths, kv_lengths=kv_lengths, return_weights=return_weights)
      if return_weights:
        attended, weights = attended
        return project(attended), weights
      return project(attended)
    position = positions[0]
    slot = position % cache["position"].shape[0]
    write = lambda buffer, new: jax.lax.dynamic_update_slice_in_dim(buffer, heads_major(new).astype(buffer.dtype),
                                                                     slot, axis=2)
    cache = {"key": write(cache["key"], k), "value": write(cache["value"], v),
             "position": cache["position"].at[slot].set(position)}
    visible = (cache["position"] >= 0) & (cache["position"] <= position)
    if self.window is not None:
      visible &= cache["position"] > position - self.window
    return project(cached_attention(q, cache["key"], cache["value"], visible)), cache
