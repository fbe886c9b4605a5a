"""audioset: AudioSet (527 classes, 10 s YouTube clips) from audio you downloaded.

AudioSet is published as label files; the audio has to be fetched from YouTube by each user.
``manual_dir`` holds the official files and the audio:

  class_labels_indices.csv        header ``index,mid,display_name``
  balanced_train_segments.csv     three ``#`` comment lines, then rows
  unbalanced_train_segments.csv     ``YTID, start_seconds, end_seconds, "mid1,mid2,..."``
  eval_segments.csv
  audio/                          one file per clip named by its YouTube id, ``<YTID>.wav``
                                  (or .flac, .ogg, .mp3; ``Y<YTID>.wav`` as PANNs' download
                                  names them also works), in any subfolders

Splits ``balanced_train``, ``unbalanced_train`` and ``eval``, one per segment CSV.
``unbalanced_train_segments.csv`` may be left out (the 2M-clip set is often not downloaded):
that split is then not built; the other two CSVs are required.  Class names are the
``display_name`` column in ``index`` order.  Each clip keeps the length of its file and is
resampled to the config's sample rate (``16k`` for AST, ``32k`` for PaSST).  Segments whose
audio is missing, unreadable or truncated, and rows naming a mid outside
class_labels_indices.csv, are skipped and counted in the build report.
"""

import csv
import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator

import tensorflow_datasets as tfds

from afx.errors import DataError
from data_pipelines import builders
from data_pipelines.fsd50k import load_example

CLASS_LABELS = "class_labels_indices.csv"
AUDIO_DIR = "audio"
# afx split -> (segment CSV, whether the build needs it).
SPLIT_CSVS = {
    "balanced_train": ("balanced_train_segments.csv", True),
    "unbalanced_train": ("unbalanced_train_segments.csv", False),
    "eval": ("eval_segments.csv", True),
}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
DOWNLOAD_HINT = (
    "get class_labels_indices.csv and the *_segments.csv files from"
    " https://research.google.com/audioset/download.html and put the clips in audio/ named"
    " <YTID>.wav (or .flac, .ogg, .mp3)"
)
MISSING_AUDIO = "missing audio"
UNKNOWN_LABEL = "label not in class_labels_indices.csv"
MALFORMED_ROW = "malformed row"
DUPLICATE_ROW = "duplicate row"


@dataclasses.dataclass(frozen=True)
class Segment:
  """One row of a segment CSV: the clip's YouTube id and its label mids."""

  ytid: str
  mids: tuple[str, ...]


def check_layout(manual_dir: str | None) -> None:
  """Raises DataError unless ``manual_dir`` holds the class labels, required CSVs and audio/."""
  if manual_dir is None:
    raise DataError(f"audioset needs manual_dir=<your AudioSet directory>; {DOWNLOAD_HINT}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: no such directory for audioset; {DOWNLOAD_HINT}")
  required = [CLASS_LABELS] + [name for name, needed in SPLIT_CSVS.values() if needed]
  for name in required:
    path = os.path.join(manual_dir, name)
    if not os.path.isfile(path):
      raise DataError(f"{path}: missing; {DOWNLOAD_HINT}")
  audio_dir = os.path.join(manual_dir, AUDIO_DIR)
  if not os.path.isdir(audio_dir):
    raise DataError(f"{audio_dir}: missing; {DOWNLOAD_HINT}")


def read_class_labels(manual_dir: str) -> list[tuple[str, str]]:
  """(mid, display_name) of every class, in ``index`` order."""
  path = os.path.join(manual_dir, CLASS_LABELS)
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = {"index", "mid", "display_name"} - set(reader.fieldnames or [])
    if missing:
      raise DataError(
          f"{path}: missing column(s) {', '.join(sorted(missing))}; expected header"
          f" 'index,mid,display_name'; {DOWNLOAD_HINT}"
      )
    try:
      indexed = sorted((int(row["index"]), row["mid"].strip(), row["display_name"].strip())
                       for row in reader)
    except (ValueError, TypeError) as e:
      raise DataError(f"{path}: index must be an integer in every row ({e}); {DOWNLOAD_HINT}") from e
  names = [name for _, _, name in indexed]
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise DataError(
        f"{path}: display_name repeated ({', '.join(repeated)}); class names must be unique"
    )
  return [(mid, name) for _, mid, name in indexed]


def parse_segment(line: str) -> Segment | None:
  """The segment of a row ``YTID, start_seconds, end_seconds, "mid1,mid2"``, or None if malformed."""
  # The label field is quoted after a ", " separator, hence skipinitialspace.
  fields = next(csv.reader([line], skipinitialspace=True), [])
  if len(fields) < 4 or not fields[0].strip():
    return None
  mids = tuple(dict.fromkeys(mid.strip() for mid in fields[3].split(",") if mid.strip()))
  return Segment(fields[0].strip(), mids)


