"""Use a trained run from its workdir: evaluate a split, predict labels for audio files, or sample audio."""

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
from afx.train.trainer import _host, evaluate_source, load_run
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
