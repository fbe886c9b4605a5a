"""Models looked up by name: `build_model(model_config, num_classes=..., attention_impl=...)`.

Each model is registered with `register_model(name, cls, weight_import=, figures=)`:
  weight_import  `fn(state_dict, model) -> params`: the parameters a published weight file gives the model
                 (`--config.init_from`; see `afx.train.weights`), merged into its fresh initialisation
  figures        `fn(params, *, sample_rate, directory) -> [paths]`: figures a model writes about itself
                 after training

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
from afx.models import ast, audio_transformer, conformer, passt, rnn_seq2seq
from afx.models.ast import AST
from afx.models.audio_transformer import AudioTransformer
from afx.models.conformer import Conformer
from afx.models.passt import PaSST
from afx.models.patch_representation import PatchAutoencoder, PatchSimCLR
from afx.models.raw_transformer import RawTransformer
from afx.models.rnn_seq2seq import RnnSeq2Seq
from afx.models.speech_transformer import SpeechTransformer
from afx.models.vgg_like import VGGLike
from afx.models.wavenet import WaveNet

# Settings of the run that a model takes if it has a field of that name and otherwise does without.
HINTS = ("sample_rate", "attention_impl", "context_samples")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  cls: type[nn.Module]
  weight_import: Callable | None = None
  figures: Callable | None = None


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, cls: type[nn.Module], *, weight_import: Callable | None = None,
                   figures: Callable | None = None) -> None:
  if name in MODELS:
    raise ValueError(f"model {name!r} is registered twice")
  MODELS[name] = ModelEntry(cls, weight_import, figures)


def _timm_import(module):
  return lambda state_dict, model: module.params_from_timm(state_dict, num_layers=model.num_layers,
                                                           num_heads=model.num_heads, grid=model.positional_grid())


register_model("ast", AST, weight_import=_timm_import(ast))
register_model("audio_transformer", AudioTransformer, figures=audio_transformer.write_figures)
register_model("conformer", Conformer, weight_import=conformer.params_from_espnet)
register_model("passt", PaSST, weight_import=_timm_import(passt))
register_model("patch_autoencoder", PatchAutoencoder)
register_model("patch_simclr", PatchSimCLR)
register_model("raw_transformer", RawTransformer)
register_model("rnn_seq2seq", RnnSeq2Seq, weight_import=rnn_seq2seq.params_from_espnet)
register_model("speech_transformer", SpeechTransformer)
register_model("vgg_like", VGGLike)
register_model("wavenet", WaveNet)


def model_entry(name: str | None) -> ModelEntry:
  if name not in MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of {', '.join(sorted(MODELS))}")
  return MODELS[name]


def build_model(model_config: dict[str, Any], **fixed: Any) -> nn.Module:
  """The module named by `model_config["name"]`, built with the config's other keys and `fixed`.

  `fixed` carries what the run decides rather than the model config (`num_classes` and the task's
  shapes): the model must take each of them, except the `HINTS` (sample rate, attention
  implementation, context length), which it takes if it has them.  An unknown name or key, a config
  key that the run decides, or a fixed value the model cannot take is a `ConfigError`.
  """
  kwargs = dict(model_config)
  name = kwargs.pop("name", None)
  cls = model_entry(name).cls
  fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f"model {name!r} has no option {unknown[0]!r} (config key model.{unknown[0]}); "
                      f"its options are {', '.join(sorted(fields - set(fixed)))}")
  decided = sorted(set(kwargs) & set(fixed) - set(HINTS))
  if decided:
    raise ConfigError(f"config key model.{decided[0]} is decided by the task and dataset "
                      f"({decided[0]}={fixed[decided[0]]!r}); remove it from the model config")
  untaken = sorted(set(fixed) - fields - set(HINTS))
  if untaken:
    raise ConfigError(f"model {name!r} cannot take {untaken[0]}={fixed[untaken[0]]!r}, which the task needs; "
                      f"choose a model that has {untaken[0]!r} or change the task's settings (config.data)")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(**kwargs, **{k: v for k, v in fixed.items() if k in fields and k not in kwargs})


def write_figures(name: str, params, *, sample_rate: int, directory: str) -> list[str]:
  """Write the figures registered for model `name` into `directory`; returns their paths."""
  figures = model_entry(name).figures
  return figures(params, sample_rate=sample_rate, directory=directory) if figures else []


def parameter_count(params) -> int:
  """Number of scalars in a parameter tree (works on `jax.eval_shape` output too)."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = ["AST", "HINTS", "MODELS", "AudioTransformer", "Conformer", "ModelEntry", "PaSST", "PatchAutoencoder", "PatchSimCLR",
           "RawTransformer", "RnnSeq2Seq", "SpeechTransformer", "VGGLike", "WaveNet", "build_model", "model_entry", "parameter_count",
           "register_model", "write_figures"]
