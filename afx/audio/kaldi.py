"""Kaldi log-mel filterbanks and the Audio Spectrogram Transformer's input features.

`fbank` computes what `torchaudio.compliance.kaldi.fbank` (Kaldi's `compute-fbank-feats`) computes, for
`use_energy=False`, `vtln_warp=1`, `round_to_power_of_two=True` and `subtract_mean=False`.  Each frame of
`frame_length_ms` (every `frame_shift_ms`) is, in order: dithered, shifted to zero mean, pre-emphasised
(`x[t] - c x[t-1]`, with `x[-1] = x[0]`), windowed, zero-padded to the next power of two and Fourier
transformed; its power spectrum is summed by triangular filters evenly spaced on Kaldi's mel scale
(`1127 ln(1 + f / 700)`, triangular in mel, the Nyquist bin unused) and the log is floored at float32's
epsilon.  `ast_features` turns a waveform into AST's input as AST's training code and Hugging Face's
`ASTFeatureExtractor` do.

  features = afx.audio.ast_features(waveforms)  # [batch, samples] at 16 kHz -> [batch, 1024, 128]

Both are jittable and batched over leading axes; every argument except the waveform (and `key`, `mean`,
`std`) is a static python value.  Window and filters are float64 numpy constants computed at trace time
and cast to float32, the computation itself is float32 (Kaldi's is float32 too).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

WINDOWS = ("hanning", "hamming", "povey", "rectangular", "blackman")
# Kaldi floors every log at std::numeric_limits<float>::epsilon().
LOG_FLOOR = float(np.finfo(np.float32).eps)
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974


def frame_geometry(sample_rate: float, frame_length_ms: float, frame_shift_ms: float):
  """(window size, window shift, FFT size) in samples, truncated to integers as Kaldi does."""
  window_size = int(sample_rate * frame_length_ms * 0.001)
  window_shift = int(sample_rate * frame_shift_ms * 0.001)
  if window_size < 2 or window_shift < 1:
    raise ValueError(f"frames of {frame_length_ms} ms every {frame_shift_ms} ms at {sample_rate} Hz are "
                     f"{window_size} samples every {window_shift}; need at least 2 samples every 1")
  return window_size, window_shift, 1 << (window_size - 1).bit_length()


def num_frames(num_samples: int, window_size: int, window_shift: int, snip_edges: bool = True) -> int:
  """Frames Kaldi cuts from `num_samples` samples.

  With `snip_edges` only frames lying wholly inside the signal; otherwise one per shift (rounded), the
  signal reflected at both ends.
  """
  if snip_edges:
    return 1 + (num_samples - window_size) // window_shift
  return (num_samples + window_shift // 2) // window_shift


def feature_window(window: str, size: int, blackman_coeff: float = 0.42) -> np.ndarray:
  """Kaldi's symmetric analysis window of `size` samples (float64)."""
  phase = 2.0 * np.pi * np.arange(size) / (size - 1)
  hann = 0.5 - 0.5 * np.cos(phase)
  if window == "hanning":
    return hann
  if window == "hamming":
    return 0.54 - 0.46 * np.cos(phase)
  if window == "povey":
    return hann**0.85
  if window == "rectangular":
    return np.ones(size)
  if window == "blackman":
    return blackman_coeff - 0.5 * np.cos(phase) + (0.5 - blackman_coeff) * np.cos(2.0 * phase)
  raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")


def mel_scale(frequency):
  """Kaldi's mel scale, `1127 ln(1 + f / 700)`."""
  return 1127.0 * np.log1p(np.asarray(frequency, dtype=np.float64) / 700.0)


