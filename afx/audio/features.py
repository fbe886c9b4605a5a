"""Spectral features and mu-law companding, matching librosa's definitions.

Everything that touches a waveform is a pure, jittable JAX function over a
waveform of shape ``[..., samples]``: any leading dims are batch dims and each
example is treated exactly as a separate librosa call would treat it.
Hyperparameters (FFT size, window name, mel settings, ...) are static python
values; changing them retraces.

Parameter names and defaults follow librosa, with one deliberate rename: the
sample rate is ``sample_rate`` here where librosa says ``sr`` (except in
``mel_filterbank``, whose keyword-only signature mirrors
``librosa.filters.mel`` exactly).

The mel filterbank and the analysis window are constants computed with numpy
in float64 at trace time and baked into the compiled program as float32.

Precision: librosa runs its FFT in float64, afx in float32, so each STFT bin
carries an absolute error of about 2e-7 of its frame's largest bin. Bins more
than ~100 dB (power) below their frame's peak are float32 rounding noise;
``power_to_db`` with ``top_db=80`` on power spectrograms never looks there,
but on magnitude (``power=1``) spectrograms its 80 dB is 160 dB of power.
"""

import functools
import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from afx.errors import ConfigError

# Above this many hops per frame, framing by reshape-and-concatenate would
# unroll into too many slices; a gather is used instead.
_MAX_HOPS_PER_FRAME_FOR_RESHAPE = 16

_WINDOW_NAMES = ("hann", "hamming", "blackman", "rectangular", "boxcar")

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0

MelNorm = Union[None, str, float]


# -----------------------------------------------------------------------------
# Windows and framing.


def analysis_window(window: str, win_length: int, n_fft: int) -> np.ndarray:
  """The periodic analysis window, zero-padded (centred) to ``n_fft`` samples.

  Matches ``scipy.signal.get_window(window, win_length, fftbins=True)`` padded
  the way ``librosa.util.pad_center`` pads it.

  Args:
    window: one of "hann", "hamming", "blackman", "rectangular" or "boxcar".
    win_length: number of non-padded window samples, ``<= n_fft``.
    n_fft: total length of the returned window.

  Returns:
    float32 numpy array of shape ``[n_fft]``.

  Raises:
    ConfigError: for an unknown window name or ``win_length`` outside
      ``[1, n_fft]``.
  """
  if not 1 <= win_length <= n_fft:
    raise ConfigError(
        f"win_length={win_length} must be between 1 and n_fft={n_fft}")
  # Periodic windows use a period of win_length (not win_length - 1) so that
  # overlapping frames add up smoothly; this is scipy's fftbins=True.
  phase = 2.0 * np.pi * np.arange(win_length) / win_length
  if window == "hann":
    samples = 0.5 - 0.5 * np.cos(phase)
  elif window == "hamming":
    samples = 0.54 - 0.46 * np.cos(phase)
  elif window == "blackman":
    samples = 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2.0 * phase)
  elif window in ("rectangular", "boxcar"):
    samples = np.ones(win_length)
  else:
    raise ConfigError(
        f"unknown window {window!r}; use one of {', '.join(_WINDOW_NAMES)}")
  left_pad = (n_fft - win_length) // 2
  padded = np.zeros(n_fft)
  padded[left_pad:left_pad + win_length] = samples
  return padded.astype(np.float32)


