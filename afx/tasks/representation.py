"""Representation learning (Verma & Smith 2020): the tasks of its stages and the linear probe.

  patch_reconstruction   a patch autoencoder, MSE on standardised log-mel patches
  next_code              a causal Transformer predicting the next k-means code of a patch sequence
  simclr                 NT-Xent between two augmented views of each window

A representation task also has `features(model, variables, audio)`: the frozen `[batch, d]`
vector of a window that the linear probe reads (`fit_linear_probe`, `probe_accuracy`).
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from afx.errors import ConfigError
from afx.layers import kmeans
from afx.tasks.base import WindowBatching, register_task, seconds_to_samples, upstream_run
from afx.tasks import contrastive
from afx.tasks.generation import next_sample_scores

FEATURE_POOLINGS = ("mean", "last")


def _valid_mean(rows: dict[str, np.ndarray], keys) -> dict:
  keep = np.asarray(rows["clip"]) >= 0
  return {key: float(np.asarray(rows[key], np.float64)[keep].mean()) for key in keys}


def _windows(config, info) -> dict:
  """The window lengths of a representation task, from the config's `data` group."""
  return dict(window_samples=seconds_to_samples(config.data, "clip_seconds", info.sample_rate),
              eval_hop_samples=seconds_to_samples(config.data, "eval_hop_seconds", info.sample_rate),
              dataset_classes=info.num_classes)


@register_task("patch_reconstruction")
@dataclasses.dataclass(frozen=True)
class ReconstructionTask(WindowBatching):
  """Train a patch autoencoder (`afx.models.PatchAutoencoder`) on windows of `window_samples`."""
  window_samples: int
  eval_hop_samples: int
  dataset_classes: int = 0  # the clip labels batches carry (for a later linear probe)
  headline_metric = "reconstruction_mse"

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    return cls(**_windows(config, info))

  def model_kwargs(self) -> dict:
    return {}

  def example_inputs(self) -> tuple:
    return (np.zeros((1, self.window_samples), np.float32),)

  def model_inputs(self, batch):
    return (batch["audio"],)

  def loss(self, outputs, batch):
    return jnp.mean(jnp.square(outputs["reconstruction"] - outputs["patches"])), {}

  def eval_outputs(self, outputs, batch) -> dict:
    error = jnp.mean(jnp.square(outputs["reconstruction"] - outputs["patches"]), axis=(1, 2))
    return {"reconstruction_mse": error, "clip": batch["clip"]}

  def metrics(self, rows: dict[str, np.ndarray], num_clips: int) -> dict:
    return _valid_mean(rows, ["reconstruction_mse"])


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Audio windows → patch codes: a frozen encoder's vectors, each replaced by its nearest centroid."""
  encode: Callable  # waveform [batch, samples] → [batch, patches, d]
  centroids: jax.Array  # [num_codes, d]

  @property
  def num_codes(self) -> int:
    return self.centroids.shape[0]

  def __call__(self, waveform):
    vectors = self.encode(waveform)
    codes, _ = kmeans.assign(vectors.reshape(-1, vectors.shape[-1]), self.centroids)
    return codes.reshape(vectors.shape[:-1])

  def num_patches(self, window_samples: int) -> int:
    return jax.eval_shape(self.encode, jax.ShapeDtypeStruct((1, window_samples), jnp.float32)).shape[1]


