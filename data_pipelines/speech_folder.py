"""speech_folder: a user's own transcribed recordings, one utterance per file.

The folder holds audio files (wav, flac, ogg, mp3: whatever soundfile reads; any sample rate, any
subfolders) and a ``transcripts.csv``:

  file,text,split,speaker
  alice/001.wav,HELLO WORLD,train,alice
  alice/002.flac,"yes, and no",,alice
  bob/take3.ogg,good morning,test,bob

* ``file``: the path relative to the folder.
* ``text``: the transcript, kept as written (normalisation is the tokenizer's job); quote the field
  when it holds a comma.
* ``split`` (optional column): train, validation or test.  Rows without one go to a split chosen
  by a hash of the file path, as audio_folder does: 80 % train, 10 % validation, 10 % test, the
  same on every build.
* ``speaker`` (optional column): the speaker id ("" without the column).

Examples (see ``data_pipelines.speech``): ``id`` the file as written in ``file``, audio resampled to
the config's ``sample_rate`` (16 kHz), channels averaged.  A file longer than ``max_seconds`` (36 s by
default) is skipped: training needs utterances, so cut long recordings into utterances, or build
with a larger limit, ``config=speech.SpeechConfig(name="16k_60s", max_seconds=60.0)``
(transcribing needs no cutting: the recogniser's ``transcribe`` chunks long files).  Such files,
rows naming a missing or unreadable file, empty transcripts, characters outside ``characters``
(when given), repeated rows and unknown splits are skipped and counted in the build report.
``get_builder("speech_folder", folder=...)`` builds under
``<data_dir>/speech_folder-<hash of the folder's absolute path>`` so that several folders can share
one data_dir.
"""

import csv
import dataclasses
import functools
import os

import tensorflow_datasets as tfds

from afx.errors import DataError
from data_pipelines import audio_folder, builders, speech
from data_pipelines.speech import load_utterance

TRANSCRIPTS_FILE = "transcripts.csv"
EXPECTED_HEADER = "file,text[,split][,speaker]"
TOO_LONG_HINT = "cut it into utterances or raise max_seconds"


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of transcripts.csv that names a file."""

  file: str
  text: str
  speaker: str
  split: str | None  # None when the row names a split other than train, validation, test
  given_split: str


def read_rows(folder: str) -> list[Row]:
  """The rows of ``folder/transcripts.csv``, each with its split decided.

  Raises:
    DataError: no transcripts.csv, or it lacks the ``file`` or ``text`` column.
  """
  path = os.path.join(folder, TRANSCRIPTS_FILE)
  if not os.path.isfile(path):
    raise DataError(f"{path}: missing; write a CSV with header '{EXPECTED_HEADER}' listing the audio files")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in ("file", "text") if name not in columns]
    if missing:
      raise DataError(f"{path}: no column {', '.join(missing)}; the header must be '{EXPECTED_HEADER}'")
    reader.fieldnames = columns
    return [row for row in map(parse_row, reader) if row is not None]


def parse_row(record: dict[str, str | None]) -> Row | None:
  """The row of a CSV record, or None for a record without a file."""
  field = lambda name: (record.get(name) or "").strip()
  file = field("file")
  if not file:
    return None
  given = field("split")
  split = audio_folder.hash_split(file) if not given else (given if given in builders.SPLITS else None)
  return Row(file, field("text"), field("speaker"), split, given)


def load_example(item: tuple, *, sample_rate: int, max_seconds: float | None,
                 characters: str | None) -> dict | builders.Skip:
  """``load_utterance``, whose too-long skips say what to do about a long recording."""
  result = load_utterance(item, sample_rate=sample_rate, max_seconds=max_seconds, characters=characters)
  if isinstance(result, builders.Skip) and result.reason == speech.TOO_LONG:
    return dataclasses.replace(result, detail=f"{result.detail}; {TOO_LONG_HINT}")
  return result


SpeechFolderConfig = speech.SpeechConfig  # sample_rate, max_seconds


class SpeechFolder(builders.ReportingBuilder, skip_registration=True):
  """Audio files and a transcripts.csv in ``folder`` (see the module docstring for the format).

  Constructor kwargs besides tfds's: ``folder`` (required), ``characters`` (the characters a
  transcript may use, default any) and ``num_workers`` (reading processes, default all cores).
  A built dataset reopens without the folder.
  """

  name = "speech_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Files listed in transcripts.csv, int16 mono, with transcripts and speakers."}
  BUILDER_CONFIGS = [
      SpeechFolderConfig(name="16k", sample_rate=16000, description="Resampled to 16 kHz."),
  ]

  def __init__(self, *, folder: str | os.PathLike | None = None, characters: str | None = None,
               num_workers: int | None = None, **kwargs):
    if folder is None:
      raise DataError(f"speech_folder needs folder=<directory with audio files and {TRANSCRIPTS_FILE}>")
    self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    self.characters = characters
    self.num_workers = num_workers or builders.default_num_workers()
    super().__init__(**kwargs)
    self._original_state.update(folder=self.folder, characters=characters)
    if not self.is_prepared():
      self.check_folder()

  def check_folder(self) -> list[Row]:
    """The rows of transcripts.csv; raises DataError for a missing folder or a bad transcripts.csv."""
    if not os.path.isdir(self.folder):
      raise DataError(f"{self.folder}: no such directory; pass the folder holding {TRANSCRIPTS_FILE}")
    return read_rows(self.folder)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=speech.speech_features(),
        metadata=tfds.core.MetadataDict(sample_rate=config.sample_rate, max_seconds=config.max_seconds,
                                        folder=self.folder),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local
    config = self.builder_config
    load = functools.partial(load_example, sample_rate=config.sample_rate, max_seconds=config.max_seconds,
                             characters=self.characters)
    return self.file_split_generators(
        self._split_items(self.check_folder()), load, num_workers=self.num_workers,
        nothing_usable=f"{self.folder}: no usable utterance",
        hint=f"check the files and transcripts {TRANSCRIPTS_FILE} lists",
    )

  def _split_items(self, rows: list[Row]) -> list[tuple[str, list[tuple[str, tuple]]]]:
    """(split, [(file, item for ``load_utterance``)]) per split; unknown splits and repeats are skipped."""
    rows_by_split = {split: [] for split in builders.SPLITS}
    seen = set()
    for row in rows:
      if row.split is None:
        self.build_report.skip(TRANSCRIPTS_FILE, builders.Skip(row.file, audio_folder.UNKNOWN_SPLIT,
                                                               row.given_split))
      elif row.file in seen:
        self.build_report.skip(TRANSCRIPTS_FILE, builders.Skip(row.file, audio_folder.DUPLICATE_ROW))
      else:
        seen.add(row.file)
        rows_by_split[row.split].append(row)
    if not seen:
      raise DataError(
          f"{os.path.join(self.folder, TRANSCRIPTS_FILE)}: no row with a file and a valid split;"
          f" list files under the header '{EXPECTED_HEADER}'"
      )
    return [
        (split, [(row.file, (os.path.join(self.folder, row.file), row.file, row.file, row.text, row.speaker))
                 for row in rows])
        for split, rows in rows_by_split.items()
    ]

  def _generate_examples(self, examples):
    """Passes on what ``builders.split_examples`` made (tfds requires this method)."""
    yield from examples
