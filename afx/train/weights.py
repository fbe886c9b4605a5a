"""Published weights into a run's state: `init_from_weights(run, state, PATH)`.

`train` calls it when a fresh run has `init_from=PATH`: the model's registered `weight_import`
(`afx.models.register_model`) maps the file's tensors onto its parameters, e.g. a timm ViT/DeiT
encoder into an `ast` or `passt` model, and those replace the fresh initialisation.
"""

import os
import pickle

import jax
import numpy as np

from afx import models
from afx.errors import ConfigError
from afx.models.ast import merge_params

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a weight file as NumPy arrays: `.safetensors`, `.npz`, or a PyTorch pickle (`.pth`, `.pt`,
  `.bin`; needs torch).  A state dict wrapped as {"model": {...}} (DeiT's published files) is unwrapped."""
  if not os.path.isfile(path):
    raise ConfigError(f"weight file {path} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  if path.endswith(".npz"):
    with np.load(path) as arrays:
      return dict(arrays)
  if not path.endswith(TORCH_SUFFIXES):
    raise ConfigError(f"{path} is not a weight file afx reads (.safetensors, .npz, {', '.join(TORCH_SUFFIXES)})")
  try:
    import torch
  except ImportError:
    raise ConfigError(f"{path} is a PyTorch file and torch is not installed; pip install 'afx[parity]' "
                      "or save the weights as safetensors") from None
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as error:
    raise ConfigError(f"{path} holds more than tensors and torch will not unpickle it safely ({error})") from None
  if isinstance(state.get("model"), dict):
    state = state["model"]
  return {key: value.float().numpy() for key, value in state.items() if isinstance(value, torch.Tensor)}


def with_params(run, state, params):
  """`state` holding `params`, with the optimiser state initialised from them, laid out as `run`'s state."""
  return jax.device_put(state.replace(params=params, opt_state=run.tx.init(params)), run.state_shardings)


def init_from_weights(run, state, path: str):
  """`state` (a fresh run's) with the parameters that the weight file `path` gives its model; the rest
  (e.g. a classifier head) keeps its initialisation.  A tensor that does not fit is a ConfigError naming it."""
  name = run.config.model.name
  weight_import = models.model_entry(name).weight_import
  if weight_import is None:
    able = ", ".join(sorted(n for n, entry in models.MODELS.items() if entry.weight_import))
    raise ConfigError(f"init_from imports published weights into the models {able}, not model {name!r}; "
                      "leave init_from unset")
  path = os.path.expanduser(path)
  state_dict = read_state_dict(path)
  try:
    params = merge_params(state.params, weight_import(state_dict, run.model))
  except KeyError as error:
    raise ConfigError(f"init_from: {path} has no tensor {error.args[0]!r}; is it a weight file of a {name!r} model "
                      "(a timm ViT/DeiT for ast and passt, an ESPnet checkpoint for conformer and rnn_seq2seq)?") from None
  except ValueError as error:
    raise ConfigError(f"init_from: {path} does not fit model {name!r}: {error}") from None
  return with_params(run, state, params)
