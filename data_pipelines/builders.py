"""What afx's tfds builders share: features, the build report, parallel generation, the registry.

Every afx dataset stores examples with the same three features (see ``example_features``) in
ArrayRecord files and is read without TensorFlow through ``builder.as_data_source(split)``.
A builder derives from ``ReportingBuilder``: when its build ends it prints a one-paragraph
``BuildReport`` (examples written per split, examples skipped per reason) and writes it as
``build_report.json`` into ``builder.data_dir``.
"""

import collections
import dataclasses
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from afx.errors import DataError

SPLITS = ("train", "validation", "test")
FILE_FORMAT = "array_record"
REPORT_FILE = "build_report.json"
MAX_FILES_PER_REASON = 10

# name -> "module:Class"; imported on demand so this module never imports its builders.
_REGISTRY = {
    "synth_events": "data_pipelines.synth_events:SynthEvents",
    "synth_piano": "data_pipelines.synth_piano:SynthPiano",
    "fsd50k": "data_pipelines.fsd50k:Fsd50k",
    "audio_folder": "data_pipelines.audio_folder:AudioFolder",
    "audioset": "data_pipelines.audioset:Audioset",
    "esc50": "data_pipelines.esc50:Esc50",
    "synth_speech": "data_pipelines.synth_speech:SynthSpeech",
    "librispeech": "data_pipelines.librispeech:Librispeech",
    "wsj": "data_pipelines.wsj:Wsj",
    "speech_folder": "data_pipelines.speech_folder:SpeechFolder",
}
FOLDER_DATASETS = ("audio_folder", "speech_folder")  # datasets of a user's folder: one data_dir per folder


# Features and conversions.


def example_features(class_names: list[str] | None) -> tfds.features.FeaturesDict:
  """The features of every afx example: int16 mono audio, 0..n label indices, an id.

  ``class_names=None`` leaves the label names to be restored from a built dataset's directory.
  """
  label = tfds.features.ClassLabel(names=class_names) if class_names is not None else (
      tfds.features.ClassLabel()
  )
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "labels": tfds.features.Sequence(label),
      "id": tfds.features.Text(),
  })


def to_int16(waveform: np.ndarray) -> np.ndarray:
  """Float audio in [-1, 1] (clipped) at int16 scale."""
  return np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)


def default_data_dir() -> str:
  """``$AFX_DATA_DIR`` if set, else ``~/afx_data``."""
  return os.environ.get("AFX_DATA_DIR") or os.path.join(os.path.expanduser("~"), "afx_data")


