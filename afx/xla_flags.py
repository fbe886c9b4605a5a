"""XLA:CPU flags afx adds to `XLA_FLAGS` for itself, before JAX starts its backend.

- jaxlib 0.10 hands every convolution to YNNPACK, whose weight gradients run at about 2 GFLOP/s: in
  the VGG-like CNN's training step a 3×3, 16→32-channel conv's weight gradient took 269 ms of 595 ms.
  Leaving convolutions to XLA's own emitter halves that step (Verma & Smith's tiny supervised row:
  0.40 → 0.20 s) and speeds AST's patch embedding too.
- jaxlib 0.11 runs an FFT on a worker of XLA's Eigen thread pool and has it fan out into the same
  pool: when several devices' FFTs (every log-mel front end) start at once, each worker waits for a
  free one and the process hangs (8 simulated devices, six FFTs and an all-reduce in one step: stuck
  within a few steps; 0.10 and 0.12 finish).  Keeping Eigen single-threaded avoids it; matmuls and convolutions run on
  YNNPACK's threads and keep their speed (fwd+bwd blockwise attention at 4k and a 1024² MLP gradient
  timed the same with and without).

XLA aborts the process on a flag it does not define, so each flag names the jaxlib versions it is
for, and nothing is added on others.  A flag the user already set in `XLA_FLAGS` keeps the user's
value.  `run.py`, the benchmark scripts and the tests call `add_cpu_compiler_flags()` first; in a
notebook, call it before the first JAX computation.
"""

import os

import jaxlib  # its version only: importing jaxlib does not start a backend

# flag → the jaxlib (major, minor) versions afx adds it on
CPU_COMPILER_FLAGS = {
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution": {(0, 10)},
    "--xla_cpu_multi_thread_eigen=false": {(0, 11)},
}


def _jaxlib_version() -> tuple[int, int]:
  major, minor = jaxlib.__version__.split(".")[:2]
  return int(major), int(minor)


def flags_for_this_jaxlib() -> list[str]:
  return [flag for flag, versions in CPU_COMPILER_FLAGS.items() if _jaxlib_version() in versions]


def add_cpu_compiler_flags() -> list[str]:
  """Append this jaxlib's flags to `XLA_FLAGS`, except those already set; returns those added."""
  present = os.environ.get("XLA_FLAGS", "").split()
  present_names = {flag.split("=")[0] for flag in present}
  added = [flag for flag in flags_for_this_jaxlib() if flag.split("=")[0] not in present_names]
  if added:
    os.environ["XLA_FLAGS"] = " ".join(present + added)
  return added
