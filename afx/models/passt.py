"""PaSST: the Patchout faSt Spectrogram Transformer (Koutini, Schlüter, Eghbal-zadeh & Widmer 2021).

AST's input and encoder with two changes that make training cheaper and regularise it:
  - separate frequency and time positional encodings, added to the patch grid (the time part is
    cropped for shorter inputs, so clips of any length up to the trained one need no resizing);
  - patchout after the positional encodings, in training only: structured (`time_patchout` whole
    time columns and `frequency_patchout` whole frequency rows dropped, the same for the whole
    batch so the sequence stays rectangular) and unstructured (each remaining patch dropped with
    probability `patchout_probability`, a fixed number per example).
Variants: PaSST-S (stride 10, overlapping patches), -N (`stride=16`: no overlap, fewer patches) and
-L (`num_layers` halved: the light model; from a 12-layer checkpoint keep every other block).
The CLS and distillation tokens carry their own positional embedding; the head reads their mean.
`params_from_timm` imports an ImageNet ViT/DeiT encoder as PaSST's reference code does: the separate
encodings are the means of the image's positional grid, fitted to the patch grid, over each axis.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.layers import TransformerBlock
from afx.models.ast import patch_grid, timm_encoder
from afx.audio import kaldi
from afx.audio.kaldi import AUDIOSET_MEAN, AUDIOSET_STD


def keep_random(rng, length: int, keep: int):
  """Sorted indices of `keep` of `length` positions, drawn without replacement."""
  return jnp.sort(jax.random.permutation(rng, length)[:keep])


class PaSST(nn.Module):
  """Attributes beyond AST's (see `afx.models.ast.AST`):
    stride: patch stride in both directions (10: PaSST-S, 16: PaSST-N).
    time_patchout, frequency_patchout: whole time columns / frequency rows dropped in training.
    patchout_probability: unstructured patchout, the fraction of the remaining patches dropped.
  """
  num_classes: int
  sample_rate: int = 16000
  num_mel_bins: int = 128
  input_frames: int | None = 1024
  positional_frames: int = 1024
  feature_mean: float = AUDIOSET_MEAN
  feature_std: float = AUDIOSET_STD
  patch_size: int = 16
  stride: int = 10
  time_patchout: int = 40
  frequency_patchout: int = 4
  patchout_probability: float = 0.0
  embed_dim: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  attention_impl: str | None = None

  def spectrogram(self, waveform):
    return kaldi.ast_features(waveform, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                              target_frames=self.input_frames, mean=self.feature_mean, std=self.feature_std)

  def positional_grid(self) -> tuple[int, int]:
    """(frequency patches, time patches) the positional encodings cover."""
    return patch_grid(self.positional_frames, self.num_mel_bins, self.patch_size, self.stride, self.stride)

  def patchout(self, grid, *, train: bool):
    """`grid [batch, freq, time, d]` → tokens `[batch, n, d]`, with patchout in training."""
    batch, freq, time, dim = grid.shape
    if train and self.time_patchout:
      keep = max(time - self.time_patchout, 1)
      grid = jnp.take(grid, keep_random(self.make_rng("patchout"), time, keep), axis=2)
    if train and self.frequency_patchout:
      keep = max(freq - self.frequency_patchout, 1)
      grid = jnp.take(grid, keep_random(self.make_rng("patchout"), freq, keep), axis=1)
    tokens = grid.reshape(batch, -1, dim)
    if train and self.patchout_probability:
      count = tokens.shape[1]
      keep = max(round(count * (1 - self.patchout_probability)), 1)
      rows = jax.vmap(lambda key: keep_random(key, count, keep))(jax.random.split(self.make_rng("patchout"), batch))
      tokens = jnp.take_along_axis(tokens, rows[..., None], axis=1)
    return tokens

  @nn.compact
  def from_spectrogram(self, spectrogram, *, train: bool = False):
    """Logits `[batch, num_classes]` of normalised filterbanks `[batch, frames, num_mel_bins]`."""
    batch, frames, _ = spectrogram.shape
    freq, time = patch_grid(frames, self.num_mel_bins, self.patch_size, self.stride, self.stride)
    _, grid_time = self.positional_grid()
    if time > grid_time:
      raise ValueError(f"{frames} frames give {time} time patches; the time encoding covers {grid_time} "
                       f"(positional_frames={self.positional_frames}): use shorter windows")
    image = jnp.swapaxes(spectrogram, 1, 2)[..., None]  # [batch, mel, frames, 1]
    grid = nn.Conv(self.embed_dim, (self.patch_size, self.patch_size), strides=(self.stride, self.stride),
                   padding="VALID", name="patch_embed")(image)
    init = nn.initializers.truncated_normal(0.02)
    frequency_encoding = self.param("frequency_positions", init, (freq, 1, self.embed_dim))
    time_encoding = self.param("time_positions", init, (1, grid_time, self.embed_dim))
    grid = grid + frequency_encoding + time_encoding[:, :time]
    tokens = self.patchout(grid, train=train)

    special = self.param("special_tokens", init, (2, self.embed_dim)) + self.param(
        "special_positions", init, (2, self.embed_dim))
    x = jnp.concatenate([jnp.broadcast_to(special, (batch, 2, self.embed_dim)), tokens], axis=1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for index in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, layer_norm_epsilon=self.layer_norm_epsilon,
                           approximate_gelu=False, attention_impl=self.attention_impl, name=f"block_{index}")(
                               x, train=train)
    x = nn.LayerNorm(self.layer_norm_epsilon, name="encoder_norm")(x)
    pooled = nn.LayerNorm(self.layer_norm_epsilon, name="head_norm")((x[:, 0] + x[:, 1]) / 2)
    return nn.Dense(self.num_classes, name="head")(pooled)

  def __call__(self, waveform, samples=None, *, train: bool = False):
    del samples  # PaSST, as its original, sees a short clip's zero-padded waveform
    return self.from_spectrogram(self.spectrogram(waveform), train=train)


def params_from_timm(state: dict, *, num_layers: int, num_heads: int, grid: tuple[int, int]) -> dict:
  """PaSST parameters from a timm ViT/DeiT state dict (see `afx.models.ast.timm_encoder`; `grid` is
  `PaSST.positional_grid()`): the frequency encoding is the fitted grid's mean over time, the time
  encoding its mean over frequency.  `head_norm` and `head` are left out, as `merge_params` keeps them."""
  encoder = timm_encoder(state, num_layers=num_layers, num_heads=num_heads, grid=grid)
  return {**encoder.params, "special_tokens": encoder.tokens, "special_positions": encoder.token_positions,
          "frequency_positions": encoder.patch_positions.mean(axis=1, keepdims=True),
          "time_positions": encoder.patch_positions.mean(axis=0, keepdims=True)}