@register_task("next_code")
@dataclasses.dataclass(frozen=True)
class NextCodeTask(WindowBatching):
  """Language modelling on the patch codes of each window, scored at every position.

  The model (`afx.models.RawTransformer` with `num_classes` = the number of codes) sees codes
  0..n−2 and predicts 1..n−1.  Its representation of a window is the mean (or the last) of its
  normalised last-layer states over all n codes.
  """
  tokenizer: Tokenizer
  window_samples: int
  eval_hop_samples: int
  dataset_classes: int = 0
  feature_pooling: str = "mean"
  headline_metric = "top1_accuracy"

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    encoder = upstream_run(upstream, "autoencoder", config.task)
    codebook = upstream_run(upstream, "codebook", config.task)
    tokenizer = Tokenizer(functools.partial(encoder.model.apply, encoder.variables, method="encode"),
                          jnp.asarray(codebook["centroids"]))
    return cls(tokenizer, **_windows(config, info), feature_pooling=config.get("feature_pooling", "mean"))

  def __post_init__(self):
    if self.feature_pooling not in FEATURE_POOLINGS:
      raise ConfigError(f"unknown feature_pooling {self.feature_pooling!r}; choose one of "
                        f"{', '.join(FEATURE_POOLINGS)}")

  @functools.cached_property
  def num_positions(self) -> int:
    return self.tokenizer.num_patches(self.window_samples)

  def model_kwargs(self) -> dict:
    return {"num_classes": self.tokenizer.num_codes, "context_samples": self.num_positions, "past_samples": 0}

  def example_inputs(self) -> tuple:
    return (np.zeros((1, self.num_positions - 1), np.int32),)

  def model_inputs(self, batch):
    return (self.tokenizer(batch["audio"])[:, :-1],)

  def loss(self, outputs, batch):
    targets = self.tokenizer(batch["audio"])[:, 1:]
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), targets).mean(), {}

  def eval_outputs(self, outputs, batch) -> dict:
    codes = self.tokenizer(batch["audio"])
    batch_size, positions = codes.shape[0], codes.shape[1] - 1
    scores = next_sample_scores(outputs.reshape(batch_size * positions, -1), codes[:, 1:].reshape(-1),
                                codes[:, :-1].reshape(-1))
    per_window = {key: scores[key].reshape(batch_size, positions).astype(jnp.float32).mean(axis=1)
                  for key in ("nll_bits", "top1", "top5")}
    usage = jax.vmap(lambda row: jnp.bincount(row, length=self.tokenizer.num_codes))(codes)
    return {**per_window, "code_counts": usage, "clip": batch["clip"]}

  def metrics(self, rows: dict[str, np.ndarray], num_clips: int) -> dict:
    means = _valid_mean(rows, ["nll_bits", "top1", "top5"])
    counts = np.asarray(rows["code_counts"], np.float64)[np.asarray(rows["clip"]) >= 0].sum(axis=0)
    probabilities = counts[counts > 0] / counts.sum()
    return {"top1_accuracy": means["top1"], "top5_accuracy": means["top5"], "nll_bits": means["nll_bits"],
            "codes_used": int((counts > 0).sum()),
            "code_perplexity": float(np.exp(-np.sum(probabilities * np.log(probabilities))))}

  def features(self, model, variables, audio):
    states = model.apply(variables, self.tokenizer(audio), method="hidden")
    return states.mean(axis=1) if self.feature_pooling == "mean" else states[:, -1]


@register_task("simclr")
@dataclasses.dataclass(frozen=True)
class ContrastiveTask(WindowBatching):
  """SimCLR (`afx.models.PatchSimCLR`): NT-Xent over the global batch's 2·batch views.

  Evaluation draws two views of every window with a fixed key and reports how often a view's
  nearest neighbour among the evaluation batch's views is its partner (`contrastive_accuracy`).
  """
  window_samples: int
  eval_hop_samples: int
  dataset_classes: int = 0
  temperature: float = 0.1
  headline_metric = "contrastive_accuracy"

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    return cls(**_windows(config, info), temperature=float(config.get("temperature", 0.1)))

  def model_kwargs(self) -> dict:
    return {}

  def example_inputs(self) -> tuple:
    return (np.zeros((1, self.window_samples), np.float32),)

  def model_inputs(self, batch):
    return (batch["audio"],)

  def loss(self, outputs, batch):
    return contrastive.nt_xent(outputs, self.temperature), {}

  def eval_outputs(self, outputs, batch) -> dict:
    batch_size = batch["audio"].shape[0]
    partner_found = contrastive.contrastive_accuracy(outputs).reshape(2, batch_size)
    return {"partner_found": partner_found.astype(jnp.float32).mean(axis=0), "clip": batch["clip"]}

  def metrics(self, rows: dict[str, np.ndarray], num_clips: int) -> dict:
    return {"contrastive_accuracy": _valid_mean(rows, ["partner_found"])["partner_found"]}

  def features(self, model, variables, audio):
    return model.apply(variables, audio, method="embed")


def fit_linear_probe(features, labels, num_classes: int, *, steps: int = 1000, learning_rate: float = 0.01,
                     weight_decay: float = 1e-4, seed: int = 0) -> dict:
  """A softmax linear classifier on standardised `features [n, d]` for int `labels [n]`, full-batch AdamW.

  Returns `{"mean", "scale", "kernel", "bias"}` (NumPy); `probe_predict` applies it.
  """
  features = np.asarray(features, np.float32)
  mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
  x = jnp.asarray((features - mean) / scale)
  y = jnp.asarray(labels, jnp.int32)
  params = {"kernel": jax.random.normal(jax.random.key(seed), (x.shape[1], num_classes)) * 0.01,
            "bias": jnp.zeros(num_classes)}
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  def objective(params):
    logits = x @ params["kernel"] + params["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def run(params):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(objective)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), length=steps)
    return params

  params = jax.device_get(run(params))
  return {"mean": mean, "scale": scale, "kernel": np.asarray(params["kernel"]), "bias": np.asarray(params["bias"])}


def probe_predict(probe: dict, features) -> np.ndarray:
  """Class indices the probe assigns to `features [n, d]`."""
  x = (np.asarray(features, np.float64) - probe["mean"]) / probe["scale"]
  return np.argmax(x @ probe["kernel"] + probe["bias"], axis=-1)


def chance_accuracy(train_labels, test_labels) -> float:
  """Accuracy on the test labels of always answering the most frequent training class."""
  most_frequent = np.bincount(np.asarray(train_labels)).argmax()
  return float(np.mean(np.asarray(test_labels) == most_frequent))
