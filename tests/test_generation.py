"""Raw-audio language modelling: quantisation, metrics, baselines, Transformer causality and caches,
cached sampling against naive sampling, paper-scale shapes, and a next-sample run driven by run.py."""

import json
import math
import os
import subprocess
import sys
import wave

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from afx.models import RawTransformer, WaveNet, build_model, parameter_count
from afx.tasks import generation, make_task
from data_pipelines import DatasetInfo
from afx.train import load_config
from afx.train.config import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(REPO, "experiments", "verma_chafe_2021.py")
SMALL = dict(context_samples=32, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64)


@pytest.mark.parametrize("kind", generation.QUANTIZATIONS)
def test_quantization_round_trips_every_class_and_keeps_samples_within_their_bin(kind):
  codes = jnp.arange(256)
  assert np.array_equal(np.asarray(generation.quantize(generation.dequantize(codes, kind), kind)), np.arange(256))
  samples = jnp.linspace(-1.0, 1.0, 10_001)
  restored = np.asarray(generation.dequantize(generation.quantize(samples, kind), kind))
  if kind == "linear":  # half a bin of 2/256
    assert np.max(np.abs(restored - np.asarray(samples))) <= 1.0 / 256 + 1e-6
  else:  # mu-law decodes to a bin edge and bins grow with amplitude
    error = np.abs(restored - np.asarray(samples))
    assert np.all(error <= 0.05 * np.abs(np.asarray(samples)) + 5e-4)  # at most one bin: 4.4 % at |x| = 1
  assert generation.silence_code(kind) == 128


def test_next_sample_scores_and_baselines_match_a_hand_computed_example():
  logits = np.full((3, 256), -10.0, np.float32)
  logits[0, [7, 8, 9, 10, 11]] = [5, 4, 3, 2, 1]   # target 7 is top-1
  logits[1, [20, 21, 22, 23, 24]] = [5, 4, 3, 2, 1]  # target 24 is 5th: top-5, not top-1
  logits[2, [30, 31, 32, 33, 34]] = [5, 4, 3, 2, 1]  # target 100 is missed
  targets, previous = np.array([7, 24, 100]), np.array([9, 24, 10])
  rows = jax.tree.map(np.asarray, generation.next_sample_scores(jnp.asarray(logits), jnp.asarray(targets),
                                                                 jnp.asarray(previous)))
  assert rows["top1"].tolist() == [True, False, False]
  assert rows["top5"].tolist() == [True, True, False]
  log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  expected_bits = -log_probs[np.arange(3), targets] / math.log(2)
  np.testing.assert_allclose(rows["nll_bits"], expected_bits, rtol=1e-5)

  histogram = np.zeros((4, 256), np.int64)
  histogram[:, [1, 2, 3, 4, 5, 6]] = [60, 50, 40, 30, 20, 10]  # 5 most frequent: 1..5
  rows = {**rows, "target": np.r_[targets, 3], "previous": np.r_[previous, 0], "histogram": histogram,
          "clip": np.array([0, 0, 1, -1]),  # the padding row is ignored
          "top1": np.r_[rows["top1"], True], "top5": np.r_[rows["top5"], True], "nll_bits": np.r_[expected_bits, 0.0]}
  metrics = generation.window_metrics(rows)
  assert metrics["windows"] == 3
  assert metrics["top1_accuracy"] == pytest.approx(1 / 3) and metrics["top5_accuracy"] == pytest.approx(2 / 3)
  assert metrics["nll_bits"] == pytest.approx(expected_bits.mean())
  assert metrics["baseline_frequent5_top5_accuracy"] == 0.0  # targets 7, 24, 100 are not among 1..5
  assert metrics["baseline_previous_pm2_top5_accuracy"] == pytest.approx(2 / 3)  # |7-9| and |24-24| <= 2
  assert metrics["baseline_previous_pm2_top1_accuracy"] == pytest.approx(1 / 3)


def _codes(batch, length, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, 256)


def _with_nonzero_latent(variables, seed=7):
  """The conditioning latent's Dense starts at zero; give it random weights (LeCun-normal kernel, a
  small bias) so tests of how the latent reaches the predictions see a non-zero one."""
  params = variables["params"]
  dense = params["past_encoder"]["Dense_0"]
  k_kernel, k_bias = jax.random.split(jax.random.key(seed))
  fan_in = dense["kernel"].shape[0]
  dense = {"kernel": jax.random.normal(k_kernel, dense["kernel"].shape) / math.sqrt(fan_in),
           "bias": 0.1 * jax.random.normal(k_bias, dense["bias"].shape)}
  return {**variables, "params": {**params, "past_encoder": {**params["past_encoder"], "Dense_0": dense}}}