def _frame(signal: jax.Array, frame_length: int, hop_length: int,
           num_frames: int) -> jax.Array:
  """Splits ``[..., samples]`` into ``[..., num_frames, frame_length]``."""
  if frame_length % hop_length == 0 and (
      frame_length // hop_length <= _MAX_HOPS_PER_FRAME_FOR_RESHAPE):
    # Cut the signal into hop-sized chunks once, then each frame is
    # hops_per_frame consecutive chunks: a few slices, no gather.
    hops_per_frame = frame_length // hop_length
    num_chunks = num_frames - 1 + hops_per_frame
    chunks = signal[..., :num_chunks * hop_length].reshape(
        signal.shape[:-1] + (num_chunks, hop_length))
    return jnp.concatenate(
        [chunks[..., k:k + num_frames, :] for k in range(hops_per_frame)],
        axis=-1)
  sample_indices = (hop_length * np.arange(num_frames)[:, None] +
                    np.arange(frame_length)[None, :])
  return signal[..., sample_indices]


# -----------------------------------------------------------------------------
# STFT.


@functools.partial(
    jax.jit,
    static_argnames=("n_fft", "hop_length", "win_length", "window", "center",
                     "pad_mode"))
def stft(waveform: jax.Array,
         n_fft: int = 2048,
         hop_length: Optional[int] = None,
         win_length: Optional[int] = None,
         window: str = "hann",
         center: bool = True,
         pad_mode: str = "constant") -> jax.Array:
  """Short-time Fourier transform, as ``librosa.stft``.

  Args:
    waveform: real signal ``[..., samples]``; computed in float32.
    n_fft: FFT size (frame length after window padding).
    hop_length: samples between frame starts; defaults to ``win_length // 4``.
    win_length: window length, ``<= n_fft``; defaults to ``n_fft``. A shorter
      window is zero-padded on both sides to ``n_fft``.
    window: "hann", "hamming", "blackman", "rectangular" or "boxcar" (all
      periodic, as scipy's ``fftbins=True``).
    center: pad ``n_fft // 2`` samples on each side so that frame ``t`` is
      centred on sample ``t * hop_length``.
    pad_mode: "constant" (zeros) or "reflect"; used only when ``center``.

  Returns:
    complex64 ``[..., 1 + n_fft // 2, frames]`` where
    ``frames = 1 + (padded_samples - n_fft) // hop_length``.

  Raises:
    ConfigError: for a bad window, hop, pad mode, or a signal shorter than
      ``n_fft`` when ``center`` is False.
  """
  if win_length is None:
    win_length = n_fft
  if hop_length is None:
    hop_length = win_length // 4
  if hop_length < 1:
    raise ConfigError(f"hop_length={hop_length} must be a positive integer")
  window_samples = analysis_window(window, win_length, n_fft)

  signal = jnp.asarray(waveform, dtype=jnp.float32)
  if center:
    if pad_mode not in ("constant", "reflect"):
      raise ConfigError(
          f"pad_mode={pad_mode!r} is not supported; use 'constant' or "
          "'reflect'")
    padding = [(0, 0)] * (signal.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    signal = jnp.pad(signal, padding, mode=pad_mode)
  num_samples = signal.shape[-1]
  if num_samples < n_fft:
    raise ConfigError(
        f"n_fft={n_fft} is longer than the {num_samples}-sample signal; use a "
        "smaller n_fft or center=True")
  num_frames = 1 + (num_samples - n_fft) // hop_length

  frames = _frame(signal, n_fft, hop_length, num_frames)
  spectrum = jnp.fft.rfft(frames * window_samples, axis=-1)
  return jnp.swapaxes(spectrum, -1, -2).astype(jnp.complex64)


# -----------------------------------------------------------------------------
# Mel scale and filterbank (numpy constants).


def hz_to_mel(frequencies, htk: bool = False) -> np.ndarray:
  """Converts Hz to mels, as ``librosa.hz_to_mel``.

  Args:
    frequencies: scalar or array of frequencies in Hz.
    htk: use the HTK formula ``2595 log10(1 + f / 700)`` instead of Slaney's
      scale (linear below 1 kHz, logarithmic above).

  Returns:
    float64 numpy array of the input's shape.
  """
  frequencies = np.asarray(frequencies, dtype=np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + frequencies / 700.0)
  linear_mels = frequencies / _SLANEY_HZ_PER_MEL
  # np.maximum keeps log() away from the (discarded) low-frequency entries.
  log_mels = _SLANEY_BREAK_MEL + np.log(
      np.maximum(frequencies, _SLANEY_BREAK_HZ) /
      _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
  return np.where(frequencies >= _SLANEY_BREAK_HZ, log_mels, linear_mels)


def mel_to_hz(mels, htk: bool = False) -> np.ndarray:
  """Converts mels to Hz, inverting ``hz_to_mel`` (as ``librosa.mel_to_hz``).

  Args:
    mels: scalar or array of mel values.
    htk: use the HTK mel scale instead of Slaney's.

  Returns:
    float64 numpy array of the input's shape.
  """
  mels = np.asarray(mels, dtype=np.float64)
  if htk:
    return 700.0 * (10.0**(mels / 2595.0) - 1.0)
  linear_hz = _SLANEY_HZ_PER_MEL * mels
  log_hz = _SLANEY_BREAK_HZ * np.exp(
      _SLANEY_LOG_STEP * (np.maximum(mels, _SLANEY_BREAK_MEL) -
                          _SLANEY_BREAK_MEL))
  return np.where(mels >= _SLANEY_BREAK_MEL, log_hz, linear_hz)


def _normalize_filters(filters: np.ndarray, norm: MelNorm,
                       mel_edges_hz: np.ndarray) -> np.ndarray:
  """Applies librosa's ``norm`` option to ``filters`` ``[n_mels, bins]``."""
  if norm is None:
    return filters
  if isinstance(norm, str):
    if norm != "slaney":
      raise ConfigError(
          f"mel norm={norm!r} is not supported; use None, 'slaney' or a "
          "positive number")
    # Each triangle gets unit area in Hz: divide by half its base width.
    base_widths_hz = mel_edges_hz[2:] - mel_edges_hz[:-2]
    return filters * (2.0 / base_widths_hz)[:, None]
  if isinstance(norm, bool) or not isinstance(norm, (int, float, np.number)):
    raise ConfigError(
        f"mel norm={norm!r} is not supported; use None, 'slaney' or a "
        "positive number")
  if norm == np.inf:
    lengths = np.max(np.abs(filters), axis=-1)
  elif norm > 0:
    lengths = np.sum(np.abs(filters)**norm, axis=-1)**(1.0 / norm)
  else:
    raise ConfigError(f"mel norm={norm!r} must be positive or inf")
  # Like librosa, leave (near-)empty filters as they are instead of dividing
  # by ~0; the threshold is float32's smallest normal number.
  lengths = np.where(lengths < np.finfo(np.float32).tiny, 1.0, lengths)
  return filters / lengths[:, None]


def mel_filterbank(*,
                   sr: float,
                   n_fft: int,
                   n_mels: int = 128,
                   fmin: float = 0.0,
                   fmax: Optional[float] = None,
                   htk: bool = False,
                   norm: MelNorm = "slaney") -> np.ndarray:
  """Triangular mel filters over rFFT bins, as ``librosa.filters.mel``.

  Args:
    sr: sample rate in Hz.
    n_fft: FFT size; the filters cover its ``1 + n_fft // 2`` bins.
    n_mels: number of mel bands.
    fmin: lowest band edge in Hz.
    fmax: highest band edge in Hz; defaults to ``sr / 2``.
    htk: use the HTK mel scale instead of Slaney's.
    norm: None (peak 1), "slaney" (each triangle has unit area in Hz), or a
      positive number ``p`` / ``np.inf`` (each filter divided by its p-norm,
      as ``librosa.util.normalize``).

  Returns:
    float32 numpy array ``[n_mels, 1 + n_fft // 2]``.

  Raises:
    ConfigError: for an unsupported ``norm``.
  """
  if fmax is None:
    fmax = sr / 2.0
  bin_frequencies_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)
  # n_mels triangles need n_mels + 2 edges, evenly spaced in mels.
  mel_edges_hz = mel_to_hz(
      np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk),
                  n_mels + 2),
      htk=htk)
  edge_gaps_hz = np.diff(mel_edges_hz)
  # offsets[i, k]: bin k's frequency minus edge i.
  offsets = bin_frequencies_hz[None, :] - mel_edges_hz[:, None]
  rising = offsets[:-2] / edge_gaps_hz[:-1, None]
  falling = -offsets[2:] / edge_gaps_hz[1:, None]
  filters = np.maximum(0.0, np.minimum(rising, falling))
  return _normalize_filters(filters, norm, mel_edges_hz).astype(np.float32)


