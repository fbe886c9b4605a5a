"""Task families: what a model is trained on, its loss, and how its evaluation becomes metrics.

A task object tells the trainer:
  window_samples                     the length of the audio windows the pipeline cuts for training
  eval_window_samples, eval_hop_samples   the sliding windows cut from evaluation clips
  model_kwargs()                     what the model is built with (e.g. num_classes)
  example_inputs()                   a batch-1 input for initialising the model
  model_inputs(batch), loss(outputs, batch), eval_outputs(outputs, batch)   jitted, per batch
  metrics(rows, num_clips)           host-side metrics from the concatenated eval_outputs rows
  headline_metric                    the key of `metrics` that an experiment table reports
"""

from afx.errors import ConfigError
from afx.tasks.classification import ClassificationTask
from afx.tasks.generation import NextSampleTask

TASKS = ("multi_label", "single_label", "next_sample")


def make_task(config, *, num_dataset_classes: int, sample_rate: int):
  """The task named by `config.task`, sized from the config's `data` group and the dataset."""
  data = config.data
  if config.task in ("multi_label", "single_label"):
    return ClassificationTask(config.task, num_dataset_classes, window_samples=round(data.clip_seconds * sample_rate),
                              eval_hop_samples=round(data.eval_hop_seconds * sample_rate))
  if config.task == "next_sample":
    return NextSampleTask(context_samples=int(data.context_samples), past_samples=int(data.get("past_samples", 0)),
                          quantization=data.get("quantization", "mu_law"),
                          eval_hop_samples=int(data.eval_hop_samples),
                          eval_past_samples=int(data.get("eval_past_samples", 0)))
  raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}")


__all__ = ["TASKS", "ClassificationTask", "NextSampleTask", "make_task"]
