"""Waveform Audio Transformer with optional multi-rate (wavelet) pooling (Verma & Berger 2021).

25 ms patches of raw audio → Dense(hidden) → ReLU → Dense(d_model) → learned positions →
Transformer blocks, each optionally followed by wavelet pooling or temporal average pooling →
LayerNorm → mean over time → Dense(num_classes) logits (the task applies the sigmoid).
"""

import os

import flax.linen as nn
import numpy as np

from afx.layers import PatchFrontEnd, TransformerBlock, average_pool_time, wavelet_pool

POOLINGS = ("none", "wavelet", "average")


class AudioTransformer(nn.Module):
  """Attributes:
    num_classes: output logits.
    patch_size: samples per patch (400 = 25 ms at 16 kHz).
    frontend_hidden: width of the learned filter layer applied to each patch.
    d_model, num_layers, num_heads, mlp_dim, dropout_rate: the Transformer.
    pooling: "none", "wavelet" (multi-rate averaging inside each layer's output, no parameters)
      or "average" (halve the time length after every layer but the last, while it is > 1).
    attention_impl: passed to `afx.kernels.attention.dot_product_attention`.
  """
  num_classes: int
  patch_size: int = 400
  frontend_hidden: int = 2048
  d_model: int = 64
  num_layers: int = 6
  num_heads: int = 8
  mlp_dim: int = 1536
  dropout_rate: float = 0.1
  pooling: str = "none"
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, waveform, samples=None, *, train: bool = False):
    del samples  # the model sees a short clip's zero-padded waveform
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    x = PatchFrontEnd(self.patch_size, self.frontend_hidden, self.d_model, name="frontend")(waveform)
    positions = self.param("positions", nn.initializers.normal(0.02), x.shape[-2:])
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + positions)
    for layer in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate,
                           attention_impl=self.attention_impl, name=f"block{layer}")(x, train=train)
      if self.pooling == "wavelet":
        x = wavelet_pool(x)
      elif self.pooling == "average" and layer < self.num_layers - 1 and x.shape[-2] > 1:
        x = average_pool_time(x, 2)
    x = nn.LayerNorm(name="final_norm")(x).mean(axis=-2)
    return nn.Dense(self.num_classes, name="head")(x)


def frontend_filters(params) -> np.ndarray:
  """The learned first-layer filters, `[frontend_hidden, patch_size]`, one row per filter."""
  return np.asarray(params["frontend"]["filters"]["kernel"]).T


def write_figures(params, *, sample_rate: int, directory: str) -> list[str]:
  """`directory/frontend.png`: the learned filters' peak frequencies, sorted, and example filters."""
  from afx import plots
  path = os.path.join(directory, "frontend.png")
  plots.frontend_figure(frontend_filters(params), sample_rate=sample_rate, path=path)
  return [path]
