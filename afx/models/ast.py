"""Audio Spectrogram Transformer (Gong, Chung & Glass 2021).

Kaldi log-mel filterbank (128 bins, 25 ms / 10 ms, normalised with AudioSet's statistics) →
overlapping 16×16 patches (stride 10 by default) embedded by a conv → [CLS, DIST, patches] +
learned positions → ViT encoder (pre-LN, exact GELU, LayerNorm ε 1e-12) → LayerNorm → mean of the
CLS and distillation states → LayerNorm + Dense logits (the task applies sigmoid or softmax).

The positional grid is learned for `positional_frames` input frames.  Inputs of another length
work: the grid's time axis is cropped (shorter inputs) or bilinearly resized (longer ones, or
`positional_resize="interpolate"` always).  Parameter names follow the layout of Hugging Face's
`ASTForAudioClassification`, which `afx.models.convert` maps onto this module.
"""

import flax.linen as nn
import numpy as np
import jax
import jax.numpy as jnp

from afx.audio import kaldi
from afx.audio.kaldi import AUDIOSET_MEAN, AUDIOSET_STD
from afx.layers import TransformerBlock

POSITIONAL_RESIZES = ("crop", "interpolate")



def patch_grid(frames: int, num_mel_bins: int, patch_size: int, frequency_stride: int, time_stride: int):
  """(frequency patches, time patches) of a `frames × num_mel_bins` spectrogram."""
  if frames < patch_size or num_mel_bins < patch_size:
    raise ValueError(f"a {frames}×{num_mel_bins} spectrogram is smaller than one {patch_size}×{patch_size} patch")
  return (num_mel_bins - patch_size) // frequency_stride + 1, (frames - patch_size) // time_stride + 1


def fit_positional_grid(grid, time_patches: int, how: str):
  """`grid [freq, time, d]` with its time axis cropped or bilinearly resized to `time_patches`."""
  if grid.shape[1] == time_patches:
    return grid
  if how == "crop" and time_patches < grid.shape[1]:
    return grid[:, :time_patches]
  return jax.image.resize(grid, (grid.shape[0], time_patches, grid.shape[2]), method="bilinear")


class AST(nn.Module):
  """Attributes:
    num_classes: output logits.
    input_frames: spectrograms are zero-padded or cropped to this many frames (AST's `max_length`:
      1024 for AudioSet's 10 s clips); None keeps each window's own length.
    positional_frames: the input length the positional grid is learned for.
    positional_resize: "crop" (shorter inputs take the grid's first columns) or "interpolate".
    feature_mean, feature_std: the normalisation (x − mean) / (2·std) of the filterbank.
  """
  num_classes: int
  sample_rate: int = 16000
  num_mel_bins: int = 128
  input_frames: int | None = 1024
  positional_frames: int = 1024
  positional_resize: str = "crop"
  feature_mean: float = AUDIOSET_MEAN
  feature_std: float = AUDIOSET_STD
  patch_size: int = 16
  frequency_stride: int = 10
  time_stride: int = 10
  embed_dim: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-12
  attention_impl: str | None = None

  def spectrogram(self, waveform):
    """Normalised Kaldi filterbank `[batch, frames, num_mel_bins]` of `[batch, samples]` audio."""
    return kaldi.ast_features(waveform, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                              target_frames=self.input_frames, mean=self.feature_mean, std=self.feature_std)

  @nn.compact
  def from_spectrogram(self, spectrogram, *, train: bool = False):
    """Logits `[batch, num_classes]` of normalised filterbanks `[batch, frames, num_mel_bins]`."""
    if self.positional_resize not in POSITIONAL_RESIZES:
      raise ValueError(f"positional_resize must be one of {', '.join(POSITIONAL_RESIZES)}, got {self.positional_resize!r}")
    batch, frames, _ = spectrogram.shape
    freq_patches, time_patches = patch_grid(frames, self.num_mel_bins, self.patch_size, self.frequency_stride,
                                            self.time_stride)
    grid_freq, grid_time = patch_grid(self.positional_frames, self.num_mel_bins, self.patch_size,
                                      self.frequency_stride, self.time_stride)
    # [batch, mel, frames, 1] so the patch order is frequency-major, as in the original
    image = jnp.swapaxes(spectrogram, 1, 2)[..., None]
    patches = nn.Conv(self.embed_dim, (self.patch_size, self.patch_size),
                      strides=(self.frequency_stride, self.time_stride), padding="VALID", name="patch_embed")(image)
    patches = patches.reshape(batch, freq_patches * time_patches, self.embed_dim)

    init = nn.initializers.truncated_normal(0.02)
    cls = self.param("cls_token", init, (1, 1, self.embed_dim))
    dist = self.param("distillation_token", init, (1, 1, self.embed_dim))
    positions = self.param("position_embeddings", init, (1, 2 + grid_freq * grid_time, self.embed_dim))
    grid = fit_positional_grid(positions[0, 2:].reshape(grid_freq, grid_time, self.embed_dim), time_patches,
                               self.positional_resize)
    positions = jnp.concatenate([positions[:, :2], grid.reshape(1, -1, self.embed_dim)], axis=1)

    tokens = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.embed_dim)),
                              jnp.broadcast_to(dist, (batch, 1, self.embed_dim)), patches], axis=1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(tokens + positions)
    for index in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate, layer_norm_epsilon=self.layer_norm_epsilon,
                           approximate_gelu=False, attention_impl=self.attention_impl, name=f"block_{index}")(
                               x, train=train)
    x = nn.LayerNorm(self.layer_norm_epsilon, name="encoder_norm")(x)
    pooled = (x[:, 0] + x[:, 1]) / 2
    pooled = nn.LayerNorm(self.layer_norm_epsilon, name="head_norm")(pooled)
    return nn.Dense(self.num_classes, name="head")(pooled)

  def __call__(self, waveform, *, train: bool = False):
    return self.from_spectrogram(self.spectrogram(waveform), train=train)


