"""Sample-level Transformer language model on raw audio (Verma & Chafe 2021), optionally conditioned
on a wider past through a CNN summary.

Input: quantised samples (256 classes), embedded; causal pre-LayerNorm Transformer blocks through
`afx.kernels.attention` with rotary positions; a 256-way head predicting the next sample.  The same
module is the code language model of Verma & Smith 2020 over k-means patch codes (`num_classes` = k),
whose `hidden` states a linear probe reads.

Conditioned variant (`past_samples > 0`): the input is `past_samples + n` codes; a strided CNN
summarises the first `past_samples` (250 ms by default in the experiments) into one latent added to
every one of the last `n` positions' embeddings, so each prediction sees the wider past only as
that summary.  The summary's last Dense starts at zero, so at initialisation the conditioned model
computes exactly what the unconditioned one with the same other parameters does.  Generation then
proceeds in blocks of `context_samples`: each block starts a fresh attention context conditioned on
the `past_samples` before it, exactly as in training.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.layers.attention import attention_cache
from afx.layers.transformer import TransformerBlock


class PastEncoder(nn.Module):
  """Codes `[batch, past]` → latent `[batch, features]`: embedding, strided convs, mean over time,
  LayerNorm, and a zero-initialised Dense (so the latent is 0 until training moves it)."""
  num_classes: int
  features: int
  channels: int = 128
  num_layers: int = 6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, codes):
    x = nn.Embed(self.num_classes, self.channels, name="embed")(codes).astype(self.dtype)
    for _ in range(self.num_layers):
      x = nn.gelu(nn.Conv(self.channels, (4,), strides=(2,), padding="VALID", dtype=self.dtype)(x))
    # Zero-initialised (kernel and bias), like a residual branch: a fresh conditioned model predicts
    # exactly as the unconditioned one, and the summary's contribution grows from zero in training
    # instead of starting as noise added to every embedding.
    return nn.Dense(self.features, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros)(nn.LayerNorm()(x.mean(axis=1)))


class RawTransformer(nn.Module):
  """Next-sample Transformer.

  Attributes:
    context_samples: the training context; attention sees at most this many samples (itself
      included) unless `window` is set, which also lets a decoding cache slide past it.
    window: attention window in samples; None means `context_samples`.
    past_samples: >0 for the conditioned variant (see the module docstring).
    condition_layers, condition_channels: the conditioning CNN's depth and width.
  """
  num_classes: int = 256
  context_samples: int = 1600
  num_layers: int = 3
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: int = 512
  window: int | None = None
  past_samples: int = 0
  condition_layers: int = 6
  condition_channels: int = 128
  dropout_rate: float = 0.0
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  @property
  def attention_window(self) -> int:
    return self.window or self.context_samples

  def setup(self):
    self.embed = nn.Embed(self.num_classes, self.embed_dim)
    self.blocks = [TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, causal=True,
                                    window=self.attention_window, rotary=True,
                                    attention_impl=self.attention_impl, dtype=self.dtype)
                   for _ in range(self.num_layers)]
    self.norm = nn.LayerNorm()
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)
    if self.past_samples:
      min_past = 4 * 2 ** self.condition_layers
      if self.past_samples < min_past:
        raise ValueError(f"past_samples={self.past_samples} is shorter than the conditioning CNN's "
                         f"{self.condition_layers} strided layers need ({min_past})")
      self.past_encoder = PastEncoder(self.num_classes, self.embed_dim, self.condition_channels,
                                      self.condition_layers, dtype=self.dtype)

  def hidden(self, codes, *, train: bool = False):
    """codes int32 `[batch, past_samples + n]` → the normalised last-layer states `[batch, n, embed_dim]`."""
    past, codes = codes[:, :self.past_samples], codes[:, self.past_samples:]
    x = self.embed(codes).astype(self.dtype)
    if self.past_samples:
      x = x + self.past_encoder(past)[:, None, :]
    for block in self.blocks:
      x = block(x, train=train)
    return self.norm(x)

  def __call__(self, codes, *, train: bool):
    """codes int32 `[batch, past_samples + n]` → float32 logits `[batch, n, classes]`.

    `logits[:, i]` is the distribution of `codes[:, past_samples + i + 1]`.
    """
    return self.head(self.hidden(codes, train=train)).astype(jnp.float32)

  def init_cache(self, batch_size: int) -> dict:
    """Empty decoding state; a pure function of the attributes (callable on an unbound module)."""
    head_dim = self.embed_dim // self.num_heads
    cache = {"layers": [attention_cache(batch_size, self.attention_window, self.num_heads, head_dim, self.dtype)
                        for _ in range(self.num_layers)]}
    if self.past_samples:
      cache["history"] = jnp.full((batch_size, self.past_samples), self.num_classes // 2, jnp.int32)
      cache["latent"] = jnp.zeros((batch_size, self.embed_dim), self.dtype)
    return cache

  def decode_step(self, cache: dict, codes_t, position):
    """codes_t int32 `[batch]` at absolute `position` → (logits `[batch, classes]` of the next sample, cache).

    Unconditioned: the logits equal `__call__` over the whole sequence so far with attention
    limited to `attention_window` samples.  Conditioned: at every multiple of `context_samples` a
    block starts: the attention cache is emptied and the latent recomputed from the
    `past_samples` codes before it (silence codes before the start of the sequence).
    """
    position = jnp.asarray(position, jnp.int32)
    layers = cache["layers"]
    cache = dict(cache)
    if self.past_samples:
      starts_block = position % self.context_samples == 0
      layers = [{**layer, "position": jnp.where(starts_block, -1, layer["position"])} for layer in layers]
      # history slot j holds the code at the latest position ≡ j (mod past_samples); it is put in
      # time order only when a block starts, not at every step
      def new_latent():
        ordered = jnp.roll(cache["history"], -(position % self.past_samples), axis=1)
        return self.past_encoder(ordered).astype(cache["latent"].dtype)
      cache["latent"] = jax.lax.cond(starts_block, new_latent, lambda: cache["latent"])
      cache["history"] = cache["history"].at[:, position % self.past_samples].set(codes_t)
    x = self.embed(codes_t[:, None]).astype(self.dtype)
    if self.past_samples:
      x = x + cache["latent"][:, None, :]
    new_layers = []
    for block, layer in zip(self.blocks, layers):
      x, layer = block(x, train=False, positions=position[None], cache=layer)
      new_layers.append(layer)
    cache["layers"] = new_layers
    return self.head(self.norm(x))[:, 0].astype(jnp.float32), cache
