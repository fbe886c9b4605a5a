"""The VGG-like log-mel CNN baseline of FSD50K (Fonseca et al. 2022), 0.27 M parameters at 200 classes.

Reconstructed from the paper's description (the official code was not released): log-mel input
(96 bands, 30 ms windows, 10 ms hop) → 3×conv32 → pool → 2×conv64 → pool → conv128 → pool, each conv
3×3 + BatchNorm + ReLU → global max and mean pooling, concatenated → Dense(256) → ReLU → Dense.
The paper resamples to 22.05 kHz; afx keeps the dataset's rate (a choice, stated in the config).
"""

import flax.linen as nn
import jax.numpy as jnp

from afx.layers.frontends import log_mel_frames


class VGGLike(nn.Module):
  num_classes: int
  sample_rate: int = 16000
  n_mels: int = 96
  window_seconds: float = 0.030
  hop_seconds: float = 0.010
  channels: tuple[int, ...] = (32, 32, 32, 64, 64, 128)
  pool_after: tuple[int, ...] = (2, 4, 5)
  hidden: int = 256
  dropout_rate: float = 0.0

  def log_mel(self, waveform):
    return log_mel_frames(waveform, sample_rate=self.sample_rate, n_mels=self.n_mels,
                          window_seconds=self.window_seconds, hop_seconds=self.hop_seconds, top_db=None)

  @nn.compact
  def __call__(self, waveform, samples=None, *, train: bool = False):
    del samples  # the model sees a short clip's zero-padded waveform
    x = self.log_mel(waveform)[..., None]
    # Normalise each mel band with batch statistics: dB values need no hand-set offset or scale.
    x = nn.BatchNorm(use_running_average=not train, axis=-2, name="input_norm")(x)
    for index, channels in enumerate(self.channels):
      x = nn.Conv(channels, (3, 3), use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train)(x)
      x = nn.relu(x)
      if index in self.pool_after:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="head")(x)
