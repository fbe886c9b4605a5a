"""Sound synthesis primitives in numpy: float32, deterministic given a ``np.random.Generator``.

Durations are in seconds and ``sample_rate`` in Hz; a signal of ``duration`` seconds has
``num_samples(duration, sample_rate)`` samples.  Frequencies may be scalars or, where noted,
per-sample arrays (for vibrato, sweeps and pitch drops).  Oscillators return peak amplitude 1
before any envelope; noise sources say how they are scaled.
"""

import functools

import numpy as np
import scipy.signal
import threadpoolctl

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


# Sums of damped sinusoids, and a piano built from them.


def _floored_exp(arguments: np.ndarray) -> np.ndarray:
  """exp of complex ``arguments`` with their real part floored at -60.

  A component decayed by more than 520 dB stays at 1e-26 instead of reaching subnormal numbers,
  which would slow the arithmetic on it, the matrix product above all, many-fold.
  """
  return np.exp(np.maximum(arguments.real, -60.0) + 1j * arguments.imag)


def _exp_ramp(rates: np.ndarray, count: int, step: float) -> np.ndarray:
  """exp(rates[k] * step * j) at [j, k] for j < count, from about 2 sqrt(count) exponentials per
  rate: exp(r (a + b)) = exp(r a) exp(r b) with a on a coarse grid and b on a fine one."""
  fine_count = int(np.ceil(np.sqrt(count)))
  coarse_count = -(-count // fine_count)
  fine = _floored_exp(np.outer(step * np.arange(fine_count), rates))
  coarse = _floored_exp(np.outer(step * fine_count * np.arange(coarse_count), rates))
  return (coarse[:, None, :] * fine[None, :, :]).reshape(-1, len(rates))[:count]


@functools.cache
def _thread_pools() -> threadpoolctl.ThreadpoolController:
  """The native thread pools loaded (BLAS among them); finding them takes a millisecond."""
  return threadpoolctl.ThreadpoolController()


def damped_sinusoids(
    frequencies: np.ndarray,
    decay_rates: np.ndarray,
    amplitudes: np.ndarray,
    duration: float,
    sample_rate: int,
    *,
    block: int = 256,
) -> np.ndarray:
  """Sum over k of amplitudes[k] * exp(-decay_rates[k] * t) * sin(2 pi frequencies[k] t), float32.

  Each component is the imaginary part of a * exp(s t) with s = -decay + 2 pi i f, and
  exp(s (t0 + u)) = exp(s t0) exp(s u): the signal is computed ``block`` samples at a time as one
  matrix product of each block's start values (blocks x components) with the components' shapes
  within a block (components x block), so hundreds of partials of a long note cost milliseconds.

  Args:
    frequencies: Hz per component.
    decay_rates: per component, in nepers per second (1/time constant).
    amplitudes: per component; every component starts at phase 0.
    duration: seconds.
    sample_rate: samples per second.
    block: samples per block.
  """
  n = num_samples(duration, sample_rate)
  rates = (-np.asarray(decay_rates, np.float64) + 2j * np.pi * np.asarray(frequencies, np.float64))
  rates = rates / sample_rate
  at_starts = np.asarray(amplitudes, np.float64) * _exp_ramp(rates, -(-n // block), block)
  within_block = _exp_ramp(rates, block, 1.0)
  # Im(x y) = Re(x) Im(y) + Im(x) Re(y): viewed as floats, each row of at_starts interleaves
  # (Re, Im) per component, so the shapes interleave (Im, Re) to match.
  shapes = np.stack([within_block.imag, within_block.real], axis=-1).reshape(block, -1).T
  # Products this small gain nothing from BLAS threads, and on a busy machine their waiting makes
  # them several times slower.
  with _thread_pools().limit(limits=1, user_api="blas"):
    blocks = at_starts.view(np.float64) @ shapes
  return blocks.reshape(-1)[:n].astype(np.float32)


def midi_to_hz(note: ArrayOrFloat) -> ArrayOrFloat:
  """The frequency of MIDI note number(s) ``note`` in equal temperament (69 = A4 = 440 Hz)."""
  return 440.0 * 2.0 ** ((np.asarray(note, np.float64) - 69.0) / 12.0)


def piano_inharmonicity(frequency: float) -> float:
  """The stiffness coefficient B of a piano string whose fundamental is ``frequency`` Hz.

  Rises log-linearly from 1e-4 at A1 (55 Hz) to 1e-3 at C8 (4186 Hz), held beyond them: treble
  strings are short for their thickness, so stiffer.
  """
  position = np.log(frequency / 55.0) / np.log(4186.0 / 55.0)
  return float(10.0 ** (-4.0 + np.clip(position, 0.0, 1.0)))


def piano_partials(frequency: float, sample_rate: int) -> np.ndarray:
  """The frequencies of a piano string's partials below Nyquist: n f0 sqrt(1 + B n^2)."""
  inharmonicity = piano_inharmonicity(frequency)
  n = np.arange(1, max(1, int(sample_rate / 2 / frequency)) + 1, dtype=np.float64)
  partials = n * frequency * np.sqrt(1.0 + inharmonicity * n**2)
  return partials[partials < sample_rate / 2]


def _piano_strings(frequency: float) -> int:
  """Strings per key: two up to about C3, three above."""
  return 2 if frequency < 130.0 else 3


def _piano_amplitudes(
    partials: np.ndarray, velocity: float, strike_position: float
) -> np.ndarray:
  """Initial partial amplitudes, summing to 1.

  A hammer striking at ``strike_position`` (fraction of the string length) weakens the partials
  with a node near it; a harder strike is a shorter contact, which reaches higher partials: the
  low-pass corner rises from about 0.5 to 4.3 kHz with velocity.
  """
  n = np.arange(1, len(partials) + 1)
  strike = 0.1 + 0.9 * np.abs(np.sin(np.pi * n * strike_position))
  corner = 300.0 + 4000.0 * velocity**2
  amplitudes = strike / n / (1.0 + (partials / corner) ** 2)
  return amplitudes / amplitudes.sum()


def _piano_decay_rates(partials: np.ndarray, t60_fundamental: float) -> np.ndarray:
  """The aftersound's decay rate per partial (nepers/s): losses grow with frequency squared."""
  return 6.91 / t60_fundamental + 3e-7 * partials**2


def _one_pole_lowpass(signal: np.ndarray, cutoff: float, sample_rate: int) -> np.ndarray:
  pole = np.exp(-2.0 * np.pi * cutoff / sample_rate)
  return scipy.signal.lfilter([1.0 - pole], [1.0, -pole], signal)


def _hammer_noise(
    frequency: float, velocity: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
  """The hammer's knock, peak 1: a noise burst dying in a few ms, band-passed (6 dB/octave
  slopes) from half the fundamental up to 1-6 kHz, higher when struck harder."""
  length = 0.06
  noise = white_noise(length, sample_rate, rng=rng).astype(np.float64)
  high = min(1000.0 + 5000.0 * velocity, 0.45 * sample_rate)
  # The difference of two low-passes is a band-pass; unlike a Butterworth design it costs nothing
  # to set up, which matters at dozens of notes per piece.
  band = (_one_pole_lowpass(noise, high, sample_rate)
          - _one_pole_lowpass(noise, frequency / 2, sample_rate))
  decay = exp_decay(length, sample_rate, time_constant=0.004 + 0.008 * (1.0 - velocity),
                    attack=0.0)
  return _unit_peak(band) * decay


def piano_note(
    frequency: float,
    duration: float,
    sample_rate: int,
    *,
    velocity: float,
    rng: np.random.Generator,
    sustain_pedal: bool = False,
    max_seconds: float | None = None,
) -> np.ndarray:
  """A piano-like note: detuned stiff strings struck by a hammer, ringing until the damper falls.

  The partials are inharmonic (see ``piano_partials``); each decays in two stages, fast at first
  (the prompt sound), then 3-6 times slower (the aftersound, 9-14 dB down), higher partials and
  higher notes faster (the fundamental's aftersound takes about 30 s at A1 and 2 s at C7 to
  fall by 60 dB).  A key has 2-3 strings, each detuned by up to about a cent, so the partials
  beat.  A 1-4 ms onset and a burst of hammer noise make the attack.  When the key is released
  the damper stops the note within 0.2-0.6 s (slower in the bass), unless the sustain pedal is
  down.

  Args:
    frequency: the fundamental (first partial) in Hz, below Nyquist.
    duration: seconds the key is held down.
    sample_rate: samples per second.
    velocity: how hard the key is struck, in (0, 1]: louder (36 dB from 0 to 1) and brighter.
    rng: draws the note's small variations: detuning, strike position, decay times, hammer noise.
    sustain_pedal: the pedal keeps the damper off: the note rings on after the key is released.
    max_seconds: where the note is cut, if earlier than its end.

  Returns:
    The note, float32, scaled by 10 ** (1.8 * (velocity - 1)) from a peak of at most about 1; it
    ends once damped, or once its slowest partial has decayed by 60 dB, or at ``max_seconds``.

  Raises:
    ValueError: ``frequency`` is at or above Nyquist.
  """
  if frequency >= sample_rate / 2:
    raise ValueError(
        f"piano_note frequency {frequency} Hz is not below Nyquist ({sample_rate / 2} Hz)"
    )
  partials = piano_partials(frequency, sample_rate)
  amplitudes = _piano_amplitudes(partials, velocity, strike_position=rng.uniform(1 / 9, 1 / 7))
  # Partials 60 dB below the strongest are inaudible in the mix; dropping them saves most time
  # in the bass.
  audible = amplitudes > 1e-3 * amplitudes.max()
  partials, amplitudes = partials[audible], amplitudes[audible] / amplitudes[audible].sum()
  t60 = 30.0 * (55.0 / frequency) ** 0.6 * rng.uniform(0.8, 1.25)
  slow = _piano_decay_rates(partials, t60)
  fast = slow * rng.uniform(3.0, 6.0)
  aftersound = rng.uniform(0.2, 0.35)

  strings = _piano_strings(frequency)
  # A unison is tuned by ear: each string is off by up to about a cent, and the hammer strikes
  # some strings a little harder than others (so their beats never cancel a partial entirely).
  detune = 2.0 ** (rng.uniform(-1.0, 1.0, strings) * rng.uniform(0.1, 1.0) / 1200.0)
  weights = rng.uniform(0.6, 1.0, strings)
  # Components: every (stage, string, partial).
  shape = (2, strings, len(partials))
  component_freqs = np.broadcast_to(np.outer(detune, partials), shape).ravel()
  component_rates = np.broadcast_to(np.stack([fast, slow])[:, None, :], shape).ravel()
  stages = np.array([1.0 - aftersound, aftersound])
  component_amps = np.einsum("g,s,p->gsp", stages, weights / weights.sum(), amplitudes).ravel()

  damping = 0.025 + 0.05 * np.sqrt(55.0 / frequency)  # time constant once the damper falls
  ring_out = np.log(aftersound / 1e-3) / slow.min()
  end = ring_out if sustain_pedal else min(ring_out, duration + 8.0 * damping)
  if max_seconds is not None:
    end = min(end, max_seconds)
  n = num_samples(end, sample_rate)
  note = damped_sinusoids(component_freqs, component_rates, component_amps, end, sample_rate)

  noise = _hammer_noise(frequency, velocity, sample_rate, rng)[:n]
  note[: len(noise)] += (0.03 + 0.07 * velocity) * noise
  t = np.arange(n) / sample_rate
  envelope = np.clip(t / (0.001 + 0.003 * (1.0 - velocity)), 0.0, 1.0)
  if not sustain_pedal:
    envelope *= np.exp(-np.maximum(t - duration, 0.0) / damping)
  loudness = 10.0 ** (1.8 * (velocity - 1.0))
  return (note * envelope * loudness).astype(np.float32)
