"""Speech front end: Kaldi filterbanks of padded utterances, deltas, mean/variance normalisation,
SpecAugment (`SpeechFrontEnd`, the base of every ASR model) and the ×4 convolutional subsampling in
front of ASR encoders.

Every function takes a padded batch with its lengths and returns its output with the new lengths;
positions past a length hold zeros, so padding never leaks into statistics or into the encoder.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.audio import kaldi
from afx.errors import ConfigError

NORMALIZATIONS = ("utterance", "global", "speaker", "none")


def valid_mask(lengths, size: int):
  """`[batch, size]` bool: True at the positions before each row's length."""
  return jnp.arange(size)[None, :] < jnp.asarray(lengths)[:, None]


def filterbank(audio, audio_lengths, *, sample_rate: int, num_mel_bins: int = 80, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0):
  """Kaldi log-mel filterbanks (`afx.audio.kaldi.fbank`: povey window, pre-emphasis 0.97, no dither) of
  `audio [batch, samples]` whose rows hold `audio_lengths` real samples: `([batch, frames, bins], frame_lengths)`.

  A frame that reaches past a row's length is zeroed and not counted, so an utterance padded into any
  bucket gives the frames it gives alone.
  """
  window, shift, _ = kaldi.frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
  features = kaldi.fbank(audio * 32768.0, sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                         frame_length_ms=frame_length_ms, frame_shift_ms=frame_shift_ms, window="povey")
  frame_lengths = jnp.maximum(0, kaldi.num_frames(jnp.asarray(audio_lengths, jnp.int32), window, shift))
  return jnp.where(valid_mask(frame_lengths, features.shape[1])[..., None], features, 0.0), frame_lengths


def deltas(features, lengths, *, width: int = 2):
  """Kaldi's regression deltas `Σₙ n·(c[t+n] − c[t−n]) / (2 Σₙ n²)`, n = 1..width, the ends of each row's
  valid frames repeated (`add-deltas`; librosa's `delta(width=2·width+1, mode="nearest")` on one utterance)."""
  frames = features.shape[1]
  last = jnp.maximum(jnp.asarray(lengths) - 1, 0)[:, None]
  positions = jnp.arange(frames)[None, :]
  gather = lambda offset: jnp.take_along_axis(features, jnp.clip(positions + offset, 0, last)[..., None], axis=1)
  total = sum(n * (gather(n) - gather(-n)) for n in range(1, width + 1))
  delta = total / (2.0 * sum(n * n for n in range(1, width + 1)))
  return jnp.where(valid_mask(lengths, frames)[..., None], delta, 0.0)


def with_deltas(features, lengths):
  """`[batch, frames, 3·bins]`: the features, their deltas and their delta-deltas (Speech-Transformer's input)."""
  first = deltas(features, lengths)
  return jnp.concatenate([features, first, deltas(first, lengths)], axis=-1)


def utterance_normalize(features, lengths, epsilon: float = 1e-5):
  """Each utterance's features at zero mean and unit variance per bin over its valid frames (ESPnet's
  `utterance_mvn` with `norm_vars=True`); padding stays zero."""
  mask = valid_mask(lengths, features.shape[1])[..., None]
  count = jnp.maximum(jnp.asarray(lengths, jnp.float32), 1.0)[:, None, None]
  mean = jnp.sum(jnp.where(mask, features, 0.0), axis=1, keepdims=True) / count
  variance = jnp.sum(jnp.where(mask, jnp.square(features - mean), 0.0), axis=1, keepdims=True) / count
  return jnp.where(mask, (features - mean) * jax.lax.rsqrt(variance + epsilon), 0.0)


def global_normalize(features, lengths, mean, std):
  """`(features − mean) / std` per bin with statistics of the training split (ESPnet's `global_mvn`); padding
  stays zero."""
  mask = valid_mask(lengths, features.shape[1])[..., None]
  mean, std = jnp.asarray(mean, features.dtype), jnp.asarray(std, features.dtype)
  return jnp.where(mask, (features - mean) / std, 0.0)


