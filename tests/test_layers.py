"""Layers against direct, loop-based NumPy statements of what they should compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afx.kernels.attention import dot_product_attention
from afx.layers import MultiHeadAttention, average_pool_time, wavelet_pool


def wavelet_pool_loops(x: np.ndarray) -> np.ndarray:
  """Feature f in the chunk of level k (width D/2^(k+1)) is averaged over time blocks of 2^k; the
  last feature over the whole sequence."""
  steps, features = x.shape
  out = x.copy()
  start, width, block = 0, features // 2, 1
  while width >= 1 and start + width < features:
    for f in range(start, start + width):
      for b in range(0, steps, block):
        out[b:b + block, f] = x[b:b + block, f].mean()
    start, width, block = start + width, width // 2, block * 2
  for f in range(start, features):
    out[:, f] = x[:, f].mean()
  return out


@pytest.mark.parametrize("steps,features", [(40, 64), (17, 64), (8, 16), (5, 6)])
def test_wavelet_pool_matches_blockwise_means(steps, features):
  x = np.random.default_rng(0).normal(size=(3, steps, features)).astype(np.float32)
  got = np.asarray(jax.jit(wavelet_pool)(x))
  for example in range(3):
    np.testing.assert_allclose(got[example], wavelet_pool_loops(x[example]), rtol=1e-5, atol=1e-6)


def test_wavelet_pool_keeps_half_the_features_at_full_resolution_and_has_no_parameters():
  x = np.random.default_rng(1).normal(size=(2, 40, 64)).astype(np.float32)
  y = np.asarray(wavelet_pool(x))
  np.testing.assert_array_equal(y[..., :32], x[..., :32])
  assert np.ptp(y[..., -1], axis=-1).max() < 1e-6  # the last feature does not move in time


def test_average_pool_time_halves_with_a_short_last_group():
  x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  y = np.asarray(average_pool_time(x, 2))
  expected = np.stack([x[:, 0:2].mean(1), x[:, 2:4].mean(1), x[:, 4]], axis=1)
  np.testing.assert_allclose(y, expected)


def test_multi_head_attention_equals_projections_through_the_dense_reference():
  x = jax.random.normal(jax.random.key(0), (2, 12, 32))
  layer = MultiHeadAttention(num_heads=4, causal=True, attention_impl="xla")
  params = layer.init(jax.random.key(1), x)
  got = layer.apply(params, x)
  p = params["params"]
  q, k, v = (jnp.einsum("btf,fhd->bthd", x, p[name]["kernel"]) + p[name]["bias"] for name in ("query", "key", "value"))
  attended = dot_product_attention(q, k, v, causal=True, implementation="reference")
  want = jnp.einsum("bthd,hdf->btf", attended, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 4), (False, 1)])
def test_xla_attention_matches_reference_with_grouped_heads(causal, window):
  keys = jax.random.split(jax.random.key(2), 3)
  q = jax.random.normal(keys[0], (2, 29, 4, 16))
  k = jax.random.normal(keys[1], (2, 29, 2, 16))
  v = jax.random.normal(keys[2], (2, 29, 2, 16))
  got = dot_product_attention(q, k, v, causal=causal, window=window, implementation="xla")
  want = dot_product_attention(q, k, v, causal=causal, window=window, implementation="reference")
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_unknown_attention_implementation_is_a_config_error():
  from afx.errors import ConfigError
  x = jnp.zeros((1, 4, 1, 8))
  with pytest.raises(ConfigError, match="attention_impl 'flash'"):
    dot_product_attention(x, x, x, implementation="flash")
