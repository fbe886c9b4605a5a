"""fsd50k: FSD50K (200 AudioSet classes, 51k clips) from a manual download.

Download FSD50K from zenodo record 4060432 and unzip it so that ``manual_dir`` holds:

  FSD50K.dev_audio/*.wav           development clips (train + val)
  FSD50K.eval_audio/*.wav          evaluation clips (test)
  FSD50K.ground_truth/vocabulary.csv   no header; rows ``index,label,mid``
  FSD50K.ground_truth/dev.csv      header ``fname,labels,mids,split``; split is train or val
  FSD50K.ground_truth/eval.csv     header ``fname,labels,mids``

Splits: ``train`` and ``validation`` from dev.csv's split column, ``test`` from eval.csv.
Labels follow vocabulary.csv's order.  Clips keep their full length and are resampled to the
config's sample rate (``16k`` by default, ``44k`` keeps the original 44.1 kHz).  Unreadable,
truncated, empty or missing files and rows naming a label outside the vocabulary are skipped
and counted in the build report.
"""

import csv
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from afx.audio.io import load_audio
from afx.errors import AudioError, DataError
from data_pipelines import builders

DOWNLOAD_HINT = (
    "download FSD50K from zenodo record 4060432 (https://zenodo.org/records/4060432) and unzip"
    " it so the directory holds FSD50K.dev_audio/, FSD50K.eval_audio/ and"
    " FSD50K.ground_truth/{vocabulary,dev,eval}.csv"
)
GROUND_TRUTH = "FSD50K.ground_truth"
AUDIO_DIRS = {"dev": "FSD50K.dev_audio", "eval": "FSD50K.eval_audio"}
# (csv file, value of its split column or None for all rows) for each afx split.
SPLIT_SOURCES = {
    "train": ("dev.csv", "train"),
    "validation": ("dev.csv", "val"),
    "test": ("eval.csv", None),
}
UNKNOWN_LABEL = "label not in vocabulary"
DUPLICATE_ROW = "duplicate row"


def check_layout(manual_dir: str | None) -> None:
  """Raises DataError unless ``manual_dir`` holds FSD50K's ground-truth files."""
  if manual_dir is None:
    raise DataError(f"fsd50k needs manual_dir=<the FSD50K directory>; {DOWNLOAD_HINT}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: no such directory for fsd50k; {DOWNLOAD_HINT}")
  for name in ("vocabulary.csv", "dev.csv", "eval.csv"):
    path = os.path.join(manual_dir, GROUND_TRUTH, name)
    if not os.path.isfile(path):
      raise DataError(f"{path}: missing; {DOWNLOAD_HINT}")


def read_vocabulary(manual_dir: str) -> list[str]:
  """Label names in vocabulary.csv's index order."""
  path = os.path.join(manual_dir, GROUND_TRUTH, "vocabulary.csv")
  with open(path, newline="") as f:
    rows = [row for row in csv.reader(f) if row]
  try:
    indexed = sorted((int(row[0]), row[1]) for row in rows)
  except (ValueError, IndexError) as e:
    raise DataError(f"{path}: rows must be 'index,label,mid' ({e}); {DOWNLOAD_HINT}") from e
  return [label for _, label in indexed]


def read_ground_truth(path: str, split_value: str | None) -> list[tuple[str, list[str]]]:
  """(fname, label names) of the rows of dev.csv / eval.csv, those of one split if given."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    needed = {"fname", "labels"} | ({"split"} if split_value else set())
    missing = needed - set(reader.fieldnames or [])
    if missing:
      raise DataError(
          f"{path}: missing column(s) {', '.join(sorted(missing))}; expected header"
          f" 'fname,labels,mids{',split' if split_value else ''}'"
      )
    return [
        (row["fname"].strip(), [label.strip() for label in row["labels"].split(",") if label])
        for row in reader
        if split_value is None or row["split"].strip() == split_value
    ]


def load_example(item: tuple[str, str, list[int]], *, sample_rate: int) -> dict | builders.Skip:
  """Reads one clip (runs in a worker process): the example, or why it was skipped."""
  path, clip_id, labels = item
  try:
    waveform, _ = load_audio(path, sample_rate=sample_rate)
  except AudioError as e:
    return builders.Skip(os.path.basename(path), getattr(e, "reason", "unreadable audio"), str(e))
  return {"audio": builders.to_int16(waveform), "labels": labels, "id": clip_id}


Fsd50kConfig = builders.SampleRateConfig  # sample_rate: the rate clips are stored at.


class Fsd50k(builders.ManualDirBuilder, skip_registration=True):
  """FSD50K from ``manual_dir`` (layout: the module docstring; kwargs: ``ManualDirBuilder``)."""

  name = "fsd50k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "FSD50K dev (train/validation) and eval (test), int16 mono."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [
      Fsd50kConfig(name="16k", sample_rate=16000, description="Resampled to 16 kHz."),
      Fsd50kConfig(name="44k", sample_rate=44100, description="The original 44.1 kHz."),
  ]
  HOMEPAGE = "https://zenodo.org/records/4060432"
  DISPLAY_NAME = "FSD50K"
  check_layout = staticmethod(check_layout)
  read_class_names = staticmethod(read_vocabulary)
  load_example = staticmethod(load_example)

  def split_items(self) -> Iterator[tuple[str, list[tuple[str, tuple]]]]:
    label_index = {name: i for i, name in enumerate(read_vocabulary(self.manual_dir))}
    for split in SPLIT_SOURCES:
      yield split, self._split_items(split, label_index)

  def _split_items(self, split: str, label_index: dict[str, int]) -> list[tuple[str, tuple]]:
    """(key, (path, id, label indices)) of a split's rows; rows that cannot be used are skipped."""
    csv_name, split_value = SPLIT_SOURCES[split]
    audio_dir = AUDIO_DIRS["dev" if csv_name == "dev.csv" else "eval"]
    rows = read_ground_truth(os.path.join(self.manual_dir, GROUND_TRUTH, csv_name), split_value)
    items, seen = [], set()
    for fname, names in rows:
      file_name = f"{fname}.wav"
      outside = [name for name in names if name not in label_index]
      if outside:
        self.build_report.skip(split, builders.Skip(file_name, UNKNOWN_LABEL, ", ".join(outside)))
      elif fname in seen:
        self.build_report.skip(split, builders.Skip(file_name, DUPLICATE_ROW))
      else:
        seen.add(fname)
        path = os.path.join(self.manual_dir, audio_dir, file_name)
        items.append((fname, (path, fname, sorted(label_index[name] for name in names))))
    return items
