"""The piano synthesiser and the synth_piano dataset: pitch, inharmonicity, decay, determinism."""

import numpy as np
import pytest

import data_pipelines as dp
from afx.audio import synthesis as syn
from afx.errors import DataError
from data_pipelines import synth_piano

RATE = 16000
SHORT_CLIP = 2.0
TINY = {"train": 3, "validation": 1, "test": 2}


def _spectrum(signal, sample_rate=RATE, pad=4):
  """Magnitude spectrum (Hann window, zero-padded ``pad`` times) and its frequencies."""
  n = pad * len(signal)
  spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)), n=n))
  return spectrum, np.fft.rfftfreq(n, 1 / sample_rate)


def _peak_between(signal, low, high):
  spectrum, freqs = _spectrum(signal)
  band = (freqs > low) & (freqs < high)
  return freqs[band][np.argmax(spectrum[band])]


def _rms(signal):
  return float(np.sqrt(np.mean(np.asarray(signal, np.float64) ** 2)))


def _note(frequency=220.0, seed=0, **kwargs):
  kwargs = {"duration": 1.0, "velocity": 0.9, "sustain_pedal": True, "max_seconds": 2.0, **kwargs}
  return syn.piano_note(frequency, sample_rate=RATE, rng=np.random.default_rng(seed), **kwargs)


def _piece(index, seed=0, split="train"):
  return synth_piano.generate_example(
      index, seed=seed, split=split, clip_seconds=SHORT_CLIP, sample_rate=RATE
  )["audio"]


# The synthesiser.