def read_segments(path: str) -> Iterator[tuple[int, str, Segment | None]]:
  """(line number, line, its segment or None if malformed) of each row of a segment CSV."""
  with open(path, newline="", encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if line.strip() and not line.startswith("#"):
        yield number, line.strip(), parse_segment(line)


def index_audio(audio_dir: str) -> dict[str, str]:
  """Clip id -> audio path for every audio file under ``audio_dir`` (the first one, sorted, per id)."""
  paths = {}
  for folder, subfolders, files in os.walk(audio_dir):
    subfolders.sort()
    for file in sorted(files):
      stem, extension = os.path.splitext(file)
      if extension.lower() in AUDIO_EXTENSIONS:
        paths.setdefault(stem, os.path.join(folder, file))
  return paths


def find_audio(audio_paths: dict[str, str], ytid: str) -> str | None:
  """The file of a clip: ``<YTID>.*``, else PANNs' ``Y<YTID>.*``."""
  return audio_paths.get(ytid) or audio_paths.get(f"Y{ytid}")


@dataclasses.dataclass(eq=False)
class AudiosetConfig(tfds.core.BuilderConfig):
  """sample_rate: the rate clips are stored at."""

  sample_rate: int = 16000


class Audioset(builders.ReportingBuilder, skip_registration=True):
  """AudioSet from ``manual_dir`` (see the module docstring for the layout).

  Constructor kwargs besides tfds's: ``manual_dir`` (needed to build, and to know the class names
  until the dataset is built) and ``num_workers`` (reading processes, default all cores).
  """

  name = "audioset"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "AudioSet balanced_train, unbalanced_train and eval, int16 mono."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [
      AudiosetConfig(name="16k", sample_rate=16000, description="Resampled to 16 kHz (AST)."),
      AudiosetConfig(name="32k", sample_rate=32000, description="Resampled to 32 kHz (PaSST)."),
  ]

  def __init__(self, *, manual_dir: str | os.PathLike | None = None,
               num_workers: int | None = None, **kwargs):
    # Class names come from the manual directory; a built dataset remembers them instead.
    if manual_dir is not None:
      check_layout(os.fspath(manual_dir))
    self.num_workers = num_workers or builders.default_num_workers()
    super().__init__(manual_dir=manual_dir, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    names = ([name for _, name in read_class_labels(self.manual_dir)]
             if self.manual_dir is not None else None)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=builders.example_features(names),
        metadata=tfds.core.MetadataDict(sample_rate=self.builder_config.sample_rate),
        homepage="https://research.google.com/audioset/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the manual directory is known from the constructor
    check_layout(self.manual_dir)
    label_index = {mid: i for i, (mid, _) in enumerate(read_class_labels(self.manual_dir))}
    audio_paths = index_audio(os.path.join(self.manual_dir, AUDIO_DIR))
    load = functools.partial(load_example, sample_rate=self.builder_config.sample_rate)
    generators = {}
    for split, (csv_name, _) in SPLIT_CSVS.items():
      csv_path = os.path.join(self.manual_dir, csv_name)
      if not os.path.isfile(csv_path):  # only the optional unbalanced_train gets here
        continue
      items = self._split_items(split, read_segments(csv_path), label_index, audio_paths)
      examples = builders.split_examples(
          self.build_report, split, items, load, num_workers=self.num_workers
      )
      if examples is not None:
        generators[split] = self._generate_examples(examples)
    if not generators:
      raise DataError(
          f"{self.manual_dir}: no usable AudioSet clip ({self.build_report.skip_summary()});"
          f" {DOWNLOAD_HINT}"
      )
    return generators

  def _split_items(self, split: str, rows: Iterable[tuple[int, str, Segment | None]],
                   label_index: dict[str, int], audio_paths: dict[str, str]) -> list[tuple[str, tuple]]:
    """(key, (path, YTID, label indices)) of a split's segments; unusable ones are skipped."""
    csv_name = SPLIT_CSVS[split][0]
    items, seen = [], set()
    for number, line, segment in rows:
      if segment is None:
        self.build_report.skip(split, builders.Skip(f"{csv_name} line {number}", MALFORMED_ROW, line))
        continue
      outside = [mid for mid in segment.mids if mid not in label_index]
      path = find_audio(audio_paths, segment.ytid)
      if outside:
        self.build_report.skip(split, builders.Skip(segment.ytid, UNKNOWN_LABEL, ", ".join(outside)))
      elif segment.ytid in seen:
        self.build_report.skip(split, builders.Skip(segment.ytid, DUPLICATE_ROW))
      elif path is None:
        self.build_report.skip(split, builders.Skip(segment.ytid, MISSING_AUDIO))
      else:
        seen.add(segment.ytid)
        labels = sorted(label_index[mid] for mid in segment.mids)
        items.append((segment.ytid, (path, segment.ytid, labels)))
    return items

  def _generate_examples(self, examples):
    """Passes on what ``builders.split_examples`` made (tfds requires this method)."""
    yield from examples
