"""Experiment configs: ml_collections Python files, `FILE:VARIANT` specs and `key=value` overrides.

A config file defines `get_config(variant: str | None) -> ml_collections.ConfigDict`.  Every training
config has the keys in `REQUIRED_KEYS`, so any run can be shortened or reshaped from the command line;
a staged config (`afx.train.stages`) has them in each of its training stages.  `load_config` adds the
`DEFAULT_KEYS` an unstaged config leaves out.
"""

import ast
import importlib.util
import json
import os
import sys
from typing import Any, Iterable

import ml_collections

from afx.errors import ConfigError

REQUIRED_KEYS = ("batch_size", "total_steps", "log_every", "checkpoint_every", "eval_every", "seed",
                 "attention_impl")
# Keys an unstaged training config gets with these values when its file leaves them out, so that
# `--config.KEY=VALUE` works on every config.
DEFAULT_KEYS = {
    "init_from": None,  # a published weight file the run starts from (see afx.train.weights)
    "average_checkpoints": 0,  # > 1: evaluate and serve the mean of the last N checkpoints' parameters
}


def load_module(path: str):
  """Import a Python file by path (an experiment or config file) as a fresh module."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist; give --config PATH.py[:VARIANT]")
  name = "afx_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `spec` = `path/to/file.py[:variant]`, e.g. `experiments/verma_berger_2021.py:small,tiny`."""
  path, _, variant = spec.partition(":")
  module = load_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} has no get_config(variant) function")
  try:
    config = module.get_config(variant or None)
  except (KeyError, ValueError) as error:
    raise ConfigError(f"config {spec}: {error}") from None
  trained = [(f"stages.{name}.", stage) for name, stage in config.stages.items() if stage.get("kind") == "train"] \
      if "stages" in config else [("", config)]
  for prefix, part in trained:
    missing = [key for key in REQUIRED_KEYS if key not in part and key not in config]
    if missing:
      raise ConfigError(f"config {spec} lacks the required key {prefix}{missing[0]!r}")
  if "stages" not in config:
    for key, value in DEFAULT_KEYS.items():
      if key not in config:
        config[key] = value
  return config


def _parse_value(text: str, current: Any, key: str) -> Any:
  """`text` as the type of the value it replaces (a string stays a string)."""
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key} expects true or false, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text
    raise ConfigError(f"--config.{key}={text!r} is not a valid {type(current).__name__}") from None
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if current is not None and isinstance(current, (int, float, tuple, list)) and not isinstance(value, type(current)):
    if not (isinstance(current, (tuple, list)) and isinstance(value, (tuple, list))):
      raise ConfigError(f"--config.{key}={text!r} is not a valid {type(current).__name__}")
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Apply `key.sub=value` overrides (a leading `--config.` is allowed); an unknown key is an error."""
  config = ml_collections.ConfigDict(config.to_dict())
  for override in overrides:
    assignment = override.removeprefix("--").removeprefix("config.")
    key, sep, text = assignment.partition("=")
    if not sep:
      raise ConfigError(f"override {override!r} has no '='; write --config.{key}=VALUE")
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ConfigError(f"unknown config key {'.'.join(parents[:depth + 1])!r} in --config.{key}")
      node = node[part]
    if leaf not in node:
      known = ", ".join(sorted(node.keys()))
      raise ConfigError(f"unknown config key {key!r}; known keys here: {known}")
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"config key {key!r} is a group; set one of its keys, e.g. --config.{key}.{next(iter(node[leaf].keys()))}=...")
    node[leaf] = _parse_value(text, node[leaf], key)
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(path: str) -> ml_collections.ConfigDict:
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise ConfigError(f"{path} does not exist; is the --workdir one that `run.py train` wrote?") from None
  except json.JSONDecodeError as error:
    raise ConfigError(f"{path} is not valid JSON ({error}); rerun `run.py train` to rewrite it") from None


def table_variant(variant: str | None, rows: dict, default: str) -> tuple[str, bool]:
  """`(row, tiny)` of an experiment variant `ROW` or `ROW,tiny`; `mean_of` rows train nothing, so they have none."""
  row, _, scale = (variant or default).partition(",")
  if row not in rows or "mean_of" in rows[row]:
    trained = [name for name, info in rows.items() if "mean_of" not in info]
    raise KeyError(f"unknown row {row!r}; rows are {', '.join(trained)}")
  if scale not in ("", "tiny"):
    raise ValueError(f"unknown scale {scale!r}; use ROW or ROW,tiny")
  return row, scale == "tiny"
