"""What every benchmark script shares: the machine description, one measurement per subprocess, the JSON file."""

import json
import os
import platform
import subprocess
import sys


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


def write_result(path: str | None, info: dict, rows: list[dict], summary: dict) -> dict:
  """`{"machine", "rows", "summary"}`, written to `path` when given."""
  result = {"machine": info, "rows": rows, "summary": summary}
  if path:
    with open(path, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  return result
