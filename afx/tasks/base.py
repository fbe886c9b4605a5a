"""The trainer's view of a task, and the registry that builds tasks by name.

A task tells the trainer what the model is built with, what it sees, what it is trained on and how
its evaluation rows become metrics (`Task`).  Optional capabilities are further methods, and the
command-line verbs that need them look for them (`require`), never for a task's type:

  features(model, variables, audio)      the `[batch, d]` vectors a linear probe reads (representation tasks)
  clip_scores(rows)                       `[classes]` scores of one file from its windows' eval rows (`run.py predict`)
  generate(model, variables, prime, rng, num_samples=, temperature=)   audio from a generative model (`run.py sample`)
  transcription_rows(model, variables, batch)   transcripts of audio chunks on the device (`run.py transcribe`)
  beam_transcription_rows(model, variables, batch, beam=, ctc_weight=, length_penalty=)   the same by beam
                                          search (`run.py transcribe --beam`)
  feature_sum_rows(model, variables, batch), speaker_arrays(rows, speakers)   each file's feature statistics,
                                          for a model normalised per speaker (`run.py transcribe`)

A task class registers itself under its task names with `@register_task("name", ...)`; `make_task`
looks the config's `task` up and calls the class's `from_config(config, info, upstream, workdir)`, with
`info` the dataset's `DatasetInfo`, `upstream` the frozen earlier runs that `config.upstream` names and
`workdir` the run's directory (None outside a run).  A class whose runs need files made from the data
before the model exists (a tokenizer built from the training transcripts) has a classmethod
`prepare(config, dataset, workdir)`, which training calls first (`prepare_run`).
"""

from typing import Any, Callable, Protocol

import numpy as np

from afx.errors import ConfigError
from data_pipelines import pipeline

_TASKS: dict[str, type] = {}
# The command-line verbs that serve a trained run, and the task method each needs.
VERBS = {"predict": "clip_scores", "sample": "generate", "transcribe": "transcription_rows"}


class Task(Protocol):
  headline_metric: str  # the key of `metrics` that an experiment table reports by default
  train_batching: Any  # a batching strategy of `data_pipelines.pipeline` (`Crops`, `Utterances`, ...)
  eval_batching: Any  # the strategy that cuts evaluation splits (`Windows`, `Utterances`, ...)

  def model_kwargs(self) -> dict:
    """What the model is built with (e.g. num_classes); see `afx.models.build_model`."""

  def example_inputs(self) -> tuple:
    """The model's positional arguments at batch 1, for initialising it."""

  def model_inputs(self, batch) -> tuple:
    """The model's positional arguments for a batch."""

  def loss(self, outputs, batch) -> tuple[Any, dict]:
    """`(scalar loss, auxiliary metrics)`, jitted; the trainer logs the auxiliary scalars beside the loss."""

  def eval_outputs(self, outputs, batch) -> dict:
    """Per-example evaluation rows of a batch, jitted."""

  def metrics(self, rows: dict[str, np.ndarray], num_examples: int) -> dict:
    """Host-side metrics from a split's concatenated `eval_outputs` rows."""


def register_task(*names: str) -> Callable[[type], type]:
  """Class decorator: the class's `from_config(config, info, upstream)` builds the tasks `names`."""
  def register(cls: type) -> type:
    for name in names:
      if name in _TASKS:
        raise ValueError(f"task {name!r} is registered twice")
      _TASKS[name] = cls
    return cls
  return register


def task_names() -> tuple[str, ...]:
  return tuple(sorted(_TASKS))


def _task_class(config) -> type:
  if config.task not in _TASKS:
    raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(task_names())}")
  return _TASKS[config.task]


def make_task(config, info, upstream: dict | None = None, workdir: str | None = None) -> Task:
  """The task named by `config.task`, sized from the config and the dataset's `info`."""
  return _task_class(config).from_config(config, info, upstream or {}, workdir)


def prepare_run(config, dataset, workdir: str) -> None:
  """Write what the task of `config` needs in `workdir` before its run is made (see the module docstring)."""
  prepare = getattr(_task_class(config), "prepare", None)
  if prepare is not None:
    prepare(config, dataset, workdir)


def upstream_run(upstream: dict, name: str, task: str):
  """The earlier run `config.upstream.NAME` that task `task` builds on."""
  if name not in upstream:
    raise ConfigError(f"task {task!r} builds on an earlier run: set config.upstream.{name} to its workdir")
  return upstream[name]


def seconds_to_samples(data, key: str, sample_rate: int) -> int:
  """`data.KEY` (seconds, 0 when unset) in samples."""
  return round(data.get(key, 0) * sample_rate)


def tasks_with(capability: str) -> list[str]:
  """The names of the registered tasks that have the method `capability`."""
  return sorted(name for name, cls in _TASKS.items() if hasattr(cls, capability))


def require(task, verb: str, *, workdir: str, task_name: str) -> Callable:
  """The task's method behind `run.py VERB` (see `VERBS`), or a ConfigError naming the tasks that serve
  the verb and the verbs this run's task serves."""
  method = getattr(task, VERBS[verb], None)
  if method is None:
    served = [f"`run.py {other}`" for other, capability in VERBS.items() if hasattr(task, capability)]
    hint = f"; this run serves {' and '.join(served)}" if served else ""
    raise ConfigError(f"{workdir} is a {task_name!r} run; `run.py {verb}` needs a run of "
                      f"{' or '.join(tasks_with(VERBS[verb]))}{hint}")
  return method


class WindowBatching:
  """Batching of the clip-window tasks: random `window_samples` crops for training, sliding
  `eval_window_samples` windows at `eval_hop_samples` for evaluation, both with the dataset's
  multi-hot labels over `dataset_classes`."""

  @property
  def eval_window_samples(self) -> int:  # a task that sees more than its training window overrides this
    return self.window_samples

  @property
  def train_batching(self) -> pipeline.Crops:
    return pipeline.Crops(self.window_samples, self.dataset_classes)

  @property
  def eval_batching(self) -> pipeline.Windows:
    return pipeline.Windows(self.eval_window_samples, self.eval_hop_samples, self.dataset_classes)
