"""wsj: WSJ0 + WSJ1 (Wall Street Journal read speech, 16 kHz) from Kaldi/ESPnet data directories.

WSJ is licensed by the LDC (LDC93S6B and LDC94S13B) and ships as NIST SPHERE files; afx reads it as
ESPnet users have it after data preparation: one Kaldi data directory per split in ``manual_dir``:

  train_si284/wav.scp    one line per utterance: UTTID PATH      e.g. 011c0201 wav/011c0201.flac
  train_si284/text       one line per utterance: UTTID TRANSCRIPT
  train_si284/utt2spk    optional; one line per utterance: UTTID SPEAKER
  test_dev93/            the same files
  test_eval92/           the same files

Splits ``train_si284``, ``test_dev93`` and ``test_eval92`` (the directory names of ESPnet's
egs2/wsj/asr1 recipe); the directories present are built (the build says which are missing, and
lists them under ``missing_splits`` in build_report.json).  ``PATH`` is a wav or flac file (any
rate, resampled to 16 kHz): absolute, or relative to ``manual_dir``, or else to the first folder
above it under which it exists.  The directories ``./asr.sh --stage 1 --stop_stage 4`` leaves in
egs2/wsj/asr1/dump/raw qualify as they are (their wav.scp lists flac files by paths relative to
egs2/wsj/asr1).  The data/ directories of stage 1 do not: their wav.scp lines are commands,
``UTTID .../sph2pipe -f wav .../011c0201.wv1 |``, which afx does not run; each such line is skipped
with the reason "wav.scp pipe commands are not run: convert with sph2pipe first" (convert the files
with ``sph2pipe -f wav X.wv1 X.wav`` and list those, or use dump/raw).

Examples (see ``data_pipelines.speech``): ``id`` the UTTID, ``speaker`` from utt2spk ("" without
it), ``text`` the transcript as written.  An utterance in text but not in wav.scp, one in wav.scp but
not in text, malformed or repeated lines, unreadable audio, an empty transcript, characters outside
``characters`` (when given) and utterances longer than ``max_seconds`` are skipped and counted in
the build report.
"""

import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from afx.audio import io as audio_io
from afx.errors import DataError
from data_pipelines import builders, speech
from data_pipelines.speech import FolderSplitsBuilder

SPLITS = ("train_si284", "test_dev93", "test_eval92")
WAV_SCP = "wav.scp"
TEXT = "text"
UTT2SPK = "utt2spk"
DOWNLOAD_HINT = (
    "point manual_dir at the folder holding Kaldi/ESPnet data directories train_si284/, test_dev93/,"
    " test_eval92/, each with wav.scp (UTTID PATH, wav or flac files) and text (UTTID TRANSCRIPT),"
    " e.g. egs2/wsj/asr1/dump/raw after ESPnet's ./asr.sh --stage 1 --stop_stage 4"
)
PIPE_COMMAND = "wav.scp pipe commands are not run: convert with sph2pipe first"
MALFORMED_LINE = "malformed line"
DUPLICATE_ROW = "duplicate row"
MAX_COMMAND_CHARACTERS = 80  # of a pipe command quoted in the build report


def check_layout(manual_dir: str | None) -> None:
  """Raises DataError unless ``manual_dir`` holds a split directory and each one has wav.scp and text."""
  if manual_dir is None:
    raise DataError(f"wsj needs manual_dir=<the folder of its data directories>; {DOWNLOAD_HINT}")
  if not os.path.isdir(manual_dir):
    raise DataError(f"{manual_dir}: no such directory for wsj; {DOWNLOAD_HINT}")
  present = [split for split in SPLITS if os.path.isdir(os.path.join(manual_dir, split))]
  if not present:
    inside = (f" ({manual_dir} is itself a data directory: pass its parent)"
              if os.path.isfile(os.path.join(manual_dir, WAV_SCP)) else "")
    raise DataError(f"{manual_dir}: no data directory {', '.join(SPLITS)} in it{inside}; {DOWNLOAD_HINT}")
  for split in present:
    for name in (WAV_SCP, TEXT):
      path = os.path.join(manual_dir, split, name)
      if not os.path.isfile(path):
        raise DataError(f"{path}: missing; {DOWNLOAD_HINT}")


