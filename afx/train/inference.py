"""Use a trained run from its workdir: evaluate a split, predict labels for audio files, transcribe speech,
or sample audio."""

import functools
import json
import os
import time
from typing import Iterator, Sequence

import jax
import numpy as np

from afx.audio.io import load_audio, write_audio
from afx.errors import AudioError, ConfigError
from afx.tasks import require
from afx.train.data import open_dataset
from afx.train.trainer import _host, decoding_options, evaluate_source, load_run
from data_pipelines import pipeline


def evaluate(workdir: str, split: str | None = None) -> dict:
  """`eval.json` of the run, or, for another split, that split's metrics (also saved as `eval_<split>.json`)."""
  workdir = os.path.abspath(workdir)
  eval_path = os.path.join(workdir, "eval.json")
  if split is None and os.path.exists(eval_path):
    with open(eval_path) as f:
      return json.load(f)
  run, state = load_run(workdir)
  split = split or run.config.data.test_split
  results = evaluate_source(run, state, open_dataset(run.config.data).source(split))
  results.update(split=split, step=int(state.step))
  with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def predict(workdir: str, files: Sequence[str], *, top_k: int = 5) -> Iterator[dict]:
  """For each file, `{"file", "top": [{"label", "score"}, …]}`, or `{"file", "error"}` if it cannot be read.

  Long files are cut into the run's sliding windows and the window scores averaged.
  """
  run, state = load_run(workdir)
  clip_scores = require(run.task, "predict", workdir=workdir, task_name=run.config.task)
  windows_of = run.task.eval_batching
  window, hop = windows_of.clip_samples, windows_of.hop_samples
  batch_size = run.mesh.size
  for path in files:
    try:
      audio, _ = load_audio(path, sample_rate=run.info.sample_rate)
    except AudioError as error:
      yield {"file": path, "error": str(error)}
      continue
    windows = pipeline.sliding_windows(audio, window, hop)
    pad = -windows.shape[0] % batch_size
    windows = np.concatenate([windows, np.zeros((pad, window), np.float32)])
    clips = np.r_[np.zeros(windows.shape[0] - pad, np.int32), -np.ones(pad, np.int32)]
    samples = np.where(clips >= 0, pipeline.real_samples(audio, window), 0).astype(np.int32)
    rows: dict[str, list] = {}
    for start in range(0, windows.shape[0], batch_size):
      batch = {"audio": windows[start:start + batch_size], "samples": samples[start:start + batch_size],
               "clip": clips[start:start + batch_size],
               "targets": np.zeros((batch_size, run.info.num_classes), np.float32)}
      for key, value in run.predict(state, run.to_global(batch)).items():
        rows.setdefault(key, []).append(_host(value))
    mean_scores = clip_scores({key: np.concatenate(value) for key, value in rows.items()})
    top = np.argsort(-mean_scores, kind="stable")[:top_k]
    yield {"file": path, "top": [{"label": run.info.class_names[i], "score": round(float(mean_scores[i]), 6)}
                                 for i in top]}


def sample_audio(workdir: str, *, seconds: float, out: str, temperature: float = 1.0, prime: str | None = None,
                 seed: int = 0) -> dict:
  """Generate `seconds` of audio from a next-sample run into the wav file `out`; returns a summary.

  `prime` is an audio file whose last `past + context` samples start the generation (silence
  otherwise); the written file holds only the generated continuation.
  """
  if seconds <= 0:
    raise ConfigError(f"--seconds must be positive, got {seconds}")
  if temperature < 0:
    raise ConfigError(f"--temperature must be >= 0, got {temperature}")
  run, state = load_run(workdir)
  generate = require(run.task, "sample", workdir=workdir, task_name=run.config.task)
  sample_rate = run.info.sample_rate
  prime_audio = None if prime is None else load_audio(prime, sample_rate=sample_rate)[0]
  variables = jax.device_get({"params": state.params, **state.model_state})
  num_samples = round(seconds * sample_rate)
  start = time.perf_counter()
  waveform = generate(run.model, variables, prime_audio, jax.random.key(seed), num_samples=num_samples,
                      temperature=temperature)
  elapsed = time.perf_counter() - start
  write_audio(out, waveform, sample_rate)
  return {"file": out, "seconds": num_samples / sample_rate, "sample_rate": sample_rate,
          "prime": prime, "temperature": temperature, "wall_seconds": round(elapsed, 3)}


