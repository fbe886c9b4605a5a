"""What afx's speech datasets share: features, transcript checks and the manual-directory base class.

Every speech example is an utterance with its transcript:

  audio        int16 mono samples at the dataset's rate
  text         the transcript, as written in the source (normalisation is the tokenizer's job)
  id           the utterance id (unique within the dataset)
  speaker      the speaker id ("" where the source has none)
  num_samples  len(audio), so a length-bucketing pipeline needs no audio decoding

Builders skip and count (never crash on, never silently drop) an unreadable file, an empty or
missing transcript, a transcript with characters outside the builder's `characters`, and an
utterance longer than `max_seconds`.
"""

import dataclasses
import inspect
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile as sf
import tensorflow_datasets as tfds

from afx.audio.io import load_audio
from afx.errors import AudioError
from data_pipelines import builders

EMPTY_TRANSCRIPT = "empty or missing transcript"
OUTSIDE_CHARACTERS = "characters outside the vocabulary"
TOO_LONG = "longer than max_seconds"
UNREADABLE = "unreadable audio"
MISSING_SPLITS_KEY = "missing_splits"
DEFAULT_MAX_SECONDS = 36.0  # LibriSpeech's longest utterances last about 35 s


def speech_features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "text": tfds.features.Text(),
      "id": tfds.features.Text(),
      "speaker": tfds.features.Text(),
      "num_samples": tfds.features.Scalar(dtype=np.int64),
  })


def speech_example(waveform: np.ndarray, text: str, utterance_id: str, speaker: str = "") -> dict[str, Any]:
  """An example of `speech_features` from float audio in [-1, 1]."""
  audio = builders.to_int16(waveform)
  return {"audio": audio, "text": text, "id": utterance_id, "speaker": speaker, "num_samples": int(audio.shape[0])}


def transcript_skip(file: str, text: str | None, characters: str | None) -> builders.Skip | None:
  """The `Skip` of an utterance whose transcript is empty, missing (None) or uses characters outside
  `characters` (None: any); None for a usable transcript."""
  if text is None or not text.strip():
    return builders.Skip(file, EMPTY_TRANSCRIPT)
  if characters is not None:
    outside = sorted(set(text) - set(characters))
    if outside:
      return builders.Skip(file, OUTSIDE_CHARACTERS, "".join(outside))
  return None


def length_skip(file: str, num_samples: int, sample_rate: int, max_seconds: float | None) -> builders.Skip | None:
  """The `Skip` of an utterance longer than `max_seconds` (None: no limit)."""
  if max_seconds is not None and num_samples > max_seconds * sample_rate:
    return builders.Skip(file, TOO_LONG, f"{num_samples / sample_rate:.2f} s > {max_seconds:g} s")
  return None


@dataclasses.dataclass(eq=False)
class SpeechConfig(tfds.core.BuilderConfig):
  """sample_rate: the rate utterances are stored at; max_seconds: longer utterances are skipped."""

  sample_rate: int = 16000
  max_seconds: float | None = DEFAULT_MAX_SECONDS


class SpeechManualDirBuilder(builders.ManualDirBuilder, skip_registration=True):
  """A speech corpus the user downloaded into `manual_dir` (see `builders.ManualDirBuilder`'s hooks; a
  speech corpus has no class names).  `characters` (constructor kwarg, default any) limits the
  characters a transcript may use; `load_example(item, *, sample_rate, max_seconds, characters)`."""

  def __init__(self, *, characters: str | None = None, **kwargs):
    self.characters = characters
    super().__init__(**kwargs)
    self._original_state.update(characters=characters)

  def read_class_names(self, manual_dir: str) -> None:
    del manual_dir
    return None

  def example_load_kwargs(self) -> dict[str, Any]:
    config = self.builder_config
    return {"sample_rate": config.sample_rate, "max_seconds": config.max_seconds, "characters": self.characters}

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=inspect.getmodule(type(self)).__doc__,
        features=speech_features(),
        metadata=tfds.core.MetadataDict(sample_rate=config.sample_rate, max_seconds=config.max_seconds),
        homepage=self.HOMEPAGE,
    )


