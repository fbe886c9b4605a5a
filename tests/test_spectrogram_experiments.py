"""The AST and PaSST experiment files: every row's config at both scales, paper-scale parameter counts
(`jax.eval_shape`, nothing allocated), and `reproduce`'s per-row metrics and `mean_of` rows."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import pytest

from afx.errors import ConfigError
from afx.models import build_model, parameter_count
from afx.train import config as config_lib

reproduce_lib = importlib.import_module("afx.train.reproduce")  # the module (afx.train.reproduce is also the function)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AST_EXPERIMENT = os.path.join(REPO, "experiments", "gong_2021_ast.py")
PASST_EXPERIMENT = os.path.join(REPO, "experiments", "koutini_2021_passt.py")
TASKS = {"mAP": "multi_label", "accuracy": "single_label"}
TINY_DATA = {"multi_label": "synth_events/multi_label", "single_label": "synth_events/single_label"}


def _trained_rows(path):
  return [row for row, info in config_lib.load_module(path).ROWS.items() if "mean_of" not in info]


@pytest.mark.parametrize("path", [AST_EXPERIMENT, PASST_EXPERIMENT])
def test_every_row_loads_at_both_scales_with_its_task_and_data(path):
  experiment = config_lib.load_module(path)
  for row in _trained_rows(path):
    metric = experiment.ROWS[row].get("metric", experiment.METRIC)
    for variant in (row, f"{row},tiny"):
      config = config_lib.load_config(f"{path}:{variant}")
      assert all(key in config for key in config_lib.REQUIRED_KEYS)
      assert config.task == TASKS[metric], variant
      assert config.init_from is None  # ImageNet weights come from --config.init_from=PATH
      if variant.endswith(",tiny"):
        assert config.data.name == TINY_DATA[config.task] and config.data.clip_seconds == 1.0
        assert config.model.input_frames == config.model.positional_frames == 100
      else:
        assert config.model.embed_dim == 768 and config.model.num_heads == 12
  for row, info in experiment.ROWS.items():  # a mean row averages trained rows and has no config of its own
    if "mean_of" in info:
      assert set(info["mean_of"]) <= set(_trained_rows(path))
      with pytest.raises(ConfigError, match="unknown row"):
        config_lib.load_config(f"{path}:{row}")
  assert config_lib.load_config(f"{path}:esc50_fold3").data.train_split == "fold1+fold2+fold4+fold5"
  assert config_lib.load_config(f"{path}:esc50_fold3").data.test_split == "fold3"


def _paper_model(path, row, num_classes):
  config = config_lib.load_config(f"{path}:{row}")
  sample_rate = 32000 if config.data.name.endswith("/32k") else 16000
  model = build_model(config.model, num_classes=num_classes, sample_rate=sample_rate)
  audio = jax.ShapeDtypeStruct((2, round(config.data.clip_seconds * sample_rate)), jnp.float32)

  def init_and_apply(x):  # one trace for both
    variables = model.init(jax.random.key(0), x, train=False)
    return variables, model.apply(variables, x, train=False)

  variables, logits = jax.eval_shape(init_and_apply, audio)
  assert logits.shape == (2, num_classes)
  return config, parameter_count(variables["params"])


def test_paper_scale_ast_is_deit_base_on_1024_by_128_inputs():
  config, count = _paper_model(AST_EXPERIMENT, "audioset_balanced", 527)
  assert (config.model.input_frames, config.model.num_mel_bins) == (1024, 128)
  # patch conv 197k + 1,214 positions 932k + 12 blocks of 7.09 M + norms + the 527-class head 405k = 86.6 M,
  # what Hugging Face's AST (MIT/ast-finetuned-audioset-10-10-0.4593) has
  assert count == 86_594_063
  _, esc50 = _paper_model(AST_EXPERIMENT, "esc50_fold1", 50)  # 512 frames: 12 × 50 positions, 50 classes
  assert esc50 == count - 768 * (12 * 51) - 477 * 769


def test_paper_scale_passt_variants_have_the_expected_sizes():
  counts = {row: _paper_model(PASST_EXPERIMENT, row, 527)[1] for row in ("passt_s", "passt_n", "passt_l")}
  block = 4 * (768 * 768 + 768) + 2 * 2 * 768 + 2 * 768 * 3072 + 3072 + 768  # 7.09 M
  # AST's 1,212-position grid becomes 12 frequency + 99 time encodings (998 frames at stride 10)
  assert counts["passt_s"] == 86_594_063 - 768 * (1212 - 12 - 99) == 85_748_495
  assert counts["passt_n"] == counts["passt_s"] - 768 * (12 + 99 - 8 - 62)  # stride 16: 8 × 62 patches
  assert counts["passt_l"] == counts["passt_s"] - 6 * block
  # 5 s at 32 kHz: 498 frames, 49 of the 99 time encodings; a 50-class head
  assert _paper_model(PASST_EXPERIMENT, "esc50_fold2", 50)[1] == counts["passt_s"] - 477 * 769


MEAN_TABLE = '''"""A table of two mAP rows and three accuracy folds averaged by a mean row."""
import ml_collections

TITLE = "mean rows"
METRIC = "mAP"
ROWS = {{
    "tagging": {{"label": "tagging", "paper": 0.4}},
    **{{f"fold{{k}}": {{"label": f"fold {{k}}", "paper": None, "metric": "accuracy"}} for k in (1, 2, 3)}},
    "cv": {{"label": "mean of folds", "paper": 0.9, "metric": "accuracy", "mean_of": {mean_of!r}}},
}}


def get_config(variant=None):
  row, _, scale = variant.partition(",")
  if row not in ROWS or "mean_of" in ROWS[row]:
    raise KeyError(f"unknown row {{row!r}}")
  return ml_collections.ConfigDict(dict(row=row, batch_size=1, total_steps=1, log_every=1, checkpoint_every=1,
                                        eval_every=0, seed=0, attention_impl=None))
'''
FAKE_RESULTS = {"tagging": {"mAP": 0.5, "d_prime": 2.0, "params": 10}, "fold1": {"accuracy": 0.6, "params": 10},
                "fold2": {"accuracy": 0.8, "params": 10}, "fold3": {"accuracy": 0.7, "params": 10}}


def test_reproduce_reports_per_row_metrics_and_means_of_rows(tmp_path, monkeypatch):
  (tmp_path / "experiments").mkdir()
  (tmp_path / "experiments" / "mean_table.py").write_text(MEAN_TABLE.format(mean_of=["fold1", "fold2", "fold3"]))
  monkeypatch.chdir(tmp_path)
  trained = []

  def fake_train_row(config, workdir, *, stages_dir=None):
    trained.append(config.row)
    return FAKE_RESULTS[config.row]

  monkeypatch.setattr(reproduce_lib, "train_row", fake_train_row)
  results = reproduce_lib.reproduce("mean_table", scale="tiny", workdir=str(tmp_path / "out"))
  assert trained == ["tagging", "fold1", "fold2", "fold3"]  # the mean row trains nothing
  rows = {row["name"]: row for row in results["rows"]}
  assert [row["name"] for row in results["rows"]] == ["tagging", "fold1", "fold2", "fold3", "cv"]
  assert rows["tagging"]["metric"] == "mAP" and rows["tagging"]["afx"] == 0.5
  assert rows["fold2"]["metric"] == "accuracy" and rows["fold2"]["afx"] == 0.8
  assert rows["cv"]["metric"] == "accuracy" and rows["cv"]["afx"] == pytest.approx(0.7)
  assert rows["cv"]["mean_of"] == ["fold1", "fold2", "fold3"] and rows["cv"]["params"] == 10
  assert rows["cv"]["paper"] == 0.9
  assert json.load(open(tmp_path / "out" / "results.json"))["rows"][-1]["afx"] == pytest.approx(0.7)
  assert "| cv | mean of folds | accuracy | 0.700 | 0.900 |" in open(tmp_path / "out" / "table.md").read()

  for mean_of, message in ((["fold1", "fold9"], "fold9"), (["tagging", "fold1"], "different metrics")):
    (tmp_path / "experiments" / "mean_table.py").write_text(MEAN_TABLE.format(mean_of=mean_of))
    with pytest.raises(ConfigError, match=message):
      reproduce_lib.reproduce("mean_table", scale="tiny", workdir=str(tmp_path / "bad"))
