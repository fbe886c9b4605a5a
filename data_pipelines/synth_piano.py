"""synth_piano: procedurally composed piano pieces, training data for raw-audio language models.

The synthesiser (``afx.audio.synthesis.piano_note``) builds each note from the inharmonic partials
of a stiff string (f_n = n f0 sqrt(1 + B n^2), B from 1e-4 in the bass to 1e-3 in the treble),
each decaying in two stages (a fast prompt sound, then a slow aftersound), higher partials and
higher notes faster.  Every key has 2-3 slightly detuned strings, so its partials beat; a hammer
adds a short noise burst and a 1-4 ms onset.  A harder strike is louder and brighter.  A released
key's damper stops its note within a fraction of a second unless the sustain pedal is down.

Each example is ``clip_seconds`` (8 s at 16 kHz by default) of music in a random key and scale
(major, two minors, dorian or major pentatonic) at 60-160 bpm in 3/4 or 4/4: a melody (a random
walk on the scale, occasionally harmonised into chords of 2-4 notes) over an accompaniment of
block chords, bass and chord, or arpeggios, or either alone.  Note lengths, articulation and
velocities vary; in most pieces the sustain pedal is pressed for stretches of a bar, lifted at
bar lines.  Pitches span A1-C7, most around the middle of the keyboard.  Notes overlap and
decay naturally; the mix is peak-normalised to -12..-1 dBFS and stored as int16 with the single
label ``piano``.  The default splits hold 240/20/20 pieces (32 minutes of training audio).

Piece ``i`` of split ``s`` comes from ``np.random.default_rng([seed, SPLITS.index(s), i])``, so the
data do not depend on how many processes generate them or in which order.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from afx.audio import synthesis as syn
from data_pipelines import builders

DEFAULT_SPLIT_SIZES = {"train": 240, "validation": 20, "test": 20}
CLASS_NAMES = ["piano"]
PEAK_DBFS = (-12.0, -1.0)
TEMPO_BPM = (60.0, 160.0)
LOWEST, HIGHEST = 33, 96  # MIDI A1 and C7
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "natural_minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "major_pentatonic": (0, 2, 4, 7, 9),
}
# Melody note lengths in beats and how often each occurs.
NOTE_BEATS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
NOTE_BEAT_WEIGHTS = (0.04, 0.25, 0.04, 0.30, 0.10, 0.17, 0.05, 0.05)
# Melody steps in scale degrees and how often each occurs: mostly steps, sometimes leaps.
MELODY_STEPS = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
MELODY_STEP_WEIGHTS = (0.03, 0.05, 0.14, 0.25, 0.06, 0.25, 0.14, 0.05, 0.03)
# Chord roots as scale degrees: I, IV, V, vi, ii.
CHORD_DEGREES = (0, 3, 4, 5, 1)
CHORD_DEGREE_WEIGHTS = (0.3, 0.2, 0.25, 0.15, 0.1)
TEXTURES = ("melody", "accompaniment", "both")
TEXTURE_WEIGHTS = (0.2, 0.15, 0.65)
ACCOMPANIMENT_STYLES = ("block", "bass_and_chord", "arpeggio")
_CHUNKSIZE = 4


@dataclasses.dataclass(frozen=True)
class Note:
  """A key press: when (seconds), for how long the key is held, which key (MIDI), how hard."""

  onset: float
  held: float
  pitch: int
  velocity: float


@dataclasses.dataclass(frozen=True)
class Meter:
  """A piece's time: seconds per beat, beats per bar, and when the first bar starts (seconds)."""

  beat: float
  bar_beats: int
  start: float

  @property
  def bar(self) -> float:
    return self.beat * self.bar_beats


def _db_to_gain(db: float) -> float:
  return float(10.0 ** (db / 20.0))


def _weighted_choice(rng: np.random.Generator, options: tuple, weights: tuple):
  return options[rng.choice(len(options), p=np.asarray(weights) / np.sum(weights))]


def scale_pitches(tonic: int, scale: tuple[int, ...]) -> np.ndarray:
  """The MIDI pitches from LOWEST to HIGHEST in the scale on ``tonic`` (a pitch class, 0 = C)."""
  pitches = np.arange(LOWEST, HIGHEST + 1)
  return pitches[np.isin((pitches - tonic) % 12, scale)]


def _nearest_index(pitches: np.ndarray, target: float) -> int:
  return int(np.argmin(np.abs(pitches - target)))


def _chord_steps(size: int, scale_size: int) -> list[int]:
  """Scale steps above the root of a chord of ``size`` notes: stacked thirds, the 4th note
  doubling the root an octave up."""
  return [0, 2, 4, scale_size][:size]