def chunk_bounds(audio: np.ndarray, max_samples: int, *, frame: int = 160, search: float = 0.2) -> list[tuple[int, int]]:
  """`[(start, end)]` cutting `audio` into pieces of at most `max_samples`, each cut at the quietest
  `frame`-sample frame of the last `search` fraction of its piece, so that cuts fall between words."""
  bounds, start = [], 0
  while audio.shape[0] - start > max_samples:
    low = start + int(max_samples * (1 - search))
    frames = (start + max_samples - low) // frame
    energy = np.square(audio[low:low + frames * frame].reshape(frames, frame)).sum(axis=1)
    cut = low + int(np.argmin(energy)) * frame + frame // 2
    bounds.append((start, cut))
    start = cut
  return bounds + [(start, audio.shape[0])]


def transcribe_options(beam: int | None, ctc_weight: float | None) -> None:
  """Refuse `transcribe`'s beam options unless `beam` ≥ 1 and `ctc_weight` is in [0, 1] and comes with `beam`."""
  if beam is not None and beam < 1:
    raise ConfigError(f"--beam must be at least 1, got {beam}")
  if ctc_weight is not None and not 0.0 <= ctc_weight <= 1.0:
    raise ConfigError(f"--ctc-weight must be in [0, 1], got {ctc_weight}")
  if ctc_weight is not None and beam is None:
    raise ConfigError("--ctc-weight weighs beam search's scores: pass it with --beam K")


def transcribe(workdir: str, files: Sequence[str], *, beam: int | None = None, ctc_weight: float | None = None,
               group: int = 64) -> Iterator[dict]:
  """For each file, `{"file", "text", "words": [{"word", "start", "end"}]}` (times in seconds from the CTC
  alignment), or `{"file", "error"}` if it cannot be read.

  Greedy CTC, or with `beam` the task's joint CTC/attention beam search (`ctc_weight` and the length
  penalty from the run's `config.decoding` unless given) with word times from the forced CTC alignment
  of its best hypothesis.  Files longer than the run's longest bucket are cut into chunks between words
  (`chunk_bounds`); the chunks of up to `group` files at a time are decoded together in batches of
  `eval_batch_size`, each padded to the run's buckets, so many short files cost few device calls.  A model
  that normalises per speaker (`normalization: speaker`) takes each file as its own speaker: its statistics
  come from all of its chunks (`_file_speaker_arrays`), measured in one more pass before they are decoded.
  """
  transcribe_options(beam, ctc_weight)
  run, state = load_run(workdir)
  rows_of = require(run.task, "transcribe", workdir=workdir, task_name=run.config.task)
  task, model = run.task, run.model
  if beam is not None:
    rows_of = _beam_rows_of(run, beam=beam, ctc_weight=ctc_weight)
  step = run.jit_eval(lambda state, batch: rows_of(model, {"params": state.params, **state.model_state}, batch))
  batch_size = run.config.get("eval_batch_size") or run.config.batch_size
  strategy = task.eval_batching
  rate = run.info.sample_rate
  speaker_arrays = _file_speaker_arrays(run, strategy, batch_size)
  for first in range(0, len(files), group):
    names = files[first:first + group]
    chunks, results = [], {}
    for path in names:
      try:
        audio, _ = load_audio(path, sample_rate=rate)
      except AudioError as error:
        results[path] = {"file": path, "error": str(error)}
        continue
      for start, end in chunk_bounds(audio, strategy.max_samples):
        chunks.append((path, start / rate, audio[start:end]))
    audios = [audio for _, _, audio in chunks]
    chunk_rows = speaker_arrays(state, audios, [path for path, _, _ in chunks]) if speaker_arrays else None
    rows = _decode_chunks(lambda batch: step(state, run.to_global(batch)), strategy, audios, batch_size, chunk_rows)
    per_file: dict[str, list] = {}
    for (path, offset, _), row in zip(chunks, rows):
      per_file.setdefault(path, []).append((offset, row))
    for path in names:
      yield results.get(path) or {"file": path, **task.transcript(per_file.get(path, []),
                                                                  frame_seconds=model.frame_seconds)}


