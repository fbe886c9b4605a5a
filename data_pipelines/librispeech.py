"""librispeech: LibriSpeech (read English audiobooks, 16 kHz, about 1000 hours) from a manual download.

Download the subsets you want from https://www.openslr.org/12 and unpack them into one directory;
each tar.gz unpacks into ``LibriSpeech/``, so ``manual_dir`` holds:

  LibriSpeech/train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac
  LibriSpeech/train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
  LibriSpeech/train-clean-360/...    (and train-other-500, dev-clean, dev-other, test-clean,
                                      test-other in the same layout)

e.g. ``LibriSpeech/dev-clean/84/121123/84-121123-0000.flac``.  Each ``.trans.txt`` has one line per
utterance of its chapter, ``UTTERANCE_ID TRANSCRIPT`` (``84-121123-0000 GO DO YOU HEAR``).
``manual_dir`` may also be the ``LibriSpeech`` folder itself.

Splits ``train_clean_100``, ``train_clean_360``, ``train_other_500``, ``dev_clean``, ``dev_other``,
``test_clean`` and ``test_other``, one per subset folder; the subsets you did not download are not
built (the build says which, and lists them under ``missing_splits`` in build_report.json).
Examples (see ``data_pipelines.speech``): ``id`` the utterance id, ``speaker`` the speaker folder,
``text`` the transcript as written (upper case, no punctuation but apostrophes), audio at 16 kHz.
An utterance listed without its flac, a flac without a transcript line, unreadable audio, an empty
transcript, characters outside ``characters`` (when given) and utterances longer than
``max_seconds`` are skipped and counted in the build report.
"""

import dataclasses
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from afx.errors import DataError
from data_pipelines import builders, speech

ROOT_FOLDER = "LibriSpeech"
# split -> subset folder
SPLIT_FOLDERS = {
    "train_clean_100": "train-clean-100",
    "train_clean_360": "train-clean-360",
    "train_other_500": "train-other-500",
    "dev_clean": "dev-clean",
    "dev_other": "dev-other",
    "test_clean": "test-clean",
    "test_other": "test-other",
}
DOWNLOAD_HINT = (
    "download subsets from https://www.openslr.org/12 (e.g. train-clean-100.tar.gz, dev-clean.tar.gz)"
    " and unpack them into one directory, so it holds LibriSpeech/<subset>/<speaker>/<chapter>/"
)
DUPLICATE_ROW = "duplicate row"


# LibriSpeech.


def find_root(manual_dir: str) -> str | None:
  """The folder holding the subset folders: ``manual_dir/LibriSpeech`` or ``manual_dir`` itself."""
  for root in (os.path.join(manual_dir, ROOT_FOLDER), manual_dir):
    if any(os.path.isdir(os.path.join(root, name)) for name in SPLIT_FOLDERS.values()):
      return root
  return None


def check_layout(manual_dir: str | None) -> None:
  """Raises DataError unless ``manual_dir`` (or its LibriSpeech/) holds at least one subset folder."""
  if manual_dir is None:
    raise DataError(f"librispeech needs manual_dir=<the directory holding LibriSpeech/>; {DOWNLOAD_HINT}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: no such directory for librispeech; {DOWNLOAD_HINT}")
  if find_root(manual_dir) is None:
    inside = (f" ({manual_dir} is itself a subset folder: pass the directory two levels up)"
              if os.path.basename(os.path.normpath(manual_dir)) in SPLIT_FOLDERS.values() else "")
    raise DataError(
        f"{manual_dir}: no LibriSpeech subset folder ({', '.join(SPLIT_FOLDERS.values())}) in it or in"
        f" its {ROOT_FOLDER}/{inside}; {DOWNLOAD_HINT}"
    )


def sorted_subfolders(folder: str) -> list[str]:
  return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def read_transcripts(path: str) -> list[tuple[str, str]]:
  """(utterance id, transcript as written) of each line of a ``.trans.txt``."""
  with open(path, encoding="utf-8") as f:
    fields = [line.strip().split(maxsplit=1) for line in f]
  return [(parts[0], parts[1] if len(parts) > 1 else "") for parts in fields if parts]


@dataclasses.dataclass(frozen=True)
class Chapter:
  """One ``<speaker>/<chapter>`` folder of a subset."""

  speaker: str
  chapter: str
  folder: str

  @property
  def transcript_path(self) -> str:
    return os.path.join(self.folder, f"{self.speaker}-{self.chapter}.trans.txt")

  def flac_ids(self) -> list[str]:
    return sorted(name[: -len(".flac")] for name in os.listdir(self.folder) if name.endswith(".flac"))


def chapters(subset_folder: str) -> Iterator[Chapter]:
  for speaker in sorted_subfolders(subset_folder):
    for chapter in sorted_subfolders(os.path.join(subset_folder, speaker)):
      yield Chapter(speaker, chapter, os.path.join(subset_folder, speaker, chapter))


LibrispeechConfig = speech.SpeechConfig  # sample_rate, max_seconds


class Librispeech(speech.FolderSplitsBuilder, skip_registration=True):
  """LibriSpeech from ``manual_dir`` (layout: the module docstring; kwargs: ``SpeechManualDirBuilder``)."""

  name = "librispeech"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "LibriSpeech's seven subsets, int16 mono at 16 kHz, transcripts as written."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [
      LibrispeechConfig(name="16k", sample_rate=16000, description="LibriSpeech's own 16 kHz."),
  ]
  HOMEPAGE = "https://www.openslr.org/12"
  DISPLAY_NAME = "LibriSpeech"
  SPLIT_FOLDERS = SPLIT_FOLDERS
  check_layout = staticmethod(check_layout)

  def split_root(self) -> str:
    return find_root(self.manual_dir)

  def folder_items(self, split: str, folder: str) -> list[tuple[str, tuple]]:
    """(utterance id, item for ``load_utterance``) of a subset; unmatched files and lines are skipped."""
    items = []
    for chapter in chapters(folder):
      items += self._chapter_items(split, chapter)
    return items

  def _chapter_items(self, split: str, chapter: Chapter) -> list[tuple[str, tuple]]:
    transcript_name = os.path.basename(chapter.transcript_path)
    lines = read_transcripts(chapter.transcript_path) if os.path.isfile(chapter.transcript_path) else []
    flacs = chapter.flac_ids()
    items, texts = [], {}
    for utterance_id, text in lines:
      if utterance_id in texts:
        self.build_report.skip(split, builders.Skip(utterance_id, DUPLICATE_ROW, transcript_name))
        continue
      texts[utterance_id] = text
      # A line whose flac is absent goes to load_audio, which counts it as a missing file.
      path = os.path.join(chapter.folder, f"{utterance_id}.flac")
      items.append((utterance_id, (path, utterance_id, utterance_id, text, chapter.speaker)))
    for utterance_id in flacs:
      if utterance_id not in texts:
        self.build_report.skip(split, builders.Skip(utterance_id, speech.EMPTY_TRANSCRIPT,
                                                    f"no line in {transcript_name}"))
    return items
