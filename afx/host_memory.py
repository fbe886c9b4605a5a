"""Keep freed host memory for reuse, so that XLA:CPU's step temporaries do not fault in fresh pages.

XLA:CPU allocates each execution's temporaries with `malloc` from its worker threads, and glibc
gives allocations that large their own `mmap`, returned to the kernel when freed.  Every training
step then touches hundreds of megabytes of new pages: 194,000 page faults per AST step at AudioSet's
input size, against PyTorch's 11,000.  In a virtual machine a fault costs several microseconds, about
a second per step there.  With one malloc arena, no `mmap` below 2 GiB and no trimming, freed
temporaries stay in the heap and the next step reuses them: the faults per step fall to almost none.

It must run before JAX starts its CPU backend (whose threads would otherwise already have arenas of
their own): `run.py` and the benchmark scripts call it first; in a notebook, call it before the first
JAX computation.  The process keeps its peak host memory until it exits, and compiling gets about
15 % slower (XLA's compiler threads share the one arena), so the test suite, which mostly compiles,
runs without it.
"""

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP_BELOW = 2**31 - 1  # mallopt takes an int: 2 GiB


@functools.cache
def keep_freed_host_memory() -> bool:
  """Make glibc's malloc keep freed memory for reuse; False where the C library has no `mallopt` (not glibc)."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(option, value) == 1 for option, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _KEEP_BELOW), (_M_TRIM_THRESHOLD, _KEEP_BELOW)))
