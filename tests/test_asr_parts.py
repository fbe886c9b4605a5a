"""Speech recognition's parts: the front end (against librosa and Kaldi's definitions), CTC loss masking and
greedy decoding (against plain Python), label smoothing (against its formula), and the Speech-Transformer's
shapes and padding invariance."""

import itertools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from afx.decoding import ctc
from afx.layers import speech
from afx.models import build_model
from afx.tasks.asr import smoothed_cross_entropy
from afx.train.optim import noam_schedule


def test_deltas_match_librosa_on_each_utterance_and_padding_stays_zero():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 30, 5)).astype(np.float32)
  lengths = np.array([30, 17])
  out = np.asarray(speech.deltas(jnp.asarray(features), jnp.asarray(lengths)))
  for row, length in enumerate(lengths):
    expected = librosa.feature.delta(features[row, :length].T, width=5, order=1, mode="nearest").T
    np.testing.assert_allclose(out[row, :length], expected, atol=1e-5)
  assert np.all(out[1, 17:] == 0)
  assert speech.with_deltas(jnp.asarray(features), jnp.asarray(lengths)).shape == (2, 30, 15)


def test_filterbank_of_a_padded_utterance_equals_its_own_and_normalisation_ignores_padding():
  rng = np.random.default_rng(1)
  audio = rng.normal(scale=0.1, size=16000).astype(np.float32)
  alone, alone_lengths = speech.filterbank(jnp.asarray(audio[None, :8000]), jnp.asarray([8000]), sample_rate=16000)
  padded = np.zeros((2, 16000), np.float32)
  padded[0, :8000], padded[1] = audio[:8000], audio
  both, lengths = speech.filterbank(jnp.asarray(padded), jnp.asarray([8000, 16000]), sample_rate=16000)
  assert list(np.asarray(lengths)) == [int(alone_lengths[0]), 98] and int(alone_lengths[0]) == 48
  np.testing.assert_allclose(np.asarray(both[0, :48]), np.asarray(alone[0]), rtol=1e-5, atol=1e-4)
  assert np.all(np.asarray(both[0, 48:]) == 0)
  normalized = np.asarray(speech.utterance_normalize(both, lengths))
  np.testing.assert_allclose(normalized[0, :48].mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalized[0, :48].std(axis=0), 1.0, atol=1e-3)
  assert np.all(normalized[0, 48:] == 0)


def test_spec_augment_masks_only_inside_valid_frames():
  features = jnp.ones((4, 50, 20))
  lengths = jnp.asarray([50, 30, 10, 1])
  out = np.asarray(speech.spec_augment(jax.random.key(0), features, lengths, freq_masks=2, freq_width=5,
                                       time_masks=2, time_width=8))
  assert out.shape == (4, 50, 20) and 0 < (out == 0).mean() < 0.6
  masked_frames = np.all(out == 0, axis=2)
  for row, length in enumerate(np.asarray(lengths)):
    assert not masked_frames[row, length + 8:].any()  # a span starts inside the row's frames


def _python_collapse(frame_tokens, length):
  tokens, firsts, lasts = [], [], []
  for token, group in itertools.groupby(enumerate(frame_tokens[:length]), key=lambda item: item[1]):
    frames = [frame for frame, _ in group]
    if token != 0:
      tokens.append(token)
      firsts.append(frames[0])
      lasts.append(frames[-1])
  return tokens, firsts, lasts


def test_greedy_collapse_matches_plain_python_with_frames_of_each_token():
  rng = np.random.default_rng(2)
  frame_tokens = rng.integers(0, 4, size=(6, 25)).astype(np.int32)
  lengths = np.array([25, 24, 10, 1, 0, 13])
  tokens, counts, firsts, lasts = map(np.asarray, ctc.collapse(jnp.asarray(frame_tokens), jnp.asarray(lengths)))
  for row in range(6):
    expected, expected_first, expected_last = _python_collapse(frame_tokens[row], lengths[row])
    assert counts[row] == len(expected)
    assert list(tokens[row, :counts[row]]) == expected and np.all(tokens[row, counts[row]:] == 0)
    assert list(firsts[row, :counts[row]]) == expected_first and list(lasts[row, :counts[row]]) == expected_last


