"""Speech-Transformer's 2D-attention (`afx.layers.two_d_attention`): the time and frequency attentions against a
plain numpy attention, padding that never reaches the valid frames, and a Speech-Transformer with two modules that
trains; without them the model's front end is `Conv2dSubsampling`'s, parameters and outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from afx.layers import speech
from afx.layers.two_d_attention import TwoDAttention, frequency_attention, time_attention
from afx.models import build_model, parameter_count
from afx.tasks.asr import SpeechRecognitionTask
from afx.text import build_tokenizer


def _softmax_attention(q, k, v, scale):
  """Rows of `q [n, d]` over `k, v [m, d]`."""
  logits = q @ k.T * scale
  weights = np.exp(logits - logits.max(axis=1, keepdims=True))
  return (weights / weights.sum(axis=1, keepdims=True)) @ v


def _perturbed(variables, seed):
  """`variables` plus noise, so that biases and norm offsets are not the zeros of a fresh init."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: x + 0.3 * rng.normal(size=x.shape).astype(np.float32), variables)


def test_time_and_frequency_attention_equal_a_numpy_attention_on_each_utterance():
  rng = np.random.default_rng(0)
  batch, time, freq, heads = 3, 9, 5, 2
  q, k, v = (rng.normal(size=(batch, time, freq, heads)).astype(np.float32) for _ in range(3))  # padding too
  lengths = np.array([9, 4, 1])
  by_time = np.asarray(time_attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(lengths)))
  by_freq = np.asarray(frequency_attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(lengths)))
  for b, length in enumerate(lengths):
    for h in range(heads):
      head = lambda x: x[b, :length, :, h]  # [frames, bins] of this utterance
      tokens_are_frames = _softmax_attention(head(q), head(k), head(v), freq ** -0.5)
      tokens_are_bins = _softmax_attention(head(q).T, head(k).T, head(v).T, length ** -0.5).T
      np.testing.assert_allclose(by_time[b, :length, :, h], tokens_are_frames, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(by_freq[b, :length, :, h], tokens_are_bins, rtol=1e-5, atol=1e-5)
    assert np.all(by_time[b, length:] == 0) and np.all(by_freq[b, length:] == 0)


def test_two_d_attention_of_a_padded_batch_equals_each_utterance_alone():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 11, 5, 4)).astype(np.float32)  # row 1's padding holds noise, not zeros
  lengths = np.array([11, 6])
  module = TwoDAttention(heads=2)
  variables = _perturbed(jax.jit(module.init)(jax.random.key(0), x, lengths), seed=1)
  apply = jax.jit(module.apply)
  out = np.asarray(apply(variables, x, lengths))
  assert out.shape == x.shape and np.all(out[1, 6:] == 0)
  assert not np.allclose(out[:, :6], x[:, :6], atol=1e-2)  # the attention branch does something
  for b, length in enumerate(lengths):
    alone = np.asarray(apply(variables, x[b:b + 1, :length], lengths[b:b + 1]))
    np.testing.assert_allclose(out[b, :length], alone[0], rtol=1e-5, atol=1e-5)


def test_without_two_d_attention_the_front_end_is_conv2d_subsampling():
  model = build_model({"name": "speech_transformer", "d_model": 16, "num_heads": 2, "mlp_dim": 32, "encoder_layers": 1,
                       "decoder_layers": 1, "conv_channels": 4, "num_mel_bins": 20}, vocab_size=7, sample_rate=16000)
  audio, tokens = np.zeros((1, 4000), np.float32), np.zeros((1, 3), np.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), audio, np.array([4000]), tokens, np.array([3]))
  features = np.zeros((1, 23, 60), np.float32)  # the filterbank frames of 4,000 samples, with Δ and ΔΔ
  alone = jax.eval_shape(speech.Conv2dSubsampling(16, 4, True).init, jax.random.key(0), features, np.array([23]))
  shape_tree = lambda tree: jax.tree_util.tree_map(lambda x: x.shape, tree)
  for collection in ("params", "batch_stats"):
    assert shape_tree(shapes[collection]["subsampling"]) == shape_tree(alone[collection])

  assert not any(name.startswith("two_d_attention") for name in shapes["params"])


