"""Representations of log-mel patches (Verma & Smith 2020): a patch autoencoder whose bottlenecks
k-means turns into codes, and the SimCLR encoder it is compared with.

Both see the same input: a log-mel spectrogram in dB (floored 80 dB below each window's peak),
standardised per window, cut into patches `patch_frames` frames long that span every mel band.
The code language model over the patch codes is `afx.models.RawTransformer`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.layers import TransformerBlock, augmentation
from afx.layers.frontends import log_mel_frames, spectrogram_patches, standardize_per_example


class _Spectrogram(nn.Module):
  """Shared input fields and the standardised log-mel frames `[batch, frames, mels]`."""
  sample_rate: int = 16000
  n_mels: int = 128
  window_seconds: float = 0.025
  hop_seconds: float = 0.010
  patch_frames: int = 4

  def frames(self, waveform):
    return standardize_per_example(log_mel_frames(
        waveform, sample_rate=self.sample_rate, n_mels=self.n_mels, window_seconds=self.window_seconds,
        hop_seconds=self.hop_seconds))

  def patches(self, waveform):
    """`[batch, num_patches, patch_frames · n_mels]`."""
    return spectrogram_patches(self.frames(waveform), self.patch_frames)


def _mlp(widths, name: str) -> nn.Sequential:
  """Dense layers of `widths` with ReLU between them (none after the last)."""
  layers = []
  for index, width in enumerate(widths):
    layers.append(nn.Dense(width, name=f"{name}_{index}"))
    if index < len(widths) - 1:
      layers.append(nn.relu)
  return nn.Sequential(layers)


class PatchAutoencoder(_Spectrogram):
  """Fully connected autoencoder of single patches: 3 encoder and 3 decoder layers, MSE target.

  Attributes:
    hidden: the widths of the two hidden encoder layers (mirrored in the decoder).
    bottleneck: the embedding k-means clusters (64 or 128 in the paper).
  """
  hidden: tuple[int, ...] = (1024, 512)
  bottleneck: int = 128

  def setup(self):
    patch_dim = self.patch_frames * self.n_mels
    self.encoder = _mlp((*self.hidden, self.bottleneck), "encoder")
    self.decoder = _mlp((*reversed(self.hidden), patch_dim), "decoder")

  def encode(self, waveform):
    """Bottleneck vectors `[batch, num_patches, bottleneck]`."""
    return self.encoder(self.patches(waveform))

  def __call__(self, waveform, *, train: bool = False):
    del train
    patches = self.patches(waveform)
    return {"patches": patches, "reconstruction": self.decoder(self.encoder(patches))}


class PatchSimCLR(_Spectrogram):
  """SimCLR on patches: patch embedding → non-causal Transformer → mean = the representation;
  an MLP projection head feeds NT-Xent during training.

  The model draws two augmented views of each window (patch removal, blur, time flip; rng stream
  "augment" in training) and returns their projections `[2·batch, projection_dim]`, view-major.
  """
  embed_dim: int = 128
  num_layers: int = 3
  num_heads: int = 4
  mlp_dim: int = 512
  projection_dim: int = 128
  max_remove_fraction: float = 0.5
  max_blur_sigma: float = 2.0
  flip_probability: float = 0.5
  dropout_rate: float = 0.0
  attention_impl: str | None = None

  def setup(self):
    self.patch_embed = nn.Dense(self.embed_dim)
    self.blocks = [TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, rotary=True,
                                    attention_impl=self.attention_impl) for _ in range(self.num_layers)]
    self.norm = nn.LayerNorm()
    self.projection = _mlp((self.embed_dim, self.projection_dim), "projection")

  def encode_frames(self, frames, *, train: bool = False):
    x = self.patch_embed(spectrogram_patches(frames, self.patch_frames))
    for block in self.blocks:
      x = block(x, train=train)
    return self.norm(x).mean(axis=1)

  def embed(self, waveform):
    """The representation a linear probe reads: `[batch, embed_dim]` of the unaugmented window."""
    return self.encode_frames(self.frames(waveform))

  def __call__(self, waveform, *, train: bool = False):
    """Projections of two augmented views `[2·batch, projection_dim]`; outside training the views
    are drawn with a fixed key, so evaluation is repeatable."""
    frames = self.frames(waveform)
    rng = self.make_rng("augment") if train else jax.random.key(0)
    views = [augmentation.augment(key, frames, patch_frames=self.patch_frames,
                                  max_remove_fraction=self.max_remove_fraction, max_blur_sigma=self.max_blur_sigma,
                                  flip_probability=self.flip_probability) for key in jax.random.split(rng)]
    return self.projection(self.encode_frames(jnp.concatenate(views), train=train))
