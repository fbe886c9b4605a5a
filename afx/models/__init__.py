"""Models looked up by name: `build_model(model_config, num_classes=..., attention_impl=...)`.

Clip classifiers (`ast`, `passt`, `audio_transformer`, `vgg_like`) are called as
`model(waveform [batch, n], samples [batch] | None, train=...)`, where `samples` counts each row's real
samples before its zero padding: AST pads the filterbank after them, as its original does; the others,
as theirs, see the padded waveform.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax

from afx.errors import ConfigError
from afx.models import audio_transformer
from afx.models.ast import AST
from afx.models.audio_transformer import AudioTransformer
from afx.models.passt import PaSST
from afx.models.patch_representation import PatchAutoencoder, PatchSimCLR
from afx.models.raw_transformer import RawTransformer
from afx.models.vgg_like import VGGLike
from afx.models.wavenet import WaveNet

MODELS: dict[str, type[nn.Module]] = {
    "ast": AST,
    "audio_transformer": AudioTransformer,
    "passt": PaSST,
    "patch_autoencoder": PatchAutoencoder,
    "patch_simclr": PatchSimCLR,
    "raw_transformer": RawTransformer,
    "vgg_like": VGGLike,
    "wavenet": WaveNet,
}


def build_model(model_config: dict[str, Any], **fixed: Any) -> nn.Module:
  """The module named by `model_config["name"]`, built with the config's other keys and `fixed`.

  `fixed` carries what the run decides rather than the model config (`num_classes` and the task's
  windows, `attention_impl` from the top-level config); a model takes those of its fields it has.  An unknown name or key is a `ConfigError`.
  """
  kwargs = dict(model_config)
  name = kwargs.pop("name", None)
  if name not in MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of {', '.join(sorted(MODELS))}")
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"model {name!r} has no option {unknown[0]!r} (config key model.{unknown[0]}); "
                      f"its options are {', '.join(sorted(fields - set(fixed)))}")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(**kwargs, **{k: v for k, v in fixed.items() if k in fields})


# Figures a model writes about itself after training: name → fn(params, *, sample_rate, directory).
FIGURES: dict[str, Callable] = {
    "audio_transformer": audio_transformer.write_figures,
}


def write_figures(name: str, params, *, sample_rate: int, directory: str) -> list[str]:
  """Write the figures registered for model `name` into `directory`; returns their paths."""
  return FIGURES[name](params, sample_rate=sample_rate, directory=directory) if name in FIGURES else []


def parameter_count(params) -> int:
  """Number of scalars in a parameter tree (works on `jax.eval_shape` output too)."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = ["AST", "FIGURES", "MODELS", "AudioTransformer", "PaSST", "PatchAutoencoder", "PatchSimCLR", "RawTransformer", "VGGLike", "WaveNet", "build_model", "parameter_count", "write_figures"]
