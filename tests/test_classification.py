"""Classification losses and metrics against scikit-learn, SciPy and direct formulas."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from afx.tasks import classification


@pytest.fixture
def scored_clips():
  rng = np.random.default_rng(0)
  targets = rng.random((400, 12)) < 0.15
  targets[0] = True  # every class has a positive
  scores = np.round(rng.random((400, 12)) + 0.6 * targets, 2)  # rounding makes ties
  return scores, targets


def test_mean_average_precision_equals_sklearn_macro(scored_clips):
  scores, targets = scored_clips
  assert classification.mean_average_precision(scores, targets) == pytest.approx(
      average_precision_score(targets, scores, average="macro"), abs=1e-12)


def test_d_prime_is_sqrt2_probit_of_sklearn_macro_auc(scored_clips):
  scores, targets = scored_clips
  auc = roc_auc_score(targets, scores, average="macro")
  got = classification.metrics(scores, targets, task="multi_label")
  assert got["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(auc), abs=1e-10)
  assert got["mAP"] == pytest.approx(average_precision_score(targets, scores, average="macro"), abs=1e-12)


def test_classes_without_positives_are_left_out_of_map():
  scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.4]])
  targets = np.array([[1, 0], [0, 0], [1, 0]])
  assert classification.mean_average_precision(scores, targets) == pytest.approx(1.0)


def test_accuracy_counts_argmax_matches():
  scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
  targets = np.eye(3)[[1, 1, 2]]
  assert classification.metrics(scores, targets, task="single_label") == {"accuracy": pytest.approx(2 / 3)}


def test_losses_match_their_formulas():
  logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
  targets = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
  probs = 1 / (1 + np.exp(-logits))
  bce = -(targets * np.log(probs) + (1 - targets) * np.log(1 - probs)).sum(1).mean()
  assert float(classification.loss(jnp.asarray(logits), targets, task="multi_label")) == pytest.approx(bce, rel=1e-6)
  onehot = np.eye(3, dtype=np.float32)[[0, 1]]
  softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  ce = -np.log((softmax * onehot).sum(1)).mean()
  assert float(classification.loss(jnp.asarray(logits), onehot, task="single_label")) == pytest.approx(ce, rel=1e-6)
