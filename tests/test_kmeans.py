"""k-means against brute-force NumPy and scikit-learn, on one device and over the 8-device mesh."""

import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans
from jax.sharding import NamedSharding, PartitionSpec as P
from sklearn.datasets import make_blobs

from afx.layers.kmeans import assign, fit, kmeans_plus_plus, lloyd_step
from afx.train.sharding import make_mesh


def blobs(num_points=2000, features=8, centres=12):
  points, _ = make_blobs(n_samples=num_points, n_features=features, centers=centres, random_state=0)
  return points.astype(np.float32)


def squared_distances(points, centroids):
  """`[n, k]` in float64, by differences."""
  points, centroids = np.asarray(points, np.float64), np.asarray(centroids, np.float64)
  return ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)


def test_fit_reaches_scikit_learn_inertia():
  points = blobs()
  reference = KMeans(n_clusters=12, n_init=10, random_state=0).fit(points).inertia_
  result = fit(points, 12, rng=jax.random.key(0))
  inertia = squared_distances(points, result["centroids"]).min(axis=1).sum()
  assert inertia <= 1.02 * reference
  np.testing.assert_allclose(float(result["inertia"]), inertia, rtol=1e-4)
  assert 1 <= int(result["iterations"]) <= 100


def test_assign_matches_brute_force_argmin():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(500, 16)).astype(np.float32)
  centroids = rng.normal(size=(37, 16)).astype(np.float32)
  codes, distances = jax.jit(assign)(points, centroids)
  expected = squared_distances(points, centroids)
  assert codes.dtype == np.int32 and distances.dtype == np.float32
  np.testing.assert_array_equal(codes, expected.argmin(axis=1))
  np.testing.assert_allclose(distances, expected.min(axis=1), rtol=1e-4, atol=1e-4)


def test_lloyd_step_reseeds_an_empty_cluster_at_the_farthest_point():
  points = blobs(num_points=600, centres=4)
  centroids = points[[0, 1, 2, 3, 4]].copy()
  centroids[2] = 1e3  # far from every point, so no point picks it
  codes, distances = assign(points, centroids)
  assert 2 not in np.asarray(codes)
  new_centroids, inertia = jax.jit(lloyd_step)(points, centroids)
  np.testing.assert_array_equal(new_centroids[2], points[np.argmax(distances)])
  assert np.bincount(np.asarray(assign(points, new_centroids)[0]), minlength=5).min() >= 1
  np.testing.assert_allclose(inertia, squared_distances(points, centroids).min(axis=1).sum(), rtol=1e-4)


def test_zero_weight_rows_change_neither_seeding_nor_lloyd():
  points = blobs(num_points=301)
  padded = np.concatenate([points, np.zeros((11, 8), np.float32)])
  weights = np.concatenate([np.ones(301, np.float32), np.zeros(11, np.float32)])
  seed = jax.jit(kmeans_plus_plus, static_argnames="num_clusters")
  seeds = seed(jax.random.key(3), points, 12)
  np.testing.assert_array_equal(seed(jax.random.key(3), padded, 12, weights), seeds)
  expected, expected_inertia = jax.jit(lloyd_step)(points, seeds)
  got, inertia = jax.jit(lloyd_step)(padded, seeds, weights)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(inertia, expected_inertia, rtol=1e-6)


@pytest.mark.parametrize("fsdp", [1, 2])
def test_sharded_fit_matches_unsharded(fsdp):
  points = blobs(num_points=2003)  # not a multiple of the 8 devices
  mesh = make_mesh(fsdp=fsdp)
  single = fit(points, 12, rng=jax.random.key(1))
  sharded = fit(points, 12, rng=jax.random.key(1), mesh=mesh)
  assert sharded["centroids"].sharding.is_fully_replicated
  np.testing.assert_allclose(sharded["centroids"], single["centroids"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(sharded["inertia"], single["inertia"], rtol=1e-4)
  assert int(sharded["iterations"]) == int(single["iterations"])


def test_sharded_lloyd_step_reseeds_like_unsharded():
  points = blobs(num_points=603, centres=4)
  centroids = points[:5].copy()
  centroids[2] = 1e3
  mesh = make_mesh()
  padded = jax.device_put(np.pad(points, ((0, 5), (0, 0))), NamedSharding(mesh, P(mesh.axis_names, None)))
  weights = jax.device_put(np.pad(np.ones(603, np.float32), (0, 5)), NamedSharding(mesh, P(mesh.axis_names)))
  expected, expected_inertia = jax.jit(lloyd_step)(points, centroids)
  got, inertia = jax.jit(lloyd_step)(padded, centroids, weights)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(inertia, expected_inertia, rtol=1e-5)


@pytest.mark.parametrize("candidates", [1, None])
def test_kmeans_plus_plus_returns_distinct_data_points(candidates):
  points = blobs(num_points=300)
  seed = jax.jit(kmeans_plus_plus, static_argnames=("num_clusters", "candidates"))
  centroids = seed(jax.random.key(2), points, num_clusters=16, candidates=candidates)
  distances = squared_distances(centroids, points)
  assert np.all(distances.min(axis=1) == 0)
  assert len(set(distances.argmin(axis=1))) == 16
