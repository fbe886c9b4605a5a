"""Front ends that turn waveforms into frame or token sequences."""

import flax.linen as nn
import jax.numpy as jnp

from afx.audio import features


class PatchFrontEnd(nn.Module):
  """Cut `[batch, samples]` into non-overlapping patches and embed each with Dense → ReLU → Dense.

  A trailing partial patch is dropped, as a 1 s clip at 16 kHz gives exactly 40 patches of 25 ms.
  """
  patch_size: int = 400
  hidden: int = 2048
  features: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, waveform):
    num_patches = waveform.shape[-1] // self.patch_size
    if num_patches == 0:
      raise ValueError(f"input of {waveform.shape[-1]} samples is shorter than one patch ({self.patch_size})")
    patches = waveform[..., :num_patches * self.patch_size].reshape(
        *waveform.shape[:-1], num_patches, self.patch_size)
    x = nn.Dense(self.hidden, dtype=self.dtype, name="filters")(patches)
    x = nn.relu(x)
    return nn.Dense(self.features, dtype=self.dtype, name="embed")(x)


def log_mel_frames(waveform, *, sample_rate: int, n_mels: int, window_seconds: float, hop_seconds: float,
                   top_db: float | None = 80.0):
  """Log-mel spectrogram in dB as `[batch, frames, mels]`; the FFT size is the window rounded up to a power of 2.

  `top_db` floors each example at its peak minus that many dB (None: no floor).
  """
  win_length = round(window_seconds * sample_rate)
  n_fft = 1 << (win_length - 1).bit_length()
  mel = features.log_mel_spectrogram(
      waveform, sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
      hop_length=round(hop_seconds * sample_rate), n_mels=n_mels, top_db=top_db)
  return jnp.swapaxes(mel, -1, -2)


def standardize_per_example(x, epsilon: float = 1e-5):
  """Zero mean and unit variance over all axes but the first (the batch)."""
  axes = tuple(range(1, x.ndim))
  mean = x.mean(axis=axes, keepdims=True)
  return (x - mean) / jnp.sqrt(x.var(axis=axes, keepdims=True) + epsilon)


def spectrogram_patches(frames, patch_frames: int):
  """`[batch, frames, mels]` → `[batch, frames // patch_frames, patch_frames · mels]`: short in time, every mel band.

  Trailing frames that do not fill a patch are dropped.
  """
  batch, num_frames, mels = frames.shape
  num_patches = num_frames // patch_frames
  if num_patches == 0:
    raise ValueError(f"{num_frames} frames are fewer than one patch of {patch_frames}")
  return frames[:, :num_patches * patch_frames].reshape(batch, num_patches, patch_frames * mels)
