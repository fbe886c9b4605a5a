"""Configs: FILE:VARIANT loading, command-line overrides, and every paper-scale config's shapes."""

import os

import jax
import jax.numpy as jnp
import pytest

from afx import models
from afx.errors import ConfigError
from afx.train import config as config_lib
from afx.train.reproduce import experiment_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VB = os.path.join(REPO, "experiments", "verma_berger_2021.py")


def test_overrides_keep_types_and_reject_unknown_keys():
  config = config_lib.load_config(f"{VB}:small,tiny")
  changed = config_lib.apply_overrides(config, ["--config.total_steps=7", "optimizer.learning_rate=2e-4",
                                                "--config.attention_impl=reference", "model.pooling=wavelet"])
  assert changed.total_steps == 7 and changed.optimizer.learning_rate == 2e-4
  assert changed.attention_impl == "reference" and changed.model.pooling == "wavelet"
  assert config.total_steps != 7  # the original is untouched
  with pytest.raises(ConfigError, match="'optimizer.learnin_rate'"):
    config_lib.apply_overrides(config, ["--config.optimizer.learnin_rate=1"])
  with pytest.raises(ConfigError, match="batch_size"):
    config_lib.apply_overrides(config, ["--config.batch_size=many"])


def test_every_training_config_has_the_required_keys():
  module = config_lib.load_module(VB)
  for row in module.ROWS:
    for variant in (row, f"{row},tiny"):
      config = config_lib.load_config(f"{VB}:{variant}")
      assert all(key in config for key in config_lib.REQUIRED_KEYS)


def test_unknown_variant_and_missing_file_are_config_errors():
  with pytest.raises(ConfigError, match="unknown row 'huge'"):
    config_lib.load_config(f"{VB}:huge")
  with pytest.raises(ConfigError, match="nope.py does not exist"):
    config_lib.load_config("experiments/nope.py:x")
  with pytest.raises(ConfigError, match="known tables: .*verma_berger_2021"):
    experiment_path("no_such_table")


@pytest.mark.parametrize("row,paper_params", [("small", 0.9e6), ("large", 2.3e6), ("large_pool", 2.3e6),
                                              ("vgg_like", 0.27e6)])
def test_paper_scale_models_have_the_papers_parameter_counts(row, paper_params):
  config = config_lib.load_config(f"{VB}:{row}")
  model = models.build_model(config.model, num_classes=200, sample_rate=16000, attention_impl=None)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 16000)), train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 16000))), variables)
  assert logits.shape == (2, 200)
  assert abs(models.parameter_count(variables["params"]) / paper_params - 1) < 0.10


def test_unknown_model_option_names_the_key():
  with pytest.raises(ConfigError, match="model.widht"):
    models.build_model({"name": "audio_transformer", "widht": 3}, num_classes=2)


ASR_TABLES = ("dong_2018_speech_transformer", "gulati_2020_conformer", "karita_2019_transformer_vs_rnn")


@pytest.mark.parametrize("table", ASR_TABLES)
def test_every_asr_table_row_builds_its_model_at_both_scales(table):
  path = experiment_path(table)
  module = config_lib.load_module(path)
  assert module.METRIC == "wer" and "wer" in module.LOWER_IS_BETTER
  audio, tokens = jnp.zeros((1, 8000)), jnp.zeros((1, 5), jnp.int32)
  for row in module.ROWS:
    for variant in (row, f"{row},tiny"):
      config = config_lib.load_config(f"{path}:{variant}")
      assert config.task == "asr" and config.evals.beam.kind == "beam_search" and config.evals.beam.final
      model = models.build_model(config.model, vocab_size=32, feature_stats=None, sample_rate=16000)
      speaker_stats = None  # normalization "speaker": each row's speaker's mean and std per bin
      if config.model.normalization == "speaker":
        raw, _ = jax.eval_shape(lambda: model.apply({}, audio, jnp.array([8000]), method="raw_features"))
        speaker_stats = (jnp.zeros((1, raw.shape[-1])), jnp.ones((1, raw.shape[-1])))
      shapes = jax.eval_shape(model.init, jax.random.key(0), audio, jnp.array([8000]), tokens, jnp.array([5]),
                              speaker_stats)
      assert models.parameter_count(shapes["params"]) > 0