def mel_banks(num_mel_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float) -> np.ndarray:
  """Kaldi's triangular mel filters `[fft_size // 2 + 1, num_mel_bins]` (float64).

  The filters' edges are evenly spaced in mel from `low_freq` to `high_freq` (`<= 0`: that far below
  Nyquist) and each is triangular in mel; the Nyquist bin gets weight 0, as in Kaldi.
  """
  nyquist = 0.5 * sample_rate
  if high_freq <= 0.0:
    high_freq += nyquist
  if not 0.0 <= low_freq < high_freq <= nyquist:
    raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist} (Nyquist), got low_freq={low_freq}, "
                     f"high_freq={high_freq}")
  if num_mel_bins <= 3:
    raise ValueError(f"num_mel_bins={num_mel_bins}: Kaldi needs more than 3 mel bins")
  edges = np.linspace(mel_scale(low_freq), mel_scale(high_freq), num_mel_bins + 2)
  bin_mels = mel_scale(sample_rate / fft_size * np.arange(fft_size // 2))[:, None]
  rising = (bin_mels - edges[:-2]) / (edges[1:-1] - edges[:-2])
  falling = (edges[2:] - bin_mels) / (edges[2:] - edges[1:-1])
  filters = np.maximum(0.0, np.minimum(rising, falling))
  return np.concatenate([filters, np.zeros((1, num_mel_bins))])


def _frame_indices(num_samples: int, window_size: int, window_shift: int, snip_edges: bool) -> np.ndarray:
  """Sample indices `[frames, window_size]` of each frame, reflected (edge sample repeated) at the ends."""
  frames = num_frames(num_samples, window_size, window_shift, snip_edges)
  start = 0 if snip_edges else window_shift // 2 - window_size // 2
  indices = start + window_shift * np.arange(frames)[:, None] + np.arange(window_size)
  indices = np.where(indices < 0, -1 - indices, indices)
  return np.where(indices >= num_samples, 2 * num_samples - 1 - indices, indices)


@functools.partial(jax.jit, static_argnames=(
    "sample_rate", "num_mel_bins", "frame_length_ms", "frame_shift_ms", "dither", "preemphasis",
    "remove_dc_offset", "window", "blackman_coeff", "low_freq", "high_freq", "use_log_fbank", "use_power",
    "snip_edges"))
def fbank(waveform: jax.Array, *, sample_rate: float = 16000, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, dither: float = 0.0,
          key: jax.Array | None = None, preemphasis: float = 0.97, remove_dc_offset: bool = True,
          window: str = "hanning", blackman_coeff: float = 0.42, low_freq: float = 20.0, high_freq: float = 0.0,
          use_log_fbank: bool = True, use_power: bool = True, snip_edges: bool = True) -> jax.Array:
  """Kaldi filterbank of `waveform [..., samples]`, as `torchaudio.compliance.kaldi.fbank`.

  Defaults are those AST passes (Kaldi's, but for `window="hanning"`, 128 bins and no dither).  Kaldi
  scales audio as 16-bit integers; AST and this function take it as it comes (typically in [-1, 1]).

  Args:
    waveform: real signal `[..., samples]`, computed in float32.
    sample_rate: in Hz (torchaudio's `sample_frequency`).
    num_mel_bins: number of mel filters, more than 3.
    frame_length_ms, frame_shift_ms: frame length and shift (torchaudio's `frame_length`, `frame_shift`).
    dither: standard deviation of Gaussian noise added to each frame; needs `key` when non-zero.
    key: PRNG key for the dither.
    preemphasis: coefficient `c` in `x[t] - c x[t-1]`, in [0, 1] (torchaudio's `preemphasis_coefficient`).
    remove_dc_offset: subtract each frame's mean before pre-emphasis.
    window: "hanning", "hamming", "povey", "rectangular" or "blackman" (torchaudio's `window_type`).
    blackman_coeff: the Blackman window's constant term.
    low_freq, high_freq: band edges of the mel filters in Hz; `high_freq <= 0` is an offset from Nyquist.
    use_log_fbank: natural log of the filter energies, floored at float32's epsilon.
    use_power: filter the power spectrum (else the magnitude).
    snip_edges: keep only frames that fit in the signal; else one frame per shift, reflecting the ends.

  Returns:
    float32 `[..., frames, num_mel_bins]`, `frames = 1 + (samples - window) // shift` with `snip_edges`
    (`window`, `shift` in samples: 400 and 160 at 16 kHz), else `(samples + shift // 2) // shift`.

  Raises:
    ValueError: for a waveform shorter than one frame, or bad options.
  """
  window_size, window_shift, fft_size = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
  if not 0.0 <= preemphasis <= 1.0:
    raise ValueError(f"preemphasis={preemphasis} must be in [0, 1]")
  if dither != 0.0 and key is None:
    raise ValueError(f"dither={dither} needs a PRNG key")
  taper = feature_window(window, window_size, blackman_coeff).astype(np.float32)
  filters = mel_banks(num_mel_bins, fft_size, sample_rate, low_freq, high_freq).astype(np.float32)
  signal = jnp.asarray(waveform, dtype=jnp.float32)
  num_samples = signal.shape[-1]
  if num_samples < window_size:
    raise ValueError(f"the waveform has {num_samples} samples, fewer than one {frame_length_ms} ms frame "
                     f"({window_size} samples at {sample_rate} Hz)")

  frames = signal[..., _frame_indices(num_samples, window_size, window_shift, snip_edges)]
  if dither != 0.0:
    frames = frames + dither * jax.random.normal(key, frames.shape, jnp.float32)
  if remove_dc_offset:
    frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
  if preemphasis != 0.0:
    previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - preemphasis * previous
  spectrum = jnp.fft.rfft(frames * taper, n=fft_size, axis=-1)
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  energies = power if use_power else jnp.sqrt(power)
  # HIGHEST keeps the matmul in true float32 on GPU/TPU instead of bf16 passes.
  mel = jnp.matmul(energies, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(mel, LOG_FLOOR)) if use_log_fbank else mel


@functools.partial(jax.jit, static_argnames=("sample_rate", "num_mel_bins", "target_frames"))
def ast_features(waveform: jax.Array, samples: jax.Array | None = None, *, sample_rate: float = 16000,
                 num_mel_bins: int = 128, target_frames: int = 1024, mean: float = AUDIOSET_MEAN,
                 std: float = AUDIOSET_STD) -> jax.Array:
  """AST's normalised input `[..., target_frames, num_mel_bins]` of `waveform [..., samples]`.

  As AST's dataloader: the waveform's mean is removed, `fbank` (AST's arguments, its defaults) is zero-padded
  at the end or cropped to `target_frames`, then normalised to `(x - mean) / (2 std)`.  `mean` and `std`
  default to AudioSet's statistics.  `samples` `[...]` (int) counts the real samples at the start of each
  waveform when the rest is padding: frames that reach into the padding are zero-padded as AST pads a
  shorter clip's filterbank, so a padded window gives the features of the clip itself.
  """
  signal = jnp.asarray(waveform, dtype=jnp.float32)
  signal = signal - jnp.mean(signal, axis=-1, keepdims=True)  # no effect on Kaldi's DC-free frames; AST does it
  features = fbank(signal, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
  frames = features.shape[-2]
  if samples is not None:
    window_size, window_shift, _ = frame_geometry(sample_rate, 25.0, 10.0)
    real_frames = jnp.maximum(0, num_frames(jnp.asarray(samples, jnp.int32), window_size, window_shift))
    features = jnp.where(jnp.arange(frames)[:, None] < real_frames[..., None, None], features, 0.0)
  if frames < target_frames:
    padding = [(0, 0)] * (features.ndim - 2) + [(0, target_frames - frames), (0, 0)]
    features = jnp.pad(features, padding)
  return (features[..., :target_frames, :] - mean) / (2.0 * std)