def speaker_normalize(features, lengths, mean, std):
  """`(features − mean) / std` per bin with each row's own statistics `mean, std [batch, bins]` (its speaker's:
  Kaldi's `apply-cmvn --utt2spk`); padding stays zero, and a row with std 0 (a padding row) is all zeros."""
  std = jnp.asarray(std, features.dtype)
  return global_normalize(features, lengths, jnp.asarray(mean)[:, None], jnp.where(std > 0, std, 1.0)[:, None])


def _mask_spans(rng, lengths, size: int, *, count: int, max_width):
  """`[batch, size]` bool: `count` spans per row of width uniform in [0, max_width] (per row), each starting
  uniformly inside the row's `lengths`."""
  batch = lengths.shape[0]
  width_key, start_key = jax.random.split(rng)
  widths = jnp.floor(jax.random.uniform(width_key, (batch, count)) * (max_width[:, None] + 1)).astype(jnp.int32)
  room = jnp.maximum(lengths[:, None] - widths, 0)
  starts = jnp.floor(jax.random.uniform(start_key, (batch, count)) * (room + 1)).astype(jnp.int32)
  positions = jnp.arange(size)[None, None, :]
  inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
  return jnp.any(inside, axis=1)


def spec_augment(rng, features, lengths, *, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 2,
                 time_width: int = 40, time_width_ratio: float | None = None):
  """SpecAugment (Park et al. 2019) without time warping: `freq_masks` bands of up to `freq_width` bins and
  `time_masks` spans of up to `time_width` frames (or `time_width_ratio` of each row's length, as ESPnet's
  `time_mask_width_ratio_range`) set to zero, inside each row's valid frames."""
  batch, frames, bins = features.shape
  freq_key, time_key = jax.random.split(rng)
  lengths = jnp.asarray(lengths, jnp.int32)
  bands = _mask_spans(freq_key, jnp.full((batch,), bins, jnp.int32), bins, count=freq_masks,
                      max_width=jnp.full((batch,), min(freq_width, bins), jnp.int32))
  if time_width_ratio is not None:
    max_time = jnp.floor(lengths * time_width_ratio).astype(jnp.int32)
  else:
    max_time = jnp.minimum(time_width, lengths)
  spans = _mask_spans(time_key, lengths, frames, count=time_masks, max_width=max_time)
  return jnp.where(bands[:, None, :] | spans[:, :, None], 0.0, features)


