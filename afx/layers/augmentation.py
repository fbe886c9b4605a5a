"""Augmentations of log-mel spectrograms for contrastive learning: patch removal, blur, time flip.

They act on normalised (about zero-mean) spectrograms `[batch, frames, mels]`, draw their random
parameters per example and keep the input's shape and dtype.  Shape arguments are keyword-only
and must be static under `jax.jit`.
"""

import jax
import jax.numpy as jnp

_TRUNCATE = 4.0  # Gaussian kernels reach int(4 sigma + 0.5) bins each way, as in scipy.ndimage


def remove_patches(rng, x, *, patch_frames: int, max_fraction: float):
  """Zero (the mean) a random subset of each example's `patch_frames`-frame patches along time.

  Each example removes `floor(u * num_patches)` of its `frames // patch_frames` whole patches,
  `u` uniform in `[0, max_fraction]`; trailing frames outside a whole patch are never removed.
  """
  batch, frames = x.shape[:2]
  num_patches = frames // patch_frames
  fraction_key, order_key = jax.random.split(rng)
  fractions = jax.random.uniform(fraction_key, (batch, 1), maxval=max_fraction)
  counts = jnp.floor(fractions * num_patches)
  ranks = jnp.argsort(jax.random.uniform(order_key, (batch, num_patches)), axis=-1).argsort(axis=-1)
  removed = jnp.repeat(ranks < counts, patch_frames, axis=1)
  removed = jnp.pad(removed, ((0, 0), (0, frames - num_patches * patch_frames)))
  return jnp.where(removed[:, :, None], jnp.zeros((), x.dtype), x)


def _gaussian_kernels(sigmas, radius: int):
  """[batch, 2 radius + 1] normalised Gaussian kernels; a delta where sigma is 0."""
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigmas = sigmas.astype(jnp.float32)[:, None]
  positive = sigmas > 0
  gaussian = jnp.exp(-0.5 * jnp.square(offsets / jnp.where(positive, sigmas, 1.0)))
  gaussian = gaussian / gaussian.sum(axis=-1, keepdims=True)
  return jnp.where(positive, gaussian, (offsets == 0).astype(jnp.float32))


def _blur_matrices(kernels, length: int):
  """`[batch, length, length]`: row i holds each example's kernel taps at the clamped positions
  i - radius … i + radius, so a product with it is a 'same' convolution with edge padding."""
  radius = (kernels.shape[-1] - 1) // 2
  sources = jnp.clip(jnp.arange(length)[:, None] + jnp.arange(-radius, radius + 1)[None, :], 0, length - 1)
  return jnp.einsum("ikj,bk->bij", jax.nn.one_hot(sources, length, dtype=jnp.float32), kernels)


def gaussian_blur(x, sigma_time, sigma_freq, *, radius: int):
  """Separable Gaussian blur of `x` (`[batch, frames, mels]`) with per-example sigmas in bins.

  Sigmas are scalars or `[batch]` arrays; kernels reach `radius` bins each way and borders repeat
  the edge value (scipy.ndimage's mode 'nearest').  A sigma of 0 leaves its axis unchanged.
  """
  # As two batched matrix products: summing shifted slices instead lets XLA fuse the time pass into
  # the frequency pass and recompute it for every tap (≈10× slower on CPU).
  batch, frames, mels = x.shape
  time_matrices = _blur_matrices(_gaussian_kernels(jnp.broadcast_to(sigma_time, (batch,)), radius), frames)
  freq_matrices = _blur_matrices(_gaussian_kernels(jnp.broadcast_to(sigma_freq, (batch,)), radius), mels)
  highest = jax.lax.Precision.HIGHEST
  out = jnp.einsum("bij,bjm->bim", time_matrices, x.astype(jnp.float32), precision=highest)
  out = jnp.einsum("bim,bnm->bin", out, freq_matrices, precision=highest)
  return out.astype(x.dtype)


def blur(rng, x, *, max_sigma: float):
  """Gaussian blur over time and frequency, one sigma per example uniform in `[0, max_sigma]` bins."""
  sigmas = jax.random.uniform(rng, (x.shape[0],), maxval=max_sigma)
  return gaussian_blur(x, sigmas, sigmas, radius=int(_TRUNCATE * max_sigma + 0.5))


def time_flip(rng, x, *, probability: float):
  """Reverse the time axis of each example with the given probability."""
  flips = jax.random.bernoulli(rng, probability, (x.shape[0],))
  return jnp.where(flips[:, None, None], x[:, ::-1], x)


def augment(rng, x, *, patch_frames: int, max_remove_fraction: float, max_blur_sigma: float,
            flip_probability: float):
  """`remove_patches`, `blur` and `time_flip` in that order, with independent keys."""
  remove_key, blur_key, flip_key = jax.random.split(rng, 3)
  x = remove_patches(remove_key, x, patch_frames=patch_frames, max_fraction=max_remove_fraction)
  x = blur(blur_key, x, max_sigma=max_blur_sigma)
  return time_flip(flip_key, x, probability=flip_probability)
