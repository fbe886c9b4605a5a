"""Parameter-free pooling over time for `[..., time, features]` sequences."""

import jax.numpy as jnp


def _block_mean(x, block: int):
  """Each time step replaced by the mean of its block of `block` steps (a shorter last block too)."""
  steps = x.shape[-2]
  groups = -(-steps // block)
  pad = groups * block - steps
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
  sums = padded.reshape(*x.shape[:-2], groups, block, x.shape[-1]).sum(axis=-2)
  counts = jnp.minimum(block, steps - jnp.arange(groups) * block)[:, None]
  return jnp.repeat(sums / counts, block, axis=-2)[..., :steps, :]


def wavelet_pool(x):
  """Multi-rate ("wavelet") pooling of Verma & Berger: dyadic Haar-like averaging across features.

  Of the `D` features, the first half keep full time resolution; the next quarter are averaged
  over blocks of 2 steps, the next eighth over 4, and so on; the last feature is averaged over
  the whole sequence.  The time length is unchanged and there are no parameters.
  """
  features = x.shape[-1]
  chunks, start, width, block = [], 0, features // 2, 1
  while width >= 1 and start + width < features:
    chunk = x[..., start:start + width]
    chunks.append(chunk if block == 1 else _block_mean(chunk, block))
    start, width, block = start + width, width // 2, block * 2
  chunks.append(jnp.broadcast_to(x[..., start:].mean(axis=-2, keepdims=True), x[..., start:].shape))
  return jnp.concatenate(chunks, axis=-1)


def average_pool_time(x, factor: int = 2):
  """Average non-overlapping groups of `factor` time steps; a shorter last group is averaged alone."""
  steps = x.shape[-2]
  groups = -(-steps // factor)
  pooled = _block_mean(x, factor)
  return pooled[..., ::factor, :][..., :groups, :]
