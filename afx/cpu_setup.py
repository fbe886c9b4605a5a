"""How a command-line run sets up its process for XLA:CPU: `setup_cpu_process()`, called first by `run.py` and
the benchmark scripts (in a notebook, call it before the first JAX computation).

- `keep_freed_host_memory` (`afx.host_memory`) and `add_cpu_compiler_flags` (`afx.xla_flags`), both before
  JAX starts its backend.
- `unroll_threefry_on_cpu`: JAX lowers the Threefry hash behind every random draw as a loop over its five
  rounds on CPU (a smaller program to compile) and unrolled elsewhere.  Each draw then runs as dozens of tiny
  loop steps: dropout's draws took 10 % of a Conformer training step (16 blocks, about 170 draws).  Unrolled,
  each draw is one fused loop over its elements and the bits are the same (the same rounds, in the same order),
  so results do not change; compiling a model with dropout takes longer.

The test suite, which mostly compiles, adds only the compiler flags.
"""

from afx.host_memory import keep_freed_host_memory
from afx.xla_flags import add_cpu_compiler_flags


def unroll_threefry_on_cpu() -> bool:
  """Lower Threefry on CPU as JAX does on other backends (unrolled); False where this JAX has no such lowering
  to reuse (then its own stays)."""
  try:
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32
    mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule, platform="cpu")
  except (ImportError, AttributeError):
    return False
  return True


def setup_cpu_process() -> None:
  keep_freed_host_memory()
  add_cpu_compiler_flags()
  unroll_threefry_on_cpu()
