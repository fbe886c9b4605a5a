"""Verma & Smith representation learning: patch front end, probe, staged rows and their resumption."""

import json
import os

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from afx import models
from afx.errors import ConfigError
from afx.layers.frontends import log_mel_frames, spectrogram_patches, standardize_per_example
from afx.tasks import representation
from afx.train import load_config, stages, trainer
from afx.train.config import load_module

EXPERIMENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                          "verma_smith_2020.py")


def test_log_mel_frames_match_librosa():
  rng = np.random.default_rng(0)
  audio = rng.standard_normal(8000).astype(np.float32) * 0.1
  ours = np.asarray(log_mel_frames(jnp.asarray(audio[None]), sample_rate=16000, n_mels=40, window_seconds=0.025,
                                   hop_seconds=0.010))[0]
  mel = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40,
                                       pad_mode="constant")
  expected = librosa.power_to_db(mel, ref=1.0, top_db=80.0).T
  np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_patches_span_all_mel_bands_and_drop_the_partial_patch():
  frames = np.arange(2 * 11 * 3, dtype=np.float32).reshape(2, 11, 3)
  patches = np.asarray(spectrogram_patches(jnp.asarray(frames), 4))
  assert patches.shape == (2, 2, 12)
  np.testing.assert_array_equal(patches[1, 1], frames[1, 4:8].ravel())
  standard = np.asarray(standardize_per_example(jnp.asarray(frames)))
  np.testing.assert_allclose(standard.reshape(2, -1).mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(standard.reshape(2, -1).std(axis=1), 1, atol=1e-4)


def test_linear_probe_separates_separable_features():
  rng = np.random.default_rng(0)
  centres = rng.standard_normal((5, 16)) * 4
  labels = rng.integers(0, 5, 400)
  features = centres[labels] + rng.standard_normal((400, 16)) * 0.3
  probe = representation.fit_linear_probe(features[:300], labels[:300], 5, steps=300)
  assert np.mean(representation.probe_predict(probe, features[300:]) == labels[300:]) == 1.0
  assert representation.chance_accuracy(labels[:300], labels[300:]) == pytest.approx(
      np.mean(labels[300:] == np.bincount(labels[:300]).argmax()))


def test_tokenizer_assigns_each_patch_its_nearest_centroid():
  centroids = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  encode = lambda audio: jnp.stack([audio[:, ::2], audio[:, 1::2]], axis=-1)  # two numbers per "patch"
  tokenizer = representation.Tokenizer(encode, centroids)
  audio = jnp.asarray([[9.0, 1.0, 0.5, 8.0, -1.0, 0.0]])
  np.testing.assert_array_equal(np.asarray(tokenizer(audio)), [[1, 2, 0]])
  assert tokenizer.num_patches(6) == 3 and tokenizer.num_codes == 3


@pytest.mark.parametrize("row", ["code_lm", "simclr"])
def test_paper_scale_models_have_their_shapes_without_allocating(row):
  config = load_config(f"{EXPERIMENT}:{row}")
  window = round(config.data.clip_seconds * 16000)
  for name, stage in config.stages.items():
    if stage.kind != "train":
      continue
    kwargs = {"num_classes": 256, "context_samples": 200} if stage.model.name == "raw_transformer" else {}
    model = models.build_model(stage.model, sample_rate=16000, **kwargs)
    inputs = jnp.zeros((2, 199), jnp.int32) if kwargs else jnp.zeros((2, window), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0), "augment": jax.random.key(1)},
                                                    x, train=False), inputs)
    params = models.parameter_count(variables["params"])
    assert 1e6 < params < 2e7, (name, params)
  if row == "code_lm":
    autoencoder = models.build_model(config.stages.autoencoder.model, sample_rate=16000)
    vectors = jax.eval_shape(lambda x: autoencoder.init_with_output(jax.random.key(0), x, method="encode")[0],
                             jnp.zeros((1, window)))
    assert vectors.shape == (1, 50, 128)  # 2 s at a 10 ms hop → 201 frames → 50 patches of 4