def _chord(pitches: np.ndarray, root_index: int, size: int, scale_size: int) -> list[int]:
  """The pitches of a ``size``-note chord on ``root_index``, leaving out any above HIGHEST."""
  return [int(pitches[root_index + step]) for step in _chord_steps(size, scale_size)
          if root_index + step < len(pitches)]


def _velocity(rng: np.random.Generator, base: float, accent: bool) -> float:
  return float(np.clip(base + rng.normal(0.0, 0.07) + (0.08 if accent else 0.0), 0.1, 1.0))


def _on_bar_line(onset: float, meter: Meter) -> bool:
  position = (onset - meter.start) / meter.bar
  return abs(position - round(position)) < 1e-6


def compose_melody(
    rng: np.random.Generator,
    pitches: np.ndarray,
    scale_size: int,
    meter: Meter,
    clip_seconds: float,
) -> list[Note]:
  """A random walk on the scale around a random centre (A3-C6, mostly near Bb4), with rests and
  occasional chords."""
  centre = _nearest_index(pitches, np.clip(rng.normal(70.0, 5.0), 57, 84))
  spread = rng.integers(4, 9)  # scale steps the walk may stray from its centre
  position = centre + int(rng.integers(-2, 3))
  articulation = rng.uniform(0.5, 1.05)  # held fraction of the written length
  chord_probability = rng.uniform(0.0, 0.3)
  base_velocity = rng.uniform(0.35, 0.85)
  notes, time = [], meter.start
  while time < clip_seconds:
    beats = _weighted_choice(rng, NOTE_BEATS, NOTE_BEAT_WEIGHTS)
    length = beats * meter.beat
    if rng.random() < 0.1:  # a rest
      time += length
      continue
    step = _weighted_choice(rng, MELODY_STEPS, MELODY_STEP_WEIGHTS)
    if abs(position + step - centre) > spread:
      step = -step
    position = int(np.clip(position + step, 0, len(pitches) - 1))
    size = int(rng.integers(2, 5)) if rng.random() < chord_probability else 1
    # A chord harmonises the melody note from below, so the melody stays on top.
    root = max(0, position - _chord_steps(size, scale_size)[-1])
    chord = _chord(pitches, root, size, scale_size)
    held = length * articulation * rng.uniform(0.9, 1.1)
    velocity = _velocity(rng, base_velocity, _on_bar_line(time, meter))
    notes += [Note(time, held, pitch, velocity) for pitch in chord]
    time += length
  return notes


def compose_accompaniment(
    rng: np.random.Generator,
    pitches: np.ndarray,
    scale: tuple[int, ...],
    tonic: int,
    meter: Meter,
    clip_seconds: float,
) -> list[Note]:
  """One chord per bar (from I, IV, V, vi, ii; the first bar on I) around C3-C4, in one style:
  held block chords, a bass note then the chord, or the chord broken into eighth notes."""
  style = ACCOMPANIMENT_STYLES[rng.integers(len(ACCOMPANIMENT_STYLES))]
  centre = rng.uniform(48.0, 60.0)
  size = int(rng.integers(2, 5))
  base_velocity = rng.uniform(0.3, 0.7)
  degrees = np.searchsorted(scale, (pitches - tonic) % 12)
  notes, bar_start, degree = [], meter.start, 0
  while bar_start < clip_seconds:
    # A pentatonic scale has 5 degrees: its chords take the degrees modulo 5.
    candidates = np.flatnonzero(degrees == degree % len(scale))
    root = int(candidates[_nearest_index(pitches[candidates], centre)])
    chord = _chord(pitches, root, size, len(scale))
    if style == "block":
      notes += [Note(bar_start, meter.bar * 0.95, pitch, _velocity(rng, base_velocity, True))
                for pitch in chord]
    elif style == "bass_and_chord":
      bass = max(LOWEST, chord[0] - 12)
      notes.append(Note(bar_start, meter.bar * 0.9, bass, _velocity(rng, base_velocity, True)))
      for beat in range(1, meter.bar_beats):
        onset = bar_start + beat * meter.beat
        notes += [Note(onset, meter.beat * 0.8, pitch, _velocity(rng, base_velocity - 0.1, False))
                  for pitch in chord]
    else:
      eighth = meter.beat / 2
      for k in range(2 * meter.bar_beats):
        notes.append(Note(bar_start + k * eighth, eighth * 1.5, chord[k % len(chord)],
                          _velocity(rng, base_velocity, k == 0)))
    degree = _weighted_choice(rng, CHORD_DEGREES, CHORD_DEGREE_WEIGHTS)
    bar_start += meter.bar
  return [note for note in notes if note.onset < clip_seconds]