def _beam_rows_of(run, *, beam: int, ctc_weight: float | None):
  """`(model, variables, batch) -> rows`: the task's `beam_transcription_rows` with the run's decoding options."""
  method = getattr(run.task, "beam_transcription_rows", None)
  if method is None:
    raise ConfigError(f"a {run.config.task!r} run has no beam search; transcribe without --beam")
  options = decoding_options(run.config)
  weight = options["ctc_weight"] if ctc_weight is None else ctc_weight
  return functools.partial(method, beam=beam, ctc_weight=float(weight), length_penalty=float(options["length_penalty"]))


def _file_speaker_arrays(run, strategy, batch_size: int):
  """For a model that normalises per speaker: `fn(state, chunks, files) -> {"feature_mean", "feature_std"}`, a
  row per chunk (`files[i]`: chunk i's), each file its own speaker over all of its chunks, their raw features
  summed on the device (the task's `feature_sum_rows`, pooled by its `speaker_arrays`); None for other models."""
  if getattr(run.model, "normalization", None) != "speaker":
    return None
  task, model = run.task, run.model
  sums = run.jit_eval(lambda state, batch: task.feature_sum_rows(model, {"params": state.params, **state.model_state},
                                                                  batch))

  def arrays(state, chunks: list[np.ndarray], files: list[str]) -> dict[str, np.ndarray]:
    rows = _decode_chunks(lambda batch: sums(state, run.to_global(batch)), strategy, chunks, batch_size)
    return task.speaker_arrays({key: np.stack([row[key] for row in rows]) for key in rows[0]}, files) if rows else {}

  return arrays


def _decode_chunks(decode, strategy, chunks: list[np.ndarray], batch_size: int,
                   chunk_rows: dict[str, np.ndarray] | None = None) -> list[dict]:
  """`decode(batch)`'s row of every chunk, in order: chunks batched by bucket, padding rows for the rest;
  `chunk_rows` (arrays of a row per chunk) join the batches beside the audio, zeros in padding rows."""
  rows: list[dict | None] = [None] * len(chunks)
  buckets = strategy.buckets_of([chunk.shape[0] for chunk in chunks])
  for bucket in np.unique(buckets):
    members = np.flatnonzero(buckets == bucket)
    length = strategy.bucket_samples[int(bucket)]
    for start in range(0, members.size, batch_size):
      indices = members[start:start + batch_size]
      audio = np.zeros((batch_size, length), np.float32)
      lengths = np.zeros(batch_size, np.int32)
      for row, index in enumerate(indices):
        audio[row, :chunks[index].shape[0]] = chunks[index]
        lengths[row] = chunks[index].shape[0]
      index = np.full(batch_size, -1, np.int32)
      index[:indices.size] = indices
      batch = {"audio": audio, "audio_lengths": lengths, "index": index}
      for key, values in (chunk_rows or {}).items():
        batch[key] = np.zeros((batch_size, *values.shape[1:]), values.dtype)
        batch[key][:indices.size] = values[indices]
      out = {key: _host(value) for key, value in decode(batch).items()}
      for row, chunk in enumerate(indices):
        rows[chunk] = {key: value[row] for key, value in out.items()}
  return rows