def test_stage_order_puts_upstreams_first_and_rejects_unknown_names():
  config = load_config(f"{EXPERIMENT}:code_lm,tiny")
  assert stages.stage_order(config.stages) == ["autoencoder", "codebook", "code_lm", "probe"]
  config.stages.probe.upstream.representation = "nothing"
  with pytest.raises(ConfigError, match="unknown stage 'nothing'"):
    stages.stage_order(config.stages)


@pytest.mark.slow  # about 35 s: trains three stages; run with -m slow
def test_code_lm_row_trains_its_stages_and_reuses_them(representation_config_path, tmp_path, monkeypatch):
  config = load_config(f"{representation_config_path}:code_lm,tiny")
  workdir = str(tmp_path / "row")
  results = stages.train_row(config, workdir)
  assert 0.0 <= results["accuracy"] <= 1.0 and 0 < results["chance"] < 1
  assert results["codebook_num_codes"] == 16 and results["code_lm_top1_accuracy"] >= 0
  directories = json.load(open(os.path.join(workdir, "stages.json")))
  assert sorted(directories) == ["autoencoder", "code_lm", "codebook", "probe"]
  with open(os.path.join(directories["code_lm"], "config.json")) as f:
    assert json.load(f)["upstream"]["codebook"] == directories["codebook"]

  # Rerun with the probe's results gone: only the probe is computed again, nothing is retrained.
  os.remove(os.path.join(directories["probe"], "eval.json"))
  monkeypatch.setattr(trainer, "train_step", lambda *a, **k: pytest.fail("a finished stage retrained"))
  monkeypatch.setattr(stages.kmeans, "fit", lambda *a, **k: pytest.fail("a finished codebook was refitted"))
  again = stages.train_row(config, workdir)
  assert again["accuracy"] == pytest.approx(results["accuracy"])
  monkeypatch.undo()

  # Another codebook size shares the autoencoder and trains the rest anew.
  other = load_config(f"{representation_config_path}:code_lm,tiny")
  other.stages.codebook.num_codes = 8
  other_dirs = stages.resolve_stages(other, os.path.join(workdir, "stages"))
  assert other_dirs[0][1] == directories["autoencoder"]
  assert other_dirs[1][1] != directories["codebook"]


@pytest.mark.slow  # about 20 s: trains a SimCLR row and its probe; run with -m slow
def test_simclr_row_trains_and_probes(representation_config_path, tmp_path):
  results = stages.train_row(load_config(f"{representation_config_path}:simclr,tiny"), str(tmp_path / "row"))
  assert 0.0 <= results["accuracy"] <= 1.0
  assert 0.0 <= results["simclr_contrastive_accuracy"] <= 1.0


def test_probe_of_a_run_without_a_representation_is_a_clear_error(representation_config_path, tmp_path):
  supervised = load_config(f"{representation_config_path}:supervised,tiny")
  trainer.train(supervised, str(tmp_path / "supervised"))
  stage = load_config(f"{representation_config_path}:simclr,tiny").stages.probe
  stage.upstream.representation = str(tmp_path / "supervised")
  with pytest.raises(ConfigError, match="no representation for a linear probe"):
    stages.run_linear_probe(stage, str(tmp_path / "probe"))


@pytest.mark.slow  # about 40 s: trains a staged table; run with -m slow
def test_reproduce_builds_the_table_with_chance(representation_config_path, tmp_path, monkeypatch):
  from afx.train import reproduce
  workdir = str(tmp_path / "table")
  monkeypatch.chdir(os.path.dirname(os.path.dirname(representation_config_path)))
  results = reproduce("representation_table", scale="tiny", workdir=workdir)
  assert [row["name"] for row in results["rows"]] == list(load_module(representation_config_path).ROWS)
  assert 0 < results["chance"] < 1
  assert all(0 <= row["afx"] <= 1 for row in results["rows"])
  # With every codebook shrunk to 16 codes the code-LM rows are one set of stages, trained once.
  assert len([d for d in os.listdir(os.path.join(workdir, "stages")) if d.startswith("code_lm-")]) == 1
  assert "Chance" in open(os.path.join(workdir, "table.md")).read()
