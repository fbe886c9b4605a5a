"""Sound synthesis primitives in numpy: float32, deterministic given a ``np.random.Generator``.

Durations are in seconds and ``sample_rate`` in Hz; a signal of ``duration`` seconds has
``num_samples(duration, sample_rate)`` samples.  Frequencies may be scalars or, where noted,
per-sample arrays (for vibrato, sweeps and pitch drops).  Oscillators return peak amplitude 1
before any envelope; noise sources say how they are scaled.
"""

import numpy as np
import scipy.signal

ArrayOrFloat = float | np.ndarray


def num_samples(duration: float, sample_rate: int) -> int:
  """The number of samples in ``duration`` seconds (at least 1)."""
  return max(1, int(round(duration * sample_rate)))


def _time_axis(duration: float, sample_rate: int) -> np.ndarray:
  return np.arange(num_samples(duration, sample_rate)) / sample_rate


def _unit_peak(signal: np.ndarray) -> np.ndarray:
  peak = np.max(np.abs(signal))
  return (signal / peak if peak > 0 else signal).astype(np.float32)


# Envelopes.


def adsr(
    duration: float,
    sample_rate: int,
    *,
    attack: float,
    decay: float,
    sustain: float,
    release: float,
) -> np.ndarray:
  """Attack-decay-sustain-release envelope of ``duration`` seconds, peak 1.

  Args:
    duration: total length; the release ends it, the sustain stretches to fill the rest.
    sample_rate: samples per second.
    attack: seconds rising linearly from 0 to 1.
    decay: seconds falling linearly from 1 to ``sustain``.
    sustain: level held between decay and release, in [0, 1].
    release: seconds falling linearly from ``sustain`` to 0.
  """
  n = num_samples(duration, sample_rate)
  # Stages that do not fit are shortened proportionally, so short notes keep their shape.
  stage_seconds = np.array([attack, decay, release], dtype=np.float64)
  scale = min(1.0, duration / max(stage_seconds.sum(), 1e-9))
  attack_n, decay_n, release_n = (stage_seconds * scale * sample_rate).astype(int)
  sustain_n = max(0, n - attack_n - decay_n - release_n)
  envelope = np.concatenate([
      np.linspace(0.0, 1.0, attack_n, endpoint=False),
      np.linspace(1.0, sustain, decay_n, endpoint=False),
      np.full(sustain_n, sustain),
      np.linspace(sustain, 0.0, release_n),
  ])
  return np.pad(envelope, (0, max(0, n - len(envelope))))[:n].astype(np.float32)


def exp_decay(
    duration: float, sample_rate: int, *, time_constant: float, attack: float = 0.002
) -> np.ndarray:
  """Exponential decay exp(-t / time_constant) after a short linear ``attack`` (avoids a click)."""
  t = _time_axis(duration, sample_rate)
  envelope = np.exp(-t / time_constant)
  if attack > 0:
    envelope *= np.clip(t / attack, 0.0, 1.0)
  return envelope.astype(np.float32)


# Oscillators.


def phase_of(freq: ArrayOrFloat, duration: float, sample_rate: int) -> np.ndarray:
  """Phase in radians of an oscillator whose frequency (Hz, scalar or per sample) is ``freq``."""
  n = num_samples(duration, sample_rate)
  freq = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
  # Phase at sample k accumulates the frequencies before it, so sample 0 has phase 0.
  return 2 * np.pi * np.concatenate([[0.0], np.cumsum(freq[:-1])]) / sample_rate


def sine(
    freq: ArrayOrFloat, duration: float, sample_rate: int, *, phase: float = 0.0
) -> np.ndarray:
  """A sine at ``freq`` Hz (scalar or per-sample array)."""
  return np.sin(phase_of(freq, duration, sample_rate) + phase).astype(np.float32)


