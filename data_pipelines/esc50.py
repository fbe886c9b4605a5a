"""esc50: ESC-50 (2000 environmental 5 s clips, 50 classes, 5 folds) from a clone of its repository.

Clone or unzip https://github.com/karolpiczak/ESC-50 so that ``manual_dir`` holds:

  audio/*.wav       5 s clips at 44.1 kHz
  meta/esc50.csv    header ``filename,fold,target,category,esc10,src_file,take``

Splits ``fold1`` ... ``fold5``, one per value of the fold column.  Cross-validation trains on four
folds and evaluates on the fifth: ``train_split="fold1+fold2+fold3+fold4"``, ``eval_split="fold5"``.
Class names are the ``category`` values in ``target`` order; each clip has one label.  Clips are
resampled to the config's sample rate (``16k`` or ``32k``).  Missing, unreadable or truncated
files, rows with another fold and repeated rows are skipped and counted in the build report.
"""

import csv
import dataclasses
import os
from collections.abc import Iterable

import tensorflow_datasets as tfds

from afx.errors import DataError
from data_pipelines import builders
from data_pipelines.fsd50k import load_example

META_CSV = os.path.join("meta", "esc50.csv")
AUDIO_DIR = "audio"
FOLDS = {str(fold): f"fold{fold}" for fold in range(1, 6)}  # fold column value -> split
COLUMNS = ("filename", "fold", "target", "category")
DOWNLOAD_HINT = (
    "clone https://github.com/karolpiczak/ESC-50 (or unzip its archive) so the directory holds"
    " audio/*.wav and meta/esc50.csv"
)
UNKNOWN_FOLD = "unknown fold"
DUPLICATE_ROW = "duplicate row"


@dataclasses.dataclass(frozen=True)
class Clip:
  """One row of esc50.csv."""

  filename: str
  fold: str
  target: int
  category: str


def check_layout(manual_dir: str | None) -> None:
  """Raises DataError unless ``manual_dir`` holds meta/esc50.csv and audio/."""
  if manual_dir is None:
    raise DataError(f"esc50 needs manual_dir=<the ESC-50 directory>; {DOWNLOAD_HINT}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: no such directory for esc50; {DOWNLOAD_HINT}")
  meta_path = os.path.join(manual_dir, META_CSV)
  if not os.path.isfile(meta_path):
    raise DataError(f"{meta_path}: missing; {DOWNLOAD_HINT}")
  audio_dir = os.path.join(manual_dir, AUDIO_DIR)
  if not os.path.isdir(audio_dir):
    raise DataError(f"{audio_dir}: missing; {DOWNLOAD_HINT}")


def read_clips(manual_dir: str) -> list[Clip]:
  """The rows of meta/esc50.csv in file order."""
  path = os.path.join(manual_dir, META_CSV)
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
    if missing:
      raise DataError(
          f"{path}: missing column(s) {', '.join(missing)}; expected header"
          f" 'filename,fold,target,category,esc10,src_file,take'"
      )
    try:
      return [Clip(row["filename"].strip(), row["fold"].strip(), int(row["target"]),
                   row["category"].strip()) for row in reader]
    except (ValueError, TypeError) as e:
      raise DataError(f"{path}: target must be an integer in every row ({e}); {DOWNLOAD_HINT}") from e


def class_names_by_target(clips: list[Clip], path: str) -> list[str]:
  """The category of each target, in target order; raises DataError unless they pair one to one."""
  category_of = {}
  for clip in clips:
    if category_of.setdefault(clip.target, clip.category) != clip.category:
      raise DataError(
          f"{path}: target {clip.target} is both {category_of[clip.target]!r} and"
          f" {clip.category!r}; each target must name one category"
      )
  names = [category_of[target] for target in sorted(category_of)]
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise DataError(
        f"{path}: category {', '.join(repeated)} has several targets; each category must have one"
    )
  return names


Esc50Config = builders.SampleRateConfig  # sample_rate: the rate clips are stored at.


class Esc50(builders.ManualDirBuilder, skip_registration=True):
  """ESC-50 from ``manual_dir`` (layout: the module docstring; kwargs: ``ManualDirBuilder``)."""

  name = "esc50"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "ESC-50 folds 1-5, int16 mono."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [
      Esc50Config(name="16k", sample_rate=16000, description="Resampled to 16 kHz."),
      Esc50Config(name="32k", sample_rate=32000, description="Resampled to 32 kHz."),
  ]
  HOMEPAGE = "https://github.com/karolpiczak/ESC-50"
  DISPLAY_NAME = "ESC-50"
  check_layout = staticmethod(check_layout)
  load_example = staticmethod(load_example)

  @staticmethod
  def read_class_names(manual_dir: str) -> list[str]:
    return class_names_by_target(read_clips(manual_dir), os.path.join(manual_dir, META_CSV))

  def split_items(self) -> Iterable[tuple[str, list[tuple[str, tuple]]]]:
    clips = read_clips(self.manual_dir)
    names = class_names_by_target(clips, os.path.join(self.manual_dir, META_CSV))
    label_index = {name: i for i, name in enumerate(names)}
    items_by_split = {split: [] for split in FOLDS.values()}
    seen = set()
    for clip in clips:
      split = FOLDS.get(clip.fold)
      if split is None:
        self.build_report.skip(META_CSV, builders.Skip(clip.filename, UNKNOWN_FOLD, clip.fold))
        continue
      if clip.filename in seen:
        self.build_report.skip(split, builders.Skip(clip.filename, DUPLICATE_ROW))
        continue
      seen.add(clip.filename)
      path = os.path.join(self.manual_dir, AUDIO_DIR, clip.filename)
      items_by_split[split].append((clip.filename, (path, clip.filename, [label_index[clip.category]])))
    return items_by_split.items()
