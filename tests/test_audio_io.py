"""load_audio and write_audio: round trips, downmixing, resampling, and every way a file is bad."""

import librosa
import numpy as np
import pytest
import soundfile as sf

from afx.audio.io import load_audio, write_audio
from afx.errors import AudioError

RATE = 16000


def _noise(shape, seed=0):
  return np.random.default_rng(seed).uniform(-0.8, 0.8, shape).astype(np.float32)


@pytest.mark.parametrize("extension", ["wav", "flac"])
def test_mono_round_trip(tmp_path, extension):
  waveform = _noise(4000)
  path = tmp_path / f"mono.{extension}"
  write_audio(path, waveform, RATE)
  loaded, rate = load_audio(path)
  assert rate == RATE
  assert loaded.dtype == np.float32 and loaded.shape == waveform.shape
  np.testing.assert_allclose(loaded, waveform, atol=1.0 / 32767)  # 16-bit quantisation


@pytest.mark.parametrize("extension", ["wav", "flac"])
def test_stereo_is_downmixed_to_the_channel_mean(tmp_path, extension):
  stereo = np.stack([_noise(3000, seed=1), _noise(3000, seed=2)], axis=1)
  path = tmp_path / f"stereo.{extension}"
  write_audio(path, stereo, RATE)
  loaded, _ = load_audio(path)
  assert loaded.shape == (3000,)
  np.testing.assert_allclose(loaded, stereo.mean(axis=1), atol=1.0 / 32767)


def test_resampling_matches_librosa(tmp_path):
  original = 0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100).astype(np.float32)
  path = tmp_path / "a440.wav"
  write_audio(path, original, 44100)
  loaded, rate = load_audio(path, sample_rate=16000)
  assert rate == 16000
  assert len(loaded) == 16000
  as_stored, _ = load_audio(path)
  expected = librosa.resample(as_stored, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
  np.testing.assert_allclose(loaded, expected, atol=1e-6)


def test_same_rate_is_not_resampled(tmp_path):
  path = tmp_path / "x.wav"
  write_audio(path, _noise(1000), RATE)
  loaded, rate = load_audio(path, sample_rate=RATE)
  assert (len(loaded), rate) == (1000, RATE)


def _assert_audio_error(path, reason_words):
  with pytest.raises(AudioError) as caught:
    load_audio(path)
  message = str(caught.value)
  assert str(path) in message
  assert reason_words in message
  assert "\n" not in message


def test_missing_file(tmp_path):
  _assert_audio_error(tmp_path / "nowhere.wav", "missing")


def test_bytes_that_are_not_audio(tmp_path):
  path = tmp_path / "notes.wav"
  path.write_bytes(b"these are meeting notes, not a recording\n" * 20)
  _assert_audio_error(path, "unreadable")


def test_wav_cut_in_half_is_truncated(tmp_path):
  whole = tmp_path / "whole.wav"
  write_audio(whole, _noise(8000), RATE)
  data = whole.read_bytes()
  cut = tmp_path / "cut.wav"
  cut.write_bytes(data[: len(data) // 2])
  # libsndfile alone would return the first half without complaint.
  assert 0 < len(sf.read(cut)[0]) < 8000
  _assert_audio_error(cut, "truncated")


def test_flac_cut_in_half_is_rejected(tmp_path):
  whole = tmp_path / "whole.flac"
  write_audio(whole, _noise(32000), RATE)
  data = whole.read_bytes()
  cut = tmp_path / "cut.flac"
  cut.write_bytes(data[: len(data) // 2])
  with pytest.raises(AudioError, match="cut.flac"):
    load_audio(cut)


def test_empty_wav(tmp_path):
  path = tmp_path / "empty.wav"
  write_audio(path, np.zeros(0, np.float32), RATE)
  _assert_audio_error(path, "empty")


def test_float_wav_with_nan(tmp_path):
  waveform = _noise(1000)
  waveform[500] = np.nan
  path = tmp_path / "nan.wav"
  sf.write(path, waveform, RATE, subtype="FLOAT")
  _assert_audio_error(path, "non-finite")


def test_error_carries_a_reason_for_build_reports(tmp_path):
  with pytest.raises(AudioError) as caught:
    load_audio(tmp_path / "nowhere.flac")
  assert caught.value.reason == "missing file"


def test_loud_float_file_is_clipped_to_full_scale(tmp_path):
  path = tmp_path / "loud.wav"
  sf.write(path, np.array([0.0, 1.5, -2.0, 0.5], np.float32), RATE, subtype="FLOAT")
  loaded, _ = load_audio(path)
  np.testing.assert_allclose(loaded, [0.0, 1.0, -1.0, 0.5])
