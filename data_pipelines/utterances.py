"""Grain input pipelines of whole utterances for speech recognition, bucketed by length.

Records are `{"audio": int16[n], "text": str | bytes, "id": str | bytes}`, optionally with
`"num_samples": int`.  Every utterance is kept whole and zero-padded to the smallest of a few static
lengths (`Utterances.bucket_samples`), so a model compiles once per bucket (the ESPnet/NeMo/Lhotse
way); its text is encoded and zero-padded to `max_tokens`.

Training follows one global plan that every process computes alike: for epoch e, all record indices
shuffled by a generator seeded with (seed, e), grouped by bucket, each bucket cut into global batches
(its remainder, a different one every epoch, is left out of that epoch), and the batches' order
shuffled.  Process p reads rows [p·local, (p+1)·local) of each global batch, so at every step every
process holds a local batch of the same bucket and shape, as `jax.make_array_from_process_local_data`
needs.  The dataset is a grain `MapDataset` over step numbers, so its iterator's state (saved with
checkpoints) is one index and a restored iterator gives exactly the batches an uninterrupted one would.

Evaluation: every utterance exactly once, grouped by bucket, batches filled up with padding rows
(`index == -1`).  Utterances that do not fit the buckets are reported (`check_utterances`), never
dropped silently.  Everything here is host-side NumPy.

Per-speaker feature statistics (Kaldi's CMVN, `compute-cmvn-stats --spk2utt` / `apply-cmvn --utt2spk`):
a strategy given `speaker_statistics` (a split's mean and standard deviation per feature bin of each
speaker, `SpeakerStatistics`) puts each row's speaker's into its batches as `feature_mean` and
`feature_std`.  A record's speaker is `speaker_of(record)`: its `speaker`, or for "" (unknown) its own
`id`, as Kaldi's utt2spk maps an utterance without a speaker to itself.
"""

import collections
import dataclasses
import sys
import threading
from typing import Callable, Iterator, Mapping, Sequence

import grain
import numpy as np

from afx.errors import ConfigError, DataError
from data_pipelines import pipeline

EncodeText = Callable[[str], np.ndarray]
PLANS_CACHED = 4  # epochs whose plan a training dataset keeps


@dataclasses.dataclass(frozen=True)
class SpeakerStatistics:
  """One split's feature statistics per speaker: speaker `s` (a `speaker_of` value) has row `rows[s]` of
  `mean` and `std` `[speakers, bins]`."""
  rows: Mapping[str, int]
  mean: np.ndarray
  std: np.ndarray

  @property
  def bins(self) -> int:
    return self.mean.shape[1]


