"""Reading and writing audio files, with validation that names the bad file.

``load_audio`` returns float32 mono in [-1, 1].  Every way a file can be unusable (missing, not
audio, truncated, empty, NaN/Inf samples) raises ``AudioError`` with a one-line message naming the
file; the error's ``reason`` attribute holds a short category that dataset builders count.
"""

import os
import struct

import librosa
import numpy as np
import soundfile as sf

from afx.errors import AudioError

# Short categories carried on ``AudioError.reason``; dataset build reports count skips by them.
MISSING = "missing file"
UNREADABLE = "unreadable audio"
TRUNCATED = "truncated audio"
EMPTY = "empty audio"
NON_FINITE = "non-finite samples"

_RESAMPLE_TYPE = "soxr_hq"
# A streaming writer that never went back to fill in the sizes leaves this placeholder.
_UNKNOWN_CHUNK_SIZE = 0xFFFFFFFF
_WRITE_SUBTYPES = {".wav": "PCM_16", ".flac": "PCM_16"}


def audio_error(path: str | os.PathLike, reason: str, detail: str) -> AudioError:
  """Builds an ``AudioError`` naming ``path``, tagged with ``reason`` for build reports."""
  error = AudioError(f"{os.fspath(path)}: {reason}: {detail}")
  error.reason = reason
  return error


def _wav_data_shortfall(path: str) -> int | None:
  """Bytes missing from a RIFF/WAVE file's data chunk, or None when it is not a RIFF/WAVE file.

  libsndfile reads whatever part of a cut-off WAV is present without complaint, so the chunk
  sizes are checked here against the bytes actually on disk.  A file cut before its data chunk
  even starts counts its whole header remainder as missing.
  """
  file_size = os.path.getsize(path)
  with open(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12 or header[8:12] != b"WAVE" or header[:4] not in (b"RIFF", b"RIFX"):
      return None
    byte_order = "<" if header[:4] == b"RIFF" else ">"
    position = 12
    while True:
      chunk_header = f.read(8)
      if len(chunk_header) < 8:
        return max(1, 8 - len(chunk_header))  # ended before any data chunk
      chunk_id = chunk_header[:4]
      (chunk_size,) = struct.unpack(byte_order + "I", chunk_header[4:])
      data_start = position + 8
      if chunk_id == b"data":
        if chunk_size == _UNKNOWN_CHUNK_SIZE:
          return 0
        return max(0, data_start + chunk_size - file_size)
      # Chunks are padded to an even number of bytes.
      position = data_start + chunk_size + (chunk_size & 1)
      if position > file_size:
        return position - file_size
      f.seek(position)


def _read_frames(path: str) -> tuple[np.ndarray, int]:
  """Reads every frame as float32 of shape (frames, channels), checking the declared length."""
  try:
    info = sf.info(path)
  except (sf.LibsndfileError, RuntimeError, TypeError) as e:
    raise audio_error(
        path, UNREADABLE, f"not an audio file soundfile can read ({e}); use wav, flac or ogg"
    ) from e
  shortfall = _wav_data_shortfall(path)
  if shortfall:
    raise audio_error(
        path, TRUNCATED, f"the WAV data chunk is {shortfall} bytes short; re-copy or re-export it"
    )
  try:
    frames, rate = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError) as e:
    raise audio_error(
        path, TRUNCATED, f"decoding failed part-way ({e}); re-copy or re-export it"
    ) from e
  if 0 < info.frames and len(frames) < info.frames:
    raise audio_error(
        path,
        TRUNCATED,
        f"decoded {len(frames)} of the {info.frames} frames its header declares;"
        " re-copy or re-export it",
    )
  return frames, rate


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None
) -> tuple[np.ndarray, int]:
  """Loads an audio file as float32 mono in [-1, 1].

  Args:
    path: a file soundfile reads (wav, flac, ogg, ...).
    sample_rate: resample to this rate (soxr, high quality) when given and different from the
      file's; None keeps the file's rate.

  Returns:
    (waveform of shape (samples,), its sample rate).  Channels are averaged.

  Raises:
    AudioError: the file is missing, not audio, truncated, empty or holds NaN/Inf samples.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise audio_error(path, MISSING, "no such file; check the path")
  frames, rate = _read_frames(path)
  if frames.shape[0] == 0:
    raise audio_error(path, EMPTY, "the file holds no samples; remove it or re-export it")
  if not np.isfinite(frames).all():
    raise audio_error(
        path, NON_FINITE, "the file holds NaN or infinite samples; re-export it as PCM"
    )
  waveform = frames.mean(axis=1)
  if sample_rate is not None and sample_rate != rate:
    waveform = librosa.resample(
        waveform, orig_sr=rate, target_sr=sample_rate, res_type=_RESAMPLE_TYPE
    )
    rate = sample_rate
  # Float files may exceed full scale, and resampling can overshoot by a little.
  return np.clip(waveform, -1.0, 1.0).astype(np.float32), int(rate)


def write_audio(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> None:
  """Writes a waveform as 16-bit PCM; the extension (.wav or .flac) picks the container.

  Args:
    path: destination ending in .wav or .flac.
    waveform: float in [-1, 1] (clipped) or int16, shape (samples,) or (samples, channels).
    sample_rate: samples per second.
  """
  path = os.fspath(path)
  extension = os.path.splitext(path)[1].lower()
  if extension not in _WRITE_SUBTYPES:
    raise AudioError(f"{path}: write_audio writes .wav or .flac; change the extension")
  waveform = np.asarray(waveform)
  if waveform.dtype != np.int16:
    waveform = np.clip(waveform.astype(np.float32), -1.0, 1.0)
  sf.write(path, waveform, int(sample_rate), subtype=_WRITE_SUBTYPES[extension])