# -----------------------------------------------------------------------------
# Mel spectrograms and decibels.


def _magnitude_to_power(spectrum: jax.Array, power: float) -> jax.Array:
  """``|spectrum| ** power``, with finite gradients where the spectrum is 0."""
  squared = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  if power == 2.0:
    return squared
  # Differentiating x ** (p / 2) at x = 0 gives inf * 0 = nan for p < 2; feed
  # the power a safe value there and zero the result instead.
  is_zero = squared == 0.0
  safe_squared = jnp.where(is_zero, 1.0, squared)
  return jnp.where(is_zero, 0.0, safe_squared**(power / 2.0))


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_fft", "hop_length", "win_length",
                     "window", "center", "pad_mode", "power", "n_mels", "fmin",
                     "fmax", "htk", "norm"))
def mel_spectrogram(waveform: jax.Array,
                    sample_rate: float = 22050,
                    n_fft: int = 2048,
                    hop_length: int = 512,
                    win_length: Optional[int] = None,
                    window: str = "hann",
                    center: bool = True,
                    pad_mode: str = "constant",
                    power: float = 2.0,
                    n_mels: int = 128,
                    fmin: float = 0.0,
                    fmax: Optional[float] = None,
                    htk: bool = False,
                    norm: MelNorm = "slaney") -> jax.Array:
  """Mel spectrogram, as ``librosa.feature.melspectrogram``.

  Arguments are librosa's, except that the sample rate is called
  ``sample_rate`` (librosa's ``sr``). The STFT arguments are those of
  ``stft``; the mel arguments those of ``mel_filterbank``.

  Args:
    waveform: real signal ``[..., samples]``.
    sample_rate: sample rate in Hz (librosa's ``sr``).
    n_fft: FFT size.
    hop_length: samples between frames.
    win_length: window length; defaults to ``n_fft``.
    window: analysis window name.
    center: centre frames on ``t * hop_length`` by padding.
    pad_mode: "constant" or "reflect".
    power: exponent of the magnitude (1 for energy, 2 for power).
    n_mels: number of mel bands.
    fmin: lowest mel edge in Hz.
    fmax: highest mel edge in Hz; defaults to ``sample_rate / 2``.
    htk: use the HTK mel scale.
    norm: filter normalisation, as in ``mel_filterbank``.

  Returns:
    float32 ``[..., n_mels, frames]``.
  """
  spectrum = stft(waveform, n_fft=n_fft, hop_length=hop_length,
                  win_length=win_length, window=window, center=center,
                  pad_mode=pad_mode)
  spectrogram = _magnitude_to_power(spectrum, power)
  filters = mel_filterbank(sr=sample_rate, n_fft=n_fft, n_mels=n_mels,
                           fmin=fmin, fmax=fmax, htk=htk, norm=norm)
  # HIGHEST keeps the matmul in true float32 on TPU/GPU instead of bf16
  # passes, which would cost ~1e-3 relative accuracy.
  return jnp.matmul(filters, spectrogram, precision=jax.lax.Precision.HIGHEST)


