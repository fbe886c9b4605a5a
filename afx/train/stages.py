"""Rows trained in stages: each stage builds on frozen earlier ones (autoencoder → k-means → code LM → probe).

A staged config has a `data` group shared by all stages and a `stages` group of named stage
configs.  Each stage has a `kind`:

  train         a training config without `data` (`afx.train.trainer.train`); `upstream` maps the
                names its task needs (e.g. `autoencoder`, `codebook`) to earlier stages' names
  kmeans        k-means over an `upstream.autoencoder` run's bottleneck vectors of the training
                split: `num_codes`, `max_points`, `iterations`, `tolerance`, `seed`
  linear_probe  a linear classifier on an `upstream.representation` run's frozen clip features:
                `steps`, `learning_rate`, `weight_decay`, `seed`

Stages run in dependency order.  Stage NAME trains in `stages_dir/NAME-DIGEST`, where DIGEST hashes
the stage's config together with its upstream stages' directories: rows that share a stage (the
same autoencoder under every codebook size) share its directory, a finished stage is reused, an
interrupted one resumes, and a changed config trains anew.  The row's `eval.json` is the last
stage's results plus every earlier stage's numbers prefixed with its name.
"""

import hashlib
import json
import os

import jax
import ml_collections
import numpy as np

from afx import models
from afx.errors import ConfigError
from afx.layers import kmeans
from afx import tasks
from afx.tasks import representation
from afx.train import config as config_lib
from afx.train import trainer
from afx.train.checkpoint import save_arrays
from afx.train.data import open_dataset
from data_pipelines.pipeline import average_by_clip

KINDS = ("train", "kmeans", "linear_probe")
SHARED_KEYS = ("data", "seed", "attention_impl", "fsdp")  # copied from the row into every stage


def is_staged(config: ml_collections.ConfigDict) -> bool:
  return "stages" in config


def stage_order(stages: ml_collections.ConfigDict) -> list[str]:
  """Stage names with every stage after the stages it builds on (ties in name order)."""
  order, visiting = [], set()

  def visit(name, chain):
    if name in order:
      return
    if name not in stages:
      raise ConfigError(f"stage {chain[-1]!r} builds on unknown stage {name!r} (config key "
                        f"stages.{chain[-1]}.upstream); stages are {', '.join(sorted(stages))}")
    if name in visiting:
      raise ConfigError(f"stages build on each other in a cycle: {' → '.join(chain + [name])}")
    visiting.add(name)
    for upstream in sorted((stages[name].get("upstream") or {}).values()):
      visit(upstream, chain + [name])
    order.append(name)

  for name in sorted(stages):
    visit(name, [name])
  return order


def _digest(stage: dict) -> str:
  return hashlib.sha1(json.dumps(stage, sort_keys=True, default=list).encode()).hexdigest()[:8]


def resolve_stages(config: ml_collections.ConfigDict, stages_dir: str) -> list[tuple[str, str, ml_collections.ConfigDict]]:
  """`(name, directory, stage config)` in running order, shared keys filled in and upstream names
  replaced by directories."""
  stages_dir = os.path.abspath(stages_dir)
  resolved, directories = [], {}
  for name in stage_order(config.stages):
    stage = config.stages[name].to_dict()
    if stage.get("kind") not in KINDS:
      raise ConfigError(f"stages.{name}.kind is {stage.get('kind')!r}; choose one of {', '.join(KINDS)}")
    for key in SHARED_KEYS:
      if key in config:
        stage[key] = config[key].to_dict() if isinstance(config[key], ml_collections.ConfigDict) else config[key]
    upstream = stage.get("upstream") or {}
    # The digest sees upstream directory names (which carry their own digests), not absolute paths,
    # so a moved workdir keeps its stages.
    stage["upstream"] = {key: os.path.basename(directories[value]) for key, value in upstream.items()}
    directory = os.path.join(stages_dir, f"{name}-{_digest(stage)}")
    stage["upstream"] = {key: directories[value] for key, value in upstream.items()}
    directories[name] = directory
    resolved.append((name, directory, ml_collections.ConfigDict(stage)))
  return resolved


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_kmeans(stage: ml_collections.ConfigDict, directory: str) -> dict:
  """Fit the codebook on bottleneck vectors of the training split; `directory/{arrays,kmeans.json}`."""
  results_path = os.path.join(directory, "kmeans.json")
  done = _read_json(results_path)
  if done is not None:
    return done
  run, state = trainer.load_run(stage.upstream.autoencoder)
  variables = {"params": state.params, **state.model_state}
  encode = run.jit_eval(lambda state, batch: {
      "vectors": run.model.apply(variables, batch["audio"], method="encode"), "clip": batch["clip"]})
  rows = trainer.eval_rows(run, state, open_dataset(run.config.data).source(run.config.data.train_split), encode)
  # eval rows are global: every process holds every process's windows
  vectors = rows["vectors"][rows["clip"] >= 0].reshape(-1, rows["vectors"].shape[-1])
  rng = np.random.default_rng(stage.seed)
  if vectors.shape[0] > stage.max_points:
    vectors = vectors[np.sort(rng.choice(vectors.shape[0], stage.max_points, replace=False))]
  if vectors.shape[0] < stage.num_codes:
    raise ConfigError(f"k-means needs at least num_codes={stage.num_codes} vectors, the training split gave "
                      f"{vectors.shape[0]}; lower stages.<kmeans stage>.num_codes or use more data")
  fit = kmeans.fit(vectors, stage.num_codes, rng=jax.random.key(stage.seed), iterations=stage.iterations,
                   tolerance=stage.tolerance, mesh=run.mesh)
  centroids = np.asarray(fit["centroids"])
  codes, distances = kmeans.assign(vectors, centroids)
  counts = np.bincount(np.asarray(codes), minlength=stage.num_codes)
  probabilities = counts[counts > 0] / counts.sum()
  results = {"num_codes": int(stage.num_codes), "points": int(vectors.shape[0]), "iterations": int(fit["iterations"]),
             "inertia": float(fit["inertia"]), "mean_squared_distance": float(np.mean(distances)),
             "codes_used": int((counts > 0).sum()),
             "code_perplexity": float(np.exp(-np.sum(probabilities * np.log(probabilities))))}
  save_arrays(directory, {"centroids": centroids})  # every process: orbax coordinates the write
  trainer.write_json(os.path.join(directory, "config.json"), stage.to_dict())
  trainer.write_json(results_path, results)  # last: its presence marks the stage finished
  return results


