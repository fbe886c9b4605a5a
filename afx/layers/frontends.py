"""Learned front ends that turn waveforms into token sequences."""

import flax.linen as nn
import jax.numpy as jnp


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
