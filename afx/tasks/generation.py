"""Next-sample prediction on quantised raw audio: loss, metrics, baselines and sampling.

Training windows are random crops of `past + context + 1` samples, quantised on the device
(8-bit mu-law by default, linear as an option).  The model sees `past + context` codes and is
trained with cross-entropy at every one of the `context` positions.  Evaluation scores the last
position of fixed sliding windows over the evaluation clips: top-1 and top-5 accuracy and the
negative log-likelihood in bits, with two baselines on the same windows:

  baseline_frequent5      the 5 classes most frequent among the evaluated windows' context samples
  baseline_previous_pm2   the previous sample's class ± 2 (5 classes)

Sampling (`sample`) runs a model's cached `decode_step` inside one `lax.scan`; `sample_naive`
recomputes the model over its whole context for every new sample and is the benchmark's yardstick.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from afx.audio.features import mu_law_decode, mu_law_encode
from afx.errors import ConfigError
from afx.tasks.base import WindowBatching, register_task

QUANTIZATIONS = ("mu_law", "linear")
BASELINES = ("baseline_frequent5", "baseline_previous_pm2")


def quantize(audio, kind: str = "mu_law", num_classes: int = 256):
  """Samples in [−1, 1] → int32 classes in [0, num_classes)."""
  if kind == "mu_law":
    return mu_law_encode(audio, mu=num_classes - 1)
  if kind == "linear":
    return jnp.clip(jnp.floor((audio + 1.0) * (num_classes / 2)), 0, num_classes - 1).astype(jnp.int32)
  raise ConfigError(f"unknown quantization {kind!r}; choose one of {', '.join(QUANTIZATIONS)}")


def dequantize(codes, kind: str = "mu_law", num_classes: int = 256):
  """Classes → samples in [−1, 1] (linear: each class's centre)."""
  if kind == "mu_law":
    return mu_law_decode(codes, mu=num_classes - 1)
  if kind == "linear":
    return (codes.astype(jnp.float32) + 0.5) * (2.0 / num_classes) - 1.0
  raise ConfigError(f"unknown quantization {kind!r}; choose one of {', '.join(QUANTIZATIONS)}")


def silence_code(kind: str = "mu_law", num_classes: int = 256) -> int:
  """The class of a zero sample: what precedes the start of a sequence."""
  return int(quantize(jnp.zeros(()), kind, num_classes))


def next_sample_scores(logits, targets, previous) -> dict:
  """Per-example `nll_bits`, `top1`, `top5` of `logits [b, classes]` for `targets [b]`; `previous` is kept for the baselines."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  target_log_prob = jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]
  _, top5 = jax.lax.top_k(logits, 5)
  return {"nll_bits": -target_log_prob / math.log(2.0),
          "top1": top5[:, 0] == targets,
          "top5": jnp.any(top5 == targets[:, None], axis=-1),
          "target": targets, "previous": previous}


def window_metrics(rows: dict[str, np.ndarray]) -> dict:
  """Means over the rows with `clip >= 0`, and both baselines on the same rows."""
  keep = np.asarray(rows["clip"]) >= 0
  row = {key: np.asarray(value)[keep] for key, value in rows.items()}
  target, previous = row["target"].astype(np.int64), row["previous"].astype(np.int64)
  frequent = np.argsort(-row["histogram"].sum(axis=0), kind="stable")[:5]
  return {
      "top5_accuracy": float(row["top5"].mean()),
      "top1_accuracy": float(row["top1"].mean()),
      "nll_bits": float(row["nll_bits"].astype(np.float64).mean()),
      "windows": int(keep.sum()),
      "baseline_frequent5_top5_accuracy": float(np.isin(target, frequent).mean()),
      "baseline_frequent5_top1_accuracy": float((target == frequent[0]).mean()),
      "baseline_previous_pm2_top5_accuracy": float((np.abs(target - previous) <= 2).mean()),
      "baseline_previous_pm2_top1_accuracy": float((target == previous).mean()),
  }


@register_task("next_sample")
@dataclasses.dataclass(frozen=True)
class NextSampleTask(WindowBatching):
  """Language modelling on quantised samples (see the module docstring)."""
  context_samples: int
  past_samples: int = 0
  quantization: str = "mu_law"
  num_classes: int = 256
  eval_hop_samples: int = 800
  # Evaluation windows reach this far before the context in every row of a table, so models
  # with and without a past window are scored on the same target samples.
  eval_past_samples: int = 0
  dataset_classes: int = 0  # the clip labels batches carry (unused by the loss)
  headline_metric = "top5_accuracy"

  @classmethod
  def from_config(cls, config, info, upstream, workdir=None):
    data = config.data
    return cls(context_samples=int(data.context_samples), past_samples=int(data.get("past_samples", 0)),
               quantization=data.get("quantization", "mu_law"), eval_hop_samples=int(data.eval_hop_samples),
               eval_past_samples=int(data.get("eval_past_samples", 0)), dataset_classes=info.num_classes)

  def __post_init__(self):
    if self.quantization not in QUANTIZATIONS:
      raise ConfigError(f"unknown data.quantization {self.quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")

  @property
  def window_samples(self) -> int:
    return self.past_samples + self.context_samples + 1

  @property
  def eval_window_samples(self) -> int:
    return max(self.past_samples, self.eval_past_samples) + self.context_samples + 1

  def model_kwargs(self) -> dict:
    """A model without a past window (WaveNet) is rejected for a task that has one."""
    past = {"past_samples": self.past_samples} if self.past_samples else {}
    return {"num_classes": self.num_classes, "context_samples": self.context_samples, **past}

  def example_inputs(self) -> tuple:
    return (np.zeros((1, self.past_samples + self.context_samples), np.int32),)

  def codes(self, batch):
    return quantize(batch["audio"], self.quantization, self.num_classes)

  def model_inputs(self, batch):
    """The last `past + context` codes before the window's final sample (eval windows can be longer)."""
    return (self.codes(batch)[:, -self.window_samples:-1],)

  def loss(self, outputs, batch):
    targets = self.codes(batch)[:, -self.context_samples:]
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), targets).mean(), {}

  def eval_outputs(self, outputs, batch) -> dict:
    codes = self.codes(batch)
    histogram = jax.vmap(lambda row: jnp.bincount(row, length=self.num_classes))(codes[:, -self.context_samples - 1:-1])
    return {**next_sample_scores(outputs[:, -1], codes[:, -1], codes[:, -2]),
            "histogram": histogram, "clip": batch["clip"]}

  def metrics(self, rows: dict[str, np.ndarray], num_clips: int) -> dict:
    del num_clips  # windows, not clips, are the unit
    return window_metrics(rows)

  def generate(self, model, variables, prime, rng, *, num_samples: int, temperature: float = 1.0) -> np.ndarray:
    """`num_samples` new samples (float32 in [−1, 1]) after the audio `prime` `[n]` (None: silence),
    of which the model sees the last `past + context` samples."""
    if prime is None:
      prime_codes = np.full((1, 1), silence_code(self.quantization, self.num_classes), np.int32)
    else:
      prime_codes = np.asarray(quantize(prime[-(self.past_samples + self.context_samples):], self.quantization,
                                        self.num_classes))[None]
    codes = sample(model, variables, jnp.asarray(prime_codes), rng, num_samples=num_samples,
                   temperature=float(temperature))
    return np.asarray(dequantize(codes, self.quantization, self.num_classes))[0]


