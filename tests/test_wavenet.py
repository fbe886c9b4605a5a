"""WaveNet: causality, receptive field, cached decoding against the full pass, paper sizes, a short fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from afx.models import parameter_count
from afx.models.wavenet import WaveNet

SMALL = dict(num_stacks=2, layers_per_stack=4, residual_channels=16, skip_channels=16, output_channels=16)


def random_codes(seed, batch, length):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, 256, dtype=jnp.int32)


@pytest.fixture(scope="module")
def small():
  """The small model, its variables and a jitted full pass."""
  model = WaveNet(**SMALL)
  variables = model.init(jax.random.key(0), random_codes(0, 1, 8), train=False)
  forward = jax.jit(lambda codes: model.apply(variables, codes, train=False))
  return model, variables, forward


def test_receptive_field_is_two_plus_the_dilations():
  assert WaveNet(**SMALL).receptive_field == 2 * (1 + 2 + 4 + 8) + 2 == 32
  assert WaveNet(num_stacks=1, layers_per_stack=10).receptive_field == 1023 + 2
  assert WaveNet(num_stacks=3, layers_per_stack=10).receptive_field == 3 * 1023 + 2


def test_logits_do_not_see_the_future(small):
  model, _, forward = small
  codes = random_codes(1, 2, 40)
  base = np.asarray(forward(codes))
  for t in (0, 7, 20, 38):
    changed = np.asarray(forward(codes.at[:, t + 1].set((codes[:, t + 1] + 1) % 256)))
    np.testing.assert_array_equal(changed[:, :t + 1], base[:, :t + 1])
    reached = slice(t + 1, t + 1 + model.receptive_field)
    assert np.abs(changed[:, reached] - base[:, reached]).max(axis=-1).min() > 1e-6


def test_a_code_reaches_exactly_receptive_field_logits(small):
  model, _, forward = small
  field = model.receptive_field
  codes = random_codes(2, 2, field + 12)
  base = np.asarray(forward(codes))
  for s in (0, 5, 11):
    changed = np.asarray(forward(codes.at[:, s].set((codes[:, s] + 128) % 256)))
    difference = np.abs(changed - base).max(axis=-1)  # [batch, n]
    assert (difference[:, s:s + field] > 1e-6).all()
    assert (difference[:, :s] == 0).all() and (difference[:, s + field:] == 0).all()


def test_cached_decoding_equals_the_full_pass(small):
  model, variables, forward = small
  codes = random_codes(3, 3, model.receptive_field + 9)

  @jax.jit
  def decode(codes):
    def step(cache, inputs):
      codes_t, position = inputs
      logits, cache = model.apply(variables, cache, codes_t, position, method=WaveNet.decode_step)
      return cache, logits
    positions = jnp.arange(codes.shape[1], dtype=jnp.int32)
    _, logits = jax.lax.scan(step, WaveNet(**SMALL).init_cache(codes.shape[0]), (codes.T, positions))
    return jnp.swapaxes(logits, 0, 1)

  cached = decode(codes)
  assert cached.dtype == jnp.float32
  np.testing.assert_allclose(cached, forward(codes), atol=1e-5, rtol=0)


def test_init_cache_needs_no_parameters():
  cache = WaveNet(**SMALL).init_cache(5)
  assert cache["input"].shape == (5, 1, 16)
  assert [q.shape for q in cache["layers"]] == [(5, d, 16) for d in (1, 2, 4, 8) * 2]
  assert all(not np.asarray(leaf).any() for leaf in jax.tree_util.tree_leaves(cache))


@pytest.mark.parametrize("num_stacks,expected", [(1, 1_086_848), (3, 3_063_168)])
def test_paper_sizes(num_stacks, expected):
  model = WaveNet(num_stacks=num_stacks, layers_per_stack=10)
  codes = jnp.zeros((2, 4096), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), codes, train=False))
  assert parameter_count(variables["params"]) == expected
  logits = jax.eval_shape(lambda v, c: model.apply(v, c, train=False), variables, codes)
  assert logits.shape == (2, 4096, 256) and logits.dtype == jnp.float32


def test_low_precision_keeps_float32_parameters_and_logits():
  model = WaveNet(**SMALL, dtype=jnp.bfloat16)
  codes = random_codes(4, 2, 12)
  variables = model.init(jax.random.key(0), codes, train=False)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables))
  logits = model.apply(variables, codes, train=False)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  assert model.init_cache(2)["input"].dtype == jnp.bfloat16


def test_a_short_fit_learns_a_periodic_sequence():
  model = WaveNet(num_stacks=1, layers_per_stack=4, residual_channels=16, skip_channels=16, output_channels=16)
  period = np.array([3, 200, 17, 90, 250, 64, 128, 5], np.int32)
  codes = jnp.asarray(np.stack([np.roll(np.tile(period, 8), -k) for k in range(4)]))  # [4, 64]
  params = model.init(jax.random.key(0), codes, train=False)["params"]
  optimizer = optax.adam(1e-2)

  def loss_fn(params):
    logits = model.apply({"params": params}, codes, train=True)[:, 7:-1]  # each sees a full period
    return optax.softmax_cross_entropy_with_integer_labels(logits, codes[:, 8:]).mean()

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  state = optimizer.init(params)
  first = float(loss_fn(params))
  for _ in range(60):
    params, state, loss = step(params, state)
  last = float(loss_fn(params))
  assert first > 4.0 and last < 0.25 * first, (first, last)
