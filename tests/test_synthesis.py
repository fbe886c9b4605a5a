"""Synthesis primitives: the pitch, sweep, band and statistics each one promises."""

import numpy as np
import pytest
import scipy.signal

from afx.audio import synthesis as syn

RATE = 16000


def _peak_frequency(signal, sample_rate=RATE):
  spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
  return np.fft.rfftfreq(len(signal), 1 / sample_rate)[np.argmax(spectrum)]


def _band_energy_fraction(signal, low, high, sample_rate=RATE):
  power = np.abs(np.fft.rfft(signal)) ** 2
  freqs = np.fft.rfftfreq(len(signal), 1 / sample_rate)
  return power[(freqs >= low) & (freqs <= high)].sum() / power.sum()


@pytest.mark.parametrize("freq", [110.0, 220.0, 440.0, 660.0])
def test_karplus_strong_fundamental(freq):
  string = syn.karplus_strong(
      freq, 1.0, RATE, decay=1.0, rng=np.random.default_rng(0)
  )
  assert string.dtype == np.float32 and len(string) == RATE
  spectrum = np.abs(np.fft.rfft(string * np.hanning(len(string))))
  freqs = np.fft.rfftfreq(len(string), 1 / RATE)
  # The random excitation may make a higher harmonic the loudest, so look at the lowest one:
  # nothing below it, and it is near `freq` (the delay line is whole samples: within 3 %).
  below = freqs < 1.5 * freq
  lowest_peak = freqs[below][np.argmax(spectrum[below])]
  assert abs(lowest_peak - freq) / freq < 0.03
  assert spectrum[below].max() > 0.05 * spectrum.max()
  assert spectrum[freqs < 0.7 * freq].max() < 0.05 * spectrum.max()
  loudest = freqs[np.argmax(spectrum)]
  assert abs(loudest / lowest_peak - round(loudest / lowest_peak)) < 0.05


def test_karplus_strong_decays_at_its_rate():
  string = syn.karplus_strong(200.0, 1.0, RATE, decay=0.5, rng=np.random.default_rng(1))
  first, last = np.abs(string[:1600]).max(), np.abs(string[-1600:]).max()
  # 0.5 s to fall 60 dB: after ~0.9 s the peak should be far below the start.
  assert last < first * 10 ** (-60 / 20 * 0.7)


@pytest.mark.parametrize("method", ["linear", "exponential"])
@pytest.mark.parametrize("f0, f1", [(300.0, 3000.0), (4000.0, 500.0)])
def test_chirp_instantaneous_frequency_moves_from_f0_to_f1(method, f0, f1):
  def expected(fraction):  # the sweep's defining law, fraction of the way through
    return f0 + (f1 - f0) * fraction if method == "linear" else f0 * (f1 / f0) ** fraction

  sweep = syn.chirp(f0, f1, 1.0, RATE, method=method)
  phase = np.unwrap(np.angle(scipy.signal.hilbert(sweep)))
  inst_freq = np.diff(phase) * RATE / (2 * np.pi)
  for fraction in (0.1, 0.5, 0.9):  # away from the ends, where the Hilbert transform rings
    centre = int(fraction * RATE)
    measured = np.median(inst_freq[centre - 200 : centre + 200])
    assert abs(measured - expected(fraction)) < 0.03 * expected(fraction)


