"""Audio Spectrogram Transformer (Gong, Chung & Glass 2021).

Kaldi log-mel filterbank (128 bins, 25 ms / 10 ms, normalised with AudioSet's statistics) →
overlapping 16×16 patches (stride 10 by default) embedded by a conv → [CLS, DIST, patches] +
learned positions → ViT encoder (pre-LN, exact GELU, LayerNorm ε 1e-12) → LayerNorm → mean of the
CLS and distillation states → LayerNorm + Dense logits (the task applies sigmoid or softmax).

The positional grid is learned for `positional_frames` input frames.  Inputs of another length
work: the grid's time axis is cropped (shorter inputs) or bilinearly resized (longer ones, or
`positional_resize="interpolate"` always).  Parameter names follow the layout of Hugging Face's
`ASTForAudioClassification`, which `params_from_hf` maps onto this module; `params_from_timm` imports
the encoder of an ImageNet ViT/DeiT as the AST paper does (RGB patch kernel summed over its channels,
the square positional grid cut around its centre or bilinearly resized to the audio patch grid).
"""

import math
from typing import NamedTuple

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


def resize_axis(grid, axis: int, size: int):
  """`grid` bilinearly resized along `axis` to `size`."""
  return jax.image.resize(grid, grid.shape[:axis] + (size,) + grid.shape[axis + 1:], method="bilinear")


def fit_positional_grid(grid, time_patches: int, how: str):
  """`grid [freq, time, d]` with its time axis cropped or bilinearly resized to `time_patches`."""
  if grid.shape[1] == time_patches:
    return grid
  if how == "crop" and time_patches < grid.shape[1]:
    return grid[:, :time_patches]
  return resize_axis(grid, 1, time_patches)