def clip_features(run: trainer.Run, state: trainer.TrainState, source) -> tuple[np.ndarray, np.ndarray]:
  """A representation run's features of every clip (mean over its windows) and the clips' class indices."""
  variables = {"params": state.params, **state.model_state}
  step = run.jit_eval(lambda state, batch: {
      "features": run.task.features(run.model, variables, batch["audio"]), "clip": batch["clip"],
      "targets": batch["targets"]})
  rows = trainer.eval_rows(run, state, source, step)
  keep = rows["clip"] >= 0
  clips, features, targets = (rows[key][keep] for key in ("clip", "features", "targets"))
  features, targets = average_by_clip(len(source), features, clips, targets)
  label_counts = targets.sum(axis=1)
  if not np.all(label_counts == 1):
    raise ConfigError(f"a linear probe needs one label per clip; {int(np.sum(label_counts != 1))} clips of the "
                      "dataset have none or several (use a single-label dataset)")
  return features, targets.argmax(axis=1)


def run_linear_probe(stage: ml_collections.ConfigDict, directory: str) -> dict:
  """Train a linear probe on the frozen representation; `directory/{arrays,eval.json}`."""
  results_path = os.path.join(directory, "eval.json")
  done = _read_json(results_path)
  if done is not None:
    return done
  run, state = trainer.load_run(stage.upstream.representation)
  if not hasattr(run.task, "features"):
    able = " or ".join(tasks.tasks_with("features"))
    raise ConfigError(f"the run in {stage.upstream.representation} (task {run.config.task!r}) has no "
                      f"representation for a linear probe; point upstream.representation at a run of {able}")
  dataset = open_dataset(run.config.data)
  data = run.config.data
  train_x, train_y = clip_features(run, state, dataset.source(data.train_split))
  test_x, test_y = clip_features(run, state, dataset.source(data.test_split))
  probe = representation.fit_linear_probe(train_x, train_y, run.info.num_classes, steps=stage.steps,
                                          learning_rate=stage.learning_rate, weight_decay=stage.weight_decay,
                                          seed=stage.seed)
  results = {"accuracy": float(np.mean(representation.probe_predict(probe, test_x) == test_y)),
             "train_accuracy": float(np.mean(representation.probe_predict(probe, train_x) == train_y)),
             "chance": representation.chance_accuracy(train_y, test_y),
             "params": models.parameter_count(state.params), "feature_dim": int(train_x.shape[1]), "train_clips": int(train_x.shape[0]),
             "test_clips": int(test_x.shape[0]), "split": data.test_split}
  save_arrays(directory, probe)
  trainer.write_json(os.path.join(directory, "config.json"), stage.to_dict())
  trainer.write_json(results_path, results)
  return results


def _run_stage(stage: ml_collections.ConfigDict, directory: str) -> dict | None:
  if stage.kind == "kmeans":
    return run_kmeans(stage, directory)
  if stage.kind == "linear_probe":
    return run_linear_probe(stage, directory)
  missing = [key for key in config_lib.REQUIRED_KEYS if key not in stage]
  if missing:
    raise ConfigError(f"training stage in {directory} lacks the config key {missing[0]!r}")
  return trainer.train(stage, directory)


def _numbers(results: dict) -> dict:
  return {key: value for key, value in results.items()
          if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step"}


def train_row(config: ml_collections.ConfigDict, workdir: str, *, stages_dir: str | None = None) -> dict | None:
  """Train what `config` describes into `workdir`: one run, or its stages (in `stages_dir`,
  default `workdir/stages`).  Returns the final results, or None if a stage was preempted."""
  if not is_staged(config):
    return trainer.train(config, workdir)
  resolved = resolve_stages(config, stages_dir or os.path.join(workdir, "stages"))
  results, summary = {}, {}
  for index, (name, directory, stage) in enumerate(resolved):
    stage_results = _run_stage(stage, directory)
    if stage_results is None:
      return None
    if index < len(resolved) - 1:
      summary.update({f"{name}_{key}": value for key, value in _numbers(stage_results).items()})
    results = stage_results
  final = {**results, **summary}
  trainer.write_json(os.path.join(workdir, "config.json"), json.loads(config_lib.to_json(config)))
  trainer.write_json(os.path.join(workdir, "stages.json"), {name: directory for name, directory, _ in resolved})
  trainer.write_json(os.path.join(workdir, "eval.json"), final)
  return final