# Tensor names of transformers ≥ 5 and, after "|", of the checkpoints published with transformers 4.
HF_LAYER_NAMES = {
    "query": "attention.q_proj|attention.attention.query",
    "key": "attention.k_proj|attention.attention.key",
    "value": "attention.v_proj|attention.attention.value",
    "out": "attention.o_proj|attention.output.dense",
    "fc1": "mlp.fc1|intermediate.dense",
    "fc2": "mlp.fc2|output.dense",
    "norm1": "layernorm_before|layernorm_before",
    "norm2": "layernorm_after|layernorm_after",
}
HF_LAYER_PREFIXES = ("layers.{index}", "encoder.layer.{index}")


def params_from_hf(state: dict, *, num_layers: int, num_heads: int) -> dict:
  """AST parameters from a Hugging Face `ASTForAudioClassification` state dict (name → NumPy array),
  in either transformers 4's or 5's tensor names."""
  prefix = "audio_spectrogram_transformer."
  state = {key.removeprefix(prefix): np.asarray(value, np.float32) for key, value in state.items()}

  def dense(name):
    return {"kernel": state[f"{name}.weight"].T, "bias": state[f"{name}.bias"]}

  def norm(name):
    return {"scale": state[f"{name}.weight"], "bias": state[f"{name}.bias"]}

  def heads_in(name):  # [out, in] → [in, heads, head_dim]
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    return {"kernel": weight.T.reshape(weight.shape[1], num_heads, -1), "bias": bias.reshape(num_heads, -1)}

  def layer_names(index):
    for generation, prefix in enumerate(HF_LAYER_PREFIXES):
      names = {key: f"{prefix.format(index=index)}.{value.split('|')[generation]}" for key, value in HF_LAYER_NAMES.items()}
      if f"{names['query']}.weight" in state:
        return names
    raise KeyError(f"the checkpoint has no tensors for encoder layer {index} (looked for "
                   f"{' and '.join(p.format(index=index) for p in HF_LAYER_PREFIXES)})")

  conv = state["embeddings.patch_embeddings.projection.weight"]  # [out, 1, freq, time]
  params = {
      "patch_embed": {"kernel": conv.transpose(2, 3, 1, 0),
                      "bias": state["embeddings.patch_embeddings.projection.bias"]},
      "cls_token": state["embeddings.cls_token"],
      "distillation_token": state["embeddings.distillation_token"],
      "position_embeddings": state["embeddings.position_embeddings"],
      "encoder_norm": norm("layernorm"),
      "head_norm": norm("classifier.layernorm"),
      "head": dense("classifier.dense"),
  }
  for index in range(num_layers):
    names = layer_names(index)
    out = state[f"{names['out']}.weight"]  # [features, heads · head_dim]
    params[f"block_{index}"] = {
        "LayerNorm_0": norm(names["norm1"]),
        "MultiHeadAttention_0": {
            "query": heads_in(names["query"]), "key": heads_in(names["key"]), "value": heads_in(names["value"]),
            "out": {"kernel": out.T.reshape(num_heads, -1, out.shape[0]), "bias": state[f"{names['out']}.bias"]},
        },
        "LayerNorm_1": norm(names["norm2"]),
        "MlpBlock_0": {"Dense_0": dense(names["fc1"]), "Dense_1": dense(names["fc2"])},
    }
  return params