@pytest.mark.parametrize("past", [0, 256])
def test_raw_transformer_is_causal(past):
  model = RawTransformer(**SMALL, past_samples=past, condition_layers=4, condition_channels=8)
  codes = _codes(2, past + 32)
  variables = model.init(jax.random.key(1), codes, train=False)
  if past:
    variables = _with_nonzero_latent(variables)
  logits = model.apply(variables, codes, train=False)
  assert logits.shape == (2, 32, 256) and logits.dtype == jnp.float32
  t = 20
  changed = model.apply(variables, codes.at[:, past + t + 1].set((codes[:, past + t + 1] + 1) % 256), train=False)
  np.testing.assert_array_equal(np.asarray(changed[:, :t + 1]), np.asarray(logits[:, :t + 1]))
  assert np.all(np.abs(np.asarray(changed[:, t + 1:] - logits[:, t + 1:])).max(axis=-1) > 0)
  if past:  # the wider past reaches every position, through the conditioning latent only
    moved = model.apply(variables, codes.at[:, 3].set((codes[:, 3] + 50) % 256), train=False)
    assert np.all(np.abs(np.asarray(moved - logits)).max(axis=-1) > 0)


def test_conditioning_starts_switched_off_and_one_optimiser_step_switches_it_on():
  past = 256
  model = RawTransformer(**SMALL, past_samples=past, condition_layers=4, condition_channels=8)
  codes = _codes(4, past + 32)
  other_past = codes.at[:, :past].set(_codes(4, past, seed=5))
  variables = jax.jit(lambda key: model.init(key, codes, train=False))(jax.random.key(1))
  apply = jax.jit(lambda variables, codes: model.apply(variables, codes, train=False))
  logits = apply(variables, codes)
  # at initialisation the past codes change nothing ...
  np.testing.assert_array_equal(np.asarray(apply(variables, other_past)), np.asarray(logits))
  # ... and the model is the unconditioned one with the same other parameters
  plain = RawTransformer(**SMALL)
  rest = {name: tree for name, tree in variables["params"].items() if name != "past_encoder"}
  plain_logits = jax.jit(lambda params, codes: plain.apply({"params": params}, codes, train=False))
  np.testing.assert_allclose(np.asarray(plain_logits(rest, codes[:, past:])), np.asarray(logits),
                             atol=1e-5)  # two compiled programs

  def loss_fn(params):
    logits = model.apply({"params": params}, codes, train=False)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, codes[:, past + 1:]).mean()

  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params):
    grads = jax.grad(loss_fn)(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return grads, optax.apply_updates(params, updates)

  grads, params = step(variables["params"])
  assert np.abs(np.asarray(grads["past_encoder"]["Dense_0"]["kernel"])).max() > 0  # not a dead branch
  trained = {"params": params}
  logits, moved = np.asarray(apply(trained, codes)), np.asarray(apply(trained, other_past))
  assert np.all(np.abs(moved - logits).max(axis=-1) > 1e-5)  # every position now hears the past


def _decode_all(model, variables, codes):
  def step(cache, inputs):
    code, position = inputs
    logits, cache = model.apply(variables, cache, code, position, method="decode_step")
    return cache, logits
  _, logits = jax.jit(lambda c: jax.lax.scan(step, model.init_cache(c.shape[0]), (c.T, jnp.arange(c.shape[1]))))(codes)
  return np.asarray(jnp.swapaxes(logits, 0, 1))


def test_raw_transformer_cache_slides_past_the_context_with_the_same_logits():
  model = RawTransformer(**SMALL)
  codes = _codes(3, 90)  # almost three contexts: the key/value ring wraps twice
  variables = model.init(jax.random.key(1), codes[:, :32], train=False)
  uncached = np.asarray(model.apply(variables, codes, train=False))  # attention window = context
  np.testing.assert_allclose(_decode_all(model, variables, codes), uncached, atol=2e-5)


def test_conditioned_transformer_decodes_in_blocks_conditioned_on_the_past_before_each():
  past, context = 256, 32
  model = RawTransformer(**SMALL, past_samples=past, condition_layers=4, condition_channels=8)
  codes = _codes(2, 80)
  fresh = model.init(jax.random.key(1), _codes(1, past + context), train=False)
  variables = _with_nonzero_latent(fresh)  # a zero latent would leave the conditioning path untested
  padded = jnp.concatenate([jnp.full((2, past), 128), codes], axis=1)  # silence before the start
  blocks = [model.apply(variables, padded[:, k * context:k * context + past + context], train=False)
            for k in range(3)]
  uncached = np.concatenate([np.asarray(b) for b in blocks], axis=1)[:, :80]
  unconditioned = np.asarray(model.apply(fresh, padded[:, :past + context], train=False))
  assert np.all(np.abs(uncached[:, :context] - unconditioned).max(axis=-1) > 1e-3)  # the latent matters
  np.testing.assert_allclose(_decode_all(model, variables, codes), uncached, atol=2e-5)


@pytest.mark.parametrize("name", ["raw_transformer", "wavenet"])
def test_cached_sampling_draws_what_naive_recomputation_draws(name):
  if name == "wavenet":
    model = WaveNet(num_stacks=2, layers_per_stack=3, residual_channels=8, skip_channels=8, output_channels=8)
  else:
    model = RawTransformer(**SMALL)  # 5 + 60 codes: the key/value cache slides past its 32 slots
  variables = model.init(jax.random.key(2), _codes(1, 32), train=False)
  prime = _codes(2, 5, seed=3)
  for temperature in (0.0, 1.0):
    cached = generation.sample(model, variables, prime, jax.random.key(4), num_samples=60, temperature=temperature)
    naive = generation.sample_naive(model, variables, prime, jax.random.key(4), num_samples=60,
                                    temperature=temperature)
    assert cached.shape == (2, 60)
    np.testing.assert_array_equal(np.asarray(cached), np.asarray(naive))


def test_paper_scale_models_have_their_shapes_without_allocating():
  experiment = load_module(EXPERIMENT)
  counts = {}
  for row in experiment.ROWS:
    config = load_config(f"{EXPERIMENT}:{row}")
    past = config.data.past_samples
    task = make_task(config, DatasetInfo(16000, ("piano",)))
    model = build_model(config.model, **task.model_kwargs())
    inputs = jax.ShapeDtypeStruct((2, past + config.data.context_samples), jnp.int32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), inputs)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
    assert logits.shape == (2, 1600, 256)
    counts[row] = parameter_count(variables["params"])
  assert config.data.past_samples == 0 and load_config(f"{EXPERIMENT}:transformer3_cond").data.past_samples == 4000
  assert counts["wavenet30"] > 2.5 * counts["wavenet10"]
  assert counts["transformer3"] < counts["transformer3_cond"] < counts["transformer6"] < counts["transformer8"]
  assert 0.6e6 < counts["transformer3"] < 0.8e6  # 3 × (4·128² + 2·4·128²) + embeddings and head


