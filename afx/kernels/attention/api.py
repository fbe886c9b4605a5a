"""Dispatch to an attention implementation by name.

Dense: `reference` (float32, highest precision: the test oracle), `xla` and `cudnn`
(`jax.nn.dot_product_attention`).  Blocked, O(N·block) memory, with a shared `custom_vjp` that saves
only the output and logsumexp: `blockwise` (pure JAX), `pallas_tpu` (Mosaic TPU kernel),
`pallas_gpu` (Pallas Triton kernel, any CUDA GPU) and `pallas_mosaic_gpu` (warp-specialised Mosaic GPU
kernel for Hopper, bfloat16/float16).  Blocked implementations run under `jax.shard_map` when a mesh
is set (`jax.set_mesh`), with the batch split over every mesh axis but `model`, which splits heads;
a batch that does not divide over the data devices runs whole on each device.

Padded batches (`q_lengths`, `kv_lengths`, int32 `[batch]`) run on the dense implementations and
`blockwise`; the Pallas kernels do not take them yet.  `return_weights` (the probabilities) needs a
dense implementation.  An additive `bias` on the logits (relative-position scores) runs on `reference`
and `xla`, which dispatch picks when a bias comes without an implementation.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from afx.errors import ConfigError
from afx.kernels.attention import masks, reference

DENSE = ("reference", "xla", "cudnn")
BLOCKED = ("blockwise", "pallas_tpu", "pallas_gpu", "pallas_mosaic_gpu")
IMPLEMENTATIONS = DENSE + BLOCKED
TAKE_LENGTHS = DENSE + ("blockwise",)
TAKE_BIAS = ("reference", "xla")
RETURN_WEIGHTS = ("reference", "xla")
HEADS_AXIS = "model"
# On CPU, up to this many keys form one block; longer sequences use 512-key blocks.
LONG_SEQUENCE = 2048


def _module(implementation: str):
  return importlib.import_module(f"afx.kernels.attention.{implementation}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _blocked(q, k, v, lengths: dict, plan: masks.Plan, implementation: str, interpret: bool):
  """`lengths`: the given int32 `[batch]` `q_lengths`/`kv_lengths` (only `blockwise` takes any)."""
  return _module(implementation).forward(q, k, v, plan, interpret, **lengths)


def _blocked_forward(q, k, v, lengths, plan, implementation, interpret):
  out, logsumexp = _module(implementation).forward(q, k, v, plan, interpret, **lengths)
  return (out, logsumexp), (q, k, v, out, logsumexp, lengths)


def _blocked_backward(plan, implementation, interpret, residuals, cotangents):
  *residuals, lengths = residuals
  d_out, d_logsumexp = cotangents
  grads = _module(implementation).backward(*residuals, d_out, d_logsumexp, plan, interpret, **lengths)
  return (*grads, None)  # integer lengths: no cotangent


_blocked.defvjp(_blocked_forward, _blocked_backward)


def default_blocks(implementation: str, q_len: int, k_len: int, head_dim: int) -> tuple[int, int]:
  """Block sizes that suit each implementation's hardware, shrunk for short sequences."""
  round_up = lambda n, m: -(-n // m) * m
  if implementation == "pallas_tpu":  # Mosaic tiles: 8 sublanes × 128 lanes
    return min(512, round_up(q_len, 128)), min(512, round_up(k_len, 128))
  if implementation == "pallas_mosaic_gpu":  # two 64-row warpgroups per tile, 128-key blocks
    return 128, 128
  if implementation == "pallas_gpu":  # Triton blocks are powers of two
    pow2 = lambda n: max(16, 1 << (n - 1).bit_length())
    return min(128, pow2(q_len)), min(64 if head_dim > 64 else 128, pow2(k_len))
  # blockwise (CPU): a short sequence's keys form one unpadded block, so unmasked attention needs no
  # element mask, against query tiles of at most 128 rows split evenly (the least padding); long
  # sequences use 512×512 blocks, where causal and window masks skip whole blocks (measured best at
  # 1,214 and 8,192 tokens).
  if k_len <= LONG_SEQUENCE:
    tiles = -(-q_len // 128)
    return -(-q_len // tiles), k_len
  return min(512, round_up(q_len, 8)), 512


def blocked_attention(q, k, v, lengths: dict | None = None, *, implementation: str, causal: bool,
                      window: int | None, scale: float, block_q: int | None, block_k: int | None, interpret: bool):
  """`(out [b, nq, hq, d], logsumexp [b, hq, nq])` through one of the blocked implementations.

  `lengths`: optional int32 `[batch]` arrays under `q_lengths` / `kv_lengths` (padded batches).
  """
  lengths = lengths or {}
  q_len, k_len, head_dim = q.shape[1], k.shape[1], q.shape[-1]
  default_q, default_k = default_blocks(implementation, q_len, k_len, head_dim)
  plan = masks.Plan(q_len=q_len, k_len=k_len, block_q=block_q or default_q, block_k=block_k or default_k,
                    causal=causal or window is not None, window=window, scale=scale)
  to_heads_first = lambda x, padded: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, padded - x.shape[1]), (0, 0)))
  out, logsumexp = _blocked(to_heads_first(q, plan.q_padded), to_heads_first(k, plan.k_padded),
                            to_heads_first(v, plan.k_padded), lengths, plan, implementation, interpret)
  out, logsumexp = jnp.swapaxes(out[:, :, :q_len], 1, 2), logsumexp[:, :, :q_len]
  if "q_lengths" in lengths:  # padding rows in a tile with real ones attended: zero them (and their gradient)
    real = jnp.arange(q_len)[None] < lengths["q_lengths"][:, None]  # [batch, q_len]
    out = jnp.where(real[:, :, None, None], out, jnp.zeros((), out.dtype))
    logsumexp = jnp.where(real[:, None], logsumexp, -jnp.inf)
  return out, logsumexp


