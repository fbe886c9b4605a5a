"""The seams sequence tasks grow from: the task registry and its capabilities, auxiliary losses, evaluators as
config entries, `DatasetInfo`, the model registry's checks, and reproduce's declared columns."""

import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import pytest

from afx import models, tasks
from afx.errors import ConfigError
from afx.tasks import ClassificationTask, register_task
from afx.train import load_config, train
from data_pipelines import DatasetInfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@register_task("multi_label_with_aux")
class _LabelTaskWithAux(ClassificationTask):
  """Multi-label classification that also reports how many scores are positive, as a joint loss reports its parts."""

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    task = ClassificationTask.from_config(config, info, upstream, workdir)
    return cls(**{**dataclasses.asdict(task), "kind": "multi_label"})

  def loss(self, outputs, batch):
    loss, _ = super().loss(outputs, batch)
    return loss, {"mean_score": jnp.mean(jnp.asarray(outputs, jnp.float32) > 0)}


def _config(**data):
  config = ml_collections.ConfigDict({"task": "multi_label", "data": {"clip_seconds": 1.0, "eval_hop_seconds": 0.5}})
  config.update(data)
  return config


def test_tasks_are_built_by_name_from_the_dataset_info():
  task = tasks.make_task(_config(), DatasetInfo(8000, ("a", "b", "c")))
  assert isinstance(task, ClassificationTask) and task.num_classes == 3
  assert (task.train_batching.clip_samples, task.eval_batching.hop_samples) == (8000, 4000)
  with pytest.raises(ConfigError, match="unknown task 'nope'; choose one of .*multi_label.*next_sample"):
    tasks.make_task(_config(task="nope"), DatasetInfo(8000, ("a",)))
  with pytest.raises(ValueError, match="registered twice"):
    register_task("multi_label")(ClassificationTask)


def test_a_verb_names_the_tasks_that_can_serve_it():
  task = tasks.make_task(_config(), DatasetInfo(16000, ("a",)))
  assert tasks.require(task, "predict", workdir="w", task_name="multi_label") == task.clip_scores
  with pytest.raises(ConfigError, match=r"w is a .multi_label. run; `run.py sample` needs a run of next_sample; this run serves `run.py predict`"):
    tasks.require(task, "sample", workdir="w", task_name="multi_label")
  assert "next_code" in tasks.tasks_with("features") and "multi_label" not in tasks.tasks_with("features")


def test_dataset_info_round_trips_and_reads_older_dataset_files():
  info = DatasetInfo(16000, ("Bark", "Siren"), ("a", "b", " "))
  assert DatasetInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
  old = DatasetInfo.from_json({"name": "synth_events", "class_names": ["x"], "sample_rate": 22050})
  assert old == DatasetInfo(22050, ("x",), None) and old.num_classes == 1
  assert DatasetInfo(16000).num_classes == 0


def test_build_model_rejects_what_the_model_cannot_take_and_keys_the_task_decides():
  config = {"name": "wavenet", "layers_per_stack": 2}
  assert models.build_model(config, num_classes=256, context_samples=100, sample_rate=16000).num_classes == 256
  with pytest.raises(ConfigError, match="model 'wavenet' cannot take past_samples=4000"):
    models.build_model(config, num_classes=256, past_samples=4000)
  with pytest.raises(ConfigError, match="model.num_classes is decided by the task"):
    models.build_model({**config, "num_classes": 10}, num_classes=256)


def test_trainer_does_not_import_the_weight_converters():
  code = "import sys, afx.train.trainer; sys.exit('afx.train.convert' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode == 0


def test_evaluators_run_at_their_own_cadence_and_auxiliary_losses_are_logged(tiny_config_path, tmp_path):
  config = load_config(f"{tiny_config_path}:small,tiny")
  config.task = "multi_label_with_aux"
  config.total_steps = 10
  config.evals = {"quick": {"kind": "metrics", "split": "validation", "every": 2},
                  "slow": {"split": "test", "every": 4, "final": True}}
  workdir = str(tmp_path / "run")
  results = train(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "quick_mAP" in r] == [2, 4, 6, 8]
  assert [r["step"] for r in records if "slow_mAP" in r] == [4, 8]
  assert not any("val_mAP" in r for r in records)  # `evals` replaces the eval_every default
  assert all(0.0 <= r["mean_score"] <= 1.0 for r in records)
  assert 0.0 <= results["mAP"] <= 1.0 and results["step"] == 10

  config.evals = {"edit": {"kind": "edit_distance"}}
  with pytest.raises(ConfigError, match="evals.edit.kind is 'edit_distance'; choose one of beam_search, metrics"):
    train(config, str(tmp_path / "bad"))
  with pytest.raises(ConfigError, match="evals.beam.kind 'beam_search' needs a run of asr, not of 'multi_label_with_aux'"):
    train(_with_evals(config, {"beam": {"kind": "beam_search"}}), str(tmp_path / "bad1"))
  assert not os.path.exists(tmp_path / "bad1" / "config.json")  # refused before anything was written
  with pytest.raises(ConfigError, match="evals.quick.often is unknown"):
    train(_with_evals(config, {"quick": {"often": 3}}), str(tmp_path / "bad2"))


def _with_evals(config, evals):
  config = ml_collections.ConfigDict(config.to_dict())
  config.evals = evals
  return config


TABLE = '''
import ml_collections
TITLE = "error rates"
METRIC = "wer"
LOWER_IS_BETTER = ("wer",)
COLUMNS = ("cer",)
NOTES = {"trivial_wer": "WER of always answering the most frequent transcript"}
ROWS = {"big": {"label": "big", "paper": 0.1}, "small": {"label": "small", "paper": 0.2}}


def get_config(variant=None):
  row, _, _ = variant.partition(",")
  return ml_collections.ConfigDict(dict(row=row, batch_size=1, total_steps=1, log_every=1, checkpoint_every=1,
                                        eval_every=0, seed=0, attention_impl=None))
'''


def test_reproduce_takes_its_columns_directions_and_notes_from_the_experiment(tmp_path, monkeypatch):
  import importlib
  reproduce_lib = importlib.import_module("afx.train.reproduce")
  (tmp_path / "experiments").mkdir()
  (tmp_path / "experiments" / "wer_table.py").write_text(TABLE)
  monkeypatch.chdir(tmp_path)
  fake = {"big": {"wer": 0.12, "cer": 0.05, "trivial_wer": 1.0, "params": 10},
          "small": {"wer": 0.3, "cer": 0.11, "trivial_wer": 1.0, "params": 5}}
  monkeypatch.setattr(reproduce_lib, "train_row", lambda config, workdir, stages_dir=None: fake[config.row])
  results = reproduce_lib.reproduce("wer_table", scale="tiny", workdir=str(tmp_path / "out"))
  assert [(row["name"], row["better"], row["cer"]) for row in results["rows"]] == [("big", "lower", 0.05),
                                                                                   ("small", "lower", 0.11)]
  assert results["trivial_wer"] == 1.0
  text = open(tmp_path / "out" / "table.md").read()
  assert "| big | big | wer ↓ | 0.120 | 0.100 | 0.050 |" in text
  assert "WER of always answering the most frequent transcript: 1.000" in text

  fake["big"] = {"cer": 0.05}
  with pytest.raises(ConfigError, match="row 'big' of wer_table reports 'wer', which its results lack"):
    reproduce_lib.reproduce("wer_table", scale="tiny", workdir=str(tmp_path / "out2"))
