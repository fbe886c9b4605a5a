"""audio_folder: a user's own labelled audio files.

The folder holds audio files (wav, flac, ogg; any subfolders) and a ``labels.csv``:

  file,labels,split
  dogs/bark1.wav,"dog,bark",train
  street/car.flac,car,test
  quiet.wav,,validation

* ``file``: the path relative to the folder.
* ``labels``: zero or more label names separated by commas; quote the field when it holds more
  than one (the CSV convention FSD50K uses too).  An empty field is a clip with no labels.
* ``split`` (optional column): train, validation or test.  Rows without one go to a split chosen
  by a hash of the file path: 80 % train, 10 % validation, 10 % test, the same on every build.

Class names are the sorted unique labels.  Audio is resampled to the config's ``sample_rate``
(default 16 kHz) and keeps its length.  Rows naming a missing or broken file, or an unknown
split, are skipped and counted in the build report.  ``get_builder("audio_folder", folder=...)``
builds under ``<data_dir>/audio_folder-<hash of the folder's absolute path>`` so that several
folders can share one data_dir.
"""

import csv
import dataclasses
import functools
import os

import tensorflow_datasets as tfds

from afx.audio.io import load_audio
from afx.errors import AudioError, DataError
from data_pipelines import builders

LABELS_FILE = "labels.csv"
EXPECTED_HEADER = "file,labels[,split]"
LABEL_SEPARATOR = ","
# Cumulative shares of the hash-assigned splits.
HASH_SPLITS = ((0.8, "train"), (0.9, "validation"), (1.0, "test"))
UNKNOWN_SPLIT = "unknown split"
DUPLICATE_ROW = "duplicate row"


@dataclasses.dataclass(frozen=True)
class Row:
  """One usable-looking row of labels.csv."""

  file: str
  labels: tuple[str, ...]
  split: str | None  # None when the row names a split other than train, validation, test
  given_split: str


def hash_split(file: str) -> str:
  """The split a file without a ``split`` value goes to, from a hash of its relative path."""
  fraction = builders.hash_fraction(file.replace(os.sep, "/"))
  return next(split for limit, split in HASH_SPLITS if fraction < limit)


def parse_labels(field: str | None) -> tuple[str, ...]:
  """Label names in a ``labels`` field, in order, without blanks or repeats."""
  names = [name.strip() for name in (field or "").split(LABEL_SEPARATOR)]
  return tuple(dict.fromkeys(name for name in names if name))


def read_rows(folder: str) -> list[Row]:
  """The rows of ``folder/labels.csv``, each with its split decided.

  Raises:
    DataError: no labels.csv, or it lacks the ``file`` or ``labels`` column.
  """
  path = os.path.join(folder, LABELS_FILE)
  if not os.path.isfile(path):
    raise DataError(
        f"{path}: missing; write a CSV with header '{EXPECTED_HEADER}' listing the audio files"
    )
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in ("file", "labels") if name not in columns]
    if missing:
      raise DataError(
          f"{path}: no column {', '.join(missing)}; the header must be '{EXPECTED_HEADER}'"
      )
    reader.fieldnames = columns
    rows = []
    for record in reader:
      file = (record.get("file") or "").strip()
      if not file:
        continue
      given = (record.get("split") or "").strip()
      if not given:
        split = hash_split(file)
      else:
        split = given if given in builders.SPLITS else None
      rows.append(Row(file, parse_labels(record.get("labels")), split, given))
  return rows


def folder_class_names(rows: list[Row]) -> list[str]:
  return sorted({label for row in rows for label in row.labels})


def load_example(item: tuple[str, str, list[int]], *, sample_rate: int) -> dict | builders.Skip:
  """Reads one file (runs in a worker process): the example, or why it was skipped."""
  path, file, labels = item
  try:
    waveform, _ = load_audio(path, sample_rate=sample_rate)
  except AudioError as e:
    return builders.Skip(file, getattr(e, "reason", "unreadable audio"), str(e))
  return {"audio": builders.to_int16(waveform), "labels": labels, "id": file}


AudioFolderConfig = builders.SampleRateConfig  # sample_rate: the rate clips are stored at.


class AudioFolder(builders.ReportingBuilder, skip_registration=True):
  """Audio files and a labels.csv in ``folder`` (see the module docstring for the format).

  Constructor kwargs besides tfds's: ``folder`` (required) and ``num_workers`` (reading
  processes, default all cores).
  """

  name = "audio_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Files listed in labels.csv, int16 mono."}
  BUILDER_CONFIGS = [
      AudioFolderConfig(name="16k", sample_rate=16000, description="Resampled to 16 kHz."),
  ]

  def __init__(self, *, folder: str | os.PathLike | None = None,
               num_workers: int | None = None, **kwargs):
    if folder is None:
      raise DataError("audio_folder needs folder=<directory with audio files and labels.csv>")
    self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(self.folder):
      raise DataError(f"{self.folder}: no such directory; pass the folder holding {LABELS_FILE}")
    # _info (run by tfds's constructor) needs the class names.
    self.rows = read_rows(self.folder)
    self.num_workers = num_workers or builders.default_num_workers()
    super().__init__(**kwargs)
    self._original_state.update(folder=self.folder)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=builders.example_features(folder_class_names(self.rows)),
        metadata=tfds.core.MetadataDict(
            sample_rate=self.builder_config.sample_rate, folder=self.folder
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local
    load = functools.partial(load_example, sample_rate=self.builder_config.sample_rate)
    # A split with no row, or no usable file, is left out: tfds cannot write an empty one.
    return self.file_split_generators(
        self._split_items(), load, num_workers=self.num_workers,
        nothing_usable=f"{self.folder}: no usable audio file",
        hint=f"check the files {LABELS_FILE} lists",
    )

  def _split_items(self) -> list[tuple[str, list[tuple[str, tuple]]]]:
    """(split, [(key, (path, file, label indices))]) per split; unusable rows are skipped."""
    rows_by_split = {split: [] for split in builders.SPLITS}
    seen = set()
    for row in self.rows:
      if row.split is None:
        self.build_report.skip(LABELS_FILE, builders.Skip(row.file, UNKNOWN_SPLIT, row.given_split))
      elif row.file in seen:
        self.build_report.skip(LABELS_FILE, builders.Skip(row.file, DUPLICATE_ROW))
      else:
        seen.add(row.file)
        rows_by_split[row.split].append(row)
    if not seen:
      raise DataError(
          f"{os.path.join(self.folder, LABELS_FILE)}: no row with a file and a valid split;"
          f" list files under the header '{EXPECTED_HEADER}'"
      )
    label_index = {name: i for i, name in enumerate(folder_class_names(self.rows))}
    return [
        (split, [(row.file, (os.path.join(self.folder, row.file), row.file,
                             sorted(label_index[label] for label in row.labels)))
                 for row in rows])
        for split, rows in rows_by_split.items()
    ]

  def _generate_examples(self, examples):
    """Passes on what ``builders.split_examples`` made (tfds requires this method)."""
    yield from examples