def additive_tone(
    freq: ArrayOrFloat,
    duration: float,
    sample_rate: int,
    *,
    harmonic_amplitudes: np.ndarray,
) -> np.ndarray:
  """Sum of harmonics k * freq with the given amplitudes (index 0 = fundamental), peak 1.

  Harmonics at or above Nyquist are left out, so square and sawtooth waves built this way do not
  alias.  With a per-sample ``freq`` a harmonic is dropped where it would cross Nyquist.
  """
  base_phase = phase_of(freq, duration, sample_rate)
  freq = np.broadcast_to(np.asarray(freq, dtype=np.float64), base_phase.shape)
  tone = np.zeros_like(base_phase)
  for k, amplitude in enumerate(np.asarray(harmonic_amplitudes, dtype=np.float64), start=1):
    below_nyquist = k * freq < sample_rate / 2
    if amplitude != 0 and below_nyquist.any():
      tone += amplitude * np.sin(k * base_phase) * below_nyquist
  return _unit_peak(tone)


def square_amplitudes(num_harmonics: int) -> np.ndarray:
  """Harmonic amplitudes of a square wave: odd harmonics at 1/k."""
  k = np.arange(1, num_harmonics + 1)
  return np.where(k % 2 == 1, 1.0 / k, 0.0)


def sawtooth_amplitudes(num_harmonics: int) -> np.ndarray:
  """Harmonic amplitudes of a sawtooth wave: every harmonic at 1/k."""
  return 1.0 / np.arange(1, num_harmonics + 1)


def fm_tone(
    freq: float,
    duration: float,
    sample_rate: int,
    *,
    ratio: float,
    index: ArrayOrFloat,
    envelope: np.ndarray | None = None,
) -> np.ndarray:
  """Two-operator FM: a carrier at ``freq`` phase-modulated by a sine at ``ratio * freq``.

  Args:
    freq: carrier frequency in Hz.
    duration: seconds.
    sample_rate: samples per second.
    ratio: modulator / carrier frequency; integers give harmonic spectra, others bell-like ones.
    index: modulation index (peak phase deviation in radians), scalar or per sample; a
      time-varying index makes the brightness evolve (brass).
    envelope: amplitude envelope of the same length, or None for constant amplitude 1.
  """
  carrier_phase = phase_of(freq, duration, sample_rate)
  modulator = np.sin(ratio * carrier_phase)
  tone = np.sin(carrier_phase + np.asarray(index) * modulator)
  if envelope is not None:
    tone = tone * envelope
  return tone.astype(np.float32)


def chirp(
    f0: float,
    f1: float,
    duration: float,
    sample_rate: int,
    *,
    method: str = "exponential",
) -> np.ndarray:
  """A sine sweeping from ``f0`` to ``f1`` Hz over ``duration``.

  ``method="exponential"`` moves by equal musical intervals per second (f0 * (f1/f0)^(t/T));
  ``"linear"`` by equal Hz per second.
  """
  t = _time_axis(duration, sample_rate)
  if method == "linear":
    freq = f0 + (f1 - f0) * t / duration
  elif method == "exponential":
    freq = f0 * (f1 / f0) ** (t / duration)
  else:
    raise ValueError(f"chirp method must be 'exponential' or 'linear', not {method!r}")
  return sine(freq, duration, sample_rate)


def karplus_strong(
    freq: float,
    duration: float,
    sample_rate: int,
    *,
    decay: float,
    rng: np.random.Generator,
) -> np.ndarray:
  """A plucked string: a noise burst circulating in a delay line with a two-point average.

  Args:
    freq: fundamental in Hz.
    duration: seconds.
    sample_rate: samples per second.
    decay: seconds for the fundamental to fall by 60 dB.
    rng: source of the excitation noise.

  Returns:
    The string's output, peak 1.
  """
  n = num_samples(duration, sample_rate)
  # The two-point average delays by half a sample, so the loop is delay + 0.5 samples long.
  delay = max(2, int(round(sample_rate / freq - 0.5)))
  loop_seconds = (delay + 0.5) / sample_rate
  gain = 10.0 ** (-3.0 * loop_seconds / decay)
  excitation = np.zeros(n)
  burst = rng.uniform(-1.0, 1.0, min(delay, n))
  excitation[: len(burst)] = burst - burst.mean()
  # y[t] = x[t] + gain/2 * (y[t - delay] + y[t - delay - 1])
  feedback = np.zeros(delay + 2)
  feedback[0] = 1.0
  feedback[delay] = feedback[delay + 1] = -gain / 2
  return _unit_peak(scipy.signal.lfilter([1.0], feedback, excitation))