def _draw(logits, rng, temperature: float):
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


def _decode(model, variables, cache, code, position):
  return model.apply(variables, cache, code, position, method="decode_step")


@functools.partial(jax.jit, static_argnames=("model",))
def prefill(model, variables, prime):
  """Feed `prime` int32 `[batch, p ≥ 1]` through `decode_step` at positions 0..p−1: (cache, logits of the next code)."""
  batch, prime_length = prime.shape

  def step(carry, inputs):
    cache, _ = carry
    logits, cache = _decode(model, variables, cache, *inputs)
    return (cache, logits), None

  logits = jnp.zeros((batch, model.num_classes), jnp.float32)
  (cache, logits), _ = jax.lax.scan(step, (model.init_cache(batch), logits),
                                    (prime.T.astype(jnp.int32), jnp.arange(prime_length, dtype=jnp.int32)))
  return cache, logits


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "temperature"))
def continue_sampling(model, variables, cache, logits, position, rng, *, num_samples: int, temperature: float = 1.0):
  """Draw `num_samples` codes `[batch, num_samples]` from `logits`, feeding each back at `position`, `position + 1`, …"""

  def step(carry, key):
    cache, logits, position = carry
    code = _draw(logits, key, temperature)
    logits, cache = _decode(model, variables, cache, code, position)
    return (cache, logits, position + 1), code

  carry = (cache, logits, jnp.asarray(position, jnp.int32))
  _, codes = jax.lax.scan(step, carry, jax.random.split(rng, num_samples))
  return codes.T


def sample(model, variables, prime, rng, *, num_samples: int, temperature: float = 1.0):
  """`num_samples` new codes `[batch, num_samples]` after `prime` int32 `[batch, p ≥ 1]`, from the model's cache.

  `temperature` 0 takes the most likely class.  Two compiled loops (prefill, then generation),
  O(1) model work per sample.
  """
  cache, logits = prefill(model, variables, prime)
  return continue_sampling(model, variables, cache, logits, prime.shape[1], rng, num_samples=num_samples,
                           temperature=temperature)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "temperature"))
def sample_naive(model, variables, prime, rng, *, num_samples: int, temperature: float = 1.0):
  """As `sample`, but every new code reruns the model over the whole sequence so far (no cache).

  The sequence lives in a buffer of `prime + num_samples` codes; causality makes the not yet
  generated tail irrelevant, so the draws equal `sample`'s with the same key.
  """
  if model.past_samples:
    raise ValueError("sample_naive is for models without a conditioning past window")
  batch, prime_length = prime.shape
  buffer = jnp.concatenate([prime.astype(jnp.int32), jnp.zeros((batch, num_samples), jnp.int32)], axis=1)

  def generate(buffer, inputs):
    key, position = inputs  # position: the newest known code
    logits = jax.lax.dynamic_index_in_dim(model.apply(variables, buffer, train=False), position, axis=1,
                                          keepdims=False)
    code = _draw(logits, key, temperature)
    return jax.lax.dynamic_update_index_in_dim(buffer, code, position + 1, axis=1), None

  positions = prime_length - 1 + jnp.arange(num_samples, dtype=jnp.int32)
  buffer, _ = jax.lax.scan(generate, buffer, (jax.random.split(rng, num_samples), positions))
  return buffer[:, prime_length:]