def pedal_stretches(
    rng: np.random.Generator, meter: Meter, clip_seconds: float
) -> list[tuple[float, float]]:
  """(down, up) times of the sustain pedal: none in 30 % of pieces, else down in most bars.

  As a pianist pedals, the pedal goes down just after a bar's first notes (so it does not catch
  the previous bar's) and comes up just before the next bar.
  """
  if rng.random() < 0.3:
    return []
  bar_probability = rng.uniform(0.5, 1.0)
  stretches, bar_start = [], meter.start
  while bar_start < clip_seconds:
    if rng.random() < bar_probability:
      stretches.append((bar_start + rng.uniform(0.03, 0.12), bar_start + meter.bar - 0.02))
    bar_start += meter.bar
  return stretches


def damper_falls(note: Note, stretches: list[tuple[float, float]]) -> float:
  """When the note's damper falls (seconds): once both its key and the pedal are up."""
  release = note.onset + note.held
  for down, up in stretches:
    if down <= release < up:
      return up
  return release


def render(
    notes: list[Note],
    stretches: list[tuple[float, float]],
    clip_seconds: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
  """The notes played and mixed into ``clip_seconds`` of float64 audio."""
  mix = np.zeros(syn.num_samples(clip_seconds, sample_rate))
  for note in notes:
    start = int(round(note.onset * sample_rate))
    if start >= len(mix):
      continue
    damper = damper_falls(note, stretches)
    sound = syn.piano_note(
        float(syn.midi_to_hz(note.pitch)),
        damper - note.onset,
        sample_rate,
        velocity=note.velocity,
        rng=rng,
        sustain_pedal=damper >= clip_seconds,
        max_seconds=(len(mix) - start) / sample_rate,
    )[: len(mix) - start]
    mix[start : start + len(sound)] += sound
  return mix


def compose(
    rng: np.random.Generator, clip_seconds: float
) -> tuple[list[Note], list[tuple[float, float]]]:
  """A random piece: its notes and its pedal stretches."""
  tonic = int(rng.integers(12))
  scale = SCALES[list(SCALES)[rng.integers(len(SCALES))]]
  pitches = scale_pitches(tonic, scale)
  meter = Meter(beat=60.0 / rng.uniform(*TEMPO_BPM), bar_beats=int(rng.choice([3, 4])),
                start=rng.uniform(0.0, 0.3))
  texture = _weighted_choice(rng, TEXTURES, TEXTURE_WEIGHTS)
  notes = []
  if texture in ("melody", "both"):
    notes += compose_melody(rng, pitches, len(scale), meter, clip_seconds)
  if texture in ("accompaniment", "both"):
    notes += compose_accompaniment(rng, pitches, scale, tonic, meter, clip_seconds)
  return notes, pedal_stretches(rng, meter, clip_seconds)


def generate_piece(
    rng: np.random.Generator, *, clip_seconds: float, sample_rate: int
) -> np.ndarray:
  """One piece: the int16 waveform of ``clip_seconds``, peak at -12..-1 dBFS."""
  notes, stretches = compose(rng, clip_seconds)
  mix = render(notes, stretches, clip_seconds, sample_rate, rng)
  peak = np.max(np.abs(mix))
  if peak > 0:  # a piece of rests only would be silent
    mix *= _db_to_gain(rng.uniform(*PEAK_DBFS)) / peak
  return builders.to_int16(mix)


def generate_example(
    index: int, *, seed: int, split: str, clip_seconds: float, sample_rate: int
) -> dict:
  """Example ``index`` of ``split``, as tfds features; a pure function of its arguments."""
  rng = np.random.default_rng([seed, builders.SPLITS.index(split), index])
  audio = generate_piece(rng, clip_seconds=clip_seconds, sample_rate=sample_rate)
  return {"audio": audio, "labels": [0], "id": f"{split}/{index:06d}"}


@dataclasses.dataclass(eq=False)
class SynthPianoConfig(tfds.core.BuilderConfig):
  """The length and sample rate of the pieces."""

  clip_seconds: float = 8.0
  sample_rate: int = 16000


class SynthPiano(builders.ProceduralBuilder, skip_registration=True):
  """Procedural piano pieces (see the module docstring); kwargs as ``builders.ProceduralBuilder``."""

  name = "synth_piano"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "8 s piano pieces at 16 kHz."}
  BUILDER_CONFIGS = [SynthPianoConfig(name="default", description="8 s pieces at 16 kHz.")]
  DEFAULT_SPLIT_SIZES = DEFAULT_SPLIT_SIZES
  CLASS_NAMES = CLASS_NAMES
  CHUNKSIZE = _CHUNKSIZE
  example_function = staticmethod(generate_example)
