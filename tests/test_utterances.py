"""Bucketed utterance batches: padding, one bucket per batch, epochs, processes, resumable state, eval, errors."""

import numpy as np
import pytest

from afx.errors import ConfigError, DataError
from data_pipelines import utterances

STRATEGY = utterances.Utterances(bucket_samples=(250, 500, 1000), max_tokens=16)


def make_source(num_utterances=60, seed=0):
  """Utterance i: every sample equals i + 1, text "ab" repeated (1 + i % 7) times; tfds-like bytes on even i."""
  lengths = np.random.default_rng(seed).integers(40, 1001, num_utterances)
  source = []
  for i, length in enumerate(lengths):
    text, uid = "ab" * (1 + i % 7), f"utt-{i:03d}"
    record = {"audio": np.full(int(length), i + 1, np.int16),
              "text": text.encode() if i % 2 == 0 else text, "id": uid.encode() if i % 2 == 0 else uid}
    if i % 3 == 0:
      record["num_samples"] = int(length)
    source.append(record)
  return source


def encode_text(text: str) -> np.ndarray:
  return np.frombuffer(text.encode(), np.uint8).astype(np.int32) - 96  # a → 1, b → 2


def train_iter(source, global_batch_size=4, seed=0, **kwargs):
  return iter(utterances.train_dataset(source, STRATEGY, encode_text=encode_text, global_batch_size=global_batch_size,
                                       seed=seed, num_threads=2, **kwargs))


