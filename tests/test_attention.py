"""Blocked attention (pure JAX; Pallas TPU, Triton and Mosaic GPU in interpret mode) against the dense float32 oracle."""

import importlib
import itertools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from afx.errors import ConfigError
from afx.kernels.attention import dot_product_attention, masks
from afx.kernels.attention.api import BLOCKED, default_blocks, default_implementation

# (batch, seq, q_heads, kv_heads, head_dim, causal, window, dtype)
CASES = {
    "batch2_gqa": (2, 384, 4, 2, 64, True, None, jnp.float32),
    "ragged_d128_window_block+1": (1, 300, 2, 2, 128, True, 129, jnp.float32),
    "window1_gqa": (1, 257, 2, 1, 64, True, 1, jnp.float32),
    "window_at_least_n": (1, 256, 2, 2, 64, True, 1000, jnp.float32),
    "bf16_window_block-1": (1, 512, 2, 2, 64, True, 127, jnp.bfloat16),
    "bf16_noncausal_ragged": (1, 200, 4, 2, 128, False, None, jnp.bfloat16),
}
# The Mosaic GPU kernel takes 16-bit inputs only and runs in JAX's (slow) GPU interpreter here: own cases.
MOSAIC = "pallas_mosaic_gpu"
ANY_DTYPE = tuple(name for name in BLOCKED if name != MOSAIC)
MOSAIC_CASES = {
    "gqa_ragged_window_block+1": (1, 300, 2, 1, 64, True, 129, jnp.bfloat16),
    "d128_noncausal_ragged": (1, 200, 2, 2, 128, False, None, jnp.bfloat16),
}
TOLERANCE = {jnp.float32: (1e-5, 1e-4), jnp.bfloat16: (2e-2, 5e-2)}  # (outputs, gradients)


def bf16_rounded_inputs(batch, seq, q_heads, kv_heads, head_dim, dtype, seed=0, k_seq=None):
  """q, k, v drawn once and rounded to bfloat16, so every dtype sees exactly the same values."""
  keys = jax.random.split(jax.random.key(seed), 3)
  k_seq = k_seq or seq
  shapes = [(batch, seq, q_heads, head_dim)] + [(batch, k_seq, kv_heads, head_dim)] * 2
  return [jax.random.normal(key, shape).astype(jnp.bfloat16).astype(dtype) for key, shape in zip(keys, shapes)]


def attention_fn(implementation, causal, window, **kwargs):
  return lambda q, k, v: dot_product_attention(q, k, v, causal=causal, window=window, implementation=implementation,
                                               block_q=128, block_k=128, interpret=True, return_logsumexp=True,
                                               **kwargs)