def fit_image_positions(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """An image model's positional grid `[rows, columns, d]` fitted per axis to `shape`: cut around the
  centre where `shape` is smaller (as AST's reference code cuts it), bilinearly resized where larger."""
  for axis, size in enumerate(shape):
    length = grid.shape[axis]
    if size <= length:
      start = length // 2 - size // 2
      grid = np.take(grid, np.arange(start, start + size), axis=axis)
    else:
      grid = np.asarray(resize_axis(grid, axis, size))
  return grid


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

  def setup(self):
    self.head_norm = nn.LayerNorm(self.layer_norm_epsilon)
    self.head = nn.Dense(self.num_classes)

  def spectrogram(self, waveform, samples=None):
    """Normalised Kaldi filterbank `[batch, frames, num_mel_bins]` of `[batch, samples]` audio whose first
    `samples [batch]` samples are real (None: all), zero-padded after them as AST pads a short clip's."""
    return kaldi.ast_features(waveform, samples, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                              target_frames=self.input_frames, mean=self.feature_mean, std=self.feature_std)

  def positional_grid(self) -> tuple[int, int]:
    """(frequency patches, time patches) the learned positional grid covers."""
    return patch_grid(self.positional_frames, self.num_mel_bins, self.patch_size, self.frequency_stride,
                      self.time_stride)

  @nn.compact
  def encode(self, spectrogram, *, train: bool = False):
    """Encoder states after `encoder_norm`, `[batch, 2 + patches, embed_dim]` ([CLS, DIST, patches...]),
    of normalised filterbanks `[batch, frames, num_mel_bins]`."""
    if self.positional_resize not in POSITIONAL_RESIZES:
      raise ValueError(f"positional_resize must be one of {', '.join(POSITIONAL_RESIZES)}, got {self.positional_resize!r}")
    batch, frames, _ = spectrogram.shape
    freq_patches, time_patches = patch_grid(frames, self.num_mel_bins, self.patch_size, self.frequency_stride,
                                            self.time_stride)
    grid_freq, grid_time = self.positional_grid()
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
    return nn.LayerNorm(self.layer_norm_epsilon, name="encoder_norm")(x)

  def from_spectrogram(self, spectrogram, *, train: bool = False):
    """Logits `[batch, num_classes]` of normalised filterbanks `[batch, frames, num_mel_bins]`."""
    x = self.encode(spectrogram, train=train)
    return self.head(self.head_norm((x[:, 0] + x[:, 1]) / 2))

  def __call__(self, waveform, samples=None, *, train: bool = False):
    return self.from_spectrogram(self.spectrogram(waveform, samples), train=train)


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


def _dense(weight, bias) -> dict:  # PyTorch Linear [out, in]
  return {"kernel": weight.T, "bias": bias}


def _norm(weight, bias) -> dict:
  return {"scale": weight, "bias": bias}


def _heads_in(weight, bias, num_heads: int) -> dict:  # [out, in] → [in, heads, head_dim]
  return {"kernel": weight.T.reshape(weight.shape[1], num_heads, -1), "bias": bias.reshape(num_heads, -1)}


def patch_embed_params(weight, bias) -> dict:
  """The patch conv from a PyTorch kernel `[d, channels, freq, time]`; an RGB kernel is summed over its
  channels, so a spectrogram seen as a grey image gives the response the image model was trained on."""
  return {"kernel": weight.sum(axis=1, keepdims=True).transpose(2, 3, 1, 0), "bias": bias}


def block_params(weights: dict, num_heads: int) -> dict:
  """One `TransformerBlock`'s parameters from PyTorch `(weight, bias)` pairs keyed as `HF_LAYER_NAMES` is."""
  out_weight, out_bias = weights["out"]  # [features, heads · head_dim]
  return {
      "LayerNorm_0": _norm(*weights["norm1"]),
      "MultiHeadAttention_0": {
          **{part: _heads_in(*weights[part], num_heads) for part in ("query", "key", "value")},
          "out": {"kernel": out_weight.T.reshape(num_heads, -1, out_weight.shape[0]), "bias": out_bias},
      },
      "LayerNorm_1": _norm(*weights["norm2"]),
      "MlpBlock_0": {"Dense_0": _dense(*weights["fc1"]), "Dense_1": _dense(*weights["fc2"])},
  }


def params_from_hf(state: dict, *, num_layers: int, num_heads: int) -> dict:
  """AST parameters from a Hugging Face `ASTForAudioClassification` state dict (name → NumPy array),
  in either transformers 4's or 5's tensor names."""
  prefix = "audio_spectrogram_transformer."
  state = {key.removeprefix(prefix): np.asarray(value, np.float32) for key, value in state.items()}

  def pair(name):
    return state[f"{name}.weight"], state[f"{name}.bias"]

  def layer_names(index):
    for generation, prefix in enumerate(HF_LAYER_PREFIXES):
      names = {key: f"{prefix.format(index=index)}.{value.split('|')[generation]}" for key, value in HF_LAYER_NAMES.items()}
      if f"{names['query']}.weight" in state:
        return names
    raise KeyError(f"the checkpoint has no tensors for encoder layer {index} (looked for "
                   f"{' and '.join(p.format(index=index) for p in HF_LAYER_PREFIXES)})")

  params = {
      "patch_embed": patch_embed_params(*pair("embeddings.patch_embeddings.projection")),
      "cls_token": state["embeddings.cls_token"],
      "distillation_token": state["embeddings.distillation_token"],
      "position_embeddings": state["embeddings.position_embeddings"],
      "encoder_norm": _norm(*pair("layernorm")),
      "head_norm": _norm(*pair("classifier.layernorm")),
      "head": _dense(*pair("classifier.dense")),
  }
  for index in range(num_layers):
    params[f"block_{index}"] = block_params({key: pair(name) for key, name in layer_names(index).items()}, num_heads)
  return params


# timm's names of the tensors `block_params` reads, under `blocks.{index}.`; `attn.qkv` stacks query, key, value.
TIMM_LAYER_NAMES = {"out": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "norm1": "norm1", "norm2": "norm2"}


class TimmEncoder(NamedTuple):
  """What an ImageNet ViT/DeiT gives a spectrogram transformer."""
  params: dict  # patch_embed, block_{i}, encoder_norm
  tokens: np.ndarray  # [2, d]: CLS, distillation
  token_positions: np.ndarray  # [2, d]: their positional embeddings
  patch_positions: np.ndarray  # [freq, time, d]: the image grid fitted to the audio patch grid


def timm_encoder(state: dict, *, num_layers: int, num_heads: int, grid: tuple[int, int]) -> TimmEncoder:
  """The encoder of a timm ViT or DeiT state dict (name → array), its positional grid fitted to `grid`
  (frequency patches, time patches).  A plain ViT has no distillation token: it starts as the CLS token,
  with the CLS token's position.  The ImageNet classifier (`head`, `head_dist`) is not read."""
  state = {key: np.asarray(value, np.float32) for key, value in state.items()}
  if f"blocks.{num_layers}.norm1.weight" in state:
    raise ValueError(f"the checkpoint has more than num_layers={num_layers} blocks (it holds blocks.{num_layers})")

  def pair(name):
    return state[f"{name}.weight"], state[f"{name}.bias"]

  params = {"patch_embed": patch_embed_params(*pair("patch_embed.proj")), "encoder_norm": _norm(*pair("norm"))}
  for index in range(num_layers):
    prefix = f"blocks.{index}"
    qkv = zip(*(np.split(tensor, 3) for tensor in pair(f"{prefix}.attn.qkv")))
    weights = dict(zip(("query", "key", "value"), qkv))
    weights.update({key: pair(f"{prefix}.{name}") for key, name in TIMM_LAYER_NAMES.items()})
    params[f"block_{index}"] = block_params(weights, num_heads)

  cls = state["cls_token"].reshape(1, -1)
  distilled = "dist_token" in state
  tokens = np.concatenate([cls, state["dist_token"].reshape(1, -1) if distilled else cls])
  positions = state["pos_embed"].reshape(-1, cls.shape[1])
  prefix = 2 if distilled else 1
  token_positions = positions[:2] if distilled else np.concatenate([positions[:1], positions[:1]])
  side = math.isqrt(len(positions) - prefix)
  if side * side != len(positions) - prefix:
    raise ValueError(f"pos_embed holds {len(positions) - prefix} patch positions, not a square grid")
  patch_positions = fit_image_positions(positions[prefix:].reshape(side, side, -1), grid)
  return TimmEncoder(params, tokens, token_positions, patch_positions)


def params_from_timm(state: dict, *, num_layers: int, num_heads: int, grid: tuple[int, int]) -> dict:
  """AST parameters from a timm ViT/DeiT state dict (see `timm_encoder`; `grid` is `AST.positional_grid()`),
  all but `head_norm` and `head`, which `merge_params` leaves as initialised."""
  encoder = timm_encoder(state, num_layers=num_layers, num_heads=num_heads, grid=grid)
  dim = encoder.tokens.shape[1]
  return {**encoder.params, "cls_token": encoder.tokens[:1, None], "distillation_token": encoder.tokens[1:, None],
          "position_embeddings": np.concatenate([encoder.token_positions,
                                                 encoder.patch_positions.reshape(-1, dim)])[None]}


def merge_params(fresh: dict, imported: dict, path: str = "") -> dict:
  """`fresh` (a model's initialised parameters) with `imported`'s tensors in their place; a ValueError names
  an imported tensor the model lacks or whose shape differs."""
  merged = dict(fresh)
  for key, value in imported.items():
    name = f"{path}{key}"
    if key not in fresh:
      raise ValueError(f"the model has no parameter {name}")
    if isinstance(value, dict):
      merged[key] = merge_params(fresh[key], value, f"{name}/")
    elif np.shape(value) != np.shape(fresh[key]):
      raise ValueError(f"{name} is {list(np.shape(value))} in the file and {list(np.shape(fresh[key]))} in the model")
    else:
      merged[key] = value
  return merged
