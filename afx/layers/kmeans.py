"""K-means in JAX: k-means++ seeding and Lloyd iterations, on one device or over a mesh.

Used to turn autoencoder bottleneck vectors into discrete codes.  Points are `[n, d]` float32;
the optional per-point `weights` `[n]` scale each point's share of every sum, count and sampling
mass, so a weight of 0 (a row padded to fill a mesh) never counts.  Assignment materialises the
`[n, k]` distance matrix.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

_HIGHEST = jax.lax.Precision.HIGHEST


def _as_weights(points, weights):
  if weights is None:
    return jnp.ones(points.shape[0], jnp.float32)
  return jnp.asarray(weights, jnp.float32)


def _sample_indices(rng, mass, count: int):
  """`count` indices drawn with replacement, with probability proportional to `mass`
  (non-negative, positive sum).

  Inverting the cumulative mass with uniform numbers makes a draw depend only on the rows up to
  the chosen one, so zero-weight rows appended at the end never change it.
  """
  cumulative = jnp.cumsum(mass)
  targets = jax.random.uniform(rng, (count,), jnp.float32) * cumulative[-1]
  return jnp.argmax(cumulative > targets[:, None], axis=-1)


def _rows(points, indices):
  """`points[indices]`, as a one-hot product: XLA all-gathers a row-sharded `points` for a dynamic
  gather but only all-reduces the partial sums of a product.  Exact, as every sum has one term.
  """
  selection = (indices[:, None] == jnp.arange(points.shape[0])).astype(jnp.float32)
  return jnp.dot(selection, points, precision=_HIGHEST)


def _squared_distances(points, centres):
  """`[m, n]` squared distances of every point to each of `centres` `[m, d]`, by differences."""
  return jnp.sum(jnp.square(points[None] - centres[:, None]), axis=-1)


def kmeans_plus_plus(rng, points, num_clusters: int, weights=None, *, candidates: int | None = None):
  """k-means++ seeds `[num_clusters, d]`.

  The first centre is drawn uniformly over the (weighted) points.  Each next one is the best, by
  resulting inertia, of `candidates` points drawn with probability proportional to weight times
  squared distance to the nearest centre so far: "greedy" k-means++, by default with
  `2 + int(ln k)` candidates as in scikit-learn; `candidates=1` is plain k-means++, which often
  puts two seeds in one of many well-separated clusters.  Jittable with `num_clusters` and
  `candidates` static.
  """
  points = jnp.asarray(points, jnp.float32)
  weights = _as_weights(points, weights)
  if candidates is None:
    candidates = 2 + int(np.log(num_clusters))
  first = _rows(points, _sample_indices(jax.random.fold_in(rng, 0), weights, 1))

  def add_centre(i, carry):
    centroids, nearest = carry
    mass = weights * nearest
    # Fewer distinct points than clusters: every point already is a centre, so repeat one.
    mass = jnp.where(jnp.sum(mass) > 0, mass, weights)
    drawn = _rows(points, _sample_indices(jax.random.fold_in(rng, i), mass, candidates))
    nearest_with = jnp.minimum(nearest, _squared_distances(points, drawn))
    best = jnp.argmin(jnp.sum(weights * nearest_with, axis=-1))
    return centroids.at[i].set(drawn[best]), nearest_with[best]

  centroids = jnp.zeros((num_clusters, points.shape[1]), jnp.float32).at[0].set(first[0])
  centroids, _ = jax.lax.fori_loop(1, num_clusters, add_centre,
                                   (centroids, _squared_distances(points, first)[0]))
  return centroids


def assign(points, centroids):
  """Nearest centroid of every point: `(codes int32 [n], squared_distances float32 [n])`."""
  points = jnp.asarray(points, jnp.float32)
  centroids = jnp.asarray(centroids, jnp.float32)
  cross = jnp.dot(points, centroids.T, precision=_HIGHEST)
  distances = (jnp.sum(jnp.square(points), axis=-1)[:, None] - 2 * cross
               + jnp.sum(jnp.square(centroids), axis=-1))
  codes = jnp.argmin(distances, axis=-1).astype(jnp.int32)
  return codes, jnp.maximum(jnp.min(distances, axis=-1), 0.0)


def lloyd_step(points, centroids, weights=None):
  """One Lloyd iteration: `(new_centroids [k, d], inertia)`.

  Each centroid moves to the weighted mean of its points.  Empty clusters are re-seeded, in index
  order, to the points farthest from their current centroid (distinct points, the farthest
  first), so no cluster stays empty.  `inertia` is the weighted sum of squared distances to the
  centroids passed in.
  """
  points = jnp.asarray(points, jnp.float32)
  weights = _as_weights(points, weights)
  num_clusters = centroids.shape[0]
  codes, distances = assign(points, centroids)
  members = jax.nn.one_hot(codes, num_clusters, dtype=jnp.float32) * weights[:, None]
  sums = jnp.dot(members.T, points, precision=_HIGHEST)
  counts = jnp.sum(members, axis=0)
  empty = counts <= 0
  means = sums / jnp.where(empty, 1.0, counts)[:, None]

  def reseed(means):
    num_candidates = min(num_clusters, points.shape[0])
    _, farthest = jax.lax.top_k(jnp.where(weights > 0, distances, -1.0), num_candidates)
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, num_candidates - 1)
    return jnp.where(empty[:, None], _rows(points, farthest[rank]), means)

  new_centroids = jax.lax.cond(jnp.any(empty), reseed, lambda means: means, means)
  return new_centroids, jnp.sum(weights * distances)


@functools.partial(jax.jit, static_argnames=("num_clusters", "iterations"))
def _fit(rng, points, weights, tolerance, *, num_clusters: int, iterations: int):
  centroids = kmeans_plus_plus(rng, points, num_clusters, weights)

  def step(state):
    centroids, last_inertia, done, _ = state
    centroids, inertia = lloyd_step(points, centroids, weights)
    converged = (done > 0) & (last_inertia - inertia <= tolerance * last_inertia)
    return centroids, inertia, done + 1, converged

  def keep_going(state):
    _, _, done, converged = state
    return (done < iterations) & ~converged

  state = (centroids, jnp.float32(jnp.inf), jnp.int32(0), jnp.bool_(False))
  centroids, _, done, _ = jax.lax.while_loop(keep_going, step, state)
  _, distances = assign(points, centroids)
  return centroids, jnp.sum(weights * distances), done


def fit(points, num_clusters: int, *, rng, iterations: int = 100, tolerance: float = 1e-4, mesh=None):
  """k-means++ seeds, then Lloyd steps until the relative inertia improvement of a step is at
  most `tolerance` or `iterations` steps are done.

  Returns `{"centroids": [k, d], "inertia": scalar, "iterations": scalar}` as arrays; `inertia`
  is that of the returned centroids.  With a `mesh`, the points are zero-padded to a multiple of
  the device count (padding has weight 0) and split over every mesh axis, as
  `afx.train.sharding.batch_sharding` splits a batch; the whole fit is one jitted program in
  which each device assigns its rows and XLA all-reduces the per-cluster sums, counts and
  inertia.  Centroids are replicated, and the result matches the unsharded fit up to float
  rounding.
  """
  num_points = np.shape(points)[0]
  if not 1 <= num_clusters <= num_points:
    raise ValueError(f"num_clusters={num_clusters} must be between 1 and the {num_points} points")
  if mesh is None:
    points = jnp.asarray(points, jnp.float32)
    weights = jnp.ones(num_points, jnp.float32)
  else:
    pad = -num_points % mesh.size
    axes = tuple(mesh.axis_names)
    points = jax.device_put(np.pad(np.asarray(points, np.float32), ((0, pad), (0, 0))),
                            NamedSharding(mesh, P(axes, None)))
    weights = jax.device_put(np.pad(np.ones(num_points, np.float32), (0, pad)),
                             NamedSharding(mesh, P(axes)))
  centroids, inertia, done = _fit(rng, points, weights, jnp.float32(tolerance),
                                  num_clusters=num_clusters, iterations=iterations)
  return {"centroids": centroids, "inertia": inertia, "iterations": done}
