"""afx.audio.kaldi against Hugging Face's `ASTFeatureExtractor`, the independent reference.

Without torchaudio the extractor computes Kaldi's filterbank with `transformers.audio_utils` in float64
numpy (symmetric Hann window, Kaldi mel filters triangular in mel, 512-point FFT, pre-emphasis 0.97, per-frame
DC removal, log floored at float32's epsilon); afx computes in float32.  The float32 FFT leaves rounding
noise of about 1e-7 of a frame's energy in every bin, which only matters for mel energies within a few
times the 1.2e-7 log floor: there the two differ by ~2e-3 in normalised units here (bound: 1e-2).  Everywhere the
reference energy is above 1e-6 they agree within 1e-3 (in practice within ~5e-4; the 1 s and 3.3 s
clips within 5e-5 everywhere).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afx.audio import kaldi

transformers = pytest.importorskip("transformers")
audio_utils = pytest.importorskip("transformers.audio_utils")

# 128 filters from 20 Hz on 31.25 Hz FFT bins leave one low filter (the 4th) empty, in Kaldi too: it reads the floor.
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")

SAMPLE_RATE = 16000
ATOL = 1e-3
NEAR_FLOOR_ATOL = 1e-2
NEAR_FLOOR_ENERGY = 1e-6


def waveforms():
  """Noise (1 s), a 440 Hz tone on a DC offset (3.3 s), a chirp cropped to 1024 frames (12.5 s), quiet noise."""
  rng = np.random.default_rng(0)
  times = np.arange(int(12.5 * SAMPLE_RATE)) / SAMPLE_RATE
  chirp = 0.5 * np.sin(2 * np.pi * (60 * times + 0.5 * 7000 / 12.5 * times**2))
  return [w.astype(np.float32) for w in (0.3 * rng.standard_normal(SAMPLE_RATE),
                                         0.5 * np.sin(2 * np.pi * 440 * times[:52800]) + 0.1,
                                         chirp,
                                         1e-3 * rng.standard_normal(20000))]


@pytest.fixture(scope="module")
def extractor():
  # Without torchaudio (not a dependency) it takes its numpy path; with it, torchaudio's float32 Kaldi port,
  # an equally good reference.
  return transformers.ASTFeatureExtractor()


def assert_close_above_floor(actual, expected, log_energy):
  """Within ATOL where the reference `log_energy` is above NEAR_FLOOR_ENERGY, within NEAR_FLOOR_ATOL elsewhere."""
  error = np.abs(np.asarray(actual) - expected)
  well_above_floor = log_energy > np.log(NEAR_FLOOR_ENERGY)
  assert error[well_above_floor].max() <= ATOL, error[well_above_floor].max()
  assert error.max() <= NEAR_FLOOR_ATOL, error.max()


def test_ast_features_match_extractor(extractor):
  for waveform in waveforms():
    expected = extractor(waveform, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]
    actual = kaldi.ast_features(waveform)
    assert actual.shape == expected.shape == (1024, 128) and actual.dtype == jnp.float32
    assert_close_above_floor(actual, expected, expected * 2 * kaldi.AUDIOSET_STD + kaldi.AUDIOSET_MEAN)


def test_padded_batch_with_real_sample_counts_gives_each_clips_own_features(extractor):
  clips = waveforms()[:2]  # 1 s and 3.3 s, padded into one 4 s batch
  batch = np.stack([np.pad(clip, (0, 4 * SAMPLE_RATE - clip.size)) for clip in clips])
  actual = kaldi.ast_features(batch, np.array([clip.size for clip in clips]))
  for clip, features in zip(clips, actual):
    expected = extractor(clip, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]
    assert_close_above_floor(features, expected, expected * 2 * kaldi.AUDIOSET_STD + kaldi.AUDIOSET_MEAN)


@pytest.mark.parametrize("window", ["hanning", "povey", "hamming"])
def test_fbank_matches_transformers_spectrogram(window):
  waveform = waveforms()[1][:SAMPLE_RATE]
  filters = audio_utils.mel_filter_bank(num_frequency_bins=257, num_mel_filters=64, min_frequency=20,
                                        max_frequency=7600, sampling_rate=SAMPLE_RATE, norm=None,
                                        mel_scale="kaldi", triangularize_in_mel_space=True)
  hf_window = {"hanning": "hann"}.get(window, window)
  expected = audio_utils.spectrogram(
      waveform, audio_utils.window_function(400, hf_window, periodic=False), frame_length=400, hop_length=160,
      fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=filters, log_mel="log",
      mel_floor=kaldi.LOG_FLOOR, remove_dc_offset=True).T
  actual = kaldi.fbank(waveform, num_mel_bins=64, window=window, high_freq=-400.0)
  assert_close_above_floor(actual, expected, expected)


def test_mel_banks_and_window_match_transformers():
  expected = audio_utils.mel_filter_bank(num_frequency_bins=257, num_mel_filters=128, min_frequency=20,
                                         max_frequency=8000, sampling_rate=SAMPLE_RATE, norm=None,
                                         mel_scale="kaldi", triangularize_in_mel_space=True)
  np.testing.assert_allclose(kaldi.mel_banks(128, 512, SAMPLE_RATE, 20.0, 0.0), expected, atol=1e-12)
  np.testing.assert_allclose(kaldi.feature_window("hanning", 400),
                             audio_utils.window_function(400, "hann", periodic=False), atol=1e-12)


@pytest.mark.parametrize("num_samples", [400, 559, 560, 16000, 52800])
def test_frame_count_with_snip_edges(num_samples):
  assert kaldi.fbank(jnp.ones(num_samples)).shape == (1 + (num_samples - 400) // 160, 128)


def test_without_snip_edges_reflects_the_ends():
  waveform = waveforms()[0][:1000]
  frames = (1000 + 80) // 160
  # Frame t starts at 160 t - 120, the signal mirrored about its ends (edge samples repeated).
  reflected = np.pad(waveform, (120, 400), mode="symmetric")[:160 * (frames - 1) + 400]
  np.testing.assert_allclose(kaldi.fbank(waveform, snip_edges=False), kaldi.fbank(reflected), atol=1e-5)


def test_batched_and_vmapped_equal_per_example():
  batch = np.stack([w[:16000] for w in waveforms()])
  per_example = np.stack([kaldi.fbank(w) for w in batch])
  np.testing.assert_allclose(kaldi.fbank(batch.reshape(2, 2, -1)), per_example.reshape(2, 2, 98, 128), atol=1e-6)
  per_example = np.stack([kaldi.ast_features(w) for w in batch])
  # A batch's waveform means are summed in another order: a rounding change, seen only near the log floor.
  np.testing.assert_allclose(jax.jit(jax.vmap(kaldi.ast_features))(batch), per_example, atol=ATOL)


def test_dither_needs_a_key_and_changes_the_features():
  waveform = waveforms()[0][:4000]
  with pytest.raises(ValueError, match="needs a PRNG key"):
    kaldi.fbank(waveform, dither=1.0)
  dithered = kaldi.fbank(waveform, dither=1e-2, key=jax.random.key(0))
  np.testing.assert_array_equal(dithered, kaldi.fbank(waveform, dither=1e-2, key=jax.random.key(0)))
  assert not np.allclose(dithered, kaldi.fbank(waveform), atol=1e-3)


def test_short_waveform_and_bad_options_raise():
  with pytest.raises(ValueError, match="399 samples, fewer than one 25.0 ms frame"):
    kaldi.fbank(jnp.zeros((2, 399)))
  with pytest.raises(ValueError, match="unknown window"):
    kaldi.fbank(jnp.zeros(400), window="hann")
  with pytest.raises(ValueError, match="low_freq < high_freq"):
    kaldi.fbank(jnp.zeros(400), low_freq=9000.0)
