"""Grain input pipelines over random-access sources of `{"audio": int16[n], "labels": int[k]}` records.

A task names how its batches are cut with a batching strategy; each strategy has `train(source, ...)`
(an endless, checkpointable grain dataset of this process's batches) and `evaluate(source, ...)`
(every example of a split exactly once, padded to whole batches):

  Crops       training: this process's shard of the clips, shuffled anew each epoch, a random crop
              (or zero pad) to `clip_samples`, batched; the iterator's state goes into checkpoints so
              a resumed run sees exactly the batches an uninterrupted one would
  Windows     evaluation: every clip cut into sliding windows; the model's window scores are
              averaged per clip by the caller
  Utterances  whole utterances padded to a few static lengths, with their tokens
              (`data_pipelines.utterances`)

Everything here is host-side NumPy.
"""

import dataclasses
from typing import Iterator, Sequence

import grain
import numpy as np

INT16_SCALE = 1.0 / 32768.0


def waveform(record) -> np.ndarray:
  return np.asarray(record["audio"], np.float32) * INT16_SCALE


def multi_hot(label_ids, num_classes: int) -> np.ndarray:
  targets = np.zeros(num_classes, np.float32)
  targets[np.asarray(label_ids, np.int64)] = 1.0
  return targets


def real_samples(audio: np.ndarray, length: int) -> np.int32:
  """How many samples of a `length`-sample window of `audio` are audio rather than zero padding."""
  return np.int32(min(audio.shape[0], length))


def crop_or_pad(audio: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """A `length`-sample window: a random one when `rng` is given (else the first), zero-padded at the end."""
  if audio.shape[0] > length:
    start = int(rng.integers(0, audio.shape[0] - length + 1)) if rng is not None else 0
    return audio[start:start + length]
  return np.pad(audio, (0, length - audio.shape[0]))


def sliding_windows(audio: np.ndarray, length: int, hop: int) -> np.ndarray:
  """`[windows, length]` covering the whole clip: starts 0, hop, 2·hop, …, the last one ending at the clip's end."""
  if audio.shape[0] <= length:
    return crop_or_pad(audio, length)[None]
  starts = list(range(0, audio.shape[0] - length + 1, hop))
  if starts[-1] + length < audio.shape[0]:
    starts.append(audio.shape[0] - length)
  return np.stack([audio[s:s + length] for s in starts])


def process_shard(num_records: int, process_index: int, process_count: int) -> range:
  """The record indices one process reads: disjoint across processes, together all of them."""
  return range(process_index, num_records, process_count)


def train_dataset(source: Sequence, *, clip_samples: int, num_classes: int, local_batch_size: int,
                  seed: int, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 4, prefetch: int = 2) -> grain.IterDataset:
  """Endless batches `{"audio": float32[b, clip_samples], "samples": int32[b], "targets": float32[b, classes]}`
  for one process; `samples` counts each row's samples of audio before its zero padding."""

  def to_example(record, rng):
    audio = waveform(record)
    return {"audio": crop_or_pad(audio, clip_samples, rng), "samples": real_samples(audio, clip_samples),
            "targets": multi_hot(record["labels"], num_classes)}

  shard = process_shard(len(source), process_index, process_count)
  dataset = (grain.MapDataset.source(source)[shard.start::shard.step]
             .shuffle(seed=seed)
             .repeat(None)
             .random_map(to_example, seed=seed)
             .batch(local_batch_size, drop_remainder=True))
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch * local_batch_size)
  return dataset.to_iter_dataset(read)


