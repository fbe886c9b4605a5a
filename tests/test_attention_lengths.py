"""Padded batches (q_lengths, kv_lengths), additive logit biases, cross-attention shapes and attention weights,
against a dense float64 NumPy masked softmax written here."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from afx.errors import ConfigError
from afx.kernels.attention import api, dot_product_attention, masks
from afx.layers import MultiHeadAttention

BATCH, Q_HEADS, KV_HEADS, HEAD_DIM = 4, 4, 2, 8
BLOCK = 8  # blockwise tiles: the lengths below fall mid-block, on a block edge and at 0
Q_LENGTHS = {19: [19, 11, 0, 16], 13: [13, 5, 0, 8], 29: [29, 20, 0, 9]}
KV_LENGTHS = {19: [19, 13, 0, 8], 29: [29, 13, 0, 21]}
# (q_len, k_len, causal, window)
SHAPES = {
    "self": (19, 19, False, None),
    "self_causal": (19, 19, True, None),
    "self_window": (19, 19, True, 5),
    "cross": (13, 29, False, None),
    "cross_causal_end_aligned": (13, 29, True, None),
    "more_queries_window": (29, 19, True, 7),
}


def numpy_attention(q, k, v, cotangent=None, *, causal=False, window=None, q_lengths=None, kv_lengths=None,
                    bias=None):
  """Float64 masked softmax: `(out, logsumexp, weights, allowed)`, and `(dq, dk, dv)` of `sum(out · cotangent)`
  (and the bias's gradient, summed to its shape, when a bias is given).

  Query i sits at position i + k_len - q_len; it sees key j <= its position (causal), within the
  window, j < kv_lengths[b], and nothing when i >= q_lengths[b].  A row that sees nothing gives 0.
  The bias is added to the scaled logits before the masks.
  """
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  batch, q_len, heads, head_dim = q.shape
  k_len, groups = k.shape[1], heads // k.shape[2]
  k_all, v_all = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  scale = head_dim**-0.5
  q_pos, k_pos = np.arange(q_len)[:, None] + k_len - q_len, np.arange(k_len)[None]
  allowed = np.ones((batch, q_len, k_len), bool)
  if causal or window is not None:
    allowed &= k_pos <= q_pos
  if window is not None:
    allowed &= k_pos > q_pos - window
  for b in range(batch):
    if q_lengths is not None:
      allowed[b, q_lengths[b]:] = False
    if kv_lengths is not None:
      allowed[b, :, kv_lengths[b]:] = False
  allowed = np.broadcast_to(allowed[:, None], (batch, heads, q_len, k_len))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k_all) * scale
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  logits = np.where(allowed, logits, -np.inf)
  row_max = logits.max(axis=-1, keepdims=True)
  row_max[~np.isfinite(row_max)] = 0.0
  exp = np.where(allowed, np.exp(logits - row_max), 0.0)
  denom = exp.sum(axis=-1, keepdims=True)
  weights = exp / np.where(denom == 0, 1.0, denom)
  out = np.einsum("bhqk,bkhd->bqhd", weights, v_all)
  logsumexp = np.where(denom[..., 0] > 0, np.log(np.maximum(denom[..., 0], 1e-300)) + row_max[..., 0], -np.inf)
  if cotangent is None:
    return out, logsumexp, weights, allowed
  d_out = np.asarray(cotangent, np.float64)
  d_v = np.einsum("bhqk,bqhd->bkhd", weights, d_out)
  d_weights = np.einsum("bqhd,bkhd->bhqk", d_out, v_all)
  d_logits = weights * (d_weights - np.sum(d_weights * weights, axis=-1, keepdims=True))
  d_q = np.einsum("bhqk,bkhd->bqhd", d_logits, k_all) * scale
  d_k = np.einsum("bhqk,bqhd->bkhd", d_logits, q) * scale
  fold = lambda x: x.reshape(*x.shape[:2], -1, groups, head_dim).sum(axis=3)  # query heads → their kv head
  if bias is None:
    return d_q, fold(d_k), fold(d_v)
  shape = (1,) * (4 - np.ndim(bias)) + np.shape(bias)
  d_bias = d_logits.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)
  return d_q, fold(d_k), fold(d_v), d_bias.reshape(np.shape(bias))


def normal(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def inputs(q_len, k_len, seed=0, batch=BATCH):
  return (normal(seed, batch, q_len, Q_HEADS, HEAD_DIM), normal(seed + 100, batch, k_len, KV_HEADS, HEAD_DIM),
          normal(seed + 200, batch, k_len, KV_HEADS, HEAD_DIM))


def lengths_for(q_len, k_len):
  return jnp.array(Q_LENGTHS[q_len], jnp.int32), jnp.array(KV_LENGTHS[k_len], jnp.int32)


def attend(implementation, causal, window, **kwargs):
  return lambda q, k, v, q_lengths, kv_lengths: dot_product_attention(
      q, k, v, causal=causal, window=window, implementation=implementation, block_q=BLOCK, block_k=BLOCK,
      q_lengths=q_lengths, kv_lengths=kv_lengths, **kwargs)


@pytest.mark.parametrize("implementation", ["reference", "xla", "blockwise"])
@pytest.mark.parametrize("shape", SHAPES)
def test_lengths_match_the_numpy_masked_softmax_and_padded_rows_are_exactly_zero(implementation, shape):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  out = jax.jit(attend(implementation, causal, window))(q, k, v, q_lengths, kv_lengths)
  want, _, _, allowed = numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths,
                                        kv_lengths=kv_lengths)
  assert out.shape == q.shape and not np.any(np.isnan(out))
  np.testing.assert_allclose(out, want, atol=2e-5)
  sees_nothing = ~allowed.any(axis=-1).transpose(0, 2, 1)  # [batch, q_len, heads]: padding rows among them
  assert np.all(np.asarray(out)[sees_nothing] == 0)
  for b, length in enumerate(q_lengths):
    assert np.all(np.asarray(out)[b, length:] == 0)


@pytest.mark.parametrize("implementation", ["reference", "blockwise"])
@pytest.mark.parametrize("shape", ["self_window", "cross_causal_end_aligned"])
def test_logsumexp_with_lengths_is_minus_infinity_where_no_key_is_seen(implementation, shape):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len, seed=1)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  _, lse = attend(implementation, causal, window, return_logsumexp=True)(q, k, v, q_lengths, kv_lengths)
  _, want, _, _ = numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths, kv_lengths=kv_lengths)
  assert np.array_equal(np.isneginf(lse), np.isneginf(want))
  finite = np.isfinite(want)
  np.testing.assert_allclose(np.asarray(lse)[finite], want[finite], atol=2e-5)


@pytest.mark.parametrize("implementation", ["reference", "xla", "blockwise"])
@pytest.mark.parametrize("shape", ["self_causal", "cross", "more_queries_window"])
def test_gradients_with_lengths_match_the_numpy_gradients_and_skip_padding(implementation, shape):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len, seed=2)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  cotangent = normal(3, *q.shape)
  fn = attend(implementation, causal, window)
  loss = lambda q, k, v: jnp.sum(fn(q, k, v, q_lengths, kv_lengths) * cotangent)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  want = numpy_attention(q, k, v, cotangent, causal=causal, window=window, q_lengths=q_lengths, kv_lengths=kv_lengths)
  for got, expected in zip(grads, want):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, atol=5e-5)
  d_q, d_k, d_v = (np.asarray(g) for g in grads)
  for b in range(BATCH):  # padding gets exactly no gradient
    assert np.all(d_q[b, q_lengths[b]:] == 0)
    assert np.all(d_k[b, kv_lengths[b]:] == 0) and np.all(d_v[b, kv_lengths[b]:] == 0)


def test_blockwise_gradients_with_lengths_equal_the_reference():
  q_len, k_len, causal, window = SHAPES["self_window"]
  q, k, v = inputs(q_len, k_len, seed=4)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  loss = lambda impl: lambda *x: jnp.sum(jnp.sin(attend(impl, causal, window)(*x, q_lengths, kv_lengths)))
  blockwise = jax.jit(jax.grad(loss("blockwise"), argnums=(0, 1, 2)))(q, k, v)
  reference = jax.jit(jax.grad(loss("reference"), argnums=(0, 1, 2)))(q, k, v)
  for got, want in zip(blockwise, reference):
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("q_len,k_len,block_q,block_k,causal,window", [
    (19, 19, 8, 8, False, None), (19, 19, 8, 4, True, None), (13, 29, 4, 8, True, 7), (29, 19, 8, 8, True, 5)])
def test_key_blocks_stop_at_the_kv_length_and_padding_tiles_visit_nothing(q_len, k_len, block_q, block_k, causal,
                                                                           window):
  plan = masks.Plan(q_len, k_len, block_q, block_k, causal, window, 1.0)
  traced = jax.jit(lambda i, kv, ql: (masks.key_block_range(plan, i, kv_length=kv, q_length=ql),
                                      masks.interior_key_range(plan, i, kv_length=kv, q_length=ql)))
  for kv_length in (0, 5, block_k, k_len - 1, k_len):
    for q_length in (0, block_q - 1, q_len):
      for i in range(plan.num_q_blocks):
        real_rows = max(0, min(block_q, q_length - i * block_q))
        needed = {j for j in range(plan.num_k_blocks)
                  if np.asarray(masks.block_mask(plan, i, j, kv_length=kv_length))[:real_rows].any()}
        lo, hi = masks.key_block_range(plan, i, kv_length=kv_length, q_length=q_length)
        assert set(range(lo, hi)) == needed  # blocks wholly past the length are not visited
        interior = masks.interior_key_range(plan, i, kv_length=kv_length, q_length=q_length)
        unmasked = {j for j in needed if not masks.block_needs_mask(plan, i, j, kv_length=kv_length)}
        assert set(range(*interior)) == unmasked
        assert all(np.asarray(masks.block_mask(plan, i, j, kv_length=kv_length)).all() for j in range(*interior))
        ranges = traced(i, kv_length, q_length)
        assert set(range(*map(int, ranges[0]))) == needed and set(range(*map(int, ranges[1]))) == set(range(*interior))


@pytest.mark.parametrize("implementation", ["pallas_tpu", "pallas_gpu", "pallas_mosaic_gpu"])
def test_pallas_kernels_reject_lengths_naming_the_implementations_that_take_them(implementation):
  x = jnp.zeros((2, 128, 1, 64), jnp.bfloat16)
  lengths = jnp.array([128, 7], jnp.int32)
  for kwargs in ({"kv_lengths": lengths}, {"q_lengths": lengths}):
    with pytest.raises(ConfigError, match="does not take q_lengths/kv_lengths.*'xla'.*'blockwise'"):
      dot_product_attention(x, x, x, implementation=implementation, interpret=True, **kwargs)


def test_lengths_must_be_integers_of_the_batch():
  x = jnp.zeros((2, 8, 1, 8))
  with pytest.raises(ValueError, match=r"kv_lengths must be integer \[batch=2\]"):
    dot_product_attention(x, x, x, kv_lengths=jnp.array([8, 3, 1], jnp.int32))
  with pytest.raises(ValueError, match="q_lengths must be integer"):
    dot_product_attention(x, x, x, q_lengths=jnp.array([8.0, 3.0]))


@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("shape", ["self_causal", "cross", "more_queries_window"])
def test_return_weights_sum_to_one_over_the_visible_keys(implementation, shape):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len, seed=5)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  out, weights = attend(implementation, causal, window, return_weights=True)(q, k, v, q_lengths, kv_lengths)
  want_out, _, want_weights, allowed = numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths,
                                                       kv_lengths=kv_lengths)
  assert weights.shape == (BATCH, Q_HEADS, q_len, k_len) and weights.dtype == jnp.float32
  weights = np.asarray(weights)
  assert np.all(weights[~allowed] == 0)
  sees = allowed.any(axis=-1)
  np.testing.assert_allclose(weights.sum(axis=-1)[sees], 1.0, atol=1e-5)
  assert np.all(weights.sum(axis=-1)[~sees] == 0)
  np.testing.assert_allclose(weights, want_weights, atol=1e-5)
  np.testing.assert_allclose(out, want_out, atol=2e-5)


def test_return_weights_from_a_blocked_implementation_is_a_config_error_naming_the_fix():
  x = jnp.zeros((1, 16, 1, 8))
  with pytest.raises(ConfigError, match="'blockwise' does not return the attention weights; use 'reference' or 'xla'"):
    dot_product_attention(x, x, x, implementation="blockwise", return_weights=True)
  # With no implementation named, a dense one serves the weights even where the default is blocked.
  long = jnp.zeros((1, 4096, 1, 8))
  out, weights = dot_product_attention(long[:, :4], long, long, return_weights=True)
  assert weights.shape == (1, 1, 4, 4096)


def test_the_default_implementation_takes_lengths():
  q, k, v = inputs(19, 19, seed=6)
  q_lengths, kv_lengths = lengths_for(19, 19)
  out = dot_product_attention(q, k, v, causal=True, q_lengths=q_lengths, kv_lengths=kv_lengths)
  want = numpy_attention(q, k, v, causal=True, q_lengths=q_lengths, kv_lengths=kv_lengths)[0]
  np.testing.assert_allclose(out, want, atol=2e-5)


def test_xla_zeroes_queries_that_see_no_key_without_lengths():
  q, k, v = inputs(29, 19, seed=7)  # 29 queries end-aligned to 19 keys: the first 10 see nothing
  out = dot_product_attention(q, k, v, causal=True, implementation="xla")
  np.testing.assert_allclose(out, numpy_attention(q, k, v, causal=True)[0], atol=2e-5)
  assert np.all(np.asarray(out[:, :10]) == 0)


def test_blockwise_with_lengths_under_a_mesh_attends_over_each_batch_slice():
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  q, k, v = inputs(19, 29, seed=8, batch=8)
  q_lengths = jnp.array([19, 11, 0, 16, 3, 8, 19, 1], jnp.int32)
  kv_lengths = jnp.array([29, 13, 0, 21, 8, 1, 0, 16], jnp.int32)
  fn = jax.jit(attend("blockwise", True, 9))
  with jax.set_mesh(mesh):
    heads = jax.sharding.NamedSharding(mesh, P("data", None, "model"))
    rows = jax.sharding.NamedSharding(mesh, P("data"))
    out = fn(*(jax.device_put(x, heads) for x in (q, k, v)), jax.device_put(q_lengths, rows),
             jax.device_put(kv_lengths, rows))
  assert len(out.sharding.device_set) == 8
  want = numpy_attention(q, k, v, causal=True, window=9, q_lengths=q_lengths, kv_lengths=kv_lengths)[0]
  np.testing.assert_allclose(out, want, atol=2e-5)
  np.testing.assert_array_equal(out, fn(q, k, v, q_lengths, kv_lengths))


def bias_of(kind, q_len, k_len, seed=20):
  """A logit bias: one per (batch, head, query, key), shared over the batch, or one per (batch, key)."""
  shape = {"full": (BATCH, Q_HEADS, q_len, k_len), "heads": (Q_HEADS, q_len, k_len), "keys": (BATCH, 1, 1, k_len)}
  return 2.0 * normal(seed, *shape[kind])


@pytest.mark.parametrize("bias_kind", ["full", "heads", "keys"])
@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("shape", ["self_causal", "more_queries_window"])
def test_bias_with_lengths_matches_the_numpy_masked_softmax_and_padded_rows_are_exactly_zero(implementation, shape,
                                                                                              bias_kind):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len, seed=21)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  bias = bias_of(bias_kind, q_len, k_len)
  fn = lambda q, k, v, q_lengths, kv_lengths, bias: attend(implementation, causal, window, bias=bias)(
      q, k, v, q_lengths, kv_lengths)
  out = jax.jit(fn)(q, k, v, q_lengths, kv_lengths, bias)
  want, _, _, allowed = numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths,
                                        kv_lengths=kv_lengths, bias=bias)
  np.testing.assert_allclose(out, want, atol=2e-5)
  assert not np.allclose(want, numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths,
                                               kv_lengths=kv_lengths)[0], atol=1e-2)  # the bias matters
  sees_nothing = ~allowed.any(axis=-1).transpose(0, 2, 1)
  assert np.all(np.asarray(out)[sees_nothing] == 0)
  for b, length in enumerate(q_lengths):
    assert np.all(np.asarray(out)[b, length:] == 0)


@pytest.mark.parametrize("bias_kind", ["full", "heads"])
@pytest.mark.parametrize("implementation", ["reference", "xla"])
@pytest.mark.parametrize("shape", ["self_window", "cross_causal_end_aligned"])
def test_bias_gradients_match_the_numpy_gradients_and_masked_logits_get_none(implementation, shape, bias_kind):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = inputs(q_len, k_len, seed=22)
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  bias = bias_of(bias_kind, q_len, k_len, seed=23)
  cotangent = normal(24, *q.shape)
  loss = lambda q, k, v, bias: jnp.sum(attend(implementation, causal, window, bias=bias)(
      q, k, v, q_lengths, kv_lengths) * cotangent)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, k, v, bias)
  want = numpy_attention(q, k, v, cotangent, causal=causal, window=window, q_lengths=q_lengths,
                         kv_lengths=kv_lengths, bias=bias)
  for got, expected in zip(grads, want):
    assert got.shape == expected.shape and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, atol=5e-5)
  if bias_kind == "full":  # a logit that is masked (padding, causal, window) gets exactly no gradient
    allowed = numpy_attention(q, k, v, causal=causal, window=window, q_lengths=q_lengths, kv_lengths=kv_lengths)[3]
    assert np.all(np.asarray(grads[3])[~allowed] == 0)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_a_masked_key_stays_masked_whatever_its_bias(implementation):
  q, k, v = inputs(19, 19, seed=25)
  q_lengths, kv_lengths = lengths_for(19, 19)
  fn = jax.jit(lambda bias: attend(implementation, True, None, bias=bias)(q, k, v, q_lengths, kv_lengths))
  key_positions = jnp.arange(19)
  masked = (key_positions[None, :] >= kv_lengths[:, None]) | (key_positions[None, :] > 9)  # padding; causal for row 9
  huge = jnp.where(masked, 1e4, 0.0)[:, None, None, :]
  np.testing.assert_array_equal(np.asarray(fn(huge))[:, 9], np.asarray(fn(jnp.zeros_like(huge)))[:, 9])


@pytest.mark.parametrize("implementation", ["blockwise", "pallas_tpu", "pallas_gpu", "pallas_mosaic_gpu", "cudnn"])
def test_a_bias_on_an_implementation_that_does_not_take_one_is_a_config_error_naming_those_that_do(implementation):
  x = jnp.zeros((2, 128, 1, 64), jnp.bfloat16)
  with pytest.raises(ConfigError, match=f"attention_impl='{implementation}' does not take a bias; use 'reference' or "
                                        "'xla'"):
    dot_product_attention(x, x, x, implementation=implementation, interpret=True, bias=jnp.zeros((128, 128)))


def test_with_a_bias_and_no_implementation_dispatch_picks_xla_even_where_the_default_is_blocked():
  q, k, v = (normal(seed, 1, n, 2, 8) for seed, n in ((26, 8), (27, 4096), (28, 4096)))
  bias = normal(29, 1, 2, 8, 4096)
  assert api.default_implementation(8, 4096) == "blockwise"
  kv_lengths = jnp.array([3000], jnp.int32)
  out = jax.jit(lambda q, k, v, bias: dot_product_attention(q, k, v, bias=bias, kv_lengths=kv_lengths))(
      q, k, v, bias)
  np.testing.assert_allclose(out, numpy_attention(q, k, v, kv_lengths=kv_lengths, bias=bias)[0], atol=2e-5)
  _, weights = dot_product_attention(q, k, v, bias=bias, kv_lengths=kv_lengths, implementation="xla",
                                     return_weights=True)
  np.testing.assert_allclose(weights, numpy_attention(q, k, v, kv_lengths=kv_lengths, bias=bias)[2], atol=1e-5)


def test_a_bias_must_be_floats_that_broadcast_to_batch_heads_queries_keys():
  x = jnp.zeros((2, 8, 4, 8))
  with pytest.raises(ValueError, match=r"bias \[3, 8, 8\] does not broadcast to \[batch, heads, q_len, k_len\] = "
                                       r"\[2, 4, 8, 8\]"):
    dot_product_attention(x, x, x, bias=jnp.zeros((3, 8, 8)))
  with pytest.raises(ValueError, match="bias must be a float array"):
    dot_product_attention(x, x, x, bias=jnp.zeros((8, 8), jnp.int32))
  assert dot_product_attention(x, x[:, :5], x[:, :5], bias=jnp.zeros((2, 1, 1, 5))).shape == x.shape


def layer_and_inputs(**kwargs):
  x, memory = normal(9, 2, 5, 16), normal(10, 2, 11, 24)  # memory: a wider encoder output
  layer = MultiHeadAttention(num_heads=4, num_kv_heads=2, attention_impl="xla", **kwargs)
  return layer, layer.init(jax.random.key(0), x, memory=memory), x, memory


def test_cross_attention_projects_the_memory_through_the_numpy_softmax():
  layer, params, x, memory = layer_and_inputs(causal=True, rotary=True)  # neither applies to the memory
  p = params["params"]
  assert sorted(p) == ["key", "out", "query", "value"]
  assert p["key"]["kernel"].shape == (24, 2, 4) and p["query"]["kernel"].shape == (16, 4, 4)
  kv_lengths, q_lengths = jnp.array([11, 6], jnp.int32), jnp.array([5, 3], jnp.int32)
  got = layer.apply(params, x, memory=memory, kv_lengths=kv_lengths, q_lengths=q_lengths)
  project = lambda y, name: jnp.einsum("btf,fhd->bthd", y, p[name]["kernel"]) + p[name]["bias"]
  attended = numpy_attention(project(x, "query"), project(memory, "key"), project(memory, "value"),
                             q_lengths=q_lengths, kv_lengths=kv_lengths)[0]
  want = np.einsum("bthd,hdf->btf", attended, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got[1, 3:], np.broadcast_to(p["out"]["bias"], (2, 16)), atol=1e-6)  # padded rows


def test_cross_attention_from_the_projected_memory_equals_the_memory_path_at_every_step():
  layer, params, x, memory = layer_and_inputs()
  kv_lengths = jnp.array([11, 4], jnp.int32)
  whole = layer.apply(params, x, memory=memory, kv_lengths=kv_lengths)
  memory_kv = layer.apply(params, memory, method=MultiHeadAttention.project_memory)
  assert memory_kv["key"].shape == memory_kv["value"].shape == (2, 2, 11, 4)  # [batch, heads, m, head_dim]
  np.testing.assert_allclose(layer.apply(params, x, memory_kv=memory_kv, kv_lengths=kv_lengths), whole, atol=1e-6)
  q_lengths = jnp.array([5, 3], jnp.int32)
  np.testing.assert_allclose(layer.apply(params, x, memory_kv=memory_kv, kv_lengths=kv_lengths, q_lengths=q_lengths),
                             layer.apply(params, x, memory=memory, kv_lengths=kv_lengths, q_lengths=q_lengths),
                             atol=1e-6)
  step = jax.jit(lambda x_t: layer.apply(params, x_t, memory_kv=memory_kv, kv_lengths=kv_lengths))
  steps = jnp.concatenate([step(x[:, t:t + 1]) for t in range(x.shape[1])], axis=1)  # one query, no cache
  np.testing.assert_allclose(steps, whole, atol=1e-6)


def test_a_masked_memory_position_changes_nothing():
  layer, params, x, memory = layer_and_inputs()
  kv_lengths = jnp.array([11, 7], jnp.int32)
  changed = memory.at[1, 7:].set(1e3)
  (got, weights), (want, _) = (layer.apply(params, x, memory=m, kv_lengths=kv_lengths, return_weights=True)
                               for m in (changed, memory))
  np.testing.assert_array_equal(got, want)
  assert np.all(np.asarray(weights)[1, :, :, 7:] == 0)
  assert not np.allclose(layer.apply(params, x, memory=changed), layer.apply(params, x, memory=memory))


def test_self_attention_with_kv_lengths_ignores_padded_positions():
  layer = MultiHeadAttention(num_heads=4, causal=True, attention_impl="blockwise")
  x = normal(11, 2, 9, 16)
  params = layer.init(jax.random.key(0), x)
  lengths = jnp.array([9, 6], jnp.int32)
  got = layer.apply(params, x.at[1, 6:].set(-50.0), q_lengths=lengths, kv_lengths=lengths)
  np.testing.assert_allclose(got[1, :6], layer.apply(params, x[1:, :6])[0], atol=1e-5)


def test_project_memory_before_the_parameters_exist_needs_the_query_width():
  layer, _, x, memory = layer_and_inputs()
  with pytest.raises(ValueError, match="features="):
    layer.init(jax.random.key(0), memory, method=MultiHeadAttention.project_memory)
  params = layer.init(jax.random.key(0), memory, features=16, method=MultiHeadAttention.project_memory)
  assert nn.unbox(params["params"]["key"]["kernel"]).shape == (24, 2, 4)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda)")
@pytest.mark.parametrize("shape", ["self_causal", "cross", "cross_causal_end_aligned"])
def test_cudnn_with_lengths_matches_the_numpy_masked_softmax(shape):
  q_len, k_len, causal, window = SHAPES[shape]
  q, k, v = (normal(seed, BATCH, n, 2, 64).astype(jnp.bfloat16) for seed, n in ((12, q_len), (13, k_len), (14, k_len)))
  q_lengths, kv_lengths = lengths_for(q_len, k_len)
  out = jax.jit(attend("cudnn", causal, window))(q, k, v, q_lengths, kv_lengths)
  want = numpy_attention(*(x.astype(jnp.float32) for x in (q, k, v)), causal=causal, window=window,
                         q_lengths=q_lengths, kv_lengths=kv_lengths)[0]
  np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=2e-2)
  for b, length in enumerate(q_lengths):
    assert np.all(np.asarray(out[b, length:], np.float32) == 0)


def test_cached_decoding_takes_no_memory():
  layer, params, x, memory = layer_and_inputs(causal=True)
  with pytest.raises(ValueError, match="cached decoding"):
    layer.apply(params, x[:, :1], positions=jnp.array([0]), cache={"position": jnp.zeros(4)}, memory=memory)
