"""synth_events: procedural sound-event clips, the dataset every new afx user trains on first.

Each clip (1 s at 16 kHz by default) mixes 0-3 events of distinct classes (probabilities
0.1/0.4/0.3/0.2; exactly 1 in the ``single_label`` config) over coloured background noise.
Every event draws its pitch from a class-specific range and its timbre, gain (-12..0 dB),
duration and onset at random; the background (white..brown) sits 5-30 dB below the events,
and the mix is peak-normalised to -12..-1 dBFS and stored as int16.  Each class keeps a distinct
spectral or temporal signature through its randomisation, so a small model learns them in minutes.

Clip ``i`` of split ``s`` comes from ``np.random.default_rng([seed, SPLITS.index(s), i])``, so the
data do not depend on how many processes generate them or in which order.
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import scipy.signal
import tensorflow_datasets as tfds

from afx.audio import synthesis as syn
from data_pipelines import builders

DEFAULT_SPLIT_SIZES = {"train": 5000, "validation": 500, "test": 1000}
EVENT_COUNT_PROBABILITIES = (0.1, 0.4, 0.3, 0.2)  # P(0 events), P(1), P(2), P(3)
EVENT_GAIN_DB = (-12.0, 0.0)
SNR_DB = (5.0, 30.0)
PEAK_DBFS = (-12.0, -1.0)
_CHUNKSIZE = 32

Renderer = Callable[[float, int, np.random.Generator], np.ndarray]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
  return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _db_to_gain(db: float) -> float:
  return float(10.0 ** (db / 20.0))


def _held(duration: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """A sustained-note envelope with a random soft attack and release."""
  return syn.adsr(
      duration,
      sample_rate,
      attack=rng.uniform(0.01, 0.05),
      decay=0.05,
      sustain=rng.uniform(0.7, 1.0),
      release=rng.uniform(0.03, 0.1),
  )


def _fit(signal: np.ndarray, duration: float, sample_rate: int) -> np.ndarray:
  """Pads with silence or cuts to exactly ``duration`` seconds."""
  n = syn.num_samples(duration, sample_rate)
  return np.pad(signal, (0, max(0, n - len(signal))))[:n]


def _repeat_at(shape: np.ndarray, onsets_s: list[float], duration: float, sample_rate: int):
  """Copies of ``shape`` starting at each onset (seconds), cut to ``duration``."""
  out = np.zeros(syn.num_samples(duration, sample_rate) + len(shape), dtype=np.float32)
  for onset in onsets_s:
    start = int(round(onset * sample_rate))
    out[start : start + len(shape)] += shape
  return _fit(out, duration, sample_rate)


# One renderer per class: (duration, sample_rate, rng) -> waveform of that duration.


def bell(duration, sample_rate, rng):
  """FM with an inharmonic ratio and a long decay; brightness falls with loudness."""
  envelope = syn.exp_decay(duration, sample_rate, time_constant=rng.uniform(0.2, 0.5))
  ratio = rng.choice([1.4, 2.76, 3.5]) * rng.uniform(0.98, 1.02)
  index = rng.uniform(2.0, 4.0) * envelope
  freq = _log_uniform(rng, 700, 2000)
  return syn.fm_tone(freq, duration, sample_rate, ratio=ratio, index=index, envelope=envelope)


def brass(duration, sample_rate, rng):
  """FM at ratio 1 whose index follows the envelope: it brightens as it swells."""
  envelope = syn.adsr(
      duration, sample_rate, attack=rng.uniform(0.04, 0.1), decay=0.08,
      sustain=rng.uniform(0.7, 0.9), release=rng.uniform(0.04, 0.1),
  )
  index = rng.uniform(3.0, 5.0) * envelope
  freq = _log_uniform(rng, 120, 450)
  return syn.fm_tone(freq, duration, sample_rate, ratio=1.0, index=index, envelope=envelope)


def pluck(duration, sample_rate, rng):
  """Karplus-Strong string in the guitar register."""
  freq = _log_uniform(rng, 200, 800)
  return syn.karplus_strong(freq, duration, sample_rate, decay=rng.uniform(0.4, 1.5), rng=rng)


def bass_pluck(duration, sample_rate, rng):
  """Karplus-Strong string in the bass register."""
  freq = _log_uniform(rng, 45, 110)
  return syn.karplus_strong(freq, duration, sample_rate, decay=rng.uniform(0.6, 2.0), rng=rng)


def whistle(duration, sample_rate, rng):
  """A high sine with vibrato and a breath of narrow-band noise."""
  centre = _log_uniform(rng, 1500, 3000)
  t = np.arange(syn.num_samples(duration, sample_rate)) / sample_rate
  depth = rng.uniform(0.01, 0.03)
  freq = centre * (1 + depth * np.sin(2 * np.pi * rng.uniform(4, 7) * t + rng.uniform(0, 6.3)))
  breath = syn.filtered_noise(
      duration, sample_rate, low=centre * 0.9, high=centre * 1.1, rng=rng, order=2
  )
  return (syn.sine(freq, duration, sample_rate) + 0.1 * breath) * _held(duration, sample_rate, rng)


def hiss(duration, sample_rate, rng):
  """High-passed noise."""
  low = rng.uniform(3500, 5000)
  noise = syn.filtered_noise(duration, sample_rate, low=low, high=None, rng=rng)
  return noise * _held(duration, sample_rate, rng)


def rumble(duration, sample_rate, rng):
  """Low-passed noise with a slow swell."""
  high = rng.uniform(70, 180)
  noise = syn.filtered_noise(duration, sample_rate, low=None, high=high, rng=rng)
  envelope = syn.adsr(
      duration, sample_rate, attack=rng.uniform(0.05, 0.15), decay=0.0, sustain=1.0,
      release=rng.uniform(0.05, 0.15),
  )
  return noise * envelope


def chirp_up(duration, sample_rate, rng):
  """A sine sweeping up by 1.5-2.5 octaves."""
  f0 = _log_uniform(rng, 250, 700)
  f1 = min(f0 * 2 ** rng.uniform(1.5, 2.5), 0.4 * sample_rate)
  return syn.chirp(f0, f1, duration, sample_rate) * _held(duration, sample_rate, rng)


def chirp_down(duration, sample_rate, rng):
  """A sine sweeping down by 1.5-2.5 octaves."""
  f0 = min(_log_uniform(rng, 1000, 4000), 0.4 * sample_rate)
  f1 = f0 / 2 ** rng.uniform(1.5, 2.5)
  return syn.chirp(f0, f1, duration, sample_rate) * _held(duration, sample_rate, rng)


def _click(sample_rate: int, rng: np.random.Generator, *, low: float, high: float, seconds: float):
  """A short band-passed noise burst with a fast exponential decay."""
  length = 4 * seconds
  noise = syn.filtered_noise(length, sample_rate, low=low, high=high, rng=rng, order=2)
  return noise * syn.exp_decay(length, sample_rate, time_constant=seconds, attack=0.0)


def click_train(duration, sample_rate, rng):
  """Regular sharp clicks, 4-12 per second."""
  rate = rng.uniform(4, 12)
  click = _click(sample_rate, rng, low=1500, high=6000, seconds=0.002)
  onsets = list(np.arange(0.0, duration, 1.0 / rate))
  return _repeat_at(click, onsets, duration, sample_rate)


def buzz(duration, sample_rate, rng):
  """A fast impulse train (60-150 Hz) through a band-pass: flat, dense harmonics."""
  pulses = syn.impulse_train(_log_uniform(rng, 60, 150), duration, sample_rate)
  low, high = rng.uniform(150, 300), rng.uniform(2500, 4000)
  sos = _bandpass_sos(low, high, sample_rate)
  return scipy.signal.sosfilt(sos, pulses) * _held(duration, sample_rate, rng)


@functools.lru_cache(maxsize=None)
def _bandpass_cached(low_hz: int, high_hz: int, sample_rate: int) -> np.ndarray:
  return scipy.signal.butter(2, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")


def _bandpass_sos(low: float, high: float, sample_rate: int) -> np.ndarray:
  # Rounded to 10 Hz so the cache stays small.
  return _bandpass_cached(int(round(low, -1)), int(round(high, -1)), sample_rate)


def siren(duration, sample_rate, rng):
  """A two-harmonic tone whose pitch swings +-20-35 % at 2-4 Hz."""
  centre = _log_uniform(rng, 600, 1100)
  t = np.arange(syn.num_samples(duration, sample_rate)) / sample_rate
  swing = rng.uniform(0.2, 0.35)
  freq = centre * (1 + swing * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6.3)))
  tone = syn.additive_tone(freq, duration, sample_rate, harmonic_amplitudes=np.array([1.0, 0.4]))
  return tone * _held(duration, sample_rate, rng)


def beep(duration, sample_rate, rng):
  """Bursts of a pure tone: 40-90 ms on, 30-70 ms off."""
  freq = _log_uniform(rng, 600, 1500)
  on, off = rng.uniform(0.04, 0.09), rng.uniform(0.03, 0.07)
  burst = syn.sine(freq, on, sample_rate) * syn.adsr(
      on, sample_rate, attack=0.003, decay=0.0, sustain=1.0, release=0.003
  )
  onsets = list(np.arange(0.0, duration - on / 2, on + off))
  return _repeat_at(burst, onsets, duration, sample_rate)


def knock(duration, sample_rate, rng):
  """1-3 knocks: a fast-damped low sine with a short noise transient."""
  length = 0.12
  body = syn.sine(_log_uniform(rng, 90, 250), length, sample_rate) * syn.exp_decay(
      length, sample_rate, time_constant=rng.uniform(0.01, 0.03), attack=0.0005
  )
  transient = _click(sample_rate, rng, low=500, high=3000, seconds=0.003)
  shape = body + 0.3 * _fit(transient, length, sample_rate)
  count = rng.integers(1, 4)
  spacing = rng.uniform(0.08, 0.16)
  onsets = [k * spacing for k in range(count) if k * spacing < duration]
  return _repeat_at(shape, onsets, duration, sample_rate)


def chord(duration, sample_rate, rng):
  """A major or minor triad of soft harmonic tones."""
  root = _log_uniform(rng, 200, 450)
  third = 4 if rng.random() < 0.5 else 3
  amplitudes = 1.0 / np.arange(1, 5) ** 2
  tone = sum(
      syn.additive_tone(
          root * 2 ** (semitones / 12), duration, sample_rate, harmonic_amplitudes=amplitudes
      )
      for semitones in (0, third, 7)
  )
  return tone * _held(duration, sample_rate, rng)


def square(duration, sample_rate, rng):
  """A band-limited square wave: odd harmonics only, in a higher register than the sawtooth."""
  freq = _log_uniform(rng, 400, 900)
  tone = syn.additive_tone(
      freq, duration, sample_rate, harmonic_amplitudes=syn.square_amplitudes(40)
  )
  return tone * _held(duration, sample_rate, rng)


def sawtooth(duration, sample_rate, rng):
  """A band-limited sawtooth wave: every harmonic, up to Nyquist."""
  freq = _log_uniform(rng, 150, 350)
  tone = syn.additive_tone(
      freq, duration, sample_rate, harmonic_amplitudes=syn.sawtooth_amplitudes(40)
  )
  return tone * _held(duration, sample_rate, rng)


def tremolo(duration, sample_rate, rng):
  """A mellow tone whose loudness pulses at 7-14 Hz."""
  freq = _log_uniform(rng, 300, 900)
  t = np.arange(syn.num_samples(duration, sample_rate)) / sample_rate
  depth = rng.uniform(0.7, 1.0)
  pulse = 1 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(7, 14) * t))
  tone = syn.additive_tone(freq, duration, sample_rate, harmonic_amplitudes=np.array([1.0, 0.3]))
  return tone * pulse * _held(duration, sample_rate, rng)


def rain(duration, sample_rate, rng):
  """Dense random drops (Poisson clicks, 150-400 per second) above 1 kHz."""
  drops = syn.poisson_impulses(rng.uniform(150, 400), duration, sample_rate, rng=rng)
  sos = _bandpass_sos(rng.uniform(1000, 2000), 0.45 * sample_rate, sample_rate)
  return scipy.signal.sosfilt(sos, drops) * _held(duration, sample_rate, rng)


def drum(duration, sample_rate, rng):
  """A kick: a sine dropping from 120-200 Hz to 45-70 Hz plus a noise attack."""
  n = syn.num_samples(duration, sample_rate)
  t = np.arange(n) / sample_rate
  start, end = rng.uniform(120, 200), rng.uniform(45, 70)
  drop = rng.uniform(0.03, 0.08)
  freq = end + (start - end) * np.exp(-t / drop)
  body = syn.sine(freq, duration, sample_rate) * syn.exp_decay(
      duration, sample_rate, time_constant=rng.uniform(0.08, 0.2), attack=0.001
  )
  attack = _click(sample_rate, rng, low=200, high=4000, seconds=0.01)
  return body + rng.uniform(0.2, 0.4) * _fit(attack, duration, sample_rate)


def hum(duration, sample_rate, rng):
  """Mains hum: 50 or 60 Hz with a random mix of its first 12 harmonics."""
  mains = 50.0 if rng.random() < 0.5 else 60.0
  amplitudes = rng.uniform(0.2, 1.0, 12) / np.sqrt(np.arange(1, 13))
  tone = syn.additive_tone(mains, duration, sample_rate, harmonic_amplitudes=amplitudes)
  return tone * _held(duration, sample_rate, rng)


def clap(duration, sample_rate, rng):
  """2-4 hand claps, 0.1-0.2 s apart: three 10 ms micro-bursts of mid-band noise, then a tail."""
  low, high = rng.uniform(700, 1000), rng.uniform(2500, 3500)
  bursts = [_click(sample_rate, rng, low=low, high=high, seconds=0.003) for _ in range(3)]
  tail = _click(sample_rate, rng, low=low, high=high, seconds=rng.uniform(0.03, 0.06))
  shape = sum(_repeat_at(burst, [k * 0.01], 0.25, sample_rate) for k, burst in enumerate(bursts))
  shape = shape + 0.7 * _repeat_at(tail, [0.03], 0.25, sample_rate)
  spacing = rng.uniform(0.1, 0.2)
  onsets = [k * spacing for k in range(rng.integers(2, 5)) if k * spacing < duration]
  return _repeat_at(shape, onsets, duration, sample_rate)


@dataclasses.dataclass(frozen=True)
class EventClass:
  """A sound class: its renderer and the range its event durations are drawn from (seconds)."""

  name: str
  render: Renderer
  durations: tuple[float, float] = (0.15, 0.8)


EVENT_CLASSES = (
    EventClass("bell", bell, (0.3, 0.8)),
    EventClass("brass", brass, (0.2, 0.8)),
    EventClass("pluck", pluck, (0.3, 0.8)),
    EventClass("bass_pluck", bass_pluck, (0.3, 0.8)),
    EventClass("whistle", whistle),
    EventClass("hiss", hiss),
    EventClass("rumble", rumble, (0.3, 0.8)),
    EventClass("chirp_up", chirp_up),
    EventClass("chirp_down", chirp_down),
    EventClass("click_train", click_train, (0.3, 0.8)),
    EventClass("buzz", buzz),
    EventClass("siren", siren, (0.4, 0.8)),
    EventClass("beep", beep, (0.2, 0.8)),
    EventClass("knock", knock, (0.15, 0.4)),
    EventClass("chord", chord),
    EventClass("square", square),
    EventClass("sawtooth", sawtooth),
    EventClass("tremolo", tremolo, (0.3, 0.8)),
    EventClass("rain", rain, (0.3, 0.8)),
    EventClass("drum", drum, (0.2, 0.5)),
    EventClass("hum", hum, (0.3, 0.8)),
    EventClass("clap", clap, (0.3, 0.8)),
)
CLASS_NAMES = [event_class.name for event_class in EVENT_CLASSES]


def render_event(
    class_index: int, duration: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
  """One event of the given class, peak 1, float32."""
  event = np.asarray(EVENT_CLASSES[class_index].render(duration, sample_rate, rng), np.float64)
  peak = np.max(np.abs(event))
  return (event / peak if peak > 0 else event).astype(np.float32)


def generate_clip(
    rng: np.random.Generator,
    *,
    clip_seconds: float,
    sample_rate: int,
    single_label: bool,
) -> tuple[np.ndarray, list[int]]:
  """One clip: (int16 waveform of ``clip_seconds``, sorted label indices)."""
  n = syn.num_samples(clip_seconds, sample_rate)
  if single_label:
    num_events = 1
  else:
    num_events = int(rng.choice(len(EVENT_COUNT_PROBABILITIES), p=EVENT_COUNT_PROBABILITIES))
  labels = sorted(int(c) for c in rng.choice(len(EVENT_CLASSES), num_events, replace=False))
  events = np.zeros(n)
  active = np.zeros(n, dtype=bool)
  for class_index in labels:
    low, high = EVENT_CLASSES[class_index].durations
    duration = min(rng.uniform(low, high), clip_seconds)
    event = render_event(class_index, duration, sample_rate, rng)[:n]
    event *= _db_to_gain(rng.uniform(*EVENT_GAIN_DB))
    onset = int(rng.integers(0, n - len(event) + 1))
    events[onset : onset + len(event)] += event
    active[onset : onset + len(event)] = True
  background = syn.coloured_noise(n, rng, exponent=rng.uniform(0.0, 2.0)).astype(np.float64)
  # The SNR compares the events' power while they sound with the background's.
  event_power = np.mean(events[active] ** 2) if active.any() else 1.0
  snr_db = rng.uniform(*SNR_DB)
  clip = events + background * np.sqrt(event_power / 10.0 ** (snr_db / 10.0))
  clip *= _db_to_gain(rng.uniform(*PEAK_DBFS)) / np.max(np.abs(clip))
  return builders.to_int16(clip), labels


def generate_example(
    index: int, *, seed: int, split: str, clip_seconds: float, sample_rate: int, single_label: bool
) -> dict:
  """Example ``index`` of ``split``, as tfds features; a pure function of its arguments."""
  rng = np.random.default_rng([seed, builders.SPLITS.index(split), index])
  audio, labels = generate_clip(
      rng, clip_seconds=clip_seconds, sample_rate=sample_rate, single_label=single_label
  )
  return {"audio": audio, "labels": labels, "id": f"{split}/{index:06d}"}


@dataclasses.dataclass(eq=False)
class SynthEventsConfig(tfds.core.BuilderConfig):
  """single_label: exactly one event per clip (otherwise 0-3)."""

  single_label: bool = False
  clip_seconds: float = 1.0
  sample_rate: int = 16000


class SynthEvents(builders.ProceduralBuilder, skip_registration=True):
  """Procedural multi-label sound events (see the module docstring); kwargs as ``builders.ProceduralBuilder``
  (default split sizes: train 5000, validation 500, test 1000).
  """

  name = "synth_events"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "22 classes, 1 s clips at 16 kHz."}
  BUILDER_CONFIGS = [
      SynthEventsConfig(name="multi_label", description="0-3 events per clip."),
      SynthEventsConfig(name="single_label", single_label=True, description="1 event per clip."),
  ]
  DEFAULT_SPLIT_SIZES = DEFAULT_SPLIT_SIZES
  CLASS_NAMES = CLASS_NAMES
  CHUNKSIZE = _CHUNKSIZE
  example_function = staticmethod(generate_example)

  def example_kwargs(self) -> dict:
    return {**super().example_kwargs(), "single_label": self.builder_config.single_label}