def load_utterance(item: tuple[str, str, str, str | None, str], *, sample_rate: int,
                   max_seconds: float | None, characters: str | None) -> dict | builders.Skip:
  """Reads one utterance (runs in a worker process): the example, or why it was skipped.

  ``item`` is (audio path, the file as the build report names it, utterance id, transcript or None
  when there is none, speaker).
  """
  path, file, utterance_id, text, speaker = item
  skip = transcript_skip(file, text, characters)
  if skip is not None:
    return skip
  skip = declared_length_skip(path, file, max_seconds)
  if skip is not None:
    return skip
  try:
    waveform, _ = load_audio(path, sample_rate=sample_rate)
  except AudioError as e:
    return builders.Skip(file, getattr(e, "reason", UNREADABLE), str(e))
  skip = length_skip(file, len(waveform), sample_rate, max_seconds)
  if skip is not None:
    return skip
  return speech_example(waveform, text, utterance_id, speaker)


def declared_length_skip(path: str, file: str, max_seconds: float | None) -> builders.Skip | None:
  """The too-long `Skip` of a file whose header declares more than ``max_seconds``.

  Checked before decoding so that an hour-long recording is not decoded and resampled only to be
  skipped; a header soundfile cannot read is left for ``load_audio`` to report.
  """
  if max_seconds is None:
    return None
  try:
    info = sf.info(path)
  except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
    return None
  return length_skip(file, info.frames, info.samplerate, max_seconds)


class FolderSplitsBuilder(SpeechManualDirBuilder, skip_registration=True):
  """A speech corpus with one folder per split under a root folder; the splits present are built.

  Subclasses set ``SPLIT_FOLDERS`` (split -> folder name) and implement ``split_root()`` (the folder
  holding the split folders) and ``folder_items(split, folder)`` (``split_items``'s list of one
  split).  Missing split folders are printed before the build and listed under ``missing_splits``
  in build_report.json; ``check_layout`` raises when none is present.
  """

  SPLIT_FOLDERS: dict[str, str]
  load_example = staticmethod(load_utterance)

  def __init__(self, **kwargs):
    self.missing_splits: dict[str, str] = {}
    super().__init__(**kwargs)

  def split_root(self) -> str:
    raise NotImplementedError

  def folder_items(self, split: str, folder: str) -> list[tuple[str, tuple]]:
    raise NotImplementedError

  def split_items(self) -> Iterator[tuple[str, list[tuple[str, tuple]]]]:
    root = self.split_root()
    folders = {split: os.path.join(root, name) for split, name in self.SPLIT_FOLDERS.items()}
    self.missing_splits = {split: path for split, path in folders.items() if not os.path.isdir(path)}
    if self.missing_splits:
      print(f"{self.name}: no {', '.join(self.SPLIT_FOLDERS[s] for s in self.missing_splits)} in {root};"
            f" building only {', '.join(s for s in folders if s not in self.missing_splits)}", flush=True)
    for split, path in folders.items():
      if split not in self.missing_splits:
        yield split, self.folder_items(split, path)

  def download_and_prepare(self, **kwargs) -> None:
    built = self.is_prepared()
    super().download_and_prepare(**kwargs)
    if not built and self.missing_splits:
      add_to_report(self.data_dir, {MISSING_SPLITS_KEY: self.missing_splits})


def add_to_report(data_dir: str | os.PathLike, entries: dict) -> None:
  """Adds ``entries`` to the build_report.json a build just wrote into ``data_dir``."""
  path = os.path.join(os.fspath(data_dir), builders.REPORT_FILE)
  with open(path) as f:
    report = json.load(f)
  report.update(entries)
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