def test_damped_sinusoids_match_the_direct_sum():
  freqs, rates, amps = np.array([220.0, 1234.5, 7000.0]), np.array([1.0, 5.0, 300.0]), [1, .5, .2]
  t = np.arange(RATE + 37) / RATE
  direct = sum(
      a * np.exp(-r * t) * np.sin(2 * np.pi * f * t) for f, r, a in zip(freqs, rates, amps)
  )
  fast = syn.damped_sinusoids(freqs, rates, amps, len(t) / RATE, RATE)
  assert fast.dtype == np.float32 and fast.shape == t.shape
  np.testing.assert_allclose(fast, direct, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_piano_note_pitch(seed):
  note = _note(220.0, seed)
  assert note.dtype == np.float32
  spectrum, freqs = _spectrum(note)
  assert abs(freqs[np.argmax(spectrum)] - 220.0) < 2.0  # the fundamental is the loudest partial
  assert spectrum[freqs < 180.0].max() < 0.05 * spectrum.max()


def test_piano_partials_are_stretched_by_inharmonicity():
  f0 = 220.0
  note = _note(f0, velocity=1.0)
  tenth = _peak_between(note, 9.5 * f0, 10.5 * f0)
  expected = 10 * f0 * np.sqrt(1 + syn.piano_inharmonicity(f0) * 100)
  assert tenth > 10 * f0 + 10.0
  assert abs(tenth - expected) < 5.0
  # B rises with pitch within the stiff-string range.
  assert 1e-4 <= syn.piano_inharmonicity(55.0) < syn.piano_inharmonicity(880.0) <= 1e-3
  assert syn.piano_partials(f0, RATE).max() < RATE / 2


def test_piano_note_decays_and_the_damper_stops_it():
  with_pedal = _note(duration=0.5, sustain_pedal=True, max_seconds=3.0)
  assert len(with_pedal) == 3 * RATE
  tenth_of_a_second = RATE // 10
  assert _rms(with_pedal[-tenth_of_a_second:]) < 0.1 * _rms(with_pedal[:tenth_of_a_second])
  without_pedal = _note(duration=0.5, sustain_pedal=False, max_seconds=3.0)
  assert len(without_pedal) < len(with_pedal)
  after_release = slice(int(0.8 * RATE), None)
  assert _rms(without_pedal[after_release]) < 0.01 * _rms(with_pedal[after_release])


def test_velocity_makes_a_note_louder_and_brighter():
  soft, hard = _note(velocity=0.3), _note(velocity=0.9)
  assert _rms(hard) > 4 * _rms(soft)

  def centroid(signal):
    spectrum, freqs = _spectrum(signal, pad=1)
    return np.sum(freqs * spectrum) / np.sum(spectrum)

  assert centroid(hard) > 1.2 * centroid(soft)


def test_piano_note_rejects_a_pitch_above_nyquist():
  with pytest.raises(ValueError, match="Nyquist"):
    _note(9000.0)


# The pieces.


def test_pieces_are_deterministic_and_distinct():
  first = _piece(0)
  assert np.array_equal(first, _piece(0))
  assert not np.array_equal(first, _piece(1))
  assert not np.array_equal(first, _piece(0, seed=1))
  assert not np.array_equal(first, _piece(0, split="test"))


def test_pieces_have_the_clip_length_and_a_normalised_peak():
  for index in range(6):
    audio = _piece(index)
    assert audio.dtype == np.int16 and audio.shape == (int(SHORT_CLIP * RATE),)
    peak_dbfs = 20 * np.log10(np.abs(audio.astype(np.int32)).max() / 32767)
    assert -12.01 <= peak_dbfs <= -0.99
    assert _rms(audio) > 0.01 * 32767


def test_compositions_stay_on_the_keyboard_and_have_chords():
  pitches, chord_pieces = [], 0
  for index in range(20):
    notes, stretches = synth_piano.compose(np.random.default_rng([0, 0, index]), 8.0)
    assert notes and all(0 <= note.onset < 8.0 and note.held > 0 for note in notes)
    assert all(0 < down < up for down, up in stretches)
    pitches += [note.pitch for note in notes]
    onsets = [note.onset for note in notes]
    chord_pieces += len(set(onsets)) < len(onsets)
  assert synth_piano.LOWEST <= min(pitches) and max(pitches) <= synth_piano.HIGHEST
  assert 55 <= np.median(pitches) <= 72  # most notes around the middle of the keyboard
  assert chord_pieces >= 10


# The tfds builder.


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("piano")
  return dp.prepare(dp.get_builder("synth_piano", data_dir=data_dir, split_sizes=TINY,
                                   num_workers=1))


def test_build_writes_the_requested_examples(tiny_build):
  assert "synth_piano" in dp.known_names()
  assert dp.sample_rate(tiny_build) == RATE and dp.class_names(tiny_build) == ["piano"]
  metadata = tiny_build.info.metadata
  assert metadata["clip_seconds"] == 8.0 and metadata["seed"] == 0
  assert metadata["split_sizes"] == TINY
  for split, size in TINY.items():
    source = tiny_build.as_data_source(split=split)
    assert len(source) == size
    examples = {bytes(source[i]["id"]).decode(): source[i] for i in range(size)}
    assert sorted(examples) == [f"{split}/{i:06d}" for i in range(size)]
    for example in examples.values():
      assert example["audio"].dtype == np.int16 and example["audio"].shape == (8 * RATE,)
      assert list(example["labels"]) == [0]
  # What was built is the pure function of (seed, split, index).
  built = tiny_build.as_data_source(split="test")
  by_id = {bytes(built[i]["id"]).decode(): built[i]["audio"] for i in range(len(built))}
  expected = synth_piano.generate_example(1, seed=0, split="test", clip_seconds=8.0,
                                          sample_rate=RATE)
  assert np.array_equal(by_id["test/000001"], expected["audio"])


def test_a_build_with_another_seed_is_not_silently_reused(tiny_build):
  with pytest.raises(DataError, match="seed"):
    dp.get_builder("synth_piano", data_dir=tiny_build.data_dir_root, split_sizes=TINY, seed=3)
  with pytest.raises(DataError, match="split sizes"):
    dp.get_builder("synth_piano", data_dir=tiny_build.data_dir_root, split_sizes={"train": 4})
