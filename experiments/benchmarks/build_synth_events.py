"""Times a build of the default synth_events dataset (train 5000, validation 500, test 1000).

  python experiments/benchmarks/build_synth_events.py [--workers 1,2] [--out FILE.json]

Each worker count builds the whole default dataset into its own temporary directory (generation
in that many processes, writing ArrayRecord, the build report) and prints clips/s and seconds.
The summary's ``synth_events_default_build_seconds`` is the build with all cores; with several
worker counts it also gives the speed-up of the largest over 1 worker where both were run.
Generation takes about 2 ms a clip on one core, so on 2 cores tfds's writing in the main process
is as large a share as generation: expect little gain from workers there.
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import data_pipelines  # pylint: disable=g-import-not-at-top,wrong-import-position
from data_pipelines import builders  # pylint: disable=g-import-not-at-top,wrong-import-position


def machine() -> dict:
  return {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpu_cores_usable": builders.default_num_workers(),
      "python": platform.python_version(),
  }


def peak_memory_mib() -> float:
  """Peak resident memory of this (the writing) process so far, in MiB.

  Worker processes are not measured: a spawned child's ru_maxrss includes the parent's memory at
  the moment of the fork that precedes its exec, so it would only repeat this number.
  """
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def time_build(num_workers: int) -> dict:
  with tempfile.TemporaryDirectory(prefix="afx_bench_") as data_dir:
    start = time.perf_counter()
    builder = data_pipelines.prepare(
        data_pipelines.get_builder("synth_events", data_dir=data_dir, num_workers=num_workers)
    )
    seconds = time.perf_counter() - start
    clips = sum(split.num_examples for split in builder.info.splits.values())
  return {
      "dataset": "synth_events/multi_label",
      "num_workers": num_workers,
      "clips": clips,
      "seconds": round(seconds, 2),
      "clips_per_second": round(clips / seconds, 1),
      "main_peak_rss_mib": peak_memory_mib(),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--workers", default=str(builders.default_num_workers()),
      help="comma-separated worker counts to time (default: all usable cores)",
  )
  parser.add_argument("--out", help="write the results as JSON to this file")
  args = parser.parse_args()
  worker_counts = [int(count) for count in args.workers.split(",")]

  rows = [time_build(count) for count in worker_counts]
  print(f"{'workers':>8} {'clips':>6} {'seconds':>8} {'clips/s':>8}")
  for row in rows:
    print(f"{row['num_workers']:>8} {row['clips']:>6} {row['seconds']:>8} "
          f"{row['clips_per_second']:>8}")
  by_workers = {row["num_workers"]: row for row in rows}
  headline = by_workers.get(builders.default_num_workers(), rows[-1])
  summary = {"synth_events_default_build_seconds": headline["seconds"]}
  if 1 in by_workers and max(by_workers) > 1:
    summary[f"speedup_{max(by_workers)}_workers_over_1"] = round(
        by_workers[1]["seconds"] / by_workers[max(by_workers)]["seconds"], 2
    )
  print(json.dumps(summary))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"machine": machine(), "rows": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
  main()
