"""The GPU attention kernels compiled for a real GPU, against the dense float32 oracle.

Run on a GPU machine with `JAX_PLATFORMS=cuda python -m pytest -m gpu tests/test_attention_gpu.py`;
the default suite (CPU) skips it.  The same kernels run in interpret mode in test_attention.py.
"""

import jax
import jax.numpy as jnp
import pytest

from test_attention import TOLERANCE, bf16_rounded_inputs, max_error

from afx.kernels.attention import dot_product_attention

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda)")]


def hopper() -> bool:
  return float(getattr(jax.devices()[0], "compute_capability", "0")) >= 9.0


@pytest.mark.parametrize("implementation", ["cudnn", "pallas_gpu", "pallas_mosaic_gpu"])
@pytest.mark.parametrize("seq,q_heads,kv_heads,head_dim,causal,window", [
    (2048, 4, 2, 64, True, None), (2000, 2, 2, 128, True, 1024), (1000, 4, 1, 64, False, None)])
def test_gpu_kernels_match_the_dense_reference(implementation, seq, q_heads, kv_heads, head_dim, causal, window):
  if implementation == "pallas_mosaic_gpu" and not hopper():
    pytest.skip("the Mosaic GPU kernel needs Hopper (sm_90) or newer")
  if implementation == "cudnn" and kv_heads != q_heads:
    pytest.skip("compare cuDNN on plain multi-head attention")
  q, k, v = bf16_rounded_inputs(2, seq, q_heads, kv_heads, head_dim, jnp.bfloat16)
  attend = lambda implementation: lambda q, k, v: dot_product_attention(
      q, k, v, causal=causal, window=window, implementation=implementation)
  out, vjp = jax.vjp(jax.jit(attend(implementation)), q, k, v)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  want_out, want_vjp = jax.vjp(attend("reference"), *f32)
  cotangent = jax.random.normal(jax.random.key(7), out.shape).astype(jnp.bfloat16)
  out_tol, grad_tol = TOLERANCE[jnp.bfloat16]
  assert max_error(out, want_out) < out_tol
  for got, want in zip(vjp(cotangent), want_vjp(cotangent.astype(jnp.float32))):
    assert max_error(got, want) < grad_tol