def _check_db_arguments(amin: float, top_db: Optional[float]) -> None:
  if amin <= 0:
    raise ConfigError(f"amin={amin} must be strictly positive")
  if top_db is not None and top_db < 0:
    raise ConfigError(f"top_db={top_db} must be non-negative")


@functools.partial(jax.jit, static_argnames=("amin", "top_db"))
def power_to_db(spectrogram: jax.Array,
                ref: float = 1.0,
                amin: float = 1e-10,
                top_db: Optional[float] = 80.0) -> jax.Array:
  """Power to decibels, ``10 log10(max(amin, S) / max(amin, |ref|))``.

  As ``librosa.power_to_db`` with a numeric ``ref`` (no callables), except
  that the ``top_db`` floor is set per example: the maximum is taken over the
  last two axes (mel/frequency and time), so a batch ``[..., bins, frames]``
  gives the same result as separate librosa calls.

  Args:
    spectrogram: power values ``[..., bins, frames]`` (complex input uses its
      magnitude).
    ref: reference power that maps to 0 dB.
    amin: floor on the power and on ``|ref|``, > 0.
    top_db: if not None, clip each example to at least its maximum minus
      ``top_db`` dB.

  Returns:
    float32 decibels of the input's shape.

  Raises:
    ConfigError: if ``amin <= 0`` or ``top_db < 0``.
  """
  _check_db_arguments(amin, top_db)
  magnitude = jnp.abs(spectrogram).astype(jnp.float32)
  decibels = 10.0 * jnp.log10(jnp.maximum(amin, magnitude))
  decibels = decibels - 10.0 * jnp.log10(jnp.maximum(amin, jnp.abs(ref)))
  if top_db is not None:
    example_axes = tuple(range(max(0, decibels.ndim - 2), decibels.ndim))
    peak = jnp.max(decibels, axis=example_axes, keepdims=True)
    decibels = jnp.maximum(decibels, peak - top_db)
  return decibels


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_fft", "hop_length", "win_length",
                     "window", "center", "pad_mode", "power", "n_mels", "fmin",
                     "fmax", "htk", "norm", "amin", "top_db"))
