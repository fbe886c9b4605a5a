"""Position encodings: rotary embeddings (Su et al. 2021) and the sinusoids of Vaswani et al. 2017.

Rotary embeddings make attention scores depend only on the offset.  Relative offsets are what lets
a key/value cache slide past the training length: the cached keys keep their absolute rotation and
a query at any position sees the same scores it would at that offset during training.
"""

import jax.numpy as jnp


def sinusoidal_encoding(positions, features: int, *, base: float = 10_000.0):
  """`[..., features]` encodings of `positions [...]`: sin on the even dimensions, cos on the odd ones,
  at wavelengths `base^(2i/features)` (ESPnet's `PositionalEncoding` table)."""
  if features % 2:
    raise ValueError(f"sinusoidal encodings need an even number of features, got {features}")
  inverse_frequency = base ** (-jnp.arange(0, features, 2, dtype=jnp.float32) / features)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * inverse_frequency
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], features)


def rotary_embedding(x, positions, *, base: float = 10_000.0):
  """`x` `[batch, seq, heads, head_dim]` rotated pairwise by angles `positions · base^(−2i/head_dim)`.

  Dimension `i` is paired with `i + head_dim/2` (the "rotate half" layout).  `positions` is `[seq]`
  or `[batch, seq]`, integers or floats.  Returns `x`'s dtype.
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
  half = head_dim // 2
  inverse_frequency = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  positions = jnp.asarray(positions, jnp.float32)
  angles = positions[..., None] * inverse_frequency  # [(batch,) seq, half]
  if angles.ndim == 2:
    angles = angles[None]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)