def batches_per_epoch(source, global_batch_size):
  counts = np.bincount(STRATEGY.buckets_of(utterances.utterance_lengths(source)), minlength=STRATEGY.num_buckets)
  return int((counts // global_batch_size).sum())


def assert_padded(batch, source):
  """Rows are their records padded with zeros; every row fits the batch's bucket."""
  rows, length = batch["audio"].shape
  assert length in STRATEGY.bucket_samples and batch["tokens"].shape == (rows, STRATEGY.max_tokens)
  assert batch["audio"].dtype == np.float32 and batch["tokens"].dtype == np.int32
  for key in ("audio_lengths", "token_lengths", "index"):
    assert batch[key].shape == (rows,) and batch[key].dtype == np.int32
  bucket = STRATEGY.bucket_samples.index(length)
  for audio, samples, tokens, num_tokens, index in zip(batch["audio"], batch["audio_lengths"], batch["tokens"],
                                                       batch["token_lengths"], batch["index"]):
    if index < 0:
      assert samples == 0 and num_tokens == 0 and not audio.any() and not tokens.any()
      continue
    record = source[index]
    assert samples == len(record["audio"]) and STRATEGY.bucket_of(samples) == bucket
    np.testing.assert_allclose(audio[:samples], (index + 1) / 32768.0)
    assert not audio[samples:].any()
    text = record["text"].decode() if isinstance(record["text"], bytes) else record["text"]
    np.testing.assert_array_equal(tokens[:num_tokens], encode_text(text))
    assert not tokens[num_tokens:].any()


def test_bucket_is_the_smallest_that_holds_the_utterance():
  assert [STRATEGY.bucket_of(n) for n in (0, 1, 250, 251, 500, 999, 1000, 1001)] == [0, 0, 0, 1, 1, 2, 2, 3]
  np.testing.assert_array_equal(STRATEGY.buckets_of(np.array([1, 250, 251, 1000, 1001])), [0, 0, 1, 2, 3])
  with pytest.raises(ConfigError, match="ascending"):
    utterances.Utterances(bucket_samples=(500, 250), max_tokens=4)


def test_lengths_come_from_num_samples_when_the_record_has_it():
  source = [{"audio": np.zeros(10, np.int16)}, {"audio": np.zeros(3, np.int16), "num_samples": 7}]
  lengths = utterances.utterance_lengths(source)
  assert lengths.dtype == np.int64 and lengths.tolist() == [10, 7]


def test_training_batches_are_one_bucket_and_zero_padded():
  source = make_source()
  iterator = train_iter(source)
  shapes = set()
  for _ in range(3 * batches_per_epoch(source, 4)):
    batch = next(iterator)
    assert batch["audio"].shape[0] == 4
    assert_padded(batch, source)
    shapes.add(batch["audio"].shape)
  assert shapes == {(4, length) for length in STRATEGY.bucket_samples}


def test_each_epoch_visits_each_utterance_at_most_once_and_reshuffles():
  source = make_source()
  per_epoch = batches_per_epoch(source, 4)
  iterator = train_iter(source)
  epochs = [[next(iterator)["index"].tolist() for _ in range(per_epoch)] for _ in range(3)]
  counts = np.bincount(STRATEGY.buckets_of(utterances.utterance_lengths(source)))
  for epoch in epochs:
    seen = [index for batch in epoch for index in batch]
    assert len(seen) == len(set(seen)) == 4 * per_epoch
    assert len(source) - len(seen) == (counts % 4).sum()  # only each bucket's remainder is left out
  assert epochs[0] != epochs[1] != epochs[2]
  assert set(map(tuple, epochs[0])) != set(map(tuple, epochs[1]))  # new batches, not just a new order


def test_the_seed_determines_the_batches():
  source = make_source()
  a, b, c = train_iter(source, seed=5), train_iter(source, seed=5), train_iter(source, seed=6)
  first_a = [next(a) for _ in range(20)]
  for x in first_a:
    y = next(b)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert [x["index"].tolist() for x in first_a] != [next(c)["index"].tolist() for _ in range(20)]


def test_processes_get_equal_shapes_and_disjoint_rows_of_the_global_batch():
  source = make_source()
  whole = train_iter(source, global_batch_size=8)
  processes = [train_iter(source, global_batch_size=8, process_index=p, process_count=2) for p in range(2)]
  for _ in range(2 * batches_per_epoch(source, 8) + 1):
    expected = next(whole)
    local = [next(iterator) for iterator in processes]
    assert local[0]["audio"].shape == local[1]["audio"].shape == (4, expected["audio"].shape[1])
    assert not set(local[0]["index"].tolist()) & set(local[1]["index"].tolist())
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([local[0][key], local[1][key]]), expected[key])


def test_restored_iterator_continues_exactly_where_it_stopped():
  source = make_source()
  dataset = utterances.train_dataset(source, STRATEGY, encode_text=encode_text, global_batch_size=4, seed=1,
                                     num_threads=2)
  stop = batches_per_epoch(source, 4) - 2  # the resumed part crosses into the next epoch
  uninterrupted = iter(dataset)
  expected = [next(uninterrupted) for _ in range(stop + 6)]
  first = iter(dataset)
  for _ in range(stop):
    next(first)
  state = first.get_state()
  resumed = iter(dataset)
  resumed.set_state(state)
  for want in expected[stop:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_eval_covers_every_utterance_once_with_padding_rows():
  source = make_source(num_utterances=37)
  count = utterances.count_eval_batches(source, STRATEGY, global_batch_size=6)
  per_process = []
  for process in range(2):
    batches = list(utterances.eval_batches(source, STRATEGY, encode_text=encode_text, global_batch_size=6,
                                           process_index=process, process_count=2))
    assert len(batches) == count
    for batch in batches:
      assert batch["audio"].shape[0] == 3
      assert_padded(batch, source)
    per_process.append(batches)
  for a, b in zip(*per_process):
    assert a["audio"].shape == b["audio"].shape
  indices = np.concatenate([np.concatenate([a["index"], b["index"]]) for a, b in zip(*per_process)])
  real = indices[indices >= 0]
  assert sorted(real.tolist()) == list(range(len(source)))
  buckets = STRATEGY.buckets_of(utterances.utterance_lengths(source))
  assert np.all(np.diff(buckets[real]) >= 0)  # grouped by bucket, in index order within one
  for bucket in range(STRATEGY.num_buckets):
    members = real[buckets[real] == bucket]
    assert np.all(np.diff(members) > 0)
  assert count == sum(-(-n // 6) for n in np.bincount(buckets))


def test_an_utterance_longer_than_the_last_bucket_is_an_error():
  source = make_source(num_utterances=12)
  source[5] = dict(source[5], audio=np.ones(1500, np.int16), num_samples=1500)
  source[10] = dict(source[10], audio=np.ones(1200, np.int16))
  for build in (lambda: train_iter(source),
                lambda: utterances.eval_batches(source, STRATEGY, encode_text=encode_text, global_batch_size=4)):
    with pytest.raises(DataError) as error:
      build()
    message = str(error.value)
    assert "\n" not in message and "2 of 12" in message and "utt-005" in message and "1500 samples" in message
    assert "max_seconds" in message


def test_too_many_tokens_is_an_error():
  source = make_source(num_utterances=12)
  source[7] = dict(source[7], text="ab" * 9)
  with pytest.raises(DataError) as error:
    utterances.check_utterances(source, STRATEGY, encode_text, what="librispeech train")
  message = str(error.value)
  assert "\n" not in message and message.startswith("librispeech train: 1 of 12")
  assert "utt-007" in message and "18 tokens" in message and "max_tokens" in message


def test_a_split_without_a_full_batch_in_any_bucket_is_an_error():
  source = make_source(num_utterances=12)
  with pytest.raises(DataError, match="no bucket of its 12 utterances holds a full batch of 8"):
    train_iter(source, global_batch_size=8)


def test_batch_size_must_divide_over_processes():
  with pytest.raises(ConfigError, match="does not divide"):
    train_iter(make_source(), global_batch_size=6, process_count=4)


def test_transcripts_with_unknown_characters_are_reported_once_and_kept(capsys):
  from afx.text import build_tokenizer
  tokenizer = build_tokenizer("characters", ["abc de"], case="lower")
  strategy = utterances.Utterances(STRATEGY.bucket_samples, 20, encode_text=tokenizer.encode,
                                   unknown_characters=tokenizer.unknown_characters)
  source = make_source(num_utterances=12)
  source = [dict(record, text="abc d") for record in source]
  source[3] = dict(source[3], text="abz dé")
  source[9] = dict(source[9], text="éa")
  for _ in range(2):
    lengths = utterances.check_utterances(source, strategy, tokenizer.encode, what="wsj test_eval92")
  assert len(lengths) == 12  # nothing dropped
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  assert lines[0].startswith("wsj test_eval92: 2 of 12 transcripts") and "'zé'" in lines[0] and "utt-003" in lines[0]


def test_batches_carry_each_rows_speakers_statistics_an_unlabelled_utterance_its_own():
  source = make_source(num_utterances=24)
  for i, record in enumerate(source):
    record["speaker"] = b"" if i % 5 == 0 else f"s{i % 3}".encode()  # tfds-like bytes; "" is unknown
  speakers = sorted({"s0", "s1", "s2"} | {f"utt-{i:03d}" for i in range(0, 24, 5)})
  table = utterances.SpeakerStatistics({name: row for row, name in enumerate(speakers)},
                                       np.arange(len(speakers) * 2, dtype=np.float32).reshape(-1, 2),
                                       np.arange(1, len(speakers) * 2 + 1, dtype=np.float32).reshape(-1, 2))
  strategy = utterances.Utterances(STRATEGY.bucket_samples, STRATEGY.max_tokens, speaker_statistics=lambda _: table)
  train = iter(utterances.train_dataset(source, strategy, encode_text=encode_text, global_batch_size=4, seed=0,
                                        num_threads=1))
  evaluation = utterances.eval_batches(source, strategy, encode_text=encode_text, global_batch_size=4)
  padding_rows = 0
  for batch in [next(train) for _ in range(3)] + list(evaluation):
    assert batch["feature_mean"].shape == batch["feature_std"].shape == (4, 2)
    for row, index in enumerate(batch["index"]):
      if index < 0:
        padding_rows += 1
        assert not batch["feature_mean"][row].any() and not batch["feature_std"][row].any()
        continue
      speaker = f"utt-{index:03d}" if index % 5 == 0 else f"s{index % 3}"
      np.testing.assert_array_equal(batch["feature_mean"][row], table.mean[table.rows[speaker]])
      np.testing.assert_array_equal(batch["feature_std"][row], table.std[table.rows[speaker]])
  assert padding_rows > 0
