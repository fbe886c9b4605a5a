"""SimCLR loss against the paper's formula (also sharded over 8 devices) and the spectrogram augmentations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy.ndimage import gaussian_filter

from afx.layers import augmentation
from afx.tasks import contrastive
from afx.train.sharding import make_mesh


def reference_nt_xent(z, temperature):
  """The SimCLR paper's loss, row by row in float64."""
  z = np.asarray(z, np.float64)
  n = len(z)
  unit = z / np.linalg.norm(z, axis=1, keepdims=True)
  sim = unit @ unit.T
  losses = []
  for i in range(n):
    partner = (i + n // 2) % n
    denominator = sum(np.exp(sim[i, k] / temperature) for k in range(n) if k != i)
    losses.append(-np.log(np.exp(sim[i, partner] / temperature) / denominator))
  return np.mean(losses)


def spectrograms(batch=4, frames=50, mels=12, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, frames, mels)), jnp.float32)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_the_paper_formula(temperature):
  z = np.random.default_rng(1).normal(size=(12, 5)).astype(np.float32)
  got = jax.jit(contrastive.nt_xent)(z, temperature)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, reference_nt_xent(z, temperature), rtol=1e-5, atol=1e-5)


def test_nt_xent_gradient_is_finite_despite_the_self_mask():
  z = np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)
  assert np.isfinite(jax.grad(contrastive.nt_xent)(z, 0.1)).all()


def test_sharded_nt_xent_takes_negatives_from_every_device():
  mesh = make_mesh()
  assert mesh.shape["data"] == 8
  z = np.random.default_rng(3).normal(size=(16, 6)).astype(np.float32)  # B = 8: 2 rows per device
  sharded = jax.device_put(z, NamedSharding(mesh, P("data", None)))
  assert sharded.sharding.shard_shape(z.shape) == (2, 6)
  loss = jax.jit(contrastive.nt_xent, static_argnums=1)
  single = loss(jax.device_put(z, jax.devices()[0]), 0.2)
  np.testing.assert_allclose(loss(sharded, 0.2), single, atol=1e-5)
  np.testing.assert_allclose(single, reference_nt_xent(z, 0.2), rtol=1e-5)

  local = jax.jit(jax.shard_map(lambda shard: jax.lax.pmean(contrastive.nt_xent(shard, 0.2), "data"), mesh=mesh,
                                in_specs=P("data", None), out_specs=P()))(sharded)
  assert abs(float(local) - float(single)) > 0.1


def test_contrastive_accuracy():
  views = np.eye(4, dtype=np.float32)
  assert jax.jit(contrastive.contrastive_accuracy)(np.concatenate([views, views])).all()
  swapped = np.concatenate([views, views[[1, 0, 2, 3]]])
  assert contrastive.contrastive_accuracy(swapped).tolist() == [False, False, True, True] * 2


def test_remove_patches_zeroes_whole_patches_up_to_max_fraction():
  x = spectrograms(batch=32, frames=50)  # 6 patches of 8 frames, 2 trailing frames
  out = jax.jit(functools.partial(augmentation.remove_patches, patch_frames=8, max_fraction=0.5))(
      jax.random.key(0), x)
  out, x = np.asarray(out), np.asarray(x)
  zeroed = (out == 0).all(axis=2)
  np.testing.assert_array_equal(out[~zeroed], x[~zeroed])
  patches = zeroed[:, :48].reshape(32, 6, 8)
  assert (patches.all(axis=2) == patches.any(axis=2)).all()
  assert not zeroed[:, 48:].any()
  fractions = patches.all(axis=2).mean(axis=1)
  assert fractions.max() <= 0.5 and fractions.max() > 0
  assert len({tuple(row) for row in patches.all(axis=2)}) > 5


def test_remove_patches_with_max_fraction_zero_is_identity():
  x = spectrograms()
  out = augmentation.remove_patches(jax.random.key(0), x, patch_frames=8, max_fraction=0.0)
  np.testing.assert_array_equal(out, x)


def test_blur_with_max_sigma_zero_is_identity():
  x = spectrograms()
  np.testing.assert_array_equal(jax.jit(functools.partial(augmentation.blur, max_sigma=0.0))(jax.random.key(0), x), x)
  np.testing.assert_array_equal(augmentation.gaussian_blur(x, 0.0, 0.0, radius=5), x)


def test_blur_spreads_an_impulse_preserving_its_sum():
  impulse = np.zeros((16, 40, 40), np.float32)
  impulse[:, 20, 20] = 1.0
  out = np.asarray(jax.jit(functools.partial(augmentation.blur, max_sigma=3.0))(jax.random.key(1), impulse))
  np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, atol=1e-5)
  blurred = out[:, 20, 20] < 0.9
  assert blurred.sum() > 8
  assert (out[blurred][:, 20, 21] > 0).all() and (out[blurred][:, 21, 20] > 0).all()
  assert len(np.unique(out[:, 20, 20])) == 16  # each example its own sigma


def test_gaussian_blur_matches_scipy():
  x = spectrograms(batch=3, frames=30, mels=20)
  sigma_time, sigma_freq = np.array([0.7, 1.5, 2.0]), np.array([1.2, 0.0, 2.0])
  out = jax.jit(functools.partial(augmentation.gaussian_blur, radius=8))(x, sigma_time, sigma_freq)
  for i in range(3):
    expected = gaussian_filter(np.asarray(x[i], np.float64), (sigma_time[i], sigma_freq[i]), mode="nearest", radius=8)
    np.testing.assert_allclose(out[i], expected, atol=1e-5)


def test_time_flip():
  x = spectrograms(batch=32)
  flip = jax.jit(augmentation.time_flip, static_argnames="probability")
  np.testing.assert_array_equal(flip(jax.random.key(0), x, probability=1.0), x[:, ::-1])
  np.testing.assert_array_equal(flip(jax.random.key(0), x, probability=0.0), x)
  flipped = (np.asarray(flip(jax.random.key(0), x, probability=0.5)) == np.asarray(x[:, ::-1])).all(axis=(1, 2))
  assert 0 < flipped.sum() < 32


def test_augment_under_jit_keeps_shape_and_varies_by_key_and_example():
  x = jnp.broadcast_to(spectrograms(batch=1, frames=64, mels=16), (8, 64, 16))
  augment = jax.jit(functools.partial(augmentation.augment, patch_frames=8, max_remove_fraction=0.5,
                                      max_blur_sigma=3.0, flip_probability=0.5))
  first, second = augment(jax.random.key(0), x), augment(jax.random.key(1), x)
  assert first.shape == x.shape and first.dtype == x.dtype
  assert not np.array_equal(first, second)
  assert len({np.asarray(view).tobytes() for view in first}) == 8