def test_ctc_loss_masks_impossible_rows_and_matches_a_brute_force_sum():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 4, 3)).astype(np.float32)
  labels = np.array([[1, 2, 0], [1, 1, 1], [2, 0, 0]], np.int32)
  label_lengths = np.array([2, 3, 1])
  frame_lengths = np.array([4, 4, 3])  # row 1 needs 5 frames (1 _ 1 _ 1): impossible
  losses, possible = map(np.asarray, ctc.ctc_loss(jnp.asarray(logits), jnp.asarray(frame_lengths),
                                                  jnp.asarray(labels), jnp.asarray(label_lengths)))
  assert list(possible) == [True, False, True] and losses[1] == 0
  for row in (0, 2):
    log_probs = jax.nn.log_softmax(logits[row, :frame_lengths[row]], axis=-1)
    total = -np.inf
    for path in itertools.product(range(3), repeat=frame_lengths[row]):
      collapsed, _, _ = _python_collapse(np.array(path), len(path))
      if collapsed == list(labels[row, :label_lengths[row]]):
        total = np.logaddexp(total, float(sum(log_probs[t, k] for t, k in enumerate(path))))
    assert losses[row] == pytest.approx(-total, rel=1e-4)


def test_label_smoothing_is_the_kl_divergence_to_the_smoothed_target():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(5, 7)).astype(np.float32)
  targets = np.array([0, 3, 6, 2, 2])
  mask = np.array([True, True, True, True, False])
  value = float(smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), smoothing=0.1))
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  expected = 0.0
  for row in range(4):
    target = np.full(7, 0.1 / 6)
    target[targets[row]] = 0.9
    expected += float(np.sum(target * (np.log(target) - log_probs[row])))
  assert value == pytest.approx(expected, rel=1e-5)


def test_speech_transformer_outputs_do_not_depend_on_padding():
  model = build_model({"name": "speech_transformer", "d_model": 32, "num_heads": 2, "mlp_dim": 64, "encoder_layers": 2,
                       "decoder_layers": 2, "conv_channels": 8, "num_mel_bins": 20, "spec_augment": False},
                      vocab_size=11, sample_rate=16000)
  rng = np.random.default_rng(5)
  audio = rng.normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  tokens = rng.integers(1, 11, size=(2, 6)).astype(np.int32)
  lengths, token_lengths = jnp.asarray([8000, 5000]), jnp.asarray([6, 4])
  variables = jax.jit(model.init)(jax.random.key(0), audio, lengths, tokens, token_lengths)
  apply = jax.jit(model.apply)
  out = apply(variables, audio, lengths, tokens, token_lengths)
  assert out["ctc_logits"].shape == (2, 11, 11) and list(np.asarray(out["encoder_lengths"])) == [11, 6]
  assert out["decoder_logits"].shape == (2, 6, 11)
  # Row 1 alone, without its padding, gives the same valid outputs.
  alone = apply(variables, audio[1:, :5000], lengths[1:], tokens[1:, :4], token_lengths[1:])
  np.testing.assert_allclose(np.asarray(alone["ctc_logits"][0]), np.asarray(out["ctc_logits"][1, :6]), atol=2e-4)
  np.testing.assert_allclose(np.asarray(alone["decoder_logits"][0]), np.asarray(out["decoder_logits"][1, :4]),
                             atol=2e-4)


def test_noam_schedule_peaks_at_the_warmup_and_decays_as_one_over_sqrt_step():
  schedule = noam_schedule(2e-3, 1000)
  assert float(schedule(1000)) == pytest.approx(2e-3)
  assert float(schedule(500)) == pytest.approx(1e-3)  # linear rise
  assert float(schedule(4000)) == pytest.approx(1e-3)  # 1/√step decay
  assert float(schedule(0)) == pytest.approx(2e-3 / 1000)