def test_two_d_attention_parameters_are_the_papers_convolutions():
  channels, heads = 64, 4
  x = np.zeros((1, 6, 19, channels), np.float32)
  shapes = jax.eval_shape(TwoDAttention(heads=heads).init, jax.random.key(0), x, np.array([6]))
  query_key_value = 3 * (3 * 3 * channels * heads + heads)  # three 3×3 convolutions, n → c channels
  output = 3 * 3 * 2 * heads * channels + channels  # 2c → n channels
  assert parameter_count(shapes) == query_key_value + output + 2 * channels  # and the LayerNorm's scale and bias


@pytest.fixture(scope="module")
def two_d_model():
  # No decoder (CTC alone): the 2D-attention sits in the encoder, and the test compiles a third as much.
  model = build_model({"name": "speech_transformer", "d_model": 32, "num_heads": 2, "mlp_dim": 64, "encoder_layers": 1,
                       "decoder_layers": 0, "conv_channels": 8, "num_mel_bins": 20, "use_deltas": False,
                       "num_2d_attention": 2, "num_2d_attention_heads": 2, "spec_augment": False,
                       "dropout_rate": 0.0}, vocab_size=11, sample_rate=16000)
  rng = np.random.default_rng(3)
  audio = rng.normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  audio[1, 5000:] = rng.normal(scale=1.0, size=3000)  # padding that must not matter
  tokens = rng.integers(1, 9, size=(2, 6)).astype(np.int32)
  lengths, token_lengths = np.array([8000, 5000]), np.array([6, 4])
  variables = jax.jit(model.init)(jax.random.key(0), audio, lengths, tokens, token_lengths)
  return model, variables, (audio, lengths, tokens, token_lengths)


def test_speech_transformer_with_two_d_attention_does_not_depend_on_padding(two_d_model):
  model, variables, (audio, lengths, tokens, token_lengths) = two_d_model
  assert set(variables["params"]["subsampling"]) == {"conv0", "norm0", "conv1", "norm1", "project"}
  assert {"two_d_attention_0", "two_d_attention_1"} <= set(variables["params"])
  variables = {**variables, "params": _perturbed(variables["params"], seed=4)}
  apply = jax.jit(model.apply)
  out = apply(variables, audio, lengths, tokens, token_lengths)
  assert list(np.asarray(out["encoder_lengths"])) == [11, 6]
  alone = apply(variables, audio[1:, :5000], lengths[1:], tokens[1:, :4], token_lengths[1:])
  np.testing.assert_allclose(np.asarray(alone["ctc_logits"][0]), np.asarray(out["ctc_logits"][1, :6]), rtol=1e-4,
                             atol=2e-4)


def test_speech_transformer_with_two_d_attention_trains_through_the_asr_ctc_loss(two_d_model):
  model, variables, (audio, lengths, tokens, token_lengths) = two_d_model
  tokenizer = build_tokenizer("characters", ["abcdefgh"])  # 8 characters + <blank>, <unk>, <sos/eos>
  assert tokenizer.vocab_size == 11
  task = SpeechRecognitionTask(tokenizer, bucket_samples=(8000,), max_tokens=6, ctc_weight=1.0)
  batch = {"audio": audio, "audio_lengths": lengths, "tokens": tokens, "token_lengths": token_lengths}
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(params):
      outputs, updates = model.apply({"params": params, "batch_stats": batch_stats}, *task.model_inputs(batch),
                                     train=True, mutable=["batch_stats"])
      return task.loss(outputs, batch)[0], updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss, grads

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(3):
    params, batch_stats, opt_state, loss, grads = step(params, batch_stats, opt_state)
    losses.append(float(loss))
    for index in range(2):
      module_grads = grads[f"two_d_attention_{index}"]
      assert {"norm", "query", "key", "value", "output"} == set(module_grads)
      for path, grad in jax.tree_util.tree_leaves_with_path(module_grads):
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0, (index, jax.tree_util.keystr(path))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