def read_table(path: str) -> Iterator[tuple[int, str, str]]:
  """(line number, first field, the rest of the line) of each non-blank line of a Kaldi table."""
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = line.strip().split(maxsplit=1)
      if fields:
        yield number, fields[0], fields[1] if len(fields) > 1 else ""


def read_speakers(path: str) -> dict[str, str]:
  """UTTID -> speaker of an utt2spk file (the first line of each UTTID); {} when there is none."""
  speakers = {}
  if os.path.isfile(path):
    for _, utterance_id, speaker in read_table(path):
      speakers.setdefault(utterance_id, speaker)
  return speakers


def resolve(path: str, data_dir: str) -> str:
  """A wav.scp path as a file: absolute as it is, else under ``data_dir`` or the first folder above it
  that has it (ESPnet's paths are relative to the recipe folder), else under ``data_dir``."""
  if os.path.isabs(path):
    return path
  base = os.path.abspath(data_dir)
  while True:
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return candidate
    if os.path.dirname(base) == base:
      return os.path.join(data_dir, path)
    base = os.path.dirname(base)


def wav_scp_skip(number: int, utterance_id: str, location: str, listed: set[str],
                 texts: dict[str, str]) -> builders.Skip | None:
  """Why wav.scp line ``number`` cannot be used (``listed``: the UTTIDs of the lines above), or None."""
  if not location:
    return builders.Skip(f"{WAV_SCP} line {number}", MALFORMED_LINE, utterance_id)
  if utterance_id in listed:
    return builders.Skip(utterance_id, DUPLICATE_ROW, WAV_SCP)
  if location.endswith("|"):
    return builders.Skip(utterance_id, PIPE_COMMAND, location[:MAX_COMMAND_CHARACTERS])
  if utterance_id not in texts:
    return builders.Skip(utterance_id, speech.EMPTY_TRANSCRIPT, f"no line in {TEXT}")
  return None


WsjConfig = speech.SpeechConfig  # sample_rate, max_seconds


class Wsj(FolderSplitsBuilder, skip_registration=True):
  """WSJ from Kaldi data directories in ``manual_dir`` (layout: the module docstring; kwargs:
  ``SpeechManualDirBuilder``)."""

  name = "wsj"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "train_si284, test_dev93, test_eval92 from Kaldi data directories, 16 kHz."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = DOWNLOAD_HINT
  BUILDER_CONFIGS = [WsjConfig(name="16k", sample_rate=16000, description="WSJ's own 16 kHz.")]
  HOMEPAGE = "https://catalog.ldc.upenn.edu/LDC93S6B"
  DISPLAY_NAME = "WSJ"
  SPLIT_FOLDERS = {split: split for split in SPLITS}
  check_layout = staticmethod(check_layout)

  def split_root(self) -> str:
    return self.manual_dir

  def folder_items(self, split: str, folder: str) -> list[tuple[str, tuple]]:
    """(UTTID, item for ``load_utterance``) of each usable wav.scp line; the others are skipped."""
    texts = self._read_texts(split, os.path.join(folder, TEXT))
    speakers = read_speakers(os.path.join(folder, UTT2SPK))
    items, listed = [], set()
    for number, utterance_id, location in read_table(os.path.join(folder, WAV_SCP)):
      skip = wav_scp_skip(number, utterance_id, location, listed, texts)
      listed.add(utterance_id)
      if skip is not None:
        self.build_report.skip(split, skip)
        continue
      items.append((utterance_id, (resolve(location, self.manual_dir), utterance_id, utterance_id,
                                   texts[utterance_id], speakers.get(utterance_id, ""))))
    for utterance_id in texts:
      if utterance_id not in listed:
        self.build_report.skip(split, builders.Skip(utterance_id, audio_io.MISSING, f"no line in {WAV_SCP}"))
    return items

  def _read_texts(self, split: str, path: str) -> dict[str, str]:
    """UTTID -> transcript of a text file; a repeated UTTID's later lines are counted and left out."""
    texts = {}
    for _, utterance_id, text in read_table(path):
      if utterance_id in texts:
        self.build_report.skip(split, builders.Skip(utterance_id, DUPLICATE_ROW, TEXT))
      else:
        texts[utterance_id] = text
    return texts
