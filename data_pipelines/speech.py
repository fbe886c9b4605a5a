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
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import builders

EMPTY_TRANSCRIPT = "empty or missing transcript"
OUTSIDE_CHARACTERS = "characters outside the vocabulary"
TOO_LONG = "longer than max_seconds"
UNREADABLE = "unreadable audio"
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