def subsampled_lengths(lengths, *, layers: int = 2):
  """Frame counts after `layers` 3×3 convolutions of stride 2 without padding: L → (L − 1) // 2 per layer."""
  for _ in range(layers):
    lengths = jnp.maximum((lengths - 1) // 2, 0)
  return lengths


class Conv2dSubsampling(nn.Module):
  """Two 3×3 convolutions of stride 2 over (time, bins) with ReLU (optionally BatchNorm, as Speech-Transformer's),
  then a dense projection of channels × bins to `features`: time ×4 shorter (ESPnet's `conv2d` input layer).

  `__call__` is `project(*convolve(x, lengths))`; a model that works on the convolutions' maps in between
  (Speech-Transformer's 2D-attention) calls the two halves itself.
  """
  features: int
  channels: int = 64
  batch_norm: bool = False
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    conv = lambda: nn.Conv(self.channels, (3, 3), strides=(2, 2), padding="VALID", dtype=self.dtype)
    self.conv0, self.conv1 = conv(), conv()
    if self.batch_norm:
      self.norm0, self.norm1 = nn.BatchNorm(dtype=self.dtype), nn.BatchNorm(dtype=self.dtype)
    self.project = nn.Dense(self.features, dtype=self.dtype)

  def convolve(self, x, lengths, *, train: bool = False):
    """`x [batch, frames, bins]` with `lengths` → the maps `[batch, frames', bins', channels]`, zero past the
    new lengths, and `lengths'`."""
    y = x[..., None].astype(self.dtype)
    for index, conv in enumerate((self.conv0, self.conv1)):
      y = conv(y)
      if self.batch_norm:
        y = (self.norm0, self.norm1)[index](y, use_running_average=not train)
      y = nn.relu(y)
    lengths = subsampled_lengths(lengths)
    return jnp.where(valid_mask(lengths, y.shape[1])[:, :, None, None], y, 0.0), lengths

  def project_maps(self, maps, lengths):
    """The maps of `convolve` → `[batch, frames', features]`, zero past `lengths`."""
    y = self.project(maps.reshape(*maps.shape[:2], -1))
    return jnp.where(valid_mask(lengths, y.shape[1])[..., None], y, 0.0)

  def __call__(self, x, lengths, *, train: bool = False):
    """`x [batch, frames, bins]` with `lengths` → `([batch, frames', features], lengths')`."""
    maps, lengths = self.convolve(x, lengths, train=train)
    return self.project_maps(maps, lengths), lengths


class SpeechFrontEnd(nn.Module):
  """The front end every ASR model shares, as fields of the model (`class Model(SpeechFrontEnd, kw_only=True)`):

    sample_rate, num_mel_bins, use_deltas: 25 ms / 10 ms Kaldi filterbanks (Δ and ΔΔ triple the bins).
    normalization: "utterance" (mean and variance per utterance, ESPnet's `utterance_mvn`), "global" (the
      training split's per-bin mean and standard deviation, `feature_stats`, which the `asr` task computes
      before training: ESPnet's `global_mvn`), "speaker" (each utterance by its speaker's per-bin mean and
      standard deviation, the `speaker_stats` argument of `features`: Kaldi's per-speaker CMVN) or "none".
    spec_augment: in training, zero `freq_masks` bands of ≤ `freq_width` bins and `time_masks` spans of
      ≤ `time_width` frames (or `time_width_ratio` of each utterance), drawing from the `augment` RNG stream.
  """
  sample_rate: int = 16000
  num_mel_bins: int = 80
  use_deltas: bool = False
  normalization: str = "utterance"
  spec_augment: bool = True
  freq_masks: int = 2
  freq_width: int = 27
  time_masks: int = 2
  time_width: int = 40
  time_width_ratio: float | None = None
  feature_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std) per bin, for "global"

  FRAME_SECONDS = 0.010  # the filterbank's shift

  def raw_features(self, audio, audio_lengths):
    """Filterbanks (with Δ and ΔΔ if `use_deltas`) before normalisation `[batch, frames, bins]`, frame counts."""
    x, lengths = filterbank(audio, audio_lengths, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins)
    return (with_deltas(x, lengths) if self.use_deltas else x), lengths

  def features(self, audio, audio_lengths, speaker_stats=None, *, train: bool):
    """Normalised (and, in training, augmented) filterbanks `[batch, frames, bins]` and their frame counts.
    `speaker_stats`: `(mean, std)` `[batch, bins]`, each row's speaker's, for normalization "speaker" only."""
    if self.normalization not in NORMALIZATIONS:
      raise ConfigError(f"unknown model.normalization {self.normalization!r}; choose one of "
                        f"{', '.join(NORMALIZATIONS)}")
    x, lengths = self.raw_features(audio, audio_lengths)
    if self.normalization == "utterance":
      x = utterance_normalize(x, lengths)
    elif self.normalization == "global":
      if self.feature_stats is None:
        raise ConfigError("model.normalization 'global' needs the training split's feature statistics, which an asr "
                          "run computes into WORKDIR/feature_stats.json before training; train this workdir")
      x = global_normalize(x, lengths, *self.feature_stats)
    elif self.normalization == "speaker":
      if speaker_stats is None:
        raise ConfigError("model.normalization 'speaker' needs each utterance's speaker statistics, which the asr "
                          "task's batches carry (feature_mean, feature_std); call the model with speaker_stats")
      x = speaker_normalize(x, lengths, *speaker_stats)
    if train and self.spec_augment:
      x = spec_augment(self.make_rng("augment"), x, lengths, freq_masks=self.freq_masks, freq_width=self.freq_width,
                       time_masks=self.time_masks, time_width=self.time_width, time_width_ratio=self.time_width_ratio)
    return x, lengths