def max_error(got, want):
  """Largest absolute difference, relative to the oracle's magnitude when that exceeds 1."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  finite = np.isfinite(want)
  assert np.array_equal(finite, np.isfinite(got))
  return np.max(np.abs(got - want)[finite]) / max(1.0, np.max(np.abs(want[finite])))


def assert_matches_reference(implementation, batch, seq, q_heads, kv_heads, head_dim, causal, window, dtype):
  q, k, v = bf16_rounded_inputs(batch, seq, q_heads, kv_heads, head_dim, dtype)
  (out, lse), vjp = jax.vjp(jax.jit(attention_fn(implementation, causal, window)), q, k, v)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  (want_out, want_lse), want_vjp = jax.vjp(attention_fn("reference", causal, window), *f32)
  cotangents = (jax.random.normal(jax.random.key(7), out.shape).astype(dtype),
                jax.random.normal(jax.random.key(8), lse.shape))
  out_tol, grad_tol = TOLERANCE[dtype]
  assert out.dtype == dtype and lse.shape == (batch, q_heads, seq)
  assert max_error(out, want_out) < out_tol
  assert max_error(lse, want_lse) < out_tol
  for got, want in zip(vjp(cotangents), want_vjp(tuple(c.astype(jnp.float32) for c in cotangents))):
    assert got.dtype == dtype
    assert max_error(got, want) < grad_tol


@pytest.mark.parametrize("implementation", ANY_DTYPE)
@pytest.mark.parametrize("case", CASES)
def test_outputs_logsumexp_and_gradients_match_the_dense_reference(implementation, case):
  assert_matches_reference(implementation, *CASES[case])


@pytest.mark.parametrize("causal,window", [(True, None), (True, 5), (False, None)])
def test_xla_aligns_fewer_queries_to_the_end_of_the_keys_as_in_cached_decoding(causal, window):
  q, k, v = bf16_rounded_inputs(2, 3, 4, 2, 64, jnp.float32, k_seq=17)
  got = dot_product_attention(q, k, v, causal=causal, window=window, implementation="xla")
  want = dot_product_attention(q, k, v, causal=causal, window=window, implementation="reference")
  assert max_error(got, want) < 1e-5


@pytest.mark.parametrize("implementation", ANY_DTYPE)
def test_queries_that_see_no_key_give_zeros_and_finite_gradients(implementation):
  # 300 queries aligned to the end of 100 keys: the first 200 see nothing.
  q, k, v = bf16_rounded_inputs(1, 300, 2, 2, 64, jnp.float32, k_seq=100)
  fn = attention_fn(implementation, True, 16)
  out, lse = fn(q, k, v)
  assert not np.any(np.isnan(out)) and np.all(np.asarray(out[:, :200]) == 0)
  assert np.all(np.isneginf(lse[:, :, :200])) and np.all(np.isfinite(lse[:, :, 200:]))
  grads = jax.grad(lambda *x: fn(*x)[0].sum(), argnums=(0, 1, 2))(q, k, v)
  assert all(np.all(np.isfinite(g)) for g in grads)
  want = attention_fn("reference", True, 16)(q, k, v)[0]
  assert max_error(out, want) < 1e-5


@pytest.mark.parametrize("implementation", ANY_DTYPE)
def test_works_under_vmap_grad_and_remat(implementation):
  q, k, v = bf16_rounded_inputs(2, 160, 2, 2, 64, jnp.float32)
  fn = lambda q, k, v: attention_fn(implementation, True, 64)(q, k, v)[0]
  loss = lambda q, k, v: jnp.sum(fn(q, k, v) ** 2)
  mapped = jax.vmap(fn)(q[:, None], k[:, None], v[:, None])[:, 0]
  np.testing.assert_allclose(mapped, fn(q, k, v), atol=1e-6)
  plain = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=(0, 1, 2)))(q, k, v)
  reference = jax.grad(lambda *x: jnp.sum(attention_fn("reference", True, 64)(*x)[0] ** 2), argnums=(0, 1, 2))(q, k, v)
  for a, b, c in zip(plain, remat, reference):
    np.testing.assert_array_equal(a, b)
    assert max_error(a, c) < 1e-4


@pytest.mark.parametrize("implementation", ANY_DTYPE)
def test_runs_are_bitwise_deterministic(implementation):
  q, k, v = bf16_rounded_inputs(1, 300, 4, 2, 64, jnp.float32, seed=3)
  step = jax.jit(jax.grad(lambda *x: jnp.sum(attention_fn(implementation, True, 100)(*x)[0] ** 3), argnums=(0, 1, 2)))
  first, second = step(q, k, v), step(q, k, v)
  for a, b in zip(first, second):
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("implementation", ANY_DTYPE)
def test_numerical_gradients(implementation):
  q, k, v = bf16_rounded_inputs(1, 24, 2, 1, 8, jnp.float32, seed=4)
  fn = lambda q, k, v: dot_product_attention(q, k, v, causal=True, window=11, implementation=implementation,
                                             block_q=8, block_k=8, interpret=True)
  jax.test_util.check_grads(fn, (q, k, v), order=1, modes=("rev",), atol=2e-2, rtol=2e-2, eps=1e-2)


def brute_force_visits(plan):
  """The (tile, block) pairs that hold at least one allowed (real query, key) pair."""
  visits = set()
  for i, j in itertools.product(range(plan.num_q_blocks), range(plan.num_k_blocks)):
    real_rows = max(0, min(plan.block_q, plan.q_len - i * plan.block_q))
    if np.asarray(masks.block_mask(plan, i, j))[:real_rows].any():
      visits.add((i, j))
  return visits


@pytest.mark.parametrize("causal,window,expected_counts", [
    (False, None, [4, 4, 4, 4]),
    (True, None, [1, 2, 3, 4]),
    (True, 1, [1, 1, 1, 1]),
    (True, 128, [1, 2, 2, 2]),
    (True, 129, [1, 2, 2, 2]),  # tile 2 starts at 256; 256 - 129 + 1 = 128 is still block 1
    (True, 130, [1, 2, 3, 3]),
    (True, 1000, [1, 2, 3, 4]),
])
def test_key_blocks_visited_per_query_tile(causal, window, expected_counts):
  plan = masks.Plan(q_len=512, k_len=512, block_q=128, block_k=128, causal=causal, window=window, scale=1.0)
  ranges = [masks.key_block_range(plan, i) for i in range(plan.num_q_blocks)]
  assert [hi - lo for lo, hi in ranges] == expected_counts


@pytest.mark.parametrize("q_len,k_len,block_q,block_k,causal,window", [
    (300, 300, 128, 64, True, None), (300, 300, 64, 128, True, 65), (257, 513, 32, 64, True, 31),
    (513, 257, 128, 32, True, 129), (200, 200, 64, 64, False, None), (100, 100, 32, 32, True, 1)])
def test_every_pass_visits_exactly_the_blocks_with_allowed_pairs(q_len, k_len, block_q, block_k, causal, window):
  plan = masks.Plan(q_len, k_len, block_q, block_k, causal, window, 1.0)
  by_tile = {(i, j) for i in range(plan.num_q_blocks) for j in range(*masks.key_block_range(plan, i))}
  by_block = {(i, j) for j in range(plan.num_k_blocks) for i in range(*masks.query_block_range(plan, j))}
  assert by_tile == by_block == brute_force_visits(plan)
  for i in range(plan.num_q_blocks):  # interior blocks really need no mask, and all others are masked
    lo, hi = masks.key_block_range(plan, i)
    interior = set(range(*masks.interior_key_range(plan, i)))
    assert interior == {j for j in range(lo, hi) if not masks.block_needs_mask(plan, i, j)}
    assert all(np.asarray(masks.block_mask(plan, i, j)).all() for j in interior)
  for j in range(plan.num_k_blocks):
    lo, hi = masks.query_block_range(plan, j)
    assert set(range(*masks.interior_query_range(plan, j))) == {
        i for i in range(lo, hi) if not masks.block_needs_mask(plan, i, j)}


@pytest.mark.parametrize("implementation", ANY_DTYPE)
def test_under_a_mesh_each_device_attends_over_its_batch_slice(implementation):
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  q, k, v = bf16_rounded_inputs(8, 160, 4, 2, 64, jnp.float32, seed=5)
  fn = jax.jit(attention_fn(implementation, True, 50))
  with jax.set_mesh(mesh):
    sharded = [jax.device_put(x, jax.sharding.NamedSharding(mesh, P("data", None, "model"))) for x in (q, k, v)]
    out, lse = fn(*sharded)
  assert len(out.sharding.device_set) == 8
  want_out, want_lse = attention_fn("reference", True, 50)(q, k, v)
  assert max_error(out, want_out) < 1e-5 and max_error(lse, want_lse) < 1e-5


def test_tpu_kernel_under_the_tpu_interpreter_matches_the_reference():
  from jax.experimental.pallas import tpu as pltpu
  q, k, v = bf16_rounded_inputs(1, 300, 4, 2, 64, jnp.float32, seed=6)
  fn = lambda *x: dot_product_attention(*x, window=200, implementation="pallas_tpu", block_q=128, block_k=128,
                                        interpret=pltpu.InterpretParams(), return_logsumexp=True)
  (out, lse), vjp = jax.vjp(fn, q, k, v)
  (want_out, want_lse), want_vjp = jax.vjp(attention_fn("reference", True, 200), q, k, v)
  assert max_error(out, want_out) < 1e-5 and max_error(lse, want_lse) < 1e-5
  cotangents = (jnp.ones_like(out), jnp.zeros_like(lse))
  for got, want in zip(vjp(cotangents), want_vjp(cotangents)):
    assert max_error(got, want) < 1e-4


def test_default_on_cpu_is_dense_for_short_sequences_and_blockwise_for_long_ones():
  assert default_implementation(16384, 16384) == "blockwise"
  assert default_implementation(8192, 8192, window=1024) == "blockwise"
  assert default_implementation(1214, 1214) == "blockwise"  # AST's tokens, no mask
  assert default_implementation(1024, 1024, causal=True) == "xla"  # one key block: the mask skips nothing
  assert default_implementation(40, 40) == "xla"


def test_default_blocks_on_cpu_hold_a_short_sequence_in_one_unpadded_key_block():
  # AST's 1,214 tokens: no padded keys (so no element mask), 10 query tiles with 6 padded rows
  assert default_blocks("blockwise", 1214, 1214, 64) == (122, 1214)
  assert default_blocks("blockwise", 1024, 1024, 64) == (128, 1024)
  assert default_blocks("blockwise", 40, 40, 64) == (40, 40)
  assert default_blocks("blockwise", 8192, 8192, 64) == (512, 512)


def test_kernels_off_their_hardware_need_interpret_mode():
  x = jnp.zeros((1, 128, 1, 64))
  with pytest.raises(ConfigError, match="'pallas_tpu' needs a TPU"):
    dot_product_attention(x, x, x, implementation="pallas_tpu")
  with pytest.raises(ConfigError, match="'cudnn' needs a GPU"):
    dot_product_attention(x, x, x, implementation="cudnn", interpret=True)


@pytest.mark.parametrize("case", MOSAIC_CASES)
def test_mosaic_gpu_kernels_in_the_gpu_interpreter_match_the_dense_reference(case):
  assert_matches_reference(MOSAIC, *MOSAIC_CASES[case])


def test_mosaic_gpu_queries_that_see_no_key_give_zeros_and_finite_gradients():
  q, k, v = bf16_rounded_inputs(1, 192, 1, 1, 64, jnp.bfloat16, k_seq=64)  # the first 128 queries see nothing
  fn = attention_fn(MOSAIC, True, 16)
  (out, lse), vjp = jax.vjp(fn, q, k, v)
  assert np.all(np.asarray(out[:, :128]) == 0) and np.all(np.isneginf(lse[:, :, :128]))
  assert max_error(out, attention_fn("reference", True, 16)(q, k, v)[0]) < 2e-2
  assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in vjp((jnp.ones_like(out), jnp.zeros_like(lse))))


def test_mosaic_gpu_pipeline_has_no_races_and_observes_every_barrier_phase():
  from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call
  from afx.kernels.attention import pallas_mosaic_gpu
  # 3 tiles with a window: the ring's slots are reused and the visited ranges start past block 0.
  q, k, v = bf16_rounded_inputs(1, 384, 1, 1, 64, jnp.bfloat16, seed=9)
  racy = pallas_mosaic_gpu.interpret_params(detect_races=True)
  fn = lambda *x: dot_product_attention(*x, window=200, implementation=MOSAIC, interpret=racy, return_logsumexp=True)
  (out, lse), vjp = jax.vjp(fn, q, k, v)
  jax.block_until_ready(vjp((jnp.ones_like(out), jnp.zeros_like(lse))))
  assert not interpret_pallas_call.get_races().races_found


@pytest.mark.parametrize("implementation,custom_call", [("pallas_gpu", "__gpu$xla.gpu.triton"), (MOSAIC, "mosaic_gpu")])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_gpu_kernels_lower_for_an_h200_without_a_gpu(implementation, custom_call, head_dim):
  """Lowering for CUDA checks what the interpreters do not: Triton's block shapes and ops; Mosaic
  GPU's shared-memory tiling and swizzle for wgmma and TMA, register layouts, barrier types.  The
  abstract H200 stands in for the device that jax 0.11's Triton lowering asks for."""
  module = importlib.import_module(f"afx.kernels.attention.{implementation}")
  block_q, block_k = default_blocks(implementation, 1000, 1000, head_dim)
  plan = masks.Plan(q_len=1000, k_len=1000, block_q=block_q, block_k=block_k, causal=True, window=300, scale=0.125)
  q = jax.ShapeDtypeStruct((2, 4, plan.q_padded, head_dim), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((2, 2, plan.k_padded, head_dim), jnp.bfloat16)
  lse = jax.ShapeDtypeStruct((2, 4, plan.q_padded), jnp.float32)
  h200 = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132, platform="gpu")
  passes = {"forward": (lambda *x: module.forward(*x, plan), (q, kv, kv)),
            "backward": (lambda *x: module.backward(*x, plan), (q, kv, kv, q, lse, q, lse))}
  with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("data",), abstract_device=h200)):
    for name, (fn, args) in passes.items():
      text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
      assert text.count(f"custom_call @{custom_call}") == (1 if name == "forward" else 2), name


def test_mosaic_gpu_kernel_rejects_float32_and_other_blocks_with_the_fix():
  x = jnp.zeros((1, 128, 1, 64))
  with pytest.raises(ConfigError, match="bfloat16 or float16.*'pallas_gpu' or 'xla'"):
    dot_product_attention(x, x, x, implementation=MOSAIC, interpret=True)
  with pytest.raises(ConfigError, match="needs a GPU"):
    dot_product_attention(x.astype(jnp.bfloat16), x, x, implementation=MOSAIC)
  with pytest.raises(ConfigError, match="block_q=64"):
    dot_product_attention(*[x.astype(jnp.bfloat16)] * 3, implementation=MOSAIC, block_q=64, interpret=True)
