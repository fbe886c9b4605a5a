"""Audio classification: multi-label (sigmoid + binary cross-entropy) or single-label (softmax).

Targets are always `[batch, classes]` multi-hot arrays; for single-label data each row is one-hot.
Metrics are computed on the host in float64 NumPy from clip-level scores.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.stats import norm

from afx.tasks.base import WindowBatching, register_task, seconds_to_samples
from data_pipelines.pipeline import average_by_clip

TASKS = ("multi_label", "single_label")


def loss(logits, targets, *, task: str):
  """Mean loss over the batch: binary cross-entropy summed over classes, or softmax cross-entropy."""
  logits = logits.astype(jnp.float32)
  if task == "multi_label":
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(axis=-1).mean()
  return optax.softmax_cross_entropy(logits, targets).mean()


def scores(logits, *, task: str):
  """Per-class probabilities: sigmoid for multi-label, softmax for single-label."""
  logits = logits.astype(jnp.float32)
  return jax.nn.sigmoid(logits) if task == "multi_label" else jax.nn.softmax(logits, axis=-1)


def _ranked_counts(scores_1d, targets_1d):
  """True and false positives at each distinct score threshold, highest threshold first."""
  order = np.argsort(-scores_1d, kind="mergesort")
  ranked_scores, ranked_targets = scores_1d[order], targets_1d[order]
  last_of_tie = np.r_[np.nonzero(np.diff(ranked_scores))[0], ranked_scores.size - 1]
  true_pos = np.cumsum(ranked_targets)[last_of_tie]
  false_pos = last_of_tie + 1 - true_pos
  return true_pos, false_pos


def average_precision(scores_1d, targets_1d) -> float:
  """Area under the precision-recall curve as the step sum Σ (R_n − R_{n−1}) P_n over thresholds."""
  true_pos, false_pos = _ranked_counts(np.asarray(scores_1d, np.float64), np.asarray(targets_1d) > 0)
  precision = true_pos / (true_pos + false_pos)
  recall = true_pos / true_pos[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores_1d, targets_1d) -> float:
  """Area under the ROC curve, trapezoidal over distinct thresholds (ties count half)."""
  true_pos, false_pos = _ranked_counts(np.asarray(scores_1d, np.float64), np.asarray(targets_1d) > 0)
  tpr = np.r_[0.0, true_pos / true_pos[-1]]
  fpr = np.r_[0.0, false_pos / false_pos[-1]]
  return float(np.trapezoid(tpr, fpr))


def d_prime(auc: float) -> float:
  """Sensitivity index from ROC AUC: d′ = √2 · Φ⁻¹(AUC)."""
  return float(math.sqrt(2.0) * norm.ppf(auc))


def _classes_with_both(targets):
  positives = targets.sum(axis=0)
  return np.nonzero((positives > 0) & (positives < targets.shape[0]))[0]


def mean_average_precision(scores_2d, targets_2d) -> float:
  """Macro mAP over the classes that have at least one positive and one negative clip."""
  targets_2d = np.asarray(targets_2d) > 0
  classes = _classes_with_both(targets_2d)
  return float(np.mean([average_precision(scores_2d[:, c], targets_2d[:, c]) for c in classes]))


def mean_roc_auc(scores_2d, targets_2d) -> float:
  targets_2d = np.asarray(targets_2d) > 0
  classes = _classes_with_both(targets_2d)
  return float(np.mean([roc_auc(scores_2d[:, c], targets_2d[:, c]) for c in classes]))


def accuracy(scores_2d, targets_2d) -> float:
  return float(np.mean(np.argmax(scores_2d, axis=-1) == np.argmax(targets_2d, axis=-1)))


def metrics(scores_2d, targets_2d, *, task: str) -> dict[str, float]:
  """`{"mAP", "d_prime"}` for multi-label tasks (d′ from the macro ROC AUC), `{"accuracy"}` otherwise."""
  scores_2d = np.asarray(scores_2d, np.float64)
  if task == "multi_label":
    return {"mAP": mean_average_precision(scores_2d, targets_2d),
            "d_prime": d_prime(mean_roc_auc(scores_2d, targets_2d))}
  return {"accuracy": accuracy(scores_2d, targets_2d)}


def headline_metric(task: str) -> str:
  return "mAP" if task == "multi_label" else "accuracy"


@register_task(*TASKS)
@dataclasses.dataclass(frozen=True)
class ClassificationTask(WindowBatching):
  """Clip labels from fixed-length windows of audio; evaluation averages window scores per clip."""
  kind: str  # "multi_label" or "single_label"
  num_classes: int
  window_samples: int
  eval_hop_samples: int

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    return cls(config.task, info.num_classes, window_samples=seconds_to_samples(config.data, "clip_seconds", info.sample_rate),
               eval_hop_samples=seconds_to_samples(config.data, "eval_hop_seconds", info.sample_rate))

  @property
  def headline_metric(self) -> str:
    return headline_metric(self.kind)

  @property
  def dataset_classes(self) -> int:
    return self.num_classes

  def model_kwargs(self) -> dict:
    return {"num_classes": self.num_classes}

  def example_inputs(self) -> tuple:
    return np.zeros((1, self.window_samples), np.float32), np.full((1,), self.window_samples, np.int32)

  def model_inputs(self, batch):
    """The windows and how many of each one's samples are audio (the rest is zero padding)."""
    return batch["audio"], batch["samples"]

  def loss(self, outputs, batch):
    return loss(outputs, batch["targets"], task=self.kind), {}

  def eval_outputs(self, outputs, batch) -> dict:
    return {"scores": scores(outputs, task=self.kind), "clip": batch["clip"], "targets": batch["targets"]}

  def metrics(self, rows: dict[str, np.ndarray], num_clips: int) -> dict:
    clip_scores, clip_targets = average_by_clip(num_clips, rows["scores"], rows["clip"], rows["targets"])
    return metrics(clip_scores, clip_targets, task=self.kind)

  def clip_scores(self, rows: dict[str, np.ndarray]) -> np.ndarray:
    """`[classes]` scores of one file: the mean over its windows' rows (those with `clip >= 0`)."""
    return np.asarray(rows["scores"], np.float64)[np.asarray(rows["clip"]) >= 0].mean(axis=0)