def hash_fraction(text: str) -> float:
  """A number in [0, 1) fixed by ``text`` alone (stable across runs, unlike ``hash``)."""
  digest = hashlib.sha256(text.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


# The build report.


@dataclasses.dataclass(frozen=True)
class Skip:
  """An example left out of a build: which file, and why (a short category, then details)."""

  file: str
  reason: str
  detail: str = ""


@dataclasses.dataclass
class BuildReport:
  """Examples written per split and examples skipped, counted per reason."""

  dataset: str
  written: dict[str, int] = dataclasses.field(default_factory=dict)
  skip_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skip_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  seconds: float | None = None

  def skip(self, split: str, skip: Skip) -> None:
    self.skip_counts[skip.reason] += 1
    files = self.skip_files.setdefault(skip.reason, [])
    if len(files) < MAX_FILES_PER_REASON:
      files.append(f"{split}: {skip.file}" + (f" ({skip.detail})" if skip.detail else ""))

  @property
  def num_skipped(self) -> int:
    return sum(self.skip_counts.values())

  def as_dict(self) -> dict[str, Any]:
    return {
        "dataset": self.dataset,
        "written": dict(self.written),
        "skipped": {
            reason: {"count": count, "files": self.skip_files.get(reason, [])}
            for reason, count in self.skip_counts.most_common()
        },
        "num_skipped": self.num_skipped,
        "seconds": self.seconds,
    }

  def paragraph(self) -> str:
    """The report as one paragraph for the console."""
    written = ", ".join(f"{split} {count}" for split, count in self.written.items()) or "none"
    took = f" in {self.seconds:.1f} s" if self.seconds is not None else ""
    text = f"Built {self.dataset}{took}: examples written: {written}."
    if not self.num_skipped:
      return text + " No example was skipped."
    return text + f" Skipped {self.num_skipped}: {self.skip_summary()}. Details in {REPORT_FILE}."

  def skip_summary(self) -> str:
    """Each skip reason with its count and up to 3 of its files, or "nothing skipped"."""
    return "; ".join(
        f"{reason}: {count} (e.g. {', '.join(self.skip_files[reason][:3])})"
        for reason, count in self.skip_counts.most_common()
    ) or "nothing skipped"

  def write(self, directory: str | os.PathLike) -> str:
    path = os.path.join(os.fspath(directory), REPORT_FILE)
    with open(path, "w") as f:
      json.dump(self.as_dict(), f, indent=2)
    return path


def read_report(builder: tfds.core.DatasetBuilder) -> dict[str, Any] | None:
  """The build report a built dataset left in its directory, or None."""
  path = os.path.join(os.fspath(builder.data_dir), REPORT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


# Parallel generation.


def default_num_workers() -> int:
  """The CPU cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def map_in_order(
    function: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    num_workers: int,
    chunksize: int = 16,
) -> Iterator[Any]:
  """``map(function, items)``, spread over ``num_workers`` processes, results in input order.

  Workers are spawned rather than forked: the parent may already run JAX's threads, which a fork
  would copy in an unusable state.  ``function`` must be a module-level function (picklable).
  Small jobs run in this process, where the pool's start-up would cost more than it saves.
  """
  items = list(items)
  if num_workers <= 1 or len(items) <= 2 * chunksize:
    yield from map(function, items)
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(function, items, chunksize=chunksize)


def record_results(
    report: BuildReport, split: str, results: Iterable[tuple[str, dict[str, Any] | Skip]]
) -> Iterator[tuple[str, dict[str, Any]]]:
  """Yields (key, example) for tfds, counting each ``Skip`` in ``report`` instead of yielding it."""
  written = 0
  for key, result in results:
    if isinstance(result, Skip):
      report.skip(split, result)
    else:
      written += 1
      yield key, result
  if not written:
    # tfds cannot write an empty split; say why every example of it was skipped.
    raise DataError(
        f"{report.dataset}: every example of split {split!r} was skipped"
        f" ({report.skip_summary()}); fix or replace those files"
    )


def split_examples(
    report: BuildReport,
    split: str,
    keyed_items: list[tuple[str, Any]],
    load: Callable[[Any], dict[str, Any] | Skip],
    *,
    num_workers: int,
) -> Iterator[tuple[str, dict[str, Any]]] | None:
  """The (key, example) generator of a split of files, or None if none of its files is usable.

  tfds cannot write an empty split, so the first usable example is found here, in this process,
  before tfds is handed the split; a split whose every file is bad is left out (its skips stay in
  the report) instead of aborting the build.  The remaining items are loaded by ``map_in_order``.

  Args:
    report: where skips are counted.
    split: the split's name.
    keyed_items: (example key, what ``load`` takes) for each candidate example.
    load: a module-level function returning the example or a ``Skip``.
    num_workers: processes for the remaining items.
  """
  for position, (key, item) in enumerate(keyed_items):
    first = load(item)
    if isinstance(first, Skip):
      report.skip(split, first)
      continue
    rest = keyed_items[position + 1 :]
    results = map_in_order(load, [item for _, item in rest], num_workers=num_workers)
    keyed_results = zip([key for key, _ in rest], results)
    return record_results(report, split, itertools.chain([(key, first)], keyed_results))
  return None


class ReportingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder that owns a ``BuildReport`` and prints and saves it after a build.

  Subclasses count skips through ``split_examples`` / ``record_results`` (or
  ``self.build_report.skip``) while tfds runs their split generators; builders of files make
  those with ``file_split_generators``.  ``manual_dir`` is kept for ``prepare``; builders of
  real data read it.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10's own lookup needs `importlib_resources`, which it does not declare on Python
    # >= 3.9; the file that defines the class is all it wants.
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, manual_dir: str | os.PathLike | None = None, **kwargs):
    self.manual_dir = os.fspath(manual_dir) if manual_dir is not None else None
    super().__init__(**kwargs)
    # tfds re-creates a builder from this (when pickled, and in `prepare`); it lacks our kwargs.
    self._original_state.update(manual_dir=self.manual_dir, file_format=kwargs.get("file_format"))
    self.build_report = BuildReport(self.info.full_name)

  def download_and_prepare(self, **kwargs) -> None:
    if self.is_prepared():
      return super().download_and_prepare(**kwargs)
    self.build_report = BuildReport(self.info.full_name)
    start = time.perf_counter()
    super().download_and_prepare(**kwargs)
    self.build_report.seconds = round(time.perf_counter() - start, 3)
    # The split infos hold what tfds actually wrote (of every split, not only SPLITS: esc50's folds).
    self.build_report.written = {split: info.num_examples for split, info in self.info.splits.items()}
    self.build_report.write(self.data_dir)
    print(self.build_report.paragraph(), flush=True)

  def file_split_generators(
      self,
      split_items: Iterable[tuple[str, list[tuple[str, Any]]]],
      load: Callable[[Any], dict[str, Any] | Skip],
      *,
      num_workers: int,
      nothing_usable: str,
      hint: str,
  ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
    """``_split_generators``'s result for splits of files: ``split_examples`` of each split.

    A split with no usable file is left out (tfds cannot write an empty one).  Each split's
    examples go through ``self._generate_examples(examples)``, which passes them on.

    Args:
      split_items: (split, its keyed items for ``split_examples``) pairs; an iterator may make
        each split's items (and count their skips) just before the split is loaded.
      load: a module-level function returning the example or a ``Skip``.
      num_workers: processes reading each split.
      nothing_usable: what the DataError raised when no split has a usable file starts with.
      hint: what that error ends with, after the skip summary.
    """
    generators = {}
    for split, items in split_items:
      examples = split_examples(self.build_report, split, items, load, num_workers=num_workers)
      if examples is not None:
        generators[split] = self._generate_examples(examples)
    if not generators:
      raise DataError(f"{nothing_usable} ({self.build_report.skip_summary()}); {hint}")
    return generators


class ProceduralBuilder(ReportingBuilder, skip_registration=True):
  """A dataset generated from a seed: example ``i`` of split ``s`` is a pure function of (seed, s, i).

  Subclasses set ``DEFAULT_SPLIT_SIZES``, ``CLASS_NAMES`` and ``example_function`` (a module-level
  ``fn(index, *, seed, split, **example_kwargs()) -> example``, so worker processes can pickle it),
  and give their builder configs ``sample_rate`` and ``clip_seconds``.  Constructor kwargs besides
  tfds's: ``split_sizes`` (dict, overriding the defaults), ``seed`` (default 0), ``num_workers``
  (generating processes, default all cores).  A built dataset is reused only if it was built with
  the same seed and split sizes.
  """

  DEFAULT_SPLIT_SIZES: dict[str, int] = {}
  CLASS_NAMES: list[str] = []
  CHUNKSIZE = 16
  example_function: Callable[..., dict[str, Any]]

  def __init__(self, *, split_sizes: dict[str, int] | None = None, seed: int = 0,
               num_workers: int | None = None, **kwargs):
    self.split_sizes = {**self.DEFAULT_SPLIT_SIZES, **(split_sizes or {})}
    unknown = set(self.split_sizes) - set(SPLITS)
    if unknown:
      raise DataError(f"{self.name} split_sizes has unknown splits {sorted(unknown)}; use {', '.join(SPLITS)}")
    self.seed = int(seed)
    self.num_workers = num_workers or default_num_workers()
    super().__init__(**kwargs)
    self._original_state.update(split_sizes=self.split_sizes, seed=self.seed)
    self._check_built_matches()

  def _check_built_matches(self) -> None:
    if not self.is_prepared():
      return
    built = self.info.metadata
    wanted = {"seed": self.seed, "split_sizes": self.split_sizes}
    if any(built.get(key) != value for key, value in wanted.items()):
      raise DataError(
          f"{self.data_dir} holds {self.name} built with seed {built.get('seed')} and split sizes"
          f" {built.get('split_sizes')}, not seed {self.seed} and {self.split_sizes};"
          " use another data_dir or delete that directory"
      )

  def example_kwargs(self) -> dict[str, Any]:
    """The builder config's values that ``example_function`` takes besides index, seed and split."""
    config = self.builder_config
    return {"clip_seconds": config.clip_seconds, "sample_rate": config.sample_rate}

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=inspect.getmodule(type(self)).__doc__,
        features=example_features(self.CLASS_NAMES),
        metadata=tfds.core.MetadataDict(sample_rate=config.sample_rate, clip_seconds=config.clip_seconds,
                                        seed=self.seed, split_sizes=self.split_sizes),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS if self.split_sizes.get(split, 0) > 0}

  def _generate_examples(self, split: str):
    make_example = functools.partial(type(self).example_function, seed=self.seed, split=split,
                                     **self.example_kwargs())
    examples = map_in_order(make_example, range(self.split_sizes[split]), num_workers=self.num_workers,
                            chunksize=self.CHUNKSIZE)
    yield from record_results(self.build_report, split, ((f"{i:06d}", ex) for i, ex in enumerate(examples)))


@dataclasses.dataclass(eq=False)
class SampleRateConfig(tfds.core.BuilderConfig):
  """sample_rate: the rate clips are stored at."""

  sample_rate: int = 16000


class ManualDirBuilder(ReportingBuilder, skip_registration=True):
  """A dataset of audio files the user downloaded into ``manual_dir``, resampled at build time.

  Constructor kwargs besides tfds's: ``manual_dir`` (needed to build, and to know the class names
  until the dataset is built) and ``num_workers`` (reading processes, default all cores).  Builder
  configs are ``SampleRateConfig``s.  The dataset's description is its module's docstring.

  Subclasses set ``HOMEPAGE``, ``DISPLAY_NAME`` (as in "no usable FSD50K clip"),
  ``MANUAL_DOWNLOAD_INSTRUCTIONS`` (also ending the errors about the directory) and these hooks:

  * ``check_layout(manual_dir)``: raises DataError unless the directory holds what a build needs
    (also when ``manual_dir`` is None); called by the constructor and before a build.
  * ``read_class_names(manual_dir)``: the label names, in label-index order.
  * ``load_example(item, **example_load_kwargs())``: a module-level function (worker processes pickle
    it) returning an example or a ``Skip``; ``example_load_kwargs`` gives ``sample_rate``.
  * ``split_items()``: (split, [(key, item for load_example)]) for each split, counting the rows
    it cannot use in ``self.build_report``; called after ``check_layout``.
  """

  HOMEPAGE: str
  DISPLAY_NAME: str
  check_layout: Callable[[str | None], None]
  read_class_names: Callable[[str], list[str]]
  load_example: Callable[..., dict[str, Any] | Skip]

  def __init__(self, *, manual_dir: str | os.PathLike | None = None,
               num_workers: int | None = None, **kwargs):
    # Class names come from the manual directory; a built dataset remembers them instead.
    if manual_dir is not None:
      self.check_layout(os.fspath(manual_dir))
    self.num_workers = num_workers or default_num_workers()
    super().__init__(manual_dir=manual_dir, **kwargs)

  def split_items(self) -> Iterable[tuple[str, list[tuple[str, Any]]]]:
    """(split, [(key, item for ``load_example``)]) for each split; see the class docstring."""
    raise NotImplementedError

  def example_load_kwargs(self) -> dict[str, Any]:
    """The keyword arguments ``load_example`` takes besides its item."""
    return {"sample_rate": self.builder_config.sample_rate}

  def _info(self) -> tfds.core.DatasetInfo:
    names = self.read_class_names(self.manual_dir) if self.manual_dir is not None else None
    return tfds.core.DatasetInfo(
        builder=self,
        description=inspect.getmodule(type(self)).__doc__,
        features=example_features(names),
        metadata=tfds.core.MetadataDict(sample_rate=self.builder_config.sample_rate),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the manual directory is known from the constructor
    self.check_layout(self.manual_dir)
    load = functools.partial(type(self).load_example, **self.example_load_kwargs())
    return self.file_split_generators(
        self.split_items(), load, num_workers=self.num_workers,
        nothing_usable=f"{self.manual_dir}: no usable {self.DISPLAY_NAME} clip",
        hint=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
    )

  def _generate_examples(self, examples):
    """Passes on what ``split_examples`` made (tfds requires this method)."""
    yield from examples


# The registry.


def known_names() -> list[str]:
  """Every name ``get_builder`` accepts: datasets and dataset/config pairs."""
  names = []
  for name in _REGISTRY:
    names.append(name)
    names += [f"{name}/{config.name}" for config in _builder_class(name).BUILDER_CONFIGS]
  return names


def _builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  module_name, class_name = _REGISTRY[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)


def folder_data_dir(base_dir: str, folder: str | os.PathLike, name: str = "audio_folder") -> str:
  """The data_dir of a folder dataset (``FOLDER_DATASETS``): ``base_dir/<name>-<hash of the folder>``.

  Datasets built from different folders share a name and config, so each gets its own directory,
  named by the first 10 hex digits of the SHA-256 of the folder's absolute path.
  """
  absolute = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  digest = hashlib.sha256(absolute.encode("utf-8")).hexdigest()[:10]
  return os.path.join(base_dir, f"{name}-{digest}")


def get_builder(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    **builder_kwargs,
) -> tfds.core.DatasetBuilder:
  """The builder of an afx dataset, writing ArrayRecord.

  Args:
    name: ``"dataset"`` or ``"dataset/config"``, e.g. ``"synth_events/single_label"``.
    data_dir: where datasets are built; default ``$AFX_DATA_DIR`` or ``~/afx_data``.
      ``audio_folder`` and ``speech_folder`` build in a subfolder named by a hash of their ``folder`` (see
      ``folder_data_dir``) so datasets from different folders do not collide.
    manual_dir: the directory of downloaded real data (fsd50k, audioset, esc50, librispeech, wsj).
    **builder_kwargs: passed to the builder (``split_sizes``, ``seed``, ``folder``, ...).

  Raises:
    DataError: unknown dataset or config name.
  """
  dataset, _, config = name.partition("/")
  if dataset not in _REGISTRY:
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(known_names())}")
  builder_class = _builder_class(dataset)
  if config:
    config_names = [c.name for c in builder_class.BUILDER_CONFIGS]
    if config not in config_names:
      raise DataError(
          f"dataset {dataset!r} has no config {config!r}; known: {', '.join(config_names)}"
      )
    builder_kwargs["config"] = config
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  if dataset in FOLDER_DATASETS and builder_kwargs.get("folder") is not None:
    data_dir = folder_data_dir(data_dir, builder_kwargs["folder"], dataset)
  return builder_class(
      data_dir=data_dir, manual_dir=manual_dir, file_format=FILE_FORMAT, **builder_kwargs
  )


def prepare(
    builder: tfds.core.DatasetBuilder, *, manual_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
  """Builds ``builder``'s dataset as ArrayRecord unless it is built already; returns the builder.

  The build prints its report and leaves ``build_report.json`` in ``builder.data_dir``.
  """
  if builder.is_prepared():
    return builder
  if manual_dir is not None and os.fspath(manual_dir) != getattr(builder, "manual_dir", None):
    # A builder of real data reads its class names from the manual directory when constructed.
    state = builder._original_state  # pylint: disable=protected-access
    builder = type(builder)(**{**state, "manual_dir": manual_dir})
  manual_dir = getattr(builder, "manual_dir", None)
  builder.download_and_prepare(
      file_format=FILE_FORMAT,
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
  )
  return builder


def class_names(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The dataset's label names, in label-index order."""
  return list(builder.info.features["labels"].feature.names)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a task and a model need to know of a dataset.

  ``class_names``: label names in label-index order, or None for a dataset without clip labels;
  ``vocabulary``: the characters its transcripts use, or None for a dataset without text.
  """

  sample_rate: int
  class_names: tuple[str, ...] | None = None
  vocabulary: tuple[str, ...] | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names or ())

  def to_json(self) -> dict[str, Any]:
    return {"sample_rate": self.sample_rate,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "vocabulary": list(self.vocabulary) if self.vocabulary is not None else None}

  @classmethod
  def from_json(cls, payload: dict[str, Any]) -> "DatasetInfo":
    """The info of a ``dataset.json`` (older files hold just ``sample_rate`` and ``class_names``)."""
    as_tuple = lambda key: tuple(payload[key]) if payload.get(key) is not None else None
    return cls(int(payload["sample_rate"]), as_tuple("class_names"), as_tuple("vocabulary"))


def dataset_info(builder: tfds.core.DatasetBuilder) -> DatasetInfo:
  """The ``DatasetInfo`` of a built dataset: its sample rate, label names and transcript characters."""
  features = builder.info.features
  names = tuple(class_names(builder)) if "labels" in features else None
  vocabulary = (builder.info.metadata or {}).get("vocabulary")
  return DatasetInfo(sample_rate(builder), names, tuple(vocabulary) if vocabulary is not None else None)


def sample_rate(builder: tfds.core.DatasetBuilder) -> int:
  """The sample rate of the dataset's audio."""
  return int(builder.info.metadata["sample_rate"])
