"""SimCLR's NT-Xent loss (Chen et al. 2020).

A batch of `B` examples is augmented twice (`afx.layers.augmentation`) and encoded into `z` of
shape `[2B, d]`, rows `i` and `i + B` being the two views of example `i`.
"""

import jax
import jax.numpy as jnp

_MASKED_LOGIT = -1e9  # finite, so a row's softmax never sees inf - inf


def _cosine_similarities(z):
  """[n, n] float32 cosine similarities of the rows of `z`."""
  z = z.astype(jnp.float32)
  z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), 1e-12))
  return jnp.matmul(z, z.T, precision=jax.lax.Precision.HIGHEST)


def _partners(n: int):
  if n % 2:
    raise ValueError(f"z needs an even number of rows (two views per example), got {n}")
  return (jnp.arange(n) + n // 2) % n


def _masked_logits(z, temperature):
  n = z.shape[0]
  logits = _cosine_similarities(z) / temperature
  return jnp.where(jnp.eye(n, dtype=bool), _MASKED_LOGIT, logits)


def nt_xent(z, temperature):
  """Mean NT-Xent loss over the `2B` rows of `z` (`[2B, d]`, rows `i` and `i + B` are partners).

  Each row is scored by cross-entropy against its partner over all other `2B - 1` rows, with
  cosine similarities divided by `temperature`.  Computed in float32.  Under `jax.jit` with `z`
  sharded over a mesh's batch axis, the similarity matrix still spans the global batch, so every
  row's negatives come from all devices.
  """
  partners = _partners(z.shape[0])
  log_probs = jax.nn.log_softmax(_masked_logits(z, temperature), axis=-1)
  return -jnp.take_along_axis(log_probs, partners[:, None], axis=-1).mean()


def contrastive_accuracy(z):
  """[2B] bool: whether each row's most similar other row is its partner."""
  partners = _partners(z.shape[0])
  return jnp.argmax(_masked_logits(z, 1.0), axis=-1) == partners
