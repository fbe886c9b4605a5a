"""The grain pipeline: per-process shards, determinism, resumable state, sliding-window evaluation."""

import numpy as np
import pytest

from data_pipelines import pipeline


def make_source(num_clips=37, base_length=1200):
  return [{"audio": np.full(base_length + 40 * i, i, np.int16), "labels": np.array([i % 5, (i + 1) % 5])}
          for i in range(num_clips)]


def clip_ids(batch):
  """The clip each row came from (every sample of clip i equals i)."""
  return [int(round(row[0] * 32768)) for row in batch["audio"]]


def first_epoch_clips(source, process_index, process_count):
  dataset = pipeline.train_dataset(source, clip_samples=1000, num_classes=5, local_batch_size=1, seed=3,
                                   process_index=process_index, process_count=process_count)
  iterator = iter(dataset)
  shard_size = len(pipeline.process_shard(len(source), process_index, process_count))
  return [clip_ids(next(iterator))[0] for _ in range(shard_size)]


def test_process_shards_are_disjoint_and_cover_every_clip():
  source = make_source()
  shards = [first_epoch_clips(source, p, 4) for p in range(4)]
  seen = [clip for shard in shards for clip in shard]
  assert sorted(seen) == list(range(len(source)))
  for shard in shards:
    assert len(set(shard)) == len(shard)


def test_same_seed_gives_the_same_batches_and_epochs_reshuffle():
  source = make_source()
  make = lambda seed: iter(pipeline.train_dataset(source, clip_samples=1000, num_classes=5,
                                                  local_batch_size=8, seed=seed))
  a, b, c = make(0), make(0), make(1)
  batches_a = [next(a) for _ in range(10)]
  batches_b = [next(b) for _ in range(10)]
  for x, y in zip(batches_a, batches_b):
    np.testing.assert_array_equal(x["audio"], y["audio"])
    np.testing.assert_array_equal(x["targets"], y["targets"])
  assert clip_ids(next(c)) != clip_ids(batches_a[0])
  epoch1 = [clip for batch in batches_a[:4] for clip in clip_ids(batch)][:len(source)]
  epoch2 = [clip for batch in batches_a[4:10] for clip in clip_ids(batch)]
  assert epoch2[:8] != epoch1[:8]


def test_restored_iterator_continues_exactly_where_it_stopped():
  source = make_source()
  dataset = pipeline.train_dataset(source, clip_samples=1000, num_classes=5, local_batch_size=4, seed=0)
  uninterrupted = iter(dataset)
  expected = [next(uninterrupted)["audio"] for _ in range(12)]
  first = iter(dataset)
  for _ in range(7):
    next(first)
  state = first.get_state()
  resumed = iter(dataset)
  resumed.set_state(state)
  for want in expected[7:]:
    np.testing.assert_array_equal(next(resumed)["audio"], want)


def test_targets_are_multi_hot_and_crops_have_the_clip_length():
  batch = next(iter(pipeline.train_dataset(make_source(), clip_samples=1000, num_classes=5,
                                           local_batch_size=6, seed=0)))
  assert batch["audio"].shape == (6, 1000) and batch["audio"].dtype == np.float32
  for clip, targets, samples in zip(clip_ids(batch), batch["targets"], batch["samples"]):
    assert set(np.nonzero(targets)[0]) == {clip % 5, (clip + 1) % 5}
    assert samples == 1000  # every clip is longer than the crop


def test_short_clips_are_zero_padded_at_the_end():
  audio = np.ones(300, np.float32)
  padded = pipeline.crop_or_pad(audio, 1000, np.random.default_rng(0))
  assert padded.shape == (1000,) and padded[:300].sum() == 300 and not padded[300:].any()


@pytest.mark.parametrize("length,expected_starts", [(1000, [0]), (1400, [0, 400]), (2000, [0, 500, 1000]),
                                                     (2100, [0, 500, 1000, 1100]), (700, [0])])
def test_sliding_windows_cover_the_clip(length, expected_starts):
  audio = np.arange(length, dtype=np.float32)
  windows = pipeline.sliding_windows(audio, 1000, 500)
  assert windows.shape == (len(expected_starts), 1000)
  for window, start in zip(windows, expected_starts):
    if length >= 1000:
      np.testing.assert_array_equal(window, audio[start:start + 1000])


def test_eval_batches_average_windows_per_clip_across_processes():
  source = make_source(num_clips=9, base_length=900)
  per_window = []
  for process in range(2):
    for batch in pipeline.eval_batches(source, clip_samples=1000, hop_samples=250, num_classes=5,
                                       local_batch_size=4, process_index=process, process_count=2,
                                       num_batches=5):
      assert batch["audio"].shape == (4, 1000)
      for clip, samples in zip(batch["clip"], batch["samples"]):  # clip i has 900 + 40·i samples
        assert samples == (min(900 + 40 * clip, 1000) if clip >= 0 else 0)
      per_window.append(batch)
  clips = np.concatenate([b["clip"] for b in per_window])
  assert sorted(set(clips[clips >= 0])) == list(range(9))
  # Score of a window = its mean sample, so clip scores are means of their windows.
  scores = np.stack([np.concatenate([b["audio"].mean(1) for b in per_window])] * 2, axis=1)
  targets = np.concatenate([b["targets"] for b in per_window])
  clip_scores, clip_targets = pipeline.average_by_clip(9, scores, clips, targets)
  for clip in range(9):
    windows = pipeline.sliding_windows(pipeline.waveform(source[clip]), 1000, 250)
    assert clip_scores[clip, 0] == pytest.approx(windows.mean(), rel=1e-6)
    assert set(np.nonzero(clip_targets[clip])[0]) == {clip % 5, (clip + 1) % 5}
