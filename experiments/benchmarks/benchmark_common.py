"""What every benchmark script shares: the machine description, one measurement per subprocess, the JSON file."""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def available_bytes() -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_model() -> str:
  """The CPU's model name and whether it has AVX-512 (which XLA's and PyTorch's CPU kernels use differently)."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return platform.processor() or "unknown"
  name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
  return f"{name}, {'AVX-512' if ' avx512f' in info else 'no AVX-512'}"


def machine() -> dict:
  import jax
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": device.device_kind, "devices": jax.device_count(),
          "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__,
          "memory_gib": round(available_bytes() / 2**30, 1)}


def run_worker(script: str, spec: dict, timeout: float) -> dict:
  """`python SCRIPT --worker SPEC` in a fresh process (its peak memory is its own); its last stdout line is the row.

  A process the kernel kills for memory becomes an `oom` row, an overrun a `timeout` row.
  """
  command = [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)]
  try:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return dict(spec, status="timeout", note=f"over {timeout:.0f} s")
  if done.returncode != 0:
    killed = done.returncode in (-9, 137)
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
    return dict(spec, status="oom" if killed else "error", note="killed (out of memory)" if killed else tail)
  return json.loads(done.stdout.strip().splitlines()[-1])


def run_as_worker(spec_json: str, measure_jax, measure_torch) -> None:
  """The body of `python SCRIPT --worker SPEC`: print the row that `measure_jax` or `measure_torch` (by the spec's
  `framework`) returns, as the last line of stdout; JAX runs with run.py's host-memory and compiler settings."""
  spec = json.loads(spec_json)
  if spec["framework"] == "jax":
    from afx.cpu_setup import setup_cpu_process
    setup_cpu_process()  # as run.py does; PyTorch runs as its users run it
  print(json.dumps(measure_jax(spec) if spec["framework"] == "jax" else measure_torch(spec)))


def write_result(path: str | None, info: dict, rows: list[dict], summary: dict) -> dict:
  """`{"machine", "rows", "summary"}`, written to `path` when given."""
  result = {"machine": info, "rows": rows, "summary": summary}
  if path:
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  return result


def peak_gib(jax_device=None) -> float:
  if jax_device is not None and jax_device.platform != "cpu":
    return (jax_device.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def timed_steps(step, steps: int) -> dict:
  """Median and fastest step time, and the minor page faults per step (each costs µs of kernel time)."""
  times = []
  faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
  return {"step_s": statistics.median(times), "fastest_step_s": min(times), "minor_faults_per_step": faults // steps}
