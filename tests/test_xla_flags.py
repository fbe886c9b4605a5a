"""afx's XLA:CPU flags: added only on jaxlib versions that define them, never over the user's own."""

import os
import subprocess
import sys

import pytest

from afx import xla_flags

FLAG = next(iter(xla_flags.CPU_COMPILER_FLAGS))
FLAG_NAME = FLAG.split("=")[0]


@pytest.fixture
def version(monkeypatch):
  def set_version(major_minor):
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: major_minor)
  return set_version


def test_flags_are_added_once_on_a_jaxlib_that_defines_them(monkeypatch, version):
  version((0, 10))
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert xla_flags.add_cpu_compiler_flags() == [FLAG]
  assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"
  assert xla_flags.add_cpu_compiler_flags() == []
  assert os.environ["XLA_FLAGS"].count(FLAG_NAME) == 1


def test_no_flag_is_added_on_a_jaxlib_none_is_for(monkeypatch, version):
  version((0, 12))  # XLA would abort on a flag it does not define
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert xla_flags.add_cpu_compiler_flags() == []
  assert "XLA_FLAGS" not in os.environ


def test_jaxlib_0_11_keeps_eigen_single_threaded_and_leaves_convolutions_alone(monkeypatch, version):
  version((0, 11))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert xla_flags.add_cpu_compiler_flags() == ["--xla_cpu_multi_thread_eigen=false"]


def test_the_users_own_value_of_a_flag_is_kept(monkeypatch, version):
  version((0, 10))
  monkeypatch.setenv("XLA_FLAGS", f"{FLAG_NAME}=default")
  assert xla_flags.add_cpu_compiler_flags() == []
  assert os.environ["XLA_FLAGS"] == f"{FLAG_NAME}=default"


CONV_GRADIENT = """
import numpy as np
from afx.xla_flags import add_cpu_compiler_flags
print(add_cpu_compiler_flags())
import jax, jax.numpy as jnp
x = np.random.default_rng(0).normal(size=(4, 12, 10, 16)).astype(np.float32)
w = np.random.default_rng(1).normal(size=(3, 3, 16, 32)).astype(np.float32)
def loss(w):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=jax.lax.Precision.HIGHEST)
  return (y ** 2).sum() / 2
got = np.asarray(jax.jit(jax.grad(loss))(w))
# the same gradient from im2col patches in float64: dL/dw = patches^T @ y
padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
patches = np.stack([padded[:, i:i + 12, j:j + 10] for i in range(3) for j in range(3)], axis=3)  # n h w 9 c
y = np.einsum("nhwkc,kco->nhwo", patches, w.reshape(9, 16, 32).astype(np.float64))
want = np.einsum("nhwkc,nhwo->kco", patches, y).reshape(3, 3, 16, 32)
print(np.abs(got - want).max() / np.abs(want).max())
"""


def run_without_xla_flags(script: str, timeout: float) -> subprocess.CompletedProcess:
  """`python -c script` in a process whose XLA_FLAGS only afx's `add_cpu_compiler_flags` sets."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)


def test_this_jaxlib_accepts_the_flags_and_computes_conv_gradients_with_them():
  done = run_without_xla_flags(CONV_GRADIENT, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]  # an undefined flag would abort the process here
  added, relative_error = done.stdout.strip().splitlines()[-2:]
  assert added == str(xla_flags.flags_for_this_jaxlib())
  assert float(relative_error) < 1e-5


# Six FFTs in one step on each of 8 devices, then a sum across them, as a training step's log-mel front
# end and gradient all-reduce: jaxlib 0.11's XLA:CPU hangs on this without afx's flags.
CONCURRENT_FFTS = """
import os
from afx.xla_flags import add_cpu_compiler_flags
add_cpu_compiler_flags()
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
frames = np.random.default_rng(0).normal(size=(64, 50, 512)).astype(np.float32)
x = jax.device_put(frames, NamedSharding(jax.make_mesh((8,), ("data",)), P("data")))
step = jax.jit(lambda x: sum(jnp.abs(jnp.fft.rfft(x * (k + 1.0), axis=-1)).sum() for k in range(6)))
for i in range(20):
  got = float(step(x))
want = 21.0 * np.abs(np.fft.rfft(frames.astype(np.float64), axis=-1)).sum()
print(abs(got - want) / want)
"""


def test_several_devices_run_ffts_at_once_without_hanging():
  try:
    done = run_without_xla_flags(CONCURRENT_FFTS, timeout=180)
  except subprocess.TimeoutExpired:
    pytest.fail(f"20 steps of FFTs on 8 CPU devices hung (jaxlib {xla_flags._jaxlib_version()}, "
                f"flags {xla_flags.flags_for_this_jaxlib()})")
  assert done.returncode == 0, done.stderr[-2000:]
  assert float(done.stdout.strip().splitlines()[-1]) < 1e-5

