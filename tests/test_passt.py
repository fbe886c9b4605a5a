"""PaSST: patchout in training only, positional encodings cropped for shorter inputs, variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afx.models.passt import PaSST

SMALL = dict(num_classes=4, num_mel_bins=48, input_frames=None, positional_frames=200, embed_dim=16, num_layers=1,
             num_heads=2, mlp_dim=32)


def _variables(model, frames=200):
  return model.init(jax.random.key(0), jnp.zeros((1, frames, 48)), method="from_spectrogram")


def test_structured_patchout_drops_whole_columns_and_rows_in_training_only():
  model = PaSST(**SMALL, time_patchout=5, frequency_patchout=1)  # grid 4 × 19
  grid = jnp.arange(2 * 4 * 19, dtype=jnp.float32).reshape(2, 4, 19, 1) * jnp.ones((1, 1, 1, 3))
  tokens = model.apply({}, grid, train=True, method="patchout", rngs={"patchout": jax.random.key(1)})
  assert tokens.shape == (2, 3 * 14, 3)
  kept = np.asarray(tokens[0, :, 0]).reshape(3, 14)
  rows, columns = kept // 19, kept % 19
  assert np.all(rows == rows[:, :1]) and np.all(columns == columns[:1])  # whole rows and columns survive
  np.testing.assert_array_equal(np.asarray(tokens[1, :, 0]) - np.asarray(tokens[0, :, 0]), 76)  # same for the batch
  untouched = model.apply({}, grid, train=False, method="patchout")
  assert untouched.shape == (2, 4 * 19, 3)


def test_unstructured_patchout_keeps_a_fixed_number_of_distinct_patches_per_example():
  model = PaSST(**SMALL, time_patchout=0, frequency_patchout=0, patchout_probability=0.5)
  grid = jnp.arange(2 * 4 * 19, dtype=jnp.float32).reshape(2, 4, 19, 1)
  tokens = np.asarray(model.apply({}, grid, train=True, method="patchout", rngs={"patchout": jax.random.key(2)}))
  assert tokens.shape == (2, 38, 1)
  assert len(set(tokens[0, :, 0])) == 38 and not np.array_equal(tokens[0, :, 0], tokens[1, :, 0] - 76)


def test_shorter_inputs_crop_the_time_encoding_and_longer_ones_are_an_error():
  model = PaSST(**SMALL)
  variables = _variables(model)
  assert model.apply(variables, jnp.ones((2, 120, 48)), method="from_spectrogram").shape == (2, 4)
  with pytest.raises(ValueError, match="use shorter windows"):
    model.apply(variables, jnp.ones((1, 300, 48)), method="from_spectrogram")


def test_training_output_depends_on_the_patchout_draw_and_evaluation_is_deterministic():
  model = PaSST(**SMALL, time_patchout=6, frequency_patchout=1)
  variables = _variables(model)
  x = jax.random.normal(jax.random.key(3), (2, 200, 48))
  draw = lambda seed: model.apply(variables, x, train=True, method="from_spectrogram",
                                  rngs={"patchout": jax.random.key(seed), "dropout": jax.random.key(0)})
  assert not np.allclose(draw(1), draw(2))
  np.testing.assert_array_equal(model.apply(variables, x, method="from_spectrogram"),
                                model.apply(variables, x, method="from_spectrogram"))


def test_no_overlap_variant_has_fewer_patches():
  overlapping = jax.eval_shape(lambda: _variables(PaSST(**SMALL)))["params"]["time_positions"].shape
  no_overlap = jax.eval_shape(lambda: _variables(PaSST(**SMALL, stride=16)))["params"]["time_positions"].shape
  assert overlapping[1] == 19 and no_overlap[1] == 12
