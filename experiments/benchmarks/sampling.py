"""Sampling speed of raw-audio LMs: cached decoding against naive recomputation, in one run.

For the paper's 30-layer WaveNet (3 stacks × 10 layers, 128 channels) and 6-layer Transformer
(8 heads, d=128, a 1 s attention context), at batch 1 and 16, after a 1 s prime:
  cached  `afx.tasks.generation.continue_sampling`: WaveNet's per-layer queues, the Transformer's
          key/value ring, O(1) model work per sample, inside one `lax.scan`;
  naive   `afx.tasks.generation.sample_naive`: the whole 1 s context rerun for every new sample.
Both are compiled and run once before timing.  Prints samples per second (per batch row and in
total), the cached/naive ratio and the real-time factor (generated seconds of audio per second,
per stream).  `--out FILE.json` writes {"machine", "rows", "summary"} with
`wavenet30_b1_cached_speedup` and `transformer6_b1_cached_speedup`.

  python experiments/benchmarks/sampling.py --out sampling.json
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from afx.cpu_setup import setup_cpu_process
from afx.models import RawTransformer, WaveNet
from benchmark_common import machine, write_result
from afx.tasks import generation

SAMPLE_RATE = 16_000


def models(context: int) -> dict:
  return {
      "wavenet30": WaveNet(num_stacks=3, layers_per_stack=10, residual_channels=128, skip_channels=128,
                           output_channels=128),
      "transformer6": RawTransformer(context_samples=context, num_layers=6, num_heads=8, embed_dim=128, mlp_dim=512),
  }


def timed(fn) -> float:
  """Seconds of one call of `fn` after a first (compiling) call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def measure(name: str, model, batch: int, context: int, cached_samples: int, naive_samples: int) -> dict:
  variables = model.init(jax.random.key(0), jnp.zeros((1, min(context, 1024)), jnp.int32), train=False)
  prime = jax.random.randint(jax.random.key(1), (batch, context), 0, 256)
  rng = jax.random.key(2)
  cache, logits = jax.block_until_ready(generation.prefill(model, variables, prime))
  cached_s = timed(lambda: generation.continue_sampling(model, variables, cache, logits, context, rng,
                                                        num_samples=cached_samples))
  naive_s = timed(lambda: generation.sample_naive(model, variables, prime, rng, num_samples=naive_samples))
  cached_rate, naive_rate = cached_samples / cached_s, naive_samples / naive_s
  return {"model": name, "batch": batch, "context": context,
          "cached_samples": cached_samples, "cached_s": round(cached_s, 4),
          "naive_samples": naive_samples, "naive_s": round(naive_s, 4),
          "cached_samples_per_s": round(cached_rate, 2), "naive_samples_per_s": round(naive_rate, 4),
          "cached_total_samples_per_s": round(cached_rate * batch, 2),
          "cached_speedup": round(cached_rate / naive_rate, 2),
          "cached_real_time_factor": round(cached_rate / SAMPLE_RATE, 5),
          "naive_real_time_factor": round(naive_rate / SAMPLE_RATE, 7)}


def format_table(rows: list[dict]) -> str:
  header = ("model", "batch", "cached samples/s", "naive samples/s", "speedup", "cached RTF")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append(f"| {r['model']} | {r['batch']} | {r['cached_samples_per_s']:.1f} | {r['naive_samples_per_s']:.3f} "
                 f"| {r['cached_speedup']:.1f}× | {r['cached_real_time_factor']:.4f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="write {machine, rows, summary} JSON here")
  parser.add_argument("--context-seconds", type=float, default=1.0)
  parser.add_argument("--batches", default="1,16")
  parser.add_argument("--cached-samples", type=int, default=400, help="samples timed per cached measurement")
  parser.add_argument("--naive-samples", type=int, default=2, help="samples timed per naive measurement")
  args = parser.parse_args()
  setup_cpu_process()  # as run.py does
  context = round(args.context_seconds * SAMPLE_RATE)
  rows = []
  for name, model in models(context).items():
    for batch in (int(b) for b in args.batches.split(",")):
      row = measure(name, model, batch, context, args.cached_samples, args.naive_samples)
      rows.append(row)
      print(f"  {name} batch {batch}: cached {row['cached_samples_per_s']} samples/s, naive "
            f"{row['naive_samples_per_s']} samples/s, speedup {row['cached_speedup']}", file=sys.stderr, flush=True)
  summary = {f"{r['model']}_b{r['batch']}_cached_speedup": r["cached_speedup"] for r in rows}
  summary.update({f"{r['model']}_b{r['batch']}_cached_real_time_factor": r["cached_real_time_factor"] for r in rows})
  write_result(args.out, machine(), rows, summary)
  print(format_table(rows))
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