def log_mel_spectrogram(waveform: jax.Array,
                        sample_rate: float = 22050,
                        n_fft: int = 2048,
                        hop_length: int = 512,
                        win_length: Optional[int] = None,
                        window: str = "hann",
                        center: bool = True,
                        pad_mode: str = "constant",
                        power: float = 2.0,
                        n_mels: int = 128,
                        fmin: float = 0.0,
                        fmax: Optional[float] = None,
                        htk: bool = False,
                        norm: MelNorm = "slaney",
                        ref: float = 1.0,
                        amin: float = 1e-10,
                        top_db: Optional[float] = 80.0) -> jax.Array:
  """Mel spectrogram in decibels: ``power_to_db(mel_spectrogram(...))``.

  The mel arguments are those of ``mel_spectrogram`` (sample rate named
  ``sample_rate``, librosa's ``sr``); ``ref``, ``amin`` and ``top_db`` are
  those of ``power_to_db``, with the ``top_db`` floor set per example.

  Returns:
    float32 ``[..., n_mels, frames]`` in dB.
  """
  _check_db_arguments(amin, top_db)
  mel_power = mel_spectrogram(
      waveform, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
      win_length=win_length, window=window, center=center, pad_mode=pad_mode,
      power=power, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
  return power_to_db(mel_power, ref=ref, amin=amin, top_db=top_db)


# -----------------------------------------------------------------------------
# Mu-law companding.


def _check_mu(mu: int, quantize: bool) -> None:
  if mu <= 0:
    raise ConfigError(f"mu={mu} must be strictly positive")
  if quantize and int(mu) != mu:
    raise ConfigError(f"mu={mu} must be an integer when quantize=True")


@functools.partial(jax.jit, static_argnames=("mu", "quantize"))
def mu_law_encode(waveform: jax.Array,
                  mu: int = 255,
                  quantize: bool = True) -> jax.Array:
  """Mu-law compression, as ``librosa.mu_compress`` but with WaveNet codes.

  The companded value is ``sign(x) log(1 + mu |x|) / log(1 + mu)``.

  With ``quantize=True`` it is quantized into ``mu + 1`` levels and returned
  as class indices in ``[0, mu]`` (int32): librosa's code plus
  ``(mu + 1) // 2`` (128 for mu=255), since librosa centres its codes on 0
  (``[-128, 127]``) and a classifier wants non-negative labels.
  With ``quantize=False`` the companded value in ``[-1, 1]`` is returned as
  float32 (librosa's formula; librosa returns float64).

  Codes are found by comparing samples with the exact level thresholds, so
  they can differ by one from librosa's where librosa's float32 rounding puts
  the companded value within ~1e-7 of a level edge; in particular librosa
  maps +1.0 one past its top code, and afx maps it to ``mu``.

  Unlike librosa, which raises on samples outside ``[-1, 1]``, a jitted
  function cannot inspect values, so such samples are clipped to ``[-1, 1]``.

  Args:
    waveform: samples ``[...]`` in ``[-1, 1]``.
    mu: compression parameter, > 0 (an integer when quantizing).
    quantize: return integer codes instead of floats.

  Returns:
    int32 codes in ``[0, mu]`` or float32 in ``[-1, 1]``, input's shape.

  Raises:
    ConfigError: for a bad ``mu``.
  """
  _check_mu(mu, quantize)
  samples = jnp.clip(jnp.asarray(waveform, dtype=jnp.float32), -1.0, 1.0)
  if quantize:
    return jnp.searchsorted(_mu_law_level_thresholds(int(mu)), samples,
                            side="left").astype(jnp.int32)
  return (jnp.sign(samples) * jnp.log1p(mu * jnp.abs(samples)) /
          math.log1p(mu))


def _mu_law_level_thresholds(mu: int) -> np.ndarray:
  """Sample values at which the quantized mu-law code steps up.

  librosa's code (plus our offset) is the number of the ``mu + 1`` evenly
  spaced edges on ``[-1, 1]`` that lie strictly below the companded sample.
  Companding is monotonic, so that equals the number of expanded edges
  strictly below the sample itself. Comparing samples against these
  thresholds avoids float32 rounding of the companded value near an edge.
  """
  edges = np.linspace(-1.0, 1.0, mu + 1)
  thresholds = np.sign(edges) * np.expm1(np.abs(edges) * np.log1p(mu)) / mu
  thresholds[0], thresholds[-1] = -1.0, 1.0
  # Round each threshold down to float32: for a float32 sample x,
  # x > t  <=>  x > (largest float32 <= t).
  thresholds32 = thresholds.astype(np.float32)
  rounded_up = thresholds32.astype(np.float64) > thresholds
  thresholds32[rounded_up] = np.nextafter(
      thresholds32[rounded_up], np.float32(-np.inf))
  return thresholds32


@functools.partial(jax.jit, static_argnames=("mu", "quantize"))
def mu_law_decode(codes: jax.Array,
                  mu: int = 255,
                  quantize: bool = True) -> jax.Array:
  """Mu-law expansion, the inverse of ``mu_law_encode`` (``librosa.mu_expand``).

  With ``quantize=True``, ``codes`` are class indices in ``[0, mu]`` as
  ``mu_law_encode`` makes them; each is shifted back by ``(mu + 1) // 2`` to
  librosa's code ``c`` and decoded as librosa does, from the companded value
  ``2 c / (mu + 1)``. With ``quantize=False``, ``codes`` are companded floats
  in ``[-1, 1]``.

  Args:
    codes: int class indices or float companded values.
    mu: compression parameter used to encode.
    quantize: whether ``codes`` are integer class indices.

  Returns:
    float32 samples in ``[-1, 1]``, input's shape.

  Raises:
    ConfigError: for a bad ``mu``.
  """
  _check_mu(mu, quantize)
  if quantize:
    centred_codes = (jnp.asarray(codes, dtype=jnp.int32) -
                     (mu + 1) // 2).astype(jnp.float32)
    companded = centred_codes * (2.0 / (mu + 1))
  else:
    companded = jnp.asarray(codes, dtype=jnp.float32)
  # (1 + mu) ** |y| - 1, written with expm1 for accuracy near 0.
  return jnp.sign(companded) * jnp.expm1(
      jnp.abs(companded) * math.log1p(mu)) / mu