def eval_batches(source: Sequence, *, clip_samples: int, hop_samples: int, num_classes: int,
                 local_batch_size: int, process_index: int = 0, process_count: int = 1,
                 num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Batches of sliding windows over this process's clips.

  Each batch is `{"audio": [b, clip_samples], "samples": int32[b], "clip": int32[b], "targets": [b, classes]}`
  (`samples` as in `train_dataset`); padding rows have `clip == -1` and no samples.  `num_batches` pads the
  stream with empty batches so that every process runs the same number of steps (see `count_eval_batches`).
  """
  rows = {"audio": [], "samples": [], "clip": [], "targets": []}
  emitted = 0

  def flush():
    pad = local_batch_size - len(rows["clip"])
    batch = {
        "audio": np.concatenate([np.stack(rows["audio"]) if rows["audio"] else np.zeros((0, clip_samples), np.float32),
                                 np.zeros((pad, clip_samples), np.float32)]),
        "samples": np.asarray(rows["samples"] + [0] * pad, np.int32),
        "clip": np.asarray(rows["clip"] + [-1] * pad, np.int32),
        "targets": np.concatenate([np.stack(rows["targets"]) if rows["targets"] else np.zeros((0, num_classes), np.float32),
                                   np.zeros((pad, num_classes), np.float32)]),
    }
    for column in rows.values():
      column.clear()
    return batch

  for clip in process_shard(len(source), process_index, process_count):
    record = source[clip]
    targets = multi_hot(record["labels"], num_classes)
    audio = waveform(record)
    samples = real_samples(audio, clip_samples)  # every window of a longer clip is whole
    for window in sliding_windows(audio, clip_samples, hop_samples):
      rows["audio"].append(window)
      rows["samples"].append(samples)
      rows["clip"].append(clip)
      rows["targets"].append(targets)
      if len(rows["clip"]) == local_batch_size:
        yield flush()
        emitted += 1
  if rows["clip"]:
    yield flush()
    emitted += 1
  while num_batches is not None and emitted < num_batches:
    yield flush()
    emitted += 1


def count_eval_batches(source: Sequence, *, clip_samples: int, hop_samples: int, local_batch_size: int,
                       process_index: int = 0, process_count: int = 1) -> int:
  windows = sum(sliding_windows(waveform(source[clip]), clip_samples, hop_samples).shape[0]
                for clip in process_shard(len(source), process_index, process_count))
  return -(-windows // local_batch_size)


def average_by_clip(num_clips: int, scores: np.ndarray, clips: np.ndarray,
                    targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Clip-level scores (mean over each clip's windows) and targets, from window rows; `clip < 0` rows ignored."""
  keep = clips >= 0
  scores, clips, targets = scores[keep], clips[keep], targets[keep]
  sums = np.zeros((num_clips, scores.shape[1]), np.float64)
  np.add.at(sums, clips, scores)
  counts = np.bincount(clips, minlength=num_clips)
  clip_targets = np.zeros((num_clips, targets.shape[1]), np.float32)
  clip_targets[clips] = targets
  seen = counts > 0
  return sums[seen] / counts[seen, None], clip_targets[seen]


@dataclasses.dataclass(frozen=True)
class Crops:
  """Training batches of one random `clip_samples` crop per clip, with multi-hot `targets` over `num_classes`."""
  clip_samples: int
  num_classes: int

  def train(self, source: Sequence, *, batch_size: int, seed: int, process_index: int = 0,
            process_count: int = 1, num_threads: int = 4) -> grain.IterDataset:
    """This process's share of global batches of `batch_size` (see `train_dataset`)."""
    return train_dataset(source, clip_samples=self.clip_samples, num_classes=self.num_classes,
                         local_batch_size=batch_size // process_count, seed=seed, process_index=process_index,
                         process_count=process_count, num_threads=num_threads)


@dataclasses.dataclass(frozen=True)
class Windows:
  """Evaluation batches of sliding `clip_samples` windows at `hop_samples` over every clip (see `eval_batches`)."""
  clip_samples: int
  hop_samples: int
  num_classes: int

  def _arguments(self, batch_size: int, process_index: int, process_count: int) -> dict:
    return dict(clip_samples=self.clip_samples, hop_samples=self.hop_samples,
                local_batch_size=batch_size // process_count, process_index=process_index,
                process_count=process_count)

  def count_batches(self, source: Sequence, *, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> int:
    """How many batches `evaluate` gives this process before padding to `num_batches`."""
    return count_eval_batches(source, **self._arguments(batch_size, process_index, process_count))

  def evaluate(self, source: Sequence, *, batch_size: int, process_index: int = 0, process_count: int = 1,
               num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    return eval_batches(source, num_classes=self.num_classes, num_batches=num_batches,
                        **self._arguments(batch_size, process_index, process_count))
