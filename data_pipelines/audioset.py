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


AudiosetConfig = builders.SampleRateConfig  # sample_rate: the rate clips are stored at.


class Audioset(builders.ManualDirBuilder, skip_registration=True):
  """AudioSet from ``manual_dir`` (layout: the module docstring; kwargs: ``ManualDirBuilder``)."""

  name = "audioset"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "AudioSet balanced_train, unbalanced_train and eval, int16 mono."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [
      AudiosetConfig(name="16k", sample_rate=16000, description="Resampled to 16 kHz (AST)."),
      AudiosetConfig(name="32k", sample_rate=32000, description="Resampled to 32 kHz (PaSST)."),
  ]
  HOMEPAGE = "https://research.google.com/audioset/"
  DISPLAY_NAME = "AudioSet"
  check_layout = staticmethod(check_layout)
  load_example = staticmethod(load_example)

  @staticmethod
  def read_class_names(manual_dir: str) -> list[str]:
    return [name for _, name in read_class_labels(manual_dir)]

  def split_items(self) -> Iterator[tuple[str, list[tuple[str, tuple]]]]:
    label_index = {mid: i for i, (mid, _) in enumerate(read_class_labels(self.manual_dir))}
    audio_paths = index_audio(os.path.join(self.manual_dir, AUDIO_DIR))
    for split, (csv_name, _) in SPLIT_CSVS.items():
      csv_path = os.path.join(self.manual_dir, csv_name)
      if not os.path.isfile(csv_path):  # only the optional unbalanced_train gets here
        continue
      yield split, self._split_items(split, read_segments(csv_path), label_index, audio_paths)

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
