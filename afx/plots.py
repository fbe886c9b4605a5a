"""Figures written after training (matplotlib, headless)."""

import numpy as np


def filter_peak_frequencies(filters: np.ndarray, sample_rate: int, n_fft: int = 2048) -> np.ndarray:
  """Frequency (Hz) of each filter's strongest response, from a zero-padded FFT of its taps."""
  spectrum = np.abs(np.fft.rfft(filters, n=max(n_fft, filters.shape[-1]), axis=-1))
  bins = np.fft.rfftfreq(max(n_fft, filters.shape[-1]), d=1.0 / sample_rate)
  return bins[np.argmax(spectrum, axis=-1)]


def frontend_figure(filters: np.ndarray, *, sample_rate: int, path: str, examples: int = 8) -> None:
  """Peak frequency against filter index, sorted (a linear-frequency STFT would be a straight line),
  beside a few individual filters picked evenly along that order."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  peaks = filter_peak_frequencies(filters, sample_rate)
  order = np.argsort(peaks, kind="stable")
  figure = plt.figure(figsize=(12, 5), constrained_layout=True)
  grid = figure.add_gridspec(2, 1 + examples // 2)
  ax = figure.add_subplot(grid[:, 0])
  ax.plot(peaks[order], lw=1.5, label="learned front end")
  ax.plot(np.linspace(0, sample_rate / 2, len(peaks)), "--", lw=1, color="gray", label="linear (STFT)")
  ax.set(xlabel="filter index (sorted)", ylabel="peak frequency (Hz)", title="Front-end filters")
  ax.legend(loc="upper left")
  time_ms = np.arange(filters.shape[-1]) / sample_rate * 1000
  for slot, index in enumerate(order[np.linspace(0, len(order) - 1, examples).astype(int)]):
    sub = figure.add_subplot(grid[slot % 2, 1 + slot // 2])
    sub.plot(time_ms, filters[index], lw=0.7)
    sub.set_title(f"#{index}: peak {peaks[index]:.0f} Hz", fontsize=8)
    sub.tick_params(labelsize=6)
    if slot % 2:
      sub.set_xlabel("ms", fontsize=7)
  figure.savefig(path, dpi=110)
  plt.close(figure)