@dataclasses.dataclass(frozen=True)
class Utterances:
  """Bucketing: audio padded to the smallest of `bucket_samples` (ascending) that holds it, text to `max_tokens`.

  `encode_text` (the task's tokenizer) turns a transcript into token ids; the batching methods
  (`train`, `evaluate`, `count_batches`, the interface of `data_pipelines.pipeline`'s strategies) use it.
  `unknown_characters` (the tokenizer's) gives the characters of a transcript that encode as `<unk>`:
  each split that has some is reported once (`check_utterances`).  `speaker_statistics` (the task's)
  gives the `SpeakerStatistics` of a source's split; with it, batches also hold `feature_mean` and
  `feature_std` `float32[b, bins]`, each row its speaker's (zeros in padding rows).
  """
  bucket_samples: tuple[int, ...]
  max_tokens: int
  encode_text: EncodeText | None = dataclasses.field(default=None, compare=False, repr=False)
  unknown_characters: Callable[[str], str] | None = dataclasses.field(default=None, compare=False, repr=False)
  speaker_statistics: Callable[[Sequence], SpeakerStatistics] | None = dataclasses.field(default=None, compare=False,
                                                                                         repr=False)

  def __post_init__(self):
    buckets = tuple(int(b) for b in self.bucket_samples)
    if not buckets or buckets[0] <= 0 or any(a >= b for a, b in zip(buckets, buckets[1:])):
      raise ConfigError(f"bucket_samples={self.bucket_samples!r} must be positive and strictly ascending, "
                        "e.g. (80000, 160000, 320000)")
    if int(self.max_tokens) <= 0:
      raise ConfigError(f"max_tokens={self.max_tokens!r} must be positive")
    object.__setattr__(self, "bucket_samples", buckets)
    object.__setattr__(self, "max_tokens", int(self.max_tokens))

  @property
  def num_buckets(self) -> int:
    return len(self.bucket_samples)

  @property
  def max_samples(self) -> int:
    return self.bucket_samples[-1]

  def bucket_of(self, num_samples: int) -> int:
    """The index of the smallest bucket >= `num_samples`; `num_buckets` when it is longer than the last."""
    return int(np.searchsorted(self.bucket_samples, num_samples, side="left"))

  def buckets_of(self, lengths: np.ndarray) -> np.ndarray:
    """`bucket_of` for each of `lengths`, as int64."""
    return np.searchsorted(np.asarray(self.bucket_samples), np.asarray(lengths), side="left").astype(np.int64)

  def train(self, source: Sequence, *, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1,
            num_threads: int = 4) -> grain.IterDataset:
    """This process's rows of endless global batches of `batch_size` (see `train_dataset`)."""
    return train_dataset(source, self, encode_text=self.encode_text, global_batch_size=batch_size, seed=seed,
                         process_index=process_index, process_count=process_count, num_threads=num_threads)

  def count_batches(self, source: Sequence, *, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> int:
    return count_eval_batches(source, self, global_batch_size=batch_size, process_index=process_index,
                              process_count=process_count)

  def evaluate(self, source: Sequence, *, batch_size: int, process_index: int = 0, process_count: int = 1,
               num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every utterance once (see `eval_batches`); one global plan gives every process as many batches, so
    `num_batches` (the most any process has) changes nothing."""
    del num_batches
    return eval_batches(source, self, encode_text=self.encode_text, global_batch_size=batch_size,
                        process_index=process_index, process_count=process_count)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _record_id(record, index: int) -> str:
  return _text(record["id"]) if "id" in record else f"#{index}"


def _num_samples(record) -> int:
  return int(record["num_samples"]) if "num_samples" in record else len(record["audio"])


def speaker_of(record) -> str:
  """The speaker whose statistics normalise `record`: its `speaker`, or its own `id` when it has none ("")."""
  speaker = _text(record.get("speaker", ""))
  return speaker or _text(record["id"])


def _encode(encode_text: EncodeText, record) -> np.ndarray:
  return np.asarray(encode_text(_text(record["text"])), np.int64).reshape(-1)


def utterance_lengths(source: Sequence) -> np.ndarray:
  """Samples per record: `record["num_samples"]` where the record has it, else `len(record["audio"])`."""
  return np.fromiter((_num_samples(source[i]) for i in range(len(source))), np.int64, len(source))


_REPORTED_UNKNOWN: set[tuple] = set()  # the sources whose unknown characters were reported, once per process


def report_unknown_characters(unknown: dict[int, str], total: int, first_id: str, *, what: str) -> str | None:
  """One line on stderr (once per source) for the transcripts whose characters the tokenizer does not know:
  how many, which characters, the first record, what it costs and the fix; the line, or None."""
  key = (what, total, first_id, len(unknown))
  if not unknown or key in _REPORTED_UNKNOWN:
    return None
  _REPORTED_UNKNOWN.add(key)
  characters = "".join(sorted(set("".join(unknown.values()))))
  line = (f"{what}: {len(unknown)} of {total} transcripts hold characters the tokenizer does not know "
          f"({characters!r}), the first {first_id!r}; they encode as <unk> and score as errors: normalise them in "
          "the dataset's transcripts, or train on text that has them (a new workdir builds a new tokenizer)")
  print(line, file=sys.stderr, flush=True)
  return line


def check_utterances(source: Sequence, strategy: Utterances, encode_text: EncodeText, *,
                     what: str) -> np.ndarray:
  """Samples per record (as `utterance_lengths`), after making sure every utterance fits `strategy`.

  Raises `DataError`, one line, when any utterance is longer than the last bucket or has more than
  `max_tokens` tokens: how many, the first such record's id and length, and the fix.  Transcripts with
  characters outside the tokenizer's (`strategy.unknown_characters`) are reported, not refused
  (`report_unknown_characters`).
  """
  lengths = np.zeros(len(source), np.int64)
  tokens = np.zeros(len(source), np.int64)
  unknown: dict[int, str] = {}
  for i in range(len(source)):
    record = source[i]
    lengths[i] = _num_samples(record)
    tokens[i] = _encode(encode_text, record).shape[0]
    if strategy.unknown_characters is not None:
      characters = strategy.unknown_characters(_text(record["text"]))
      if characters:
        unknown[i] = characters
  if unknown:
    first = min(unknown)
    report_unknown_characters(unknown, len(source), _record_id(source[first], first), what=what)
  problems = []
  too_long = np.flatnonzero(lengths > strategy.max_samples)
  if too_long.size:
    first = int(too_long[0])
    problems.append(
        f"{too_long.size} of {len(source)} utterances are longer than the last bucket "
        f"({strategy.max_samples} samples), the first {_record_id(source[first], first)!r} "
        f"(index {first}) with {lengths[first]} samples; raise --config.data.max_seconds / the last bucket, "
        "or rebuild the dataset with a lower max_seconds")
  too_many = np.flatnonzero(tokens > strategy.max_tokens)
  if too_many.size:
    first = int(too_many[0])
    problems.append(
        f"{too_many.size} of {len(source)} utterances have more than max_tokens={strategy.max_tokens} tokens, "
        f"the first {_record_id(source[first], first)!r} (index {first}) with {tokens[first]} tokens; "
        "raise --config.data.max_tokens, or rebuild the dataset with a lower max_seconds")
  if problems:
    raise DataError(f"{what}: " + "; and ".join(problems))
  return lengths


def _check_processes(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0 or process_count <= 0 or global_batch_size % process_count:
    raise ConfigError(f"batch size {global_batch_size} does not divide over {process_count} processes; "
                      f"set --config.batch_size to a multiple of {process_count}")
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} is not in [0, {process_count})")
  return global_batch_size // process_count


def epoch_plan(buckets: np.ndarray, num_buckets: int, global_batch_size: int, seed: int,
               epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """One training epoch's global batches: record indices `int64[batches, global_batch_size]` and each
  batch's bucket `int64[batches]`, from every record's bucket (`buckets[i]`).  The same on every process.
  Each bucket's remainder (under a batch) is left out of this epoch; every epoch has as many batches."""
  rng = np.random.default_rng([int(seed) & (2**64 - 1), int(epoch)])
  order = rng.permutation(len(buckets))
  grouped = order[np.argsort(buckets[order], kind="stable")]  # by bucket, shuffled within each
  starts = np.concatenate([[0], np.cumsum(np.bincount(buckets, minlength=num_buckets))])
  rows, batch_buckets = [], []
  for bucket in range(num_buckets):
    members = grouped[starts[bucket]:starts[bucket + 1]]
    full = len(members) // global_batch_size
    rows.append(members[:full * global_batch_size].reshape(full, global_batch_size))
    batch_buckets.append(np.full(full, bucket, np.int64))
  batch_order = rng.permutation(sum(len(b) for b in batch_buckets))
  return np.concatenate(rows)[batch_order], np.concatenate(batch_buckets)[batch_order]


def _split_speakers(source: Sequence, strategy: Utterances) -> SpeakerStatistics | None:
  """The speaker statistics of `source`'s split (see `Utterances`), or None when the strategy has none."""
  return None if strategy.speaker_statistics is None else strategy.speaker_statistics(source)


def _add_speaker_statistics(batch: dict, row: int, record, index: int, speakers: SpeakerStatistics) -> None:
  speaker = speaker_of(record)
  if speaker not in speakers.rows:
    raise DataError(f"record {_record_id(record, index)!r} (index {index}) has speaker {speaker!r}, whose feature "
                    "statistics were not measured: the split changed since the run measured them; delete the run's "
                    "feature_stats.json and rerun training to measure them again")
  batch["feature_mean"][row] = speakers.mean[speakers.rows[speaker]]
  batch["feature_std"][row] = speakers.std[speakers.rows[speaker]]


def load_batch(source: Sequence, strategy: Utterances, encode_text: EncodeText, indices: Sequence[int],
               bucket: int, speakers: SpeakerStatistics | None = None) -> dict[str, np.ndarray]:
  """Rows `indices` of `source` (-1: a padding row) padded to bucket `bucket` and `max_tokens`, with each
  row's speaker statistics from `speakers` (`_split_speakers`) where given."""
  rows, length = len(indices), strategy.bucket_samples[bucket]
  batch = {"audio": np.zeros((rows, length), np.float32), "audio_lengths": np.zeros(rows, np.int32),
           "tokens": np.zeros((rows, strategy.max_tokens), np.int32), "token_lengths": np.zeros(rows, np.int32),
           "index": np.asarray(indices, np.int32)}
  if speakers is not None:
    batch["feature_mean"] = np.zeros((rows, speakers.bins), np.float32)
    batch["feature_std"] = np.zeros((rows, speakers.bins), np.float32)
  for row, index in enumerate(indices):
    if index < 0:
      continue
    record = source[int(index)]
    audio, tokens = pipeline.waveform(record).reshape(-1), _encode(encode_text, record)
    if audio.shape[0] > length or tokens.shape[0] > strategy.max_tokens:
      raise DataError(
          f"record {_record_id(record, int(index))!r} (index {index}) has {audio.shape[0]} samples and "
          f"{tokens.shape[0]} tokens, more than its bucket's {length} samples or max_tokens={strategy.max_tokens} "
          "(its num_samples disagrees with its audio?); rebuild the dataset")
    batch["audio"][row, :audio.shape[0]] = audio
    batch["audio_lengths"][row] = audio.shape[0]
    batch["tokens"][row, :tokens.shape[0]] = tokens
    batch["token_lengths"][row] = tokens.shape[0]
    if speakers is not None:
      _add_speaker_statistics(batch, row, record, int(index), speakers)
  return batch


class _TrainBatches:
  """Global step → this process's local batch; per-epoch plans kept in a small LRU cache (thread-safe)."""

  def __init__(self, source, strategy, encode_text, buckets, global_batch_size, batches_per_epoch,
               process_index, local_batch_size, seed, speakers):
    self.source, self.strategy, self.encode_text, self.speakers = source, strategy, encode_text, speakers
    self.buckets, self.global_batch_size, self.batches_per_epoch = buckets, global_batch_size, batches_per_epoch
    self.rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)
    self.seed = seed
    self._plans, self._lock = collections.OrderedDict(), threading.Lock()

  def __getstate__(self):  # picklable for multiprocessing: without the cache and its lock
    return {k: v for k, v in self.__dict__.items() if k not in ("_plans", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._plans, self._lock = collections.OrderedDict(), threading.Lock()

  def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    with self._lock:
      if epoch in self._plans:
        self._plans.move_to_end(epoch)
        return self._plans[epoch]
    plan = epoch_plan(self.buckets, self.strategy.num_buckets, self.global_batch_size, self.seed, epoch)
    with self._lock:
      self._plans[epoch] = plan
      while len(self._plans) > PLANS_CACHED:
        self._plans.popitem(last=False)
    return plan

  def __call__(self, step: int, batch_in_epoch: int) -> dict[str, np.ndarray]:
    indices, buckets = self.plan(step // self.batches_per_epoch)
    return load_batch(self.source, self.strategy, self.encode_text, indices[batch_in_epoch, self.rows],
                      int(buckets[batch_in_epoch]), self.speakers)


def train_dataset(source: Sequence, strategy: Utterances, *, encode_text: EncodeText, global_batch_size: int,
                  seed: int, process_index: int = 0, process_count: int = 1, num_threads: int = 4,
                  prefetch: int = 2, what: str = "the training split") -> grain.IterDataset:
  """Endless local batches (`global_batch_size // process_count` rows) of whole utterances:
  `{"audio": float32[b, bucket], "audio_lengths": int32[b], "tokens": int32[b, max_tokens],
  "token_lengths": int32[b], "index": int32[b]}` (`index`: the record's index in `source`; and with the
  strategy's `speaker_statistics`, `feature_mean` and `feature_std`), every row of a batch from the same
  bucket, zero past its lengths.  Raises `DataError` before reading a batch when an utterance does not fit
  `strategy` (see `check_utterances`) or no bucket holds a full global batch."""
  local_batch_size = _check_processes(global_batch_size, process_index, process_count)
  speakers = _split_speakers(source, strategy)
  buckets = strategy.buckets_of(check_utterances(source, strategy, encode_text, what=what))
  counts = np.bincount(buckets, minlength=strategy.num_buckets)
  batches_per_epoch = int((counts // global_batch_size).sum())
  if batches_per_epoch == 0:
    per_bucket = ", ".join(f"{b}: {n}" for n, b in zip(counts.tolist(), strategy.bucket_samples))
    raise DataError(f"{what}: no bucket of its {len(source)} utterances holds a full batch of {global_batch_size} "
                    f"(utterances per bucket, by its samples: {per_bucket}); lower --config.batch_size, use fewer or "
                    "wider buckets, or train on a larger split")
  to_batch = _TrainBatches(source, strategy, encode_text, buckets, global_batch_size, batches_per_epoch,
                           process_index, local_batch_size, seed, speakers)
  dataset = grain.MapDataset.range(batches_per_epoch).repeat(None).map_with_index(to_batch)
  # each element is a whole batch: read `prefetch` ahead, and at least one for every thread
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(prefetch, num_threads))
  return dataset.to_iter_dataset(read)


def eval_plan(buckets: np.ndarray, num_buckets: int, global_batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Every record once: global batches `int64[batches, global_batch_size]` (index order within each bucket,
  the last batch of a bucket filled up with -1) and each batch's bucket `int64[batches]`."""
  rows, batch_buckets = [], []
  for bucket in range(num_buckets):
    members = np.flatnonzero(buckets == bucket)
    count = -(-len(members) // global_batch_size)
    padded = np.full(count * global_batch_size, -1, np.int64)
    padded[:len(members)] = members
    rows.append(padded.reshape(count, global_batch_size))
    batch_buckets.append(np.full(count, bucket, np.int64))
  return (np.concatenate(rows) if rows else np.zeros((0, global_batch_size), np.int64)), np.concatenate(batch_buckets)


def eval_batches(source: Sequence, strategy: Utterances, *, encode_text: EncodeText, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 what: str = "the evaluation split") -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of every evaluation batch, keys as in `train_dataset`; padding rows have
  `index == -1`, lengths 0 and zero audio and tokens.  Every process runs the same `count_eval_batches`
  batches of the same shapes.  Raises `DataError` (at the call) when an utterance does not fit `strategy`."""
  local_batch_size = _check_processes(global_batch_size, process_index, process_count)
  speakers = _split_speakers(source, strategy)
  buckets = strategy.buckets_of(check_utterances(source, strategy, encode_text, what=what))
  indices, batch_buckets = eval_plan(buckets, strategy.num_buckets, global_batch_size)
  rows = slice(process_index * local_batch_size, (process_index + 1) * local_batch_size)

  def batches():
    for batch_indices, bucket in zip(indices, batch_buckets):
      yield load_batch(source, strategy, encode_text, batch_indices[rows], int(bucket), speakers)

  return batches()


def count_eval_batches(source: Sequence, strategy: Utterances, *, global_batch_size: int,
                       process_index: int = 0, process_count: int = 1) -> int:
  """How many batches `eval_batches` gives (the same on every process)."""
  _check_processes(global_batch_size, process_index, process_count)
  counts = np.bincount(strategy.buckets_of(utterance_lengths(source)), minlength=strategy.num_buckets + 1)
  return int((-(-counts[:strategy.num_buckets] // global_batch_size)).sum())
