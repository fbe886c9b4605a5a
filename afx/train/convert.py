"""Turn published weights into an afx workdir that `predict` and `eval` serve.

`convert_hf(DIR, OUT)` reads a Hugging Face `ASTForAudioClassification` checkpoint directory:
`config.json`, `model.safetensors` or `pytorch_model.bin` (the latter needs torch), and, when
present, `preprocessor_config.json` (feature settings and normalisation statistics).  OUT gets
`config.json` (an afx config for the `ast` model), `dataset.json` (label names from `id2label`,
the sample rate) and `checkpoints/0/` with the converted parameters.
"""

import json
import os

import jax
import ml_collections
import numpy as np

from afx.errors import ConfigError
from afx.audio import kaldi
from afx.models import ast
from afx.train import config as config_lib
from afx.train import trainer
from afx.train.checkpoint import Checkpoints
from afx.train.weights import read_state_dict, with_params
from data_pipelines import DatasetInfo

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: str, *, required: bool) -> dict:
  if not os.path.exists(path):
    if required:
      raise ConfigError(f"{path} does not exist; --from-hf needs a Hugging Face model directory "
                        "(config.json and model.safetensors or pytorch_model.bin)")
    return {}
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise ConfigError(f"{path} is not valid JSON ({error})") from None


def weight_file(directory: str) -> str:
  """The Hugging Face weight file in `directory`, safetensors preferred."""
  for name in WEIGHT_FILES:
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise ConfigError(f"{directory} holds neither {' nor '.join(WEIGHT_FILES)}")


def ast_config(hf: dict, preprocessor: dict) -> tuple[ml_collections.ConfigDict, int]:
  """An afx config that rebuilds the Hugging Face AST described by `hf` (config.json) and `preprocessor`,
  and its sample rate.  Training in the converted workdir fine-tunes from the converted weights."""
  if hf.get("model_type") != "audio-spectrogram-transformer":
    raise ConfigError(f"config.json has model_type {hf.get('model_type')!r}; --from-hf converts "
                      "'audio-spectrogram-transformer' checkpoints")
  if hf.get("hidden_act", "gelu") != "gelu" or not hf.get("qkv_bias", True):
    raise ConfigError("config.json: only hidden_act 'gelu' with qkv_bias true is supported")
  positional_frames = int(hf.get("max_length", 1024))
  normalize = preprocessor.get("do_normalize", True)
  sample_rate = int(preprocessor.get("sampling_rate", 16000))
  input_frames = int(preprocessor.get("max_length", positional_frames))
  config = ml_collections.ConfigDict()
  single = hf.get("problem_type") == "single_label_classification"
  config.task = "single_label" if single else "multi_label"
  config.seed = 0
  config.batch_size = 8
  config.eval_batch_size = 8
  config.total_steps = 10_000
  config.log_every = 100
  config.checkpoint_every = 1000
  config.eval_every = 0
  config.attention_impl = None
  config.fsdp = 1
  config.model = ml_collections.ConfigDict(dict(
      name="ast", num_mel_bins=int(hf.get("num_mel_bins", 128)), input_frames=input_frames,
      positional_frames=positional_frames, positional_resize="crop",
      feature_mean=float(preprocessor.get("mean", kaldi.AUDIOSET_MEAN)) if normalize else 0.0,
      feature_std=float(preprocessor.get("std", kaldi.AUDIOSET_STD)) if normalize else 0.5,
      patch_size=int(hf.get("patch_size", 16)), frequency_stride=int(hf.get("frequency_stride", 10)),
      time_stride=int(hf.get("time_stride", 10)), embed_dim=int(hf["hidden_size"]),
      num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
      mlp_dim=int(hf["intermediate_size"]), dropout_rate=0.0, layer_norm_epsilon=float(hf.get("layer_norm_eps", 1e-12))))
  # Windows as long as the model's input (10.24 s at 1024 frames of 10 ms), half-overlapping.
  seconds = round(input_frames * 0.010, 2)
  config.data = ml_collections.ConfigDict(dict(
      name="audioset/16k" if sample_rate == 16000 else "audioset/32k", data_dir=None, manual_dir=None, folder=None,
      clip_seconds=seconds, eval_hop_seconds=seconds / 2, train_split="balanced_train", eval_split="eval",
      test_split="eval", num_threads=4, builder_kwargs=ml_collections.ConfigDict()))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-5, b1=0.9, b2=0.999, weight_decay=1e-4, schedule="cosine", warmup_steps=0,
      end_factor=0.0, grad_clip_norm=1.0))
  return config, sample_rate


def class_names(hf: dict) -> list[str]:
  labels = hf.get("id2label") or {}
  if not labels:
    raise ConfigError("config.json has no id2label; the converted model needs its label names")
  return [labels[str(index)] if str(index) in labels else labels[index] for index in range(len(labels))]


def convert_hf(source: str, workdir: str, overrides=()) -> dict:
  """Convert the Hugging Face AST in `source` into the afx workdir `workdir`; returns a summary."""
  source, workdir = os.path.abspath(os.path.expanduser(source)), os.path.abspath(workdir)
  hf = _read_json(os.path.join(source, "config.json"), required=True)
  preprocessor = _read_json(os.path.join(source, "preprocessor_config.json"), required=False)
  config, sample_rate = ast_config(hf, preprocessor)
  config = config_lib.apply_overrides(config, overrides)
  names = class_names(hf)
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"{workdir} already holds checkpoints; convert into a new --workdir")
  params = ast.params_from_hf(read_state_dict(weight_file(source)), num_layers=config.model.num_layers,
                              num_heads=config.model.num_heads)
  info = DatasetInfo(sample_rate, tuple(names))
  run = trainer.make_run(config, info)
  expected = jax.tree_util.tree_map(lambda leaf: leaf.shape, run.abstract_state.params)
  if jax.tree_util.tree_map(np.shape, params) != expected:
    raise ConfigError(f"the tensors in {source} do not fit its config.json (parameter shapes differ)")
  state = with_params(run, run.init(jax.random.key(0)), params)
  checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"))
  checkpoints.save(0, state)
  checkpoints.wait()
  checkpoints.close()
  trainer.write_json(os.path.join(workdir, "config.json"), json.loads(config_lib.to_json(config)))
  trainer.write_dataset_json(workdir, config.data.name, info)
  return {"workdir": workdir, "model": "ast", "classes": len(names), "sample_rate": sample_rate,
          "params": int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))}