# Noise and pulses.


def white_noise(duration: float, sample_rate: int, *, rng: np.random.Generator) -> np.ndarray:
  """Gaussian white noise, unit variance."""
  return rng.standard_normal(num_samples(duration, sample_rate)).astype(np.float32)


def filtered_noise(
    duration: float,
    sample_rate: int,
    *,
    low: float | None,
    high: float | None,
    rng: np.random.Generator,
    order: int = 4,
) -> np.ndarray:
  """White noise through a Butterworth filter, peak 1.

  Args:
    duration: seconds.
    sample_rate: samples per second.
    low: lower cutoff in Hz, or None (or 0) for a low-pass.
    high: upper cutoff in Hz, or None (or >= Nyquist) for a high-pass.
    rng: noise source.
    order: filter order.
  """
  noise = white_noise(duration, sample_rate, rng=rng).astype(np.float64)
  nyquist = sample_rate / 2
  has_low = low is not None and low > 0
  has_high = high is not None and high < nyquist
  if has_low and has_high:
    sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
  elif has_high:
    sos = scipy.signal.butter(order, high, btype="lowpass", fs=sample_rate, output="sos")
  elif has_low:
    sos = scipy.signal.butter(order, low, btype="highpass", fs=sample_rate, output="sos")
  else:
    return _unit_peak(noise)
  return _unit_peak(scipy.signal.sosfilt(sos, noise))


def coloured_noise(n: int, rng: np.random.Generator, *, exponent: float) -> np.ndarray:
  """Noise whose power falls as 1/f^exponent (white 0, pink 1, brown 2), unit RMS, no DC."""
  spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
  bins = np.arange(n // 2 + 1, dtype=np.float64)
  scale = np.zeros_like(bins)
  scale[1:] = bins[1:] ** (-exponent / 2)  # amplitude is the square root of power
  noise = np.fft.irfft(spectrum * scale, n=n)
  rms = np.sqrt(np.mean(noise**2))
  return (noise / rms if rms > 0 else noise).astype(np.float32)


def impulse_train(
    rate_hz: float,
    duration: float,
    sample_rate: int,
    *,
    jitter: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
  """Unit impulses every 1/rate_hz seconds, the first at t = 0.

  Args:
    rate_hz: impulses per second.
    duration: seconds.
    sample_rate: samples per second.
    jitter: each impulse after the first moves by up to +-jitter periods (uniform); 0 is regular.
    rng: needed when jitter > 0.
  """
  n = num_samples(duration, sample_rate)
  times = np.arange(0.0, duration, 1.0 / rate_hz)
  if jitter > 0:
    if rng is None:
      raise ValueError("impulse_train needs rng when jitter > 0")
    times[1:] += rng.uniform(-jitter, jitter, len(times) - 1) / rate_hz
  positions = np.round(times * sample_rate).astype(int)
  train = np.zeros(n, dtype=np.float32)
  train[positions[(positions >= 0) & (positions < n)]] = 1.0
  return train


def poisson_impulses(
    rate_hz: float, duration: float, sample_rate: int, *, rng: np.random.Generator
) -> np.ndarray:
  """Impulses at random times (a Poisson process of ``rate_hz``) with random signs and heights."""
  n = num_samples(duration, sample_rate)
  count = rng.poisson(rate_hz * duration)
  train = np.zeros(n, dtype=np.float32)
  positions = rng.integers(0, n, count)
  np.add.at(train, positions, rng.uniform(0.2, 1.0, count) * rng.choice([-1.0, 1.0], count))
  return train
