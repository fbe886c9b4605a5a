"""Attention speed and memory: every implementation this backend offers, measured in one run.

  python experiments/benchmarks/attention.py --out attention_cpu.json              # the full sweep
  python experiments/benchmarks/attention.py --seq 8192 --head-dims 64 --out a.json  # one length

For each sequence length N, head_dim, mask (causal, window 1024) and implementation: forward and
forward+backward time (median of repeats), TFLOP/s (causal forward = 2·B·H·N²·D, a window of W
counts the pairs it keeps; backward = 2.5 × forward), peak memory, and the forward+backward speed-up
against `xla` (and `cudnn` on GPU) with the same N, head_dim and mask.  Each measurement runs in a
subprocess: peak memory is that process's own (max RSS on CPU, the allocator's peak on GPU/TPU), and
an out-of-memory failure becomes a table entry.  On CPU, a configuration whose XLA buffer plan
(`compiled.memory_analysis()`) exceeds the machine's available memory is recorded as OOM without
running it, since the kernel would kill it.  Ratios, not absolute times, carry between machines.
The rows the summary reads run first and `--out` is rewritten after every row, so `--budget SECONDS`
(or a killed run) cuts only the rest of the sweep.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np

from benchmark_common import available_bytes, machine, run_worker, write_result

from afx.cpu_setup import setup_cpu_process

BATCH, HEADS = 1, 8
WINDOW = 1024
IMPLEMENTATIONS = {"cpu": ("xla", "blockwise"), "gpu": ("xla", "cudnn", "blockwise", "pallas_gpu", "pallas_mosaic_gpu"),
                   "tpu": ("xla", "blockwise", "pallas_tpu")}
PALLAS_GPU = ("pallas_gpu", "pallas_mosaic_gpu")


def attended_pairs(seq: int, window: int | None) -> int:
  """Query-key pairs a causal (windowed) mask keeps."""
  if window is None:
    return seq * (seq + 1) // 2
  full = min(seq, window)
  return full * (full + 1) // 2 + (seq - full) * window


def forward_flops(seq: int, head_dim: int, window: int | None) -> float:
  # Two matmuls of 2·D flops per kept pair; the convention for causal is 2·B·H·N²·D.
  return 4.0 * BATCH * HEADS * head_dim * attended_pairs(seq, window) if window else 2.0 * BATCH * HEADS * seq**2 * head_dim


def measure(spec: dict) -> dict:
  """Run in a worker process: compile, check the memory plan, time forward and forward+backward."""
  import jax
  import jax.numpy as jnp
  from afx.kernels.attention import dot_product_attention

  backend = jax.default_backend()
  dtype = jnp.float32 if backend == "cpu" else jnp.bfloat16
  seq, head_dim, window = spec["seq"], spec["head_dim"], spec["window"]
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, cotangent = (jax.random.normal(key, (BATCH, seq, HEADS, head_dim), dtype) for key in keys)
  attend = lambda q, k, v: dot_product_attention(q, k, v, causal=True, window=window,
                                                 implementation=spec["implementation"])
  forward = jax.jit(attend)
  both = jax.jit(lambda q, k, v: jax.vjp(attend, q, k, v)[1](cotangent))
  result = dict(spec, dtype=jnp.dtype(dtype).name)
  if backend == "cpu":
    compiled = both.lower(q, k, v).compile()
    analysis = compiled.memory_analysis()
    planned = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    if planned > 0.9 * available_bytes():
      return dict(result, status="oom", note=f"XLA plans {planned / 2**30:.1f} GiB; {available_bytes() / 2**30:.1f} GiB available")

  def timed(fn, budget_seconds=30.0):
    """Median of at least 3 calls; calls of a few milliseconds (a GPU's) repeat for about a second,
    so that launch jitter does not decide a ratio."""
    jax.block_until_ready(fn(q, k, v))  # compile and warm up
    times = []
    while sum(times) < budget_seconds and (len(times) < 3 or (sum(times) < 1.0 and len(times) < 50)):
      start = time.perf_counter()
      jax.block_until_ready(fn(q, k, v))
      times.append(time.perf_counter() - start)
    return float(np.median(times))

  try:
    result["forward_s"] = timed(forward)
    result["forward_backward_s"] = timed(both)
  except Exception as error:  # device allocators raise RESOURCE_EXHAUSTED
    if "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower():
      return dict(result, status="oom", note=str(error).splitlines()[0][:200])
    raise
  if backend == "cpu":
    result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
  else:
    stats = jax.devices()[0].memory_stats() or {}
    result["peak_gib"] = stats.get("peak_bytes_in_use", float("nan")) / 2**30
  flops = forward_flops(seq, head_dim, window)
  result["forward_tflops"] = flops / result["forward_s"] / 1e12
  result["forward_backward_tflops"] = 3.5 * flops / result["forward_backward_s"] / 1e12
  return dict(result, status="ok")


def add_ratios(rows: list[dict]) -> None:
  """Forward+backward speed-up of each row over `xla` (and `cudnn`) on the same N, head_dim and mask."""
  for baseline in ("xla", "cudnn"):
    times = {(r["seq"], r["head_dim"], r["window"]): r["forward_backward_s"]
             for r in rows if r["implementation"] == baseline and r["status"] == "ok"}
    for row in rows:
      key = (row["seq"], row["head_dim"], row["window"])
      if row["status"] == "ok" and key in times:
        row[f"speedup_vs_{baseline}"] = times[key] / row["forward_backward_s"]


def row_key(row: dict) -> tuple:
  return row["implementation"], row["seq"], row["head_dim"], row["window"]


def find(rows, implementation, seq, head_dim, window):
  for row in rows:
    if row_key(row) == (implementation, seq, head_dim, window):
      return row if row["status"] == "ok" else None
  return None


def fastest(rows, implementations, seq, head_dim, window):
  found = [row for name in implementations if (row := find(rows, name, seq, head_dim, window))]
  return min(found, key=lambda row: row["forward_backward_s"], default=None)


def headline_rows(backend: str) -> set[tuple]:
  """(implementation, N, head_dim, window) of every row `summary` reads: measured first."""
  if backend == "cpu":
    return {("xla", 8192, 64, None), ("blockwise", 8192, 64, WINDOW), ("blockwise", 32768, 64, None)}
  if backend == "gpu":
    pallas = [(name, 32768, 64, window) for name in PALLAS_GPU for window in (None, WINDOW)]
    return {("cudnn", 16384, 64, None), *((name, 16384, 64, None) for name in PALLAS_GPU), *pallas}
  return set()


def summary(rows: list[dict], backend: str) -> dict:
  """The headline ratios the attention issue names (None where a row is missing)."""
  ratio = lambda a, b: (a["forward_backward_s"] / b["forward_backward_s"]) if a and b else None
  if backend == "cpu":
    blockwise_32k = find(rows, "blockwise", 32768, 64, None)
    return {"cpu_window1024_vs_xla_causal_speedup_8k": ratio(find(rows, "xla", 8192, 64, None),
                                                             find(rows, "blockwise", 8192, 64, WINDOW)),
            "cpu_blockwise_peak_gib_32k": blockwise_32k["peak_gib"] if blockwise_32k else None}
  if backend == "gpu":  # the faster Pallas kernel: Mosaic GPU on Hopper, Triton elsewhere
    return {"gpu_pallas_vs_cudnn_causal_16k_d64": ratio(find(rows, "cudnn", 16384, 64, None),
                                                        fastest(rows, PALLAS_GPU, 16384, 64, None)),
            "gpu_window1024_vs_causal_speedup_32k": ratio(fastest(rows, PALLAS_GPU, 32768, 64, None),
                                                          fastest(rows, PALLAS_GPU, 32768, 64, WINDOW))}
  return {}


def format_table(rows: list[dict]) -> str:
  header = ["impl", "N", "D", "mask", "fwd ms", "fwd+bwd ms", "fwd TF/s", "f+b TF/s", "peak GiB", "vs xla", "vs cudnn"]
  lines = [" | ".join(header), " | ".join("---" for _ in header)]
  fmt = lambda x, spec: "–" if x is None else format(x, spec)
  for r in rows:
    mask = "causal" if r["window"] is None else f"window {r['window']}"
    if r["status"] != "ok":
      lines.append(" | ".join([r["implementation"], str(r["seq"]), str(r["head_dim"]), mask,
                               r["status"].upper(), r.get("note", "")] + [""] * 5))
      continue
    lines.append(" | ".join([
        r["implementation"], str(r["seq"]), str(r["head_dim"]), mask, fmt(r["forward_s"] * 1e3, ".1f"),
        fmt(r["forward_backward_s"] * 1e3, ".1f"), fmt(r["forward_tflops"], ".3f"),
        fmt(r["forward_backward_tflops"], ".3f"), fmt(r["peak_gib"], ".2f"),
        fmt(r.get("speedup_vs_xla"), ".2f"), fmt(r.get("speedup_vs_cudnn"), ".2f")]))
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="write {machine, rows, summary} JSON here")
  parser.add_argument("--seq", default="1024,2048,4096,8192,16384,32768")
  parser.add_argument("--head-dims", default="64,128")
  parser.add_argument("--implementations", default=None, help="comma list; default: all on this backend")
  parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
  parser.add_argument("--budget", type=float, default=None,
                      help="seconds for the whole sweep; rows not measured by then are recorded as skipped")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    setup_cpu_process()  # as run.py does
    print(json.dumps(measure(json.loads(args.worker))))
    return

  info = machine()
  backend = info["backend"]
  implementations = args.implementations.split(",") if args.implementations else IMPLEMENTATIONS[backend]
  specs = [{"implementation": implementation, "seq": seq, "head_dim": head_dim, "window": window}
           for seq in (int(s) for s in args.seq.split(","))
           for head_dim in (int(d) for d in args.head_dims.split(","))
           for window in (None, WINDOW) for implementation in implementations]
  # The rows the summary reads go first, so that a time budget cuts only the others.
  headline = headline_rows(backend)
  order = sorted(range(len(specs)), key=lambda i: row_key(specs[i]) not in headline)
  deadline = time.monotonic() + (args.budget if args.budget else float("inf"))
  rows = [None] * len(specs)

  def save() -> dict:
    done = [row for row in rows if row is not None]
    add_ratios(done)
    return write_result(args.out, info, done, summary(done, backend))

  timed_out = {}  # implementation → shortest N at which it ran out of time: longer rows are not tried
  for i in order:
    spec, left = specs[i], deadline - time.monotonic()
    if left <= 1:
      row = dict(spec, status="skipped", note=f"past the {args.budget:.0f} s budget")
    elif spec["seq"] >= timed_out.get(spec["implementation"], float("inf")):
      row = dict(spec, status="skipped", note=f"timed out at N={timed_out[spec['implementation']]}")
    else:
      row = run_worker(__file__, spec, min(args.timeout, left))
    if row["status"] == "timeout":  # any longer row of it has been skipped, so this N is its shortest
      timed_out[spec["implementation"]] = spec["seq"]
    rows[i] = row
    print(f"  {spec['implementation']:10s} N={spec['seq']:6d} D={spec['head_dim']:3d} window={spec['window']}: "
          f"{row['status']} {row.get('forward_backward_s', '')}", file=sys.stderr, flush=True)
    result = save()  # a sweep killed part-way keeps what it has measured
  print(format_table(rows))
  print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
  main()