def run_cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, os.path.join(REPO, "run.py"), *args], capture_output=True, text=True,
                        timeout=600, cwd=cwd)


@pytest.mark.slow  # about 100 s: trains four rows; run with -m slow
def test_next_sample_run_trains_evaluates_samples_and_reproduces_with_baselines(piano_config_path, tmp_path):
  workdir = str(tmp_path / "t3")
  result = run_cli("train", "--config", f"{piano_config_path}:transformer3,tiny", "--workdir", workdir,
                   "--config.total_steps=40", "--config.optimizer.learning_rate=0.01")
  assert result.returncode == 0, result.stderr
  losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert losses[-1] < 0.9 * losses[0]
  metrics = json.load(open(os.path.join(workdir, "eval.json")))
  for key in ("top5_accuracy", "top1_accuracy", "nll_bits", "baseline_previous_pm2_top5_accuracy"):
    assert key in metrics
  windows_per_piece = len(range(0, 8 * 16000 - 65 + 1, 8000)) + 1  # 65-sample windows, hop 8000, one flush with the end
  assert metrics["windows"] == 2 * windows_per_piece  # both test pieces, every window once

  out = str(tmp_path / "sample.wav")
  result = run_cli("sample", "--workdir", workdir, "--seconds", "0.05", "--temperature", "0.8", "--out", out)
  assert result.returncode == 0, result.stderr
  with wave.open(out) as f:
    assert (f.getframerate(), f.getnframes(), f.getnchannels()) == (16000, 800, 1)
  result = run_cli("sample", "--workdir", workdir, "--seconds", "0.01", "--prime", str(tmp_path / "missing.wav"),
                   "--out", out)
  assert result.returncode == 2 and "missing.wav" in result.stderr and "Traceback" not in result.stderr
  result = run_cli("predict", "--workdir", workdir, out)
  assert result.returncode == 2 and "run.py sample" in result.stderr

  root = os.path.dirname(os.path.dirname(piano_config_path))
  result = run_cli("reproduce", "piano_table", "--scale", "tiny", "--workdir", str(tmp_path / "table"), cwd=root)
  assert result.returncode == 0, result.stderr
  table = json.load(open(tmp_path / "table" / "results.json"))
  names = [row["name"] for row in table["rows"]]
  assert names == list(load_module(EXPERIMENT).ROWS) + ["baseline_frequent5", "baseline_previous_pm2"]
  first = json.load(open(tmp_path / "table" / "wavenet10" / "eval.json"))
  assert table["rows"][-1]["afx"] == first["baseline_previous_pm2_top5_accuracy"]
  assert all(row["metric"] == "top5_accuracy" and 0 <= row["afx"] <= 1 for row in table["rows"])
