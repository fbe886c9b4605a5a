"""Speech recognition's parts: the front end (against librosa and Kaldi's definitions), CTC loss masking,
greedy decoding and forced alignment (against plain Python and NumPy), label smoothing (against its formula),
the Speech-Transformer's shapes and padding invariance, and global and per-speaker feature statistics and
normalisation (against NumPy)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from afx.decoding import ctc
from afx.errors import ConfigError
from afx.layers import speech
from afx.models import build_model
from afx.tasks.asr import (MeasuredSpeakers, SpeechRecognitionTask, feature_statistics, smoothed_cross_entropy,
                           speaker_stats_of, speaker_statistics)
from afx.text import build_tokenizer
from afx.train.optim import noam_schedule
from data_pipelines.utterances import Utterances


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


def _numpy_viterbi(log_probs, tokens):
  """Each token's (first, last) frame in the best CTC path of `tokens` through `log_probs [frames, vocab]`
  (float32, ties to the earlier state as `forced_align`), or None when no path exists."""
  states = [0]
  for token in tokens:
    states += [token, 0]
  frames, count = log_probs.shape[0], len(states)
  score = np.full((frames, count), -np.inf, np.float32)
  came_from = np.zeros((frames, count), np.int64)
  for t in range(frames):
    for s in range(count):
      if t == 0:
        options = [np.float32(0.0) if s < 2 else np.float32(-np.inf)]
        moves = [s]
      else:
        options, moves = [score[t - 1, s]], [s]
        if s >= 1:
          options.append(score[t - 1, s - 1])
          moves.append(s - 1)
        if s >= 3 and s % 2 == 1 and states[s] != states[s - 2]:
          options.append(score[t - 1, s - 2])
          moves.append(s - 2)
      best = int(np.argmax(options))
      score[t, s] = np.float32(options[best] + log_probs[t, states[s]])
      came_from[t, s] = moves[best]
  ends = [count - 1] + ([count - 2] if tokens else [])
  end = max(ends, key=lambda s: (score[-1, s], s))  # a tie goes to the final blank
  if not np.isfinite(score[-1, end]):
    return None
  path = [end]
  for t in range(frames - 1, 0, -1):
    path.append(came_from[t, path[-1]])
  path = path[::-1]
  return [(path.index(2 * k + 1), len(path) - 1 - path[::-1].index(2 * k + 1)) for k in range(len(tokens))]


def test_forced_align_matches_a_numpy_viterbi_and_marks_rows_that_cannot_fit():
  rng = np.random.default_rng(6)
  log_probs = np.asarray(jax.nn.log_softmax(rng.normal(size=(6, 14, 5)).astype(np.float32) * 2, axis=-1))
  tokens = np.array([[1, 2, 3, 0, 0], [2, 2, 4, 4, 1], [3, 0, 0, 0, 0], [1, 2, 1, 2, 1], [0, 0, 0, 0, 0],
                     [4, 4, 4, 4, 0]], np.int32)
  token_lengths = np.array([3, 5, 1, 5, 0, 4])
  lengths = np.array([14, 9, 1, 7, 5, 6])  # row 5 needs 7 frames (4 _ 4 _ 4 _ 4): impossible
  first, last = map(np.asarray, ctc.forced_align(jnp.asarray(log_probs), jnp.asarray(lengths), jnp.asarray(tokens),
                                                 jnp.asarray(token_lengths), blank_id=0))
  assert first.shape == last.shape == (6, 5) and first.dtype == np.int32
  for row in range(6):
    n = token_lengths[row]
    expected = _numpy_viterbi(log_probs[row, :lengths[row]], list(tokens[row, :n]))
    if expected is None:
      assert row == 5 and np.all(first[row] == -1) and np.all(last[row] == -1)
      continue
    assert [tuple(pair) for pair in zip(first[row, :n], last[row, :n])] == expected, row
    assert np.all(first[row, n:] == -1) and np.all(last[row, n:] == -1)


def test_forced_alignment_of_the_greedy_transcript_gives_the_greedy_spans():
  # The greedy path is the best path of its own collapse, so its spans are the Viterbi alignment's.
  rng = np.random.default_rng(7)
  frame_tokens = rng.choice(4, size=(3, 20), p=[0.5, 0.2, 0.2, 0.1])
  logits = rng.normal(size=(3, 20, 4)).astype(np.float32) + 8.0 * np.eye(4, dtype=np.float32)[frame_tokens]
  lengths = jnp.asarray([20, 13, 4])
  tokens, counts, first, last = ctc.greedy_decode(jnp.asarray(logits), lengths)
  aligned_first, aligned_last = ctc.forced_align(jax.nn.log_softmax(jnp.asarray(logits), axis=-1), lengths, tokens,
                                                 counts, blank_id=0)
  assert int(counts.min()) > 0
  np.testing.assert_array_equal(np.asarray(aligned_first), np.asarray(first))
  np.testing.assert_array_equal(np.asarray(aligned_last), np.asarray(last))


def _tiny_speech_transformer(vocab_size, *, decoder_layers):
  return build_model({"name": "speech_transformer", "d_model": 16, "num_heads": 2, "mlp_dim": 32, "encoder_layers": 1,
                      "decoder_layers": decoder_layers, "conv_channels": 4, "num_mel_bins": 20, "spec_augment": False},
                     vocab_size=vocab_size, sample_rate=16000)


def test_beam_transcription_rows_align_the_best_hypothesis_and_need_a_decoder_below_ctc_weight_1():
  task = SpeechRecognitionTask(build_tokenizer("characters", ["ab c", "ca b"]), (8000,), 6)
  vocab = task.tokenizer.vocab_size
  audio = np.random.default_rng(8).normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  batch = {"audio": audio, "audio_lengths": np.array([8000, 5000], np.int32), "index": np.array([0, 1], np.int32)}
  with pytest.raises(ConfigError, match="--ctc-weight 1"):
    task.beam_transcription_rows(_tiny_speech_transformer(vocab, decoder_layers=0), None, batch, beam=2, ctc_weight=0.3)

  model = _tiny_speech_transformer(vocab, decoder_layers=1)

  @jax.jit
  def decode(batch):  # one compilation: init, the beam search, and the CTC log-probs it was aligned to
    variables = model.init(jax.random.key(0), batch["audio"], batch["audio_lengths"], jnp.zeros((2, 3), jnp.int32),
                           jnp.ones(2, jnp.int32))
    rows = task.beam_transcription_rows(model, variables, batch, beam=2, ctc_weight=0.3)
    encoded, frames = model.apply(variables, batch["audio"], batch["audio_lengths"], method="encode")
    return rows, jax.nn.log_softmax(model.apply(variables, encoded, method="ctc_logits"), axis=-1), frames

  rows, log_probs, frames = jax.tree.map(np.asarray, decode(batch))
  assert set(rows) == {"tokens", "lengths", "first", "last", "index"} and rows["first"].shape == (2, 6)
  for row in range(2):
    n = rows["lengths"][row]
    expected = _numpy_viterbi(log_probs[row, :frames[row]], list(rows["tokens"][row, :n]))
    got = list(zip(rows["first"][row, :n].tolist(), rows["last"][row, :n].tolist()))
    assert got == (expected if expected is not None else [(-1, -1)] * n)
  # Tokens with no alignment keep their words, without times.
  tokens = np.asarray(task.tokenizer.encode("ab c"))
  assert task.words(tokens, np.full(4, -1), np.full(4, -1), frame_seconds=0.04) == [
      {"word": "ab", "start": None, "end": None}, {"word": "c", "start": None, "end": None}]


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


STATS_BATCHING = Utterances((8000, 12000), 8, encode_text=lambda text: np.ones(len(text), np.int64))


def _front_end(normalization):
  return build_model({"name": "speech_transformer", "num_mel_bins": 20, "use_deltas": True,
                      "normalization": normalization, "d_model": 16, "num_heads": 2, "mlp_dim": 16, "encoder_layers": 1,
                      "decoder_layers": 0, "conv_channels": 4, "spec_augment": False}, vocab_size=5, sample_rate=16000)


def _frames_alone(front_end, record):
  """The raw features of one utterance on its own, unpadded, as float64."""
  audio = record["audio"].astype(np.float32)[None] / 32768.0
  x, counts = front_end.apply({}, jnp.asarray(audio), jnp.asarray([audio.shape[1]]), method="raw_features")
  return np.asarray(x[0, :int(counts[0])], np.float64)


def test_global_statistics_are_numpys_over_every_valid_frame_and_global_normalisation_applies_them():
  rng = np.random.default_rng(5)
  lengths = [4000, 9000, 6500, 12000, 3000]
  source = [{"audio": (rng.normal(scale=3000, size=n)).astype(np.int16), "text": "ab", "id": f"u{i}"}
            for i, n in enumerate(lengths)]
  front_end = _front_end("none")
  batching = STATS_BATCHING
  stats = feature_statistics(front_end, source, batching, batch_size=2)
  alone = lambda record: _frames_alone(front_end, record)

  frames = np.concatenate([alone(record) for record in source])
  assert stats["frames"] == frames.shape[0] and stats["utterances"] == 5
  np.testing.assert_allclose(stats["mean"], frames.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats["std"], frames.std(axis=0), rtol=1e-4, atol=1e-4)
  few = feature_statistics(front_end, source, batching, batch_size=2, max_utterances=2)
  assert few["utterances"] == 2 and few["frames"] == len(alone(source[0])) + len(alone(source[-1]))

  mean, std = tuple(stats["mean"]), tuple(stats["std"])
  x = jnp.asarray(frames[None, :50].astype(np.float32))
  normalized = np.asarray(speech.global_normalize(jnp.concatenate([x, x], axis=0), jnp.asarray([50, 20]), mean, std))
  np.testing.assert_allclose(normalized[0], (frames[:50] - stats["mean"]) / stats["std"], rtol=1e-4, atol=1e-4)
  assert np.all(normalized[1, 20:] == 0)
  unmeasured = build_model({"name": "speech_transformer", "num_mel_bins": 20, "normalization": "global", "d_model": 16,
                            "num_heads": 2, "mlp_dim": 16, "encoder_layers": 1, "decoder_layers": 0,
                            "conv_channels": 4}, vocab_size=5, sample_rate=16000)
  with pytest.raises(ConfigError, match="feature_stats.json"):
    unmeasured.apply({}, jnp.zeros((1, 4000)), jnp.asarray([4000]), train=False, method="features")


class _Split(list):
  """Records of a named split, as `afx.train.data.Dataset.source` gives them."""

  def __init__(self, records, split):
    super().__init__(records)
    self.split = split


# Records 3 and 5 have no speaker ("", as a speech dataset stores an unknown one): each is its own speaker.
SPEAKERS = [b"ann", "bob", b"ann", "", "ann", b""]
SPEAKER_MEMBERS = {"ann": [0, 2, 4], "bob": [1], "u3": [3], "u5": [5]}


def _speaker_source():
  rng = np.random.default_rng(9)
  lengths = [4000, 9000, 6500, 12000, 3000, 7000]
  return [{"audio": (rng.normal(scale=1000 * (1 + i), size=n)).astype(np.int16), "text": "ab", "id": f"u{i}",
           "speaker": speaker} for i, (n, speaker) in enumerate(zip(lengths, SPEAKERS))]


def test_speaker_statistics_are_numpys_over_each_speakers_frames_and_an_unlabelled_utterance_is_its_own():
  source = _speaker_source()
  front_end = _front_end("none")
  overall, speakers = speaker_statistics(front_end, source, STATS_BATCHING, batch_size=2)
  frames = [_frames_alone(front_end, record) for record in source]
  assert sorted(speakers) == sorted(SPEAKER_MEMBERS)
  for speaker, members in SPEAKER_MEMBERS.items():
    pooled = np.concatenate([frames[i] for i in members])
    assert speakers[speaker]["utterances"] == len(members) and speakers[speaker]["frames"] == pooled.shape[0]
    np.testing.assert_allclose(speakers[speaker]["mean"], pooled.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(speakers[speaker]["std"], pooled.std(axis=0), rtol=1e-4, atol=1e-4)
  everything = np.concatenate(frames)
  assert overall["utterances"] == len(source) and overall["frames"] == everything.shape[0]
  np.testing.assert_allclose(overall["mean"], everything.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(overall["std"], everything.std(axis=0), rtol=1e-4, atol=1e-4)


def test_speaker_normalisation_gives_each_row_its_speakers_numpy_normalisation_whatever_its_batch():
  source = _Split(_speaker_source(), "dev")
  raw = [_frames_alone(_front_end("none"), record) for record in source]
  reference = {}  # NumPy's statistics of each speaker, and the model's input made from NumPy's too
  for speaker, members in SPEAKER_MEMBERS.items():
    pooled = np.concatenate([raw[i] for i in members])
    reference[speaker] = {"mean": pooled.mean(axis=0).tolist(), "std": pooled.std(axis=0).tolist()}
  measured = MeasuredSpeakers.from_json("feature_stats.json", {"dev": reference})
  batching = dataclasses.replace(STATS_BATCHING, speaker_statistics=measured)
  model = _front_end("speaker")
  features = jax.jit(lambda batch: model.apply({}, batch["audio"], batch["audio_lengths"], speaker_stats_of(batch),
                                               train=False, method="features"))
  speaker_of_record = {i: speaker for speaker, members in SPEAKER_MEMBERS.items() for i in members}
  padding_rows = 0
  for batch_size in (2, 4):  # other neighbours and, at 4, padding rows (index -1) beside the longer bucket's two
    for batch in batching.evaluate(source, batch_size=batch_size):
      x, lengths = map(np.asarray, features(batch))
      for row, index in enumerate(batch["index"]):
        if index < 0:
          padding_rows += 1
          assert np.all(x[row] == 0)  # finite: a padding row's std is 0
          continue
        stats = reference[speaker_of_record[index]]
        expected = (raw[index] - np.asarray(stats["mean"])) / np.asarray(stats["std"])
        assert lengths[row] == raw[index].shape[0]
        np.testing.assert_allclose(x[row, :lengths[row]], expected, rtol=1e-4, atol=1e-4)
        assert np.all(x[row, lengths[row]:] == 0)
  assert padding_rows == 2
  with pytest.raises(ConfigError, match="needs each utterance's speaker statistics"):
    model.apply({}, jnp.zeros((1, 4000)), jnp.asarray([4000]), train=False, method="features")


def test_a_split_without_speaker_statistics_is_one_line_naming_the_file_and_the_fix():
  measured = MeasuredSpeakers.from_json("/runs/x/feature_stats.json", {"train": {"ann": {"mean": [0.0], "std": [1.0]}}})
  batching = dataclasses.replace(STATS_BATCHING, speaker_statistics=measured)
  with pytest.raises(ConfigError) as error:
    batching.evaluate(_Split(_speaker_source(), "test"), batch_size=2)
  message = str(error.value)
  assert "\n" not in message and "/runs/x/feature_stats.json" in message and "'test'" in message
  assert "it has: train" in message and "rerun `run.py train`" in message


def test_transcribed_files_are_each_their_own_speaker_over_all_of_their_chunks():
  source = _speaker_source()
  front_end = _front_end("none")
  files = ["a.wav", "b.wav", "a.wav"]  # chunks 0 and 2 are one file's
  audio = np.zeros((3, 12000), np.float32)
  lengths = np.array([len(source[i]["audio"]) for i in range(3)], np.int32)
  for row in range(3):
    audio[row, :lengths[row]] = source[row]["audio"] / 32768.0
  rows = jax.jit(lambda batch: SpeechRecognitionTask.feature_sum_rows(front_end, {}, batch))(
      {"audio": audio, "audio_lengths": lengths})
  arrays = SpeechRecognitionTask.speaker_arrays(jax.device_get(rows), files)
  raw = [_frames_alone(front_end, source[i]) for i in range(3)]
  assert arrays["feature_mean"].shape == arrays["feature_std"].shape == (3, 60)
  for row, members in ((0, [0, 2]), (1, [1]), (2, [0, 2])):
    pooled = np.concatenate([raw[i] for i in members])
    np.testing.assert_allclose(arrays["feature_mean"][row], pooled.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(arrays["feature_std"][row], pooled.std(axis=0), rtol=1e-4, atol=1e-4)