def test_exponential_chirp_is_halfway_in_log_frequency_at_midpoint():
  sweep = syn.chirp(200.0, 3200.0, 1.0, RATE, method="exponential")
  middle = sweep[RATE // 2 - 1024 : RATE // 2 + 1024]
  assert abs(_peak_frequency(middle) - 800.0) < 40.0


@pytest.mark.parametrize(
    "low, high, band",
    [
        (1000.0, 2000.0, (900.0, 2200.0)),
        (None, 300.0, (0.0, 400.0)),
        (5000.0, None, (4500.0, 8000.0)),
    ],
)
def test_filtered_noise_energy_lies_in_its_band(low, high, band):
  noise = syn.filtered_noise(1.0, RATE, low=low, high=high, rng=np.random.default_rng(2))
  assert noise.dtype == np.float32 and np.isclose(np.abs(noise).max(), 1.0)
  assert _band_energy_fraction(noise, *band) > 0.9


def test_coloured_noise_spectral_slope():
  rng = np.random.default_rng(3)
  n = 2**16
  freqs = np.fft.rfftfreq(n, 1 / RATE)
  for exponent in (0.0, 1.0, 2.0):
    noise = syn.coloured_noise(n, rng, exponent=exponent)
    assert np.isclose(np.sqrt(np.mean(noise.astype(np.float64) ** 2)), 1.0, atol=1e-3)
    power = np.abs(np.fft.rfft(noise)) ** 2
    in_range = (freqs > 50) & (freqs < 5000)
    slope = np.polyfit(np.log(freqs[in_range]), np.log(power[in_range]), 1)[0]
    assert abs(slope + exponent) < 0.15


def test_impulse_train_spacing_and_jitter():
  regular = syn.impulse_train(10.0, 1.0, RATE)
  assert np.array_equal(np.flatnonzero(regular), np.arange(10) * 1600)
  jittered = syn.impulse_train(10.0, 1.0, RATE, jitter=0.2, rng=np.random.default_rng(4))
  positions = np.flatnonzero(jittered)
  assert len(positions) == 10 and positions[0] == 0
  assert np.all(np.abs(positions - np.arange(10) * 1600) <= 0.2 * 1600 + 1)
  assert not np.array_equal(positions, np.arange(10) * 1600)


def test_fm_tone_ratio_one_is_harmonic_and_inharmonic_ratio_is_not():
  harmonic = syn.fm_tone(200.0, 1.0, RATE, ratio=1.0, index=3.0)
  bell = syn.fm_tone(200.0, 1.0, RATE, ratio=1.4, index=3.0)
  spectrum_freqs = np.fft.rfftfreq(RATE, 1 / RATE)

  def harmonic_fraction(signal):
    power = np.abs(np.fft.rfft(signal)) ** 2
    near_harmonic = np.abs(spectrum_freqs / 200.0 - np.round(spectrum_freqs / 200.0)) < 0.02
    return power[near_harmonic].sum() / power.sum()

  assert harmonic_fraction(harmonic) > 0.99
  assert harmonic_fraction(bell) < 0.5


def test_additive_square_has_only_odd_harmonics_below_nyquist():
  tone = syn.additive_tone(
      1000.0, 1.0, RATE, harmonic_amplitudes=syn.square_amplitudes(20)
  )
  power = np.abs(np.fft.rfft(tone)) ** 2
  assert power[2000] < 1e-6 * power[1000]  # 1 Hz bins: the 2nd harmonic is absent
  assert power[3000] > 0.05 * power[1000]
  assert np.isclose(np.abs(tone).max(), 1.0)


def test_envelopes():
  env = syn.adsr(1.0, RATE, attack=0.1, decay=0.1, sustain=0.5, release=0.2)
  assert len(env) == RATE and env[0] == 0.0 and np.isclose(env.max(), 1.0, atol=1e-3)
  assert np.isclose(env[RATE // 2], 0.5) and env[-1] == 0.0
  short = syn.adsr(0.05, RATE, attack=0.1, decay=0.1, sustain=0.5, release=0.2)
  assert len(short) == 800 and short.max() > 0.9  # stages shrink to fit
  decay = syn.exp_decay(1.0, RATE, time_constant=0.1, attack=0.0)
  assert np.isclose(decay[1600], np.exp(-1.0), rtol=1e-3)


def test_same_generator_state_gives_same_sound():
  def render(seed):
    rng = np.random.default_rng(seed)
    return np.concatenate([
        syn.karplus_strong(300.0, 0.2, RATE, decay=0.5, rng=rng),
        syn.filtered_noise(0.2, RATE, low=500.0, high=900.0, rng=rng),
        syn.coloured_noise(3200, rng, exponent=1.0),
        syn.impulse_train(20.0, 0.2, RATE, jitter=0.3, rng=rng),
        syn.poisson_impulses(100.0, 0.2, RATE, rng=rng),
    ])

  assert np.array_equal(render(7), render(7))
  assert not np.array_equal(render(7), render(8))