def _sharded(fn, q, k, v, lengths: dict):
  """`fn(q, k, v, lengths)` under shard_map over the context mesh (batch over data axes, heads over
  `model`), if any; `lengths` holds `[batch]` arrays, split with the batch."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn(q, k, v, lengths)
  batch_axes = tuple(name for name in mesh.axis_names if name != HEADS_AXIS)
  heads_axis = HEADS_AXIS if HEADS_AXIS in mesh.axis_names else None
  batch_devices = mesh.size // (mesh.shape[HEADS_AXIS] if heads_axis else 1)
  if q.shape[0] % batch_devices:  # e.g. the dummy batch of model.init: run it whole on every device
    return fn(q, k, v, lengths)
  spec = P(batch_axes, None, heads_axis, None)
  lengths_spec = {name: P(batch_axes) for name in lengths}
  # Each device attends over its own batch (and heads) slice; nothing crosses devices, so the
  # varying-axes type check, which trips on loop carries built from constants, has nothing to guard.
  return jax.shard_map(fn, in_specs=(spec, spec, spec, lengths_spec),
                       out_specs=(spec, P(batch_axes, heads_axis, None)), check_vma=False)(q, k, v, lengths)


def _check_shapes(q, k, v):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects [batch, seq, heads, head_dim] arrays, got q{q.shape} k{k.shape} v{v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"attention: key and value shapes differ: k{k.shape} v{v.shape}")
  if q.shape[0] != k.shape[0]:
    raise ValueError(f"attention: query and key batches differ: q{q.shape} k{k.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"attention: key/value heads ({k.shape[2]}) must divide query heads ({q.shape[2]})")


def _check_lengths(batch: int, **lengths) -> dict:
  """The given lengths as int32 `[batch]` arrays, by name; the None ones left out."""
  checked = {}
  for name, x in lengths.items():
    if x is None:
      continue
    x = jnp.asarray(x)
    if x.shape != (batch,) or not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f"attention: {name} must be integer [batch={batch}], got {x.dtype}{list(x.shape)}")
    checked[name] = x.astype(jnp.int32)
  return checked


def _check_bias(bias, q, k):
  """`bias` as an array broadcastable to `[batch, heads, q_len, k_len]`, or None."""
  if bias is None:
    return None
  bias = jnp.asarray(bias)
  full = (q.shape[0], q.shape[2], q.shape[1], k.shape[1])
  if not jnp.issubdtype(bias.dtype, jnp.floating) or bias.ndim > 4:
    raise ValueError(f"attention: bias must be a float array broadcastable to [batch, heads, q_len, k_len] = "
                     f"{list(full)}, got {bias.dtype}{list(bias.shape)}")
  try:
    fits = jnp.broadcast_shapes(bias.shape, full) == full
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"attention: bias {list(bias.shape)} does not broadcast to [batch, heads, q_len, k_len] = "
                     f"{list(full)}")
  return bias.reshape((1,) * (4 - bias.ndim) + bias.shape)


def default_implementation(q_len: int, k_len: int, *, causal: bool = False, window: int | None = None,
                           dtype=jnp.float32) -> str:
  """The best available implementation for this backend, shape and dtype."""
  backend = jax.default_backend()
  if backend == "tpu":
    return "pallas_tpu"
  if backend == "gpu":  # cuDNN's fused attention takes half precision only
    return "cudnn" if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
  # CPU: blockwise loops over batch × heads, which costs more than it saves on short sequences
  # (25 tokens × 1,024 heads: 2.5× slower than XLA's batched dense attention; 490 tokens: 1.15×).
  # Under a mask, its single key block below LONG_SEQUENCE skips nothing (1,536 causal: 1.15×).
  # Longer sequences (1,214 unmasked: 0.66×; 8k with a window: 12× faster) and the memory of N×N
  # scores favour blockwise.
  masked = causal or window is not None
  if k_len <= 512 or (masked and k_len < LONG_SEQUENCE):
    return "xla"
  return "blockwise"


def _dense_jax_nn(q, k, v, lengths: dict, *, causal: bool, window: int | None, scale: float, implementation: str,
                  bias=None):
  """`jax.nn.dot_product_attention`, with our end-aligned causal mask and rows that see no key zeroed.

  jax.nn adds the bias to the scaled logits and then replaces the masked ones, as `reference` does."""
  q_len, k_len = q.shape[1], k.shape[1]
  masked = causal or window is not None
  if masked and q_len != k_len:  # jax.nn aligns causal masks to the start; ours end together
    allowed = reference.allowed_mask(q_len, k_len, causal=causal, window=window)
    masking = {"mask": allowed[None, None]}
  else:
    masking = {"is_causal": masked, "local_window_size": None if window is None else (window - 1, 0)}
  out = jax.nn.dot_product_attention(q, k, v, bias, scale=scale, query_seq_lengths=lengths.get("q_lengths"),
                                     key_value_seq_lengths=lengths.get("kv_lengths"), implementation=implementation,
                                     **masking)
  if not lengths and not (masked and q_len > k_len):  # every row sees a key
    return out
  # jax.nn spreads a row that sees no key evenly over all keys (its mask value is finite): zero it.
  sees = reference.rows_that_see_a_key(q_len, k_len, causal=causal, window=window, **lengths)
  return jnp.where(sees[:, :, None, None], out, jnp.zeros((), out.dtype))


def _choose(implementation: str | None, q, k, *, causal: bool, window: int | None, lengths: dict,
            return_weights: bool, bias=None) -> str:
  if implementation is not None:
    return implementation
  if bias is not None:
    return "xla"
  implementation = default_implementation(q.shape[1], k.shape[1], causal=causal, window=window, dtype=q.dtype)
  if return_weights and implementation not in RETURN_WEIGHTS:
    return "xla"
  if lengths and implementation not in TAKE_LENGTHS:  # the TPU kernel: dense XLA takes the lengths
    return "xla"
  return implementation


def _check_request(implementation: str, *, lengths: dict, return_weights: bool, return_logsumexp: bool,
                   bias=None):
  if bias is not None and implementation not in TAKE_BIAS:
    raise ConfigError(f"attention_impl={implementation!r} does not take a bias; use "
                      f"{' or '.join(repr(name) for name in TAKE_BIAS)}")
  if lengths and implementation not in TAKE_LENGTHS:
    raise ConfigError(f"attention_impl={implementation!r} does not take q_lengths/kv_lengths yet; use one of "
                      f"{', '.join(repr(name) for name in TAKE_LENGTHS)}")
  if return_weights and implementation not in RETURN_WEIGHTS:
    raise ConfigError(f"attention_impl={implementation!r} does not return the attention weights; use "
                      f"{' or '.join(repr(name) for name in RETURN_WEIGHTS)} with return_weights=True")
  if return_logsumexp and implementation in ("xla", "cudnn"):
    raise ConfigError(f"attention_impl={implementation!r} does not return the logsumexp; "
                      "use 'reference' or a blocked implementation")


def dot_product_attention(q, k, v, *, causal: bool = False, window: int | None = None,
                          scale: float | None = None, implementation: str | None = None,
                          block_q: int | None = None, block_k: int | None = None,
                          interpret: bool = False, return_logsumexp: bool = False,
                          q_lengths=None, kv_lengths=None, bias=None, return_weights: bool = False):
  """Softmax attention of `q` over `k`/`v`, all `[batch, seq, heads, head_dim]`.

  Args:
    causal: each query sees only keys at or before its own position.  Queries are aligned to the
      end of the keys when there are fewer of them (as in cached decoding).
    window: each query sees itself and the `window - 1` positions before it (implies causal).
    scale: logit scale; `head_dim ** -0.5` when None.
    implementation: one of `IMPLEMENTATIONS`, or None for the best available on this backend and shape
      (a dense one where that best one cannot serve `q_lengths`/`kv_lengths` or `return_weights`).
    block_q, block_k: tile sizes of the blocked implementations (defaults per implementation).
    interpret: run Pallas kernels in interpret mode (on any backend, e.g. to test on CPU); True, or the
      kernel family's interpreter parameters (`pltpu.InterpretParams()`, `InterpretGPUParams(...)`).
    return_logsumexp: also return the natural-log logsumexp of each query's logits, `[batch, heads, seq]`
      (-inf for a query that sees no key, whose output is 0).
    q_lengths: int32 `[batch]`; query rows `i >= q_lengths[b]` are padding: output 0, logsumexp -inf,
      no gradient.  Implementations in `TAKE_LENGTHS` only.
    kv_lengths: int32 `[batch]`; batch row b sees only keys `j < kv_lengths[b]` (with the causal and
      window masks, whose query positions stay aligned to the static key length).
    bias: a float array broadcastable to `[batch, heads, q_len, k_len]` added to the scaled logits
      `scale · q·k` before the masks and the softmax (e.g. relative-position scores): masked logits stay
      masked and padding query rows 0.  Implementations in `TAKE_BIAS` only; with `implementation` None,
      a bias picks `xla`.
    return_weights: also return the float32 attention probabilities `[batch, heads, q_len, k_len]`
      (rows of padding queries are 0), last; `reference` and `xla` only (xla then computes the
      output with the reference formula too, so the two agree).
  """
  _check_shapes(q, k, v)
  if window is not None and window < 1:
    raise ConfigError(f"attention window must be >= 1, got {window}")
  lengths = _check_lengths(q.shape[0], q_lengths=q_lengths, kv_lengths=kv_lengths)
  bias = _check_bias(bias, q, k)
  scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
  implementation = _choose(implementation, q, k, causal=causal, window=window, lengths=lengths,
                           return_weights=return_weights, bias=bias)
  if implementation not in IMPLEMENTATIONS:
    raise ConfigError(f"unknown attention_impl {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
  _check_request(implementation, lengths=lengths, return_weights=return_weights, return_logsumexp=return_logsumexp,
                 bias=bias)
  needs = {"cudnn": "gpu", "pallas_gpu": "gpu", "pallas_mosaic_gpu": "gpu", "pallas_tpu": "tpu"}.get(implementation)
  if needs and jax.default_backend() != needs and not (interpret and implementation != "cudnn"):
    raise ConfigError(f"attention_impl={implementation!r} needs a {needs.upper()} (this backend is "
                      f"{jax.default_backend()}); use 'blockwise' or 'xla', or interpret=True to test the kernel")

  weights = None
  if implementation == "reference" or return_weights:
    out, logsumexp, weights = reference.attention(q, k, v, causal=causal, window=window, scale=scale, bias=bias,
                                                  return_logsumexp=True, return_weights=True, **lengths)
  elif implementation in ("xla", "cudnn"):
    out = _dense_jax_nn(q, k, v, lengths, causal=causal, window=window, scale=scale, implementation=implementation,
                        bias=bias)
  else:
    blocked = functools.partial(blocked_attention, implementation=implementation, causal=causal, window=window,
                                scale=scale, block_q=block_q, block_k=block_k, interpret=interpret)
    out, logsumexp = _sharded(blocked, q, k, v, lengths)
  results = (out,) + ((logsumexp,) if return_logsumexp else ()) + ((weights,) if return_weights else ())
  return results[0] if len(results) == 1 else results
