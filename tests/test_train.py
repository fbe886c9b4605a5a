"""The trainer: learning, resuming bit for bit, device-count invariance, non-finite losses, outputs."""

import json
import os

import jax
import numpy as np
import pytest

from data_pipelines import DatasetInfo
from afx.errors import NonFiniteLossError
from afx.train import apply_overrides, load_config, load_run, make_run, train


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_short_run_lowers_the_loss_and_writes_its_outputs(trained_workdir):
  records = read_metrics(trained_workdir)
  assert [r["step"] for r in records] == [5, 10, 15, 20]
  assert all("loss" in r and "learning_rate" in r and "steps_per_sec" in r for r in records)
  assert records[-1]["loss"] < 0.8 * records[0]["loss"]
  assert [r["step"] for r in records if "val_mAP" in r] == [10]  # eval_every=10; the last step is tested instead
  with open(os.path.join(trained_workdir, "eval.json")) as f:
    results = json.load(f)
  assert 0.0 <= results["mAP"] <= 1.0 and np.isfinite(results["d_prime"]) and results["step"] == 20
  for name in ("config.json", "dataset.json", "frontend.png", "checkpoints/20", "tensorboard"):
    assert os.path.exists(os.path.join(trained_workdir, name)), name


def test_interrupted_run_resumes_to_the_same_parameters_and_eval(tiny_config_path, trained_workdir, tmp_path):
  config = load_config(f"{tiny_config_path}:small,tiny")
  workdir = str(tmp_path / "interrupted")
  assert train(config, workdir, stop_at_step=7) is None  # not a multiple of checkpoint_every
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["5", "7"]
  resumed = train(config, workdir)
  with open(os.path.join(trained_workdir, "eval.json")) as f:
    assert resumed == json.load(f)
  _, uninterrupted_state = load_run(trained_workdir)
  _, resumed_state = load_run(workdir)
  for a, b in zip(jax.tree_util.tree_leaves(uninterrupted_state), jax.tree_util.tree_leaves(resumed_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [r["step"] for r in read_metrics(workdir)] == [5, 10, 15, 20]


def test_a_config_that_does_not_fit_the_checkpoint_changes_nothing_in_the_workdir(tiny_config_path, trained_workdir):
  from afx.errors import ConfigError
  before = {name: open(os.path.join(trained_workdir, name)).read() for name in ("config.json", "eval.json")}
  config = apply_overrides(load_config(f"{tiny_config_path}:small,tiny"), ["model.num_layers=3", "total_steps=30"])
  with pytest.raises(ConfigError, match="does not fit this config"):
    train(config, trained_workdir)
  assert {name: open(os.path.join(trained_workdir, name)).read() for name in before} == before


def test_rerunning_a_finished_run_returns_its_results_and_keeps_its_config(tiny_config_path, trained_workdir):
  before = {name: open(os.path.join(trained_workdir, name)).read() for name in ("config.json", "eval.json")}
  config = apply_overrides(load_config(f"{tiny_config_path}:small,tiny"), ["data.eval_hop_seconds=0.25"])
  assert train(config, trained_workdir) == json.loads(before["eval.json"])
  assert {name: open(os.path.join(trained_workdir, name)).read() for name in before} == before


@pytest.mark.parametrize("attention_impl", ["xla", "blockwise"])  # blockwise runs under shard_map
def test_one_device_and_eight_devices_take_the_same_step(tiny_config_path, attention_impl):
  # SGD, because Adam turns rounding noise in near-zero gradients into full-size steps.
  config = apply_overrides(load_config(f"{tiny_config_path}:large_pool,tiny"),
                           ["optimizer.name=sgd", "optimizer.warmup_steps=0", "optimizer.learning_rate=0.1",
                            f"attention_impl={attention_impl}"])
  batch = {"audio": np.random.default_rng(0).normal(size=(16, 16000)).astype(np.float32) * 0.1,
           "samples": np.full(16, 16000, np.int32),
           "targets": (np.random.default_rng(1).random((16, 5)) < 0.3).astype(np.float32)}
  params, losses = [], []
  for devices in (jax.devices()[:1], jax.devices()):
    run = make_run(config, DatasetInfo(16000, tuple("abcde")), devices=devices)
    state = run.init(jax.random.key(0))
    for _ in range(2):
      state, metrics = run.train_step(state, run.to_global(batch))
      losses.append(float(metrics["loss"]))
    assert len(state.params["head"]["kernel"].sharding.device_set) == len(devices)
    params.append(jax.device_get(state.params))
  np.testing.assert_allclose(losses[:2], losses[2:], rtol=1e-5)
  for one, eight in zip(jax.tree_util.tree_leaves(params[0]), jax.tree_util.tree_leaves(params[1])):
    np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-6)


def test_fsdp_shards_large_parameters_and_matches_data_parallel(tiny_config_path):
  config = load_config(f"{tiny_config_path}:small,tiny")
  batch = {"audio": np.random.default_rng(0).normal(size=(16, 16000)).astype(np.float32) * 0.1,
           "samples": np.full(16, 16000, np.int32), "targets": np.eye(5, dtype=np.float32)[np.arange(16) % 5]}
  results = []
  for fsdp in (1, 4):
    run = make_run(apply_overrides(config, [f"fsdp={fsdp}", "optimizer.name=sgd", "model.frontend_hidden=64"]), DatasetInfo(16000, tuple("abcde")))
    state, _ = run.train_step(run.init(jax.random.key(0)), run.to_global(batch))
    results.append(state)
  kernel = results[1].params["frontend"]["filters"]["kernel"]  # [400, 64]: big enough to split over fsdp
  assert kernel.sharding.shard_shape(kernel.shape) != kernel.shape
  np.testing.assert_allclose(np.asarray(results[0].params["frontend"]["filters"]["kernel"]), np.asarray(kernel),
                             rtol=1e-4, atol=1e-6)


def test_non_finite_loss_stops_naming_the_steps_and_keeps_the_last_good_checkpoint(tiny_config_path, tmp_path):
  workdir = str(tmp_path / "diverging")
  config = load_config(f"{tiny_config_path}:small,tiny")
  train(apply_overrides(config, ["total_steps=10"]), workdir)
  _, good = load_run(workdir)
  diverging = apply_overrides(config, ["optimizer.learning_rate=1e30",
                                       "optimizer.warmup_steps=0", "optimizer.schedule=constant"])
  with pytest.raises(NonFiniteLossError, match=r"non-finite at step 1[1-5] \(checked steps 11-15\).*step 10"):
    train(diverging, workdir)
  assert max(int(step) for step in os.listdir(os.path.join(workdir, "checkpoints"))) == 10
  _, after = load_run(workdir)
  for a, b in zip(jax.tree_util.tree_leaves(good.params), jax.tree_util.tree_leaves(after.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_state_is_created_sharded_without_a_host_copy(tiny_config_path):
  config = apply_overrides(load_config(f"{tiny_config_path}:small,tiny"), ["fsdp=2", "model.frontend_hidden=64"])
  run = make_run(config, DatasetInfo(16000, tuple("abc")))
  state = run.init(jax.random.key(0))
  shardings = jax.tree_util.tree_leaves(run.state_shardings)
  leaves = jax.tree_util.tree_leaves(state)
  assert all(leaf.sharding == sharding for leaf, sharding in zip(leaves, shardings))
  assert any(len(leaf.sharding.device_set) == 8 and leaf.sharding.shard_shape(leaf.shape) != leaf.shape
             for leaf in leaves)


def test_batch_size_that_does_not_divide_over_the_devices_is_a_config_error(tiny_config_path):
  from afx.errors import ConfigError
  config = apply_overrides(load_config(f"{tiny_config_path}:small,tiny"), ["batch_size=12"])
  with pytest.raises(ConfigError, match="batch_size 12 is not divisible by the 8 devices"):
    make_run(config, DatasetInfo(16000, tuple("abc")))
  with pytest.raises(ConfigError, match="fsdp=3 must divide the 8 devices"):
    make_run(apply_overrides(config, ["batch_size=16", "fsdp=3"]), DatasetInfo(16000, tuple("abc")))


def write_fsd50k_layout(root, rng):
  """FSD50K's directory layout with 3 classes and clips of 0.4-3.2 s at 44.1 kHz."""
  from afx.audio import synthesis, write_audio
  truth = root / "FSD50K.ground_truth"
  for sub in ("FSD50K.dev_audio", "FSD50K.eval_audio", "FSD50K.ground_truth"):
    (root / sub).mkdir(parents=True)
  (truth / "vocabulary.csv").write_text("0,Bark,/m/a\n1,Guitar,/m/b\n2,Siren,/m/c\n")
  labels = ["Bark", "Guitar", "Siren", '"Bark,Siren"']
  dev = ["fname,labels,mids,split"] + [f"{i},{labels[i % 4]},x,{'val' if i >= 10 else 'train'}" for i in range(12)]
  (truth / "dev.csv").write_text("\n".join(dev) + "\n")
  (truth / "eval.csv").write_text("\n".join(["fname,labels,mids"] + [f"{i},{labels[i % 4]},x" for i in range(12, 18)]) + "\n")
  for i in range(18):
    folder = "FSD50K.dev_audio" if i < 12 else "FSD50K.eval_audio"
    seconds = 0.4 + 2.8 * rng.random()
    audio = synthesis.chirp(200.0 * (1 + i % 4), 3000.0, seconds, 44100) * 0.3
    write_audio(root / folder / f"{i}.wav", audio, 44100)


@pytest.mark.slow  # about 15 s: builds and trains on an FSD50K-layout tree; run with -m slow
def test_paper_scale_config_trains_on_the_fsd50k_layout_with_variable_length_clips(tmp_path):
  write_fsd50k_layout(tmp_path / "FSD50K", np.random.default_rng(0))
  vb = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "verma_berger_2021.py")
  config = apply_overrides(load_config(f"{vb}:large_pool"), [
      f"data.manual_dir={tmp_path / 'FSD50K'}", f"data.data_dir={tmp_path / 'data'}", "total_steps=4",
      "batch_size=8", "eval_batch_size=8", "log_every=2", "checkpoint_every=4", "eval_every=2",
      "model.frontend_hidden=32", "model.num_layers=2", "model.mlp_dim=32", "optimizer.warmup_steps=1"])
  workdir = str(tmp_path / "run")
  results = train(config, workdir)
  assert results["split"] == "test" and 0 <= results["mAP"] <= 1 and np.isfinite(results["d_prime"])
  assert "val_mAP" in read_metrics(workdir)[0]
  with open(os.path.join(workdir, "dataset.json")) as f:
    assert json.load(f)["class_names"] == ["Bark", "Guitar", "Siren"]


def test_average_checkpoints_evaluates_and_serves_the_mean_of_the_last_ones(tiny_config_path, tmp_path):
  from afx.errors import ConfigError
  from afx.train.checkpoint import Checkpoints
  config = apply_overrides(load_config(f"{tiny_config_path}:small,tiny"),
                           ["average_checkpoints=2", "total_steps=10", "eval_every=0"])
  workdir = str(tmp_path / "averaged")
  results = train(config, workdir)
  assert results["averaged_steps"] == [5, 10]
  run, served = load_run(workdir)
  saved = Checkpoints(os.path.join(workdir, "checkpoints"))
  five, ten = (jax.device_get(saved.restore(step, run.abstract_state).params) for step in (5, 10))
  saved.close()
  jax.tree_util.tree_map(lambda a, b, mean: np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-7),
                         five, ten, jax.device_get(served.params))
  with pytest.raises(ConfigError, match="average_checkpoints=3 needs as many kept checkpoints"):
    train(apply_overrides(config, ["average_checkpoints=3"]), str(tmp_path / "bad"))
