"""One linear training loop for every task, on one device or many.

`train(config, workdir)` builds the dataset, creates the state already sharded over the mesh, runs
jitted steps that donate their state, logs, evaluates, checkpoints (state + data iterator) and
resumes from `workdir` when rerun.  `evaluate` and `predict` reload a finished run.

`average_checkpoints = N` (> 1) evaluates the mean parameters of the last N checkpoints (ESPnet's model
averaging), saved in `workdir/averaged/`, which `load_run` then serves.

Evaluations during training are config entries, each at its own cadence:

  config.evals.NAME = {"kind": KIND, "split": SPLIT, "every": STEPS, "final": False}

logs KIND's metrics on SPLIT every STEPS steps as `NAME_METRIC`; with `final` it also runs on the test
split at the end and its metrics join `eval.json`.  Kinds are registered with `register_evaluator`:
`metrics` is the task's own metrics, `beam_search` a speech task's beam-search transcripts scored as
`wer` and `cer` (options in `config.decoding`: `beam`, `ctc_weight`, `length_penalty`).  A config without `evals` gets one: `val`, the task's metrics on
`data.eval_split` every `eval_every` steps.
"""

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from afx import models
from afx.errors import ConfigError, NonFiniteLossError
from afx import tasks
from afx.train import config as config_lib
from afx.train import sharding
from afx.train.checkpoint import Checkpoints, abstract_with_shardings, load_arrays
from afx.train.data import open_dataset
from afx.train.metric_writer import MetricWriter
from afx.train.optim import learning_rate_schedule, make_optimizer
from afx.train.weights import init_from_weights
from data_pipelines import DatasetInfo


RNG_STREAMS = ("dropout", "augment", "patchout")  # the random streams a model may draw from in training


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any  # non-parameter collections, e.g. BatchNorm statistics
  opt_state: Any


def init_state(rng, *, model, tx, example_inputs) -> TrainState:
  inputs = jax.tree.map(jnp.asarray, tuple(example_inputs))  # an input may be a tuple of arrays or None
  variables = dict(model.init({"params": rng, "dropout": rng}, *inputs, train=False))
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params))


def _apply(model, state, params, inputs: tuple, *, train: bool, rng=None):
  """Model outputs for positional arguments `inputs`, and the updated non-parameter collections."""
  variables = {"params": params, **state.model_state}
  rngs = dict(zip(RNG_STREAMS, jax.random.split(rng, len(RNG_STREAMS)))) if rng is not None else {}
  if train and state.model_state:
    return model.apply(variables, *inputs, train=True, rngs=rngs, mutable=list(state.model_state))
  return model.apply(variables, *inputs, train=train, rngs=rngs), state.model_state


