"""Task families: what a model is trained on, its loss, and how its evaluation becomes metrics.

A task object tells the trainer:
  window_samples                     the length of the audio windows the pipeline cuts for training
  eval_window_samples, eval_hop_samples   the sliding windows cut from evaluation clips
  model_kwargs()                     what the model is built with (e.g. num_classes)
  example_inputs()                   the model's positional arguments (a tuple) at batch 1, for initialising it
  model_inputs(batch)                the model's positional arguments (a tuple) for a batch
  loss(outputs, batch), eval_outputs(outputs, batch)   jitted, per batch, with model_inputs
  metrics(rows, num_clips)           host-side metrics from the concatenated eval_outputs rows
  headline_metric                    the key of `metrics` that an experiment table reports
  features(model, variables, audio)  representation tasks only: the `[batch, d]` vectors a linear probe reads
"""

import functools

import jax.numpy as jnp

from afx.errors import ConfigError
from afx.tasks.classification import ClassificationTask
from afx.tasks.generation import NextSampleTask
from afx.tasks.representation import ContrastiveTask, NextCodeTask, ReconstructionTask, Tokenizer

TASKS = ("multi_label", "single_label", "next_sample", "patch_reconstruction", "next_code", "simclr")


def _upstream(upstream: dict, name: str, task: str):
  if name not in upstream:
    raise ConfigError(f"task {task!r} builds on an earlier run: set config.upstream.{name} to its workdir")
  return upstream[name]


def make_task(config, *, num_dataset_classes: int, sample_rate: int, upstream: dict | None = None):
  """The task named by `config.task`, sized from the config's `data` group and the dataset.

  `upstream` holds the frozen earlier runs that `config.upstream` names (see `afx.train.trainer.load_upstream`).
  """
  data, upstream = config.data, upstream or {}
  window_samples, eval_hop_samples = (round(data.get(key, 0) * sample_rate) for key in ("clip_seconds", "eval_hop_seconds"))
  if config.task in ("multi_label", "single_label"):
    return ClassificationTask(config.task, num_dataset_classes, window_samples=window_samples,
                              eval_hop_samples=eval_hop_samples)
  if config.task == "next_sample":
    return NextSampleTask(context_samples=int(data.context_samples), past_samples=int(data.get("past_samples", 0)),
                          quantization=data.get("quantization", "mu_law"),
                          eval_hop_samples=int(data.eval_hop_samples),
                          eval_past_samples=int(data.get("eval_past_samples", 0)))
  if config.task == "patch_reconstruction":
    return ReconstructionTask(window_samples, eval_hop_samples)
  if config.task == "simclr":
    return ContrastiveTask(window_samples, eval_hop_samples, temperature=float(config.get("temperature", 0.1)))
  if config.task == "next_code":
    encoder = _upstream(upstream, "autoencoder", config.task)
    codebook = _upstream(upstream, "codebook", config.task)
    tokenizer = Tokenizer(functools.partial(encoder.model.apply, encoder.variables, method="encode"),
                          jnp.asarray(codebook["centroids"]))
    return NextCodeTask(tokenizer, window_samples, eval_hop_samples,
                        feature_pooling=config.get("feature_pooling", "mean"))
  raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}")


__all__ = ["TASKS", "ClassificationTask", "ContrastiveTask", "NextCodeTask", "NextSampleTask", "ReconstructionTask",
           "Tokenizer", "make_task"]
