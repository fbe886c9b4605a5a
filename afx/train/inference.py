"""Use a trained run from its workdir: evaluate a split, predict labels for audio files, or sample audio."""

import json
import os
import time
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from afx.audio.io import load_audio, write_audio
from afx.errors import AudioError, ConfigError
from afx.tasks import ClassificationTask, generation
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
  if not isinstance(run.task, ClassificationTask):
    raise ConfigError(f"{workdir} is a {run.config.task} run; predict labels with a classification run "
                      "(for a next_sample run, use `run.py sample`)")
  window, hop = run.task.eval_window_samples, run.task.eval_hop_samples
  batch_size = run.mesh.size
  for path in files:
    try:
      audio, _ = load_audio(path, sample_rate=run.sample_rate)
    except AudioError as error:
      yield {"file": path, "error": str(error)}
      continue
    windows = pipeline.sliding_windows(audio, window, hop)
    pad = -windows.shape[0] % batch_size
    windows = np.concatenate([windows, np.zeros((pad, window), np.float32)])
    clips = np.r_[np.zeros(windows.shape[0] - pad, np.int32), -np.ones(pad, np.int32)]
    samples = np.where(clips >= 0, pipeline.real_samples(audio, window), 0).astype(np.int32)
    scores = []
    for start in range(0, windows.shape[0], batch_size):
      batch = {"audio": windows[start:start + batch_size], "samples": samples[start:start + batch_size],
               "clip": clips[start:start + batch_size],
               "targets": np.zeros((batch_size, len(run.class_names)), np.float32)}
      scores.append(_host(run.predict(state, run.to_global(batch))["scores"]))
    mean_scores = np.concatenate(scores)[clips >= 0].mean(axis=0)
    top = np.argsort(-mean_scores, kind="stable")[:top_k]
    yield {"file": path, "top": [{"label": run.class_names[i], "score": round(float(mean_scores[i]), 6)} for i in top]}


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
  task = run.task
  if not isinstance(task, generation.NextSampleTask):
    raise ConfigError(f"{workdir} is a {run.config.task} run; sample needs a next_sample run")
  silence = generation.silence_code(task.quantization, task.num_classes)
  if prime is None:
    prime_codes = np.full((1, 1), silence, np.int32)
  else:
    audio, _ = load_audio(prime, sample_rate=run.sample_rate)
    prime_codes = np.asarray(generation.quantize(audio[-(task.past_samples + task.context_samples):],
                                                 task.quantization, task.num_classes))[None]
  variables = jax.device_get({"params": state.params, **state.model_state})
  num_samples = round(seconds * run.sample_rate)
  start = time.perf_counter()
  codes = generation.sample(run.model, variables, jnp.asarray(prime_codes), jax.random.key(seed),
                            num_samples=num_samples, temperature=float(temperature))
  waveform = np.asarray(generation.dequantize(codes, task.quantization, task.num_classes))[0]
  elapsed = time.perf_counter() - start
  write_audio(out, waveform, run.sample_rate)
  return {"file": out, "seconds": num_samples / run.sample_rate, "sample_rate": run.sample_rate,
          "prime": prime, "temperature": temperature, "wall_seconds": round(elapsed, 3)}