def train_step(state: TrainState, batch, *, model, tx, task, rng) -> tuple[TrainState, dict]:
  """One optimiser step on a global batch; dropout keys are folded from the step number."""
  step_rng = jax.random.fold_in(rng, state.step)

  def objective(params):
    outputs, model_state = _apply(model, state, params, task.model_inputs(batch), train=True, rng=step_rng)
    loss, aux = task.loss(outputs, batch)
    return loss, (aux, model_state)

  (loss, (aux, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            model_state=model_state, opt_state=opt_state)
  return new_state, {**aux, "loss": loss, "grad_norm": optax.tree.norm(grads)}


def predict_step(state: TrainState, batch, *, model, task) -> dict:
  """The task's per-example evaluation rows of a global batch."""
  outputs, _ = _apply(model, state, state.params, task.model_inputs(batch), train=False)
  return task.eval_outputs(outputs, batch)


@dataclasses.dataclass
class Run:
  """Everything fixed by a config and a dataset: mesh, model, optimiser and compiled steps."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  task: Any  # see afx.tasks
  model: Any
  tx: optax.GradientTransformation
  learning_rate: Callable[[int], float]
  info: DatasetInfo
  batch_sharding: jax.sharding.NamedSharding
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings, for restoring
  init: Callable
  train_step: Callable
  predict: Callable
  compiled: dict = dataclasses.field(default_factory=dict)  # steps evaluators compile once per run, by kind

  def to_global(self, local_batch: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in local_batch.items()}

  def jit_eval(self, fn: Callable) -> Callable:
    """`fn(state, global_batch) -> dict` compiled as `predict` is: batch split over the mesh, outputs replicated."""
    return _jit_eval(self.mesh, fn, self.state_shardings, self.batch_sharding)


def _under_mesh(mesh, fn: Callable) -> Callable:
  """`fn` traced and run with `mesh` as the context mesh, so per-device kernels can shard_map over it."""
  @functools.wraps(fn)
  def call(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return call


@dataclasses.dataclass(frozen=True)
class FrozenRun:
  """A finished run's model and variables, as a later stage uses it (see `load_upstream`)."""
  model: Any
  variables: dict
  task: Any
  info: DatasetInfo


def load_upstream(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The earlier runs a config builds on: `config.upstream` maps a name to a workdir.

  A workdir that `train` wrote becomes a `FrozenRun`; a directory that `checkpoint.save_arrays`
  wrote into (e.g. a k-means stage's) becomes its dict of NumPy arrays.
  """
  loaded = {}
  for name, directory in sorted((config.get("upstream") or {}).items()):
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.isdir(os.path.join(directory, "checkpoints")):
      run, state = load_run(directory)
      loaded[name] = FrozenRun(run.model, {"params": state.params, **state.model_state}, run.task, run.info)
    else:
      loaded[name] = load_arrays(directory, what=f"upstream.{name}")
  return loaded


def _jit_eval(mesh, fn: Callable, state_shardings, batch_sharding) -> Callable:
  return _under_mesh(mesh, jax.jit(fn, in_shardings=(state_shardings, batch_sharding),
                                   out_shardings=sharding.replicated(mesh)))


def make_run(config: ml_collections.ConfigDict, info: DatasetInfo, *, workdir: str | None = None,
             devices=None) -> Run:
  """The run of `config` on a dataset described by `info`, in `workdir` (where the task finds what
  `tasks.prepare_run` wrote): nothing is trained or restored yet."""
  task = tasks.make_task(config, info, load_upstream(config), workdir)
  mesh = sharding.make_mesh(config.get("fsdp", 1), devices)
  sharding.check_batch_size(config.batch_size, mesh)
  model = models.build_model(config.model, **task.model_kwargs(), sample_rate=info.sample_rate,
                             attention_impl=config.attention_impl or None)
  tx = make_optimizer(config.optimizer, config.total_steps)
  schedule = learning_rate_schedule(config.optimizer, config.total_steps)
  init = functools.partial(init_state, model=model, tx=tx, example_inputs=task.example_inputs())
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(mesh, abstract)
  batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  step = functools.partial(train_step, model=model, tx=tx, task=task, rng=jax.random.key(config.seed + 1))
  return Run(
      config=config, mesh=mesh, task=task, model=model, tx=tx, learning_rate=schedule,
      info=info, batch_sharding=batch_sharding, state_shardings=shardings,
      abstract_state=abstract_with_shardings(abstract, shardings),
      init=_under_mesh(mesh, jax.jit(init, out_shardings=shardings)),
      train_step=_under_mesh(mesh, jax.jit(step, in_shardings=(shardings, batch_sharding),
                                           out_shardings=(shardings, replicated), donate_argnums=0)),
      predict=_jit_eval(mesh, functools.partial(predict_step, model=model, task=task), shardings, batch_sharding))


def _host(array) -> np.ndarray:
  """A replicated global array as a NumPy array on this host (works across processes)."""
  return np.asarray(array.addressable_data(0))


def load_run(workdir: str) -> tuple[Run, TrainState]:
  """The run's config, model and newest checkpointed state, laid out over this machine's devices."""
  workdir = os.path.abspath(workdir)
  config = config_lib.from_json(os.path.join(workdir, "config.json"))
  dataset_path = os.path.join(workdir, "dataset.json")
  if not os.path.exists(dataset_path):
    raise ConfigError(f"{dataset_path} does not exist; is {workdir} a workdir that `run.py train` wrote?")
  with open(dataset_path) as f:
    info = DatasetInfo.from_json(json.load(f))
  run = make_run(config, info, workdir=workdir)
  averaged = os.path.join(workdir, AVERAGED)
  checkpoints = Checkpoints(averaged if os.path.isdir(averaged) else os.path.join(workdir, "checkpoints"))
  step = checkpoints.latest_step()
  if step is None:
    checkpoints.close()
    raise ConfigError(f"{workdir}/checkpoints holds no checkpoint yet; run `run.py train` with this --workdir first")
  state = checkpoints.restore(step, run.abstract_state)
  checkpoints.close()
  return run, state


AVERAGED = "averaged"  # workdir/averaged/<step>: the state `average_checkpoints` evaluated, which load_run serves


def average_last(run: Run, state: TrainState, directory: str, count: int) -> tuple[TrainState, list[int]]:
  """`state` with the mean parameters of the newest `count` checkpoints in `directory` (ESPnet's model
  averaging: smoother than the last step's), and those steps; the other collections are the newest's."""
  checkpoints = Checkpoints(directory)
  steps = checkpoints.steps()[-count:]
  total = None
  for step in steps:
    params = checkpoints.restore(step, run.abstract_state).params
    total = params if total is None else jax.tree_util.tree_map(jnp.add, total, params)
  checkpoints.close()
  mean = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x / len(steps), tree),
                 out_shardings=run.state_shardings.params)(total)
  return state.replace(params=mean), steps


def eval_rows(run: Run, state: TrainState, source, step: Callable | None = None) -> dict[str, np.ndarray]:
  """`step(state, global_batch)` (default: the task's eval rows) over the task's evaluation batches of
  `source` (e.g. sliding windows of every clip), concatenated."""
  eval_batch = run.config.get("eval_batch_size") or run.config.batch_size
  sharding.check_batch_size(eval_batch, run.mesh)
  strategy = run.task.eval_batching
  shard = dict(batch_size=eval_batch, process_index=jax.process_index(), process_count=jax.process_count())
  num_batches = None
  if jax.process_count() > 1:  # every process runs as many steps as the one with the most batches
    from jax.experimental import multihost_utils
    counts = multihost_utils.process_allgather(np.asarray(strategy.count_batches(source, **shard)))
    num_batches = int(np.max(counts))
  rows: dict[str, list] = {}
  for batch in strategy.evaluate(source, num_batches=num_batches, **shard):
    for key, value in (step or run.predict)(state, run.to_global(batch)).items():
      rows.setdefault(key, []).append(_host(value))
  return {key: concatenate_rows(value) for key, value in rows.items()}


def concatenate_rows(parts: list[np.ndarray]) -> np.ndarray:
  """Batches of rows joined along the batch axis, zero-padded to the longest of each other axis: batches
  of different buckets give rows of different lengths (e.g. per-frame transcripts), each with its length."""
  shape = np.max([part.shape for part in parts], axis=0)
  padded = [np.pad(part, [(0, 0)] + [(0, int(size) - n) for size, n in zip(shape[1:], part.shape[1:])])
            for part in parts]
  return np.concatenate(padded)


def evaluate_source(run: Run, state: TrainState, source) -> dict[str, float]:
  """The task's metrics on a split, from its eval rows over the task's evaluation batches."""
  return run.task.metrics(eval_rows(run, state, source), len(source))


DECODING_DEFAULTS = {"beam": 10, "ctc_weight": 0.3, "length_penalty": 0.0}  # Speech-Transformer's beam, ESPnet's weight


def decoding_options(config: ml_collections.ConfigDict) -> dict:
  """The config's `decoding` group over `DECODING_DEFAULTS`; an unknown key is a ConfigError."""
  given = dict(config.get("decoding") or {})
  unknown = sorted(set(given) - set(DECODING_DEFAULTS))
  if unknown:
    raise ConfigError(f"config key decoding.{unknown[0]} is unknown; decoding has {', '.join(DECODING_DEFAULTS)}")
  return {**DECODING_DEFAULTS, **given}


def evaluate_beam_search(run: Run, state: TrainState, source) -> dict[str, float]:
  """A split decoded by the task's beam search (`beam_rows`, options from `config.decoding`) and scored."""
  task = run.task
  if "beam_search" not in run.compiled:
    options = decoding_options(run.config)
    run.compiled["beam_search"] = run.jit_eval(lambda state, batch: task.beam_rows(
        run.model, {"params": state.params, **state.model_state}, batch, **options))
  return task.beam_metrics(eval_rows(run, state, source, run.compiled["beam_search"]))


# kind → fn(run, state, source) -> metrics, and the task method it needs (None: any task)
EVALUATORS: dict[str, Callable] = {"metrics": evaluate_source, "beam_search": evaluate_beam_search}
EVALUATOR_NEEDS: dict[str, str | None] = {"metrics": None, "beam_search": "beam_rows"}
EVALUATOR_KEYS = ("kind", "split", "every", "final")


def register_evaluator(kind: str, evaluate: Callable, *, needs: str | None = None) -> None:
  """Make `config.evals.NAME.kind = kind` run `evaluate(run, state, source) -> dict of metrics`, for tasks
  that have the method `needs`."""
  if kind in EVALUATORS:
    raise ValueError(f"evaluator kind {kind!r} is registered twice")
  EVALUATORS[kind], EVALUATOR_NEEDS[kind] = evaluate, needs


def evaluators(config: ml_collections.ConfigDict, task=None) -> dict[str, dict]:
  """The config's evaluations by name, each `{"kind", "split", "every", "final"}` (see the module docstring);
  a kind that `task` cannot serve is a ConfigError before anything is trained."""
  if "evals" not in config:
    return {"val": {"kind": "metrics", "split": config.data.eval_split, "every": int(config.eval_every or 0),
                    "final": False}} if config.eval_every else {}
  chosen = {}
  for name, entry in config.evals.items():
    entry = dict(entry)
    unknown = sorted(set(entry) - set(EVALUATOR_KEYS))
    if unknown:
      raise ConfigError(f"config key evals.{name}.{unknown[0]} is unknown; an evaluation has {', '.join(EVALUATOR_KEYS)}")
    kind = entry.get("kind", "metrics")
    if kind not in EVALUATORS:
      raise ConfigError(f"evals.{name}.kind is {kind!r}; choose one of {', '.join(sorted(EVALUATORS))}")
    needs = EVALUATOR_NEEDS[kind]
    if task is not None and needs and not hasattr(task, needs):
      raise ConfigError(f"evals.{name}.kind {kind!r} needs a run of {' or '.join(tasks.tasks_with(needs))}, "
                        f"not of {config.task!r}")
    chosen[name] = {"kind": kind, "split": entry.get("split") or config.data.eval_split,
                    "every": int(entry.get("every") or 0), "final": bool(entry.get("final", False))}
  return chosen


class _PreemptionFlag:
  """Set by SIGTERM (single host) or by orbax's preemption sync point (multi-host)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no signal handling
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(pending: list[dict], last_step: int, checkpoint_dir: str, last_saved: int | None) -> dict:
  """Mean metrics of the steps since the last check; a non-finite loss stops the run."""
  fetched = jax.device_get(pending)
  values = {key: np.asarray([m[key] for m in fetched], np.float64) for key in fetched[0]}
  bad = np.nonzero(~np.isfinite(values["loss"]))[0]
  if bad.size:
    first_step = last_step - len(pending) + 1
    saved = f"the last good checkpoint (step {last_saved}) in {checkpoint_dir} is intact" if last_saved \
        else "no checkpoint had been saved yet"
    raise NonFiniteLossError(
        f"loss became non-finite at step {first_step + int(bad[0])} (checked steps {first_step}-{last_step}); "
        f"{saved}. Lower --config.optimizer.learning_rate or set --config.optimizer.grad_clip_norm")
  return {key: float(v.mean()) for key, v in values.items()}


def write_dataset_json(workdir: str, name: str, info: DatasetInfo) -> None:
  """`workdir/dataset.json`: the dataset's name and `DatasetInfo`, which `load_run` rebuilds the run from."""
  write_json(os.path.join(workdir, "dataset.json"), {"name": name, **info.to_json()})


def write_json(path: str, payload) -> None:
  """Write `payload` as JSON atomically, from process 0 only."""
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(payload, f, indent=2)
      f.write("\n")
    os.replace(tmp, path)


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None,
          devices=None) -> dict | None:
  """Train, evaluate and write `workdir/{config.json,metrics.jsonl,checkpoints/,eval.json}`.

  Rerunning with the same workdir resumes from the newest checkpoint (parameters, optimiser and data
  iterator).  A fresh run with `config.init_from` (a published weight file, e.g. a timm ViT/DeiT for an
  `ast` or `passt` model) starts from the parameters it gives (`afx.train.weights.init_from_weights`).  `stop_at_step` (or
  SIGTERM) saves a checkpoint at that step and returns None, as a preempted job would.  Returns the
  final test metrics.
  """
  sharding.maybe_initialize_distributed()
  workdir = os.path.abspath(workdir)
  dataset = open_dataset(config.data)
  tasks.prepare_run(config, dataset, workdir)  # process 0 writes; the others read it after the barrier
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"{workdir} prepared")
  run = make_run(config, dataset.info, workdir=workdir, devices=devices)
  evals = evaluators(config, run.task)
  average = int(config.get("average_checkpoints") or 0)
  if average > config.get("keep_checkpoints", 3):
    raise ConfigError(f"average_checkpoints={average} needs as many kept checkpoints; set "
                      f"--config.keep_checkpoints={average} (or more)")

  train_iter = iter(run.task.train_batching.train(
      dataset.source(config.data.train_split), batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.data.get("num_threads", 4)))
  os.makedirs(workdir, exist_ok=True)
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 3))
  latest = checkpoints.latest_step()  # step 0 exists after `run.py convert`: fine-tuning starts from it
  start = latest or 0
  state = run.init(jax.random.key(config.seed)) if latest is None else \
      checkpoints.restore(latest, run.abstract_state, train_iter)
  if latest is None and config.get("init_from"):  # a resumed run's checkpoint already holds the imported weights
    state = init_from_weights(run, state, config.init_from)
  eval_path = os.path.join(workdir, "eval.json")
  if start >= config.total_steps and os.path.exists(eval_path):  # finished: its config.json describes it
    checkpoints.close()
    with open(eval_path) as f:
      return json.load(f)
  # Written only now, so a config that cannot build or restore this run leaves the workdir as it was.
  write_json(os.path.join(workdir, "config.json"), json.loads(config_lib.to_json(config)))
  write_dataset_json(workdir, config.data.name, dataset.info)

  writer = MetricWriter(workdir, resume_step=start)
  last_saved = start or None
  pending: list[dict] = []
  sources = {entry["split"]: dataset.source(entry["split"]) for entry in evals.values()}
  progress = tqdm(total=config.total_steps, initial=start, unit="step", disable=jax.process_index() != 0,
                  dynamic_ncols=True, desc=os.path.basename(workdir))
  tick, tick_step = time.perf_counter(), start
  try:
    with _PreemptionFlag() as preemption:
      for step in range(start, config.total_steps):
        if step == stop_at_step or preemption.requested or (
            jax.process_count() > 1 and checkpoints.reached_preemption(step)):
          if pending:
            _check_finite(pending, step, checkpoints.directory, last_saved)
          checkpoints.save(step, state, train_iter)
          checkpoints.wait()
          tqdm.write(f"stopped at step {step}: checkpoint saved in {checkpoints.directory}; "
                     "rerun the same command to resume", file=sys.stderr)
          return None
        state, step_metrics = run.train_step(state, run.to_global(next(train_iter)))
        pending.append(step_metrics)
        done = step + 1
        evaluate_now = [name for name, entry in evals.items()
                        if entry["every"] and done % entry["every"] == 0 and done < config.total_steps]
        save_now = done % config.checkpoint_every == 0 or done == config.total_steps
        log_now = done % config.log_every == 0 or done == config.total_steps or bool(evaluate_now)
        if log_now or save_now:
          means = _check_finite(pending, done, checkpoints.directory, last_saved)
          pending = []
          if log_now:
            now = time.perf_counter()
            record = {**means, "learning_rate": float(run.learning_rate(done)),
                      "steps_per_sec": (done - tick_step) / max(now - tick, 1e-9)}
            tick, tick_step = now, done
            for name in evaluate_now:
              entry = evals[name]
              metrics = EVALUATORS[entry["kind"]](run, state, sources[entry["split"]])
              record.update({f"{name}_{key}": value for key, value in metrics.items()})
            writer.write(done, record)
            progress.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
        if save_now:
          checkpoints.save(done, state, train_iter)
          last_saved = done
        progress.update(1)
    checkpoints.wait()
  finally:
    progress.close()
    writer.close()
    checkpoints.wait()
    checkpoints.close()

  averaged_steps = None
  if average > 1:
    state, averaged_steps = average_last(run, state, checkpoints.directory, average)
    final = Checkpoints(os.path.join(workdir, AVERAGED), keep=1)
    final.save(config.total_steps, state)
    final.wait()
    final.close()
  test = dataset.source(config.data.test_split)
  results = evaluate_source(run, state, test)
  for entry in evals.values():
    if entry["final"]:
      results.update(EVALUATORS[entry["kind"]](run, state, test))
  results.update(split=config.data.test_split, step=int(config.total_steps),
                 params=models.parameter_count(state.params))
  if averaged_steps:
    results["averaged_steps"] = averaged_steps
  write_json(eval_path, results)
  if jax.process_index() == 0:
    models.write_figures(config.model.name, jax.device_get(state.params), sample_rate=run.info.sample_rate,
                         directory=workdir)
  return results
