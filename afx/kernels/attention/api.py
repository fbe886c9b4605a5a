"""Dispatch to an attention implementation by name."""

import jax

from afx.errors import ConfigError
from afx.kernels.attention import reference

IMPLEMENTATIONS = ("reference", "xla", "cudnn")


def _check_shapes(q, k, v):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects [batch, seq, heads, head_dim] arrays, got q{q.shape} k{k.shape} v{v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"attention: key and value shapes differ: k{k.shape} v{v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"attention: key/value heads ({k.shape[2]}) must divide query heads ({q.shape[2]})")


def _default_implementation() -> str:
  return "cudnn" if jax.default_backend() == "gpu" else "xla"


def dot_product_attention(q, k, v, *, causal: bool = False, window: int | None = None,
                          scale: float | None = None, implementation: str | None = None,
                          block_q: int | None = None, block_k: int | None = None,
                          interpret: bool = False):
  """Softmax attention of `q` over `k`/`v`, all `[batch, seq, heads, head_dim]`.

  Args:
    causal: each query sees only keys at or before its own position.
    window: each query sees itself and the `window - 1` positions before it (implies causal).
    scale: logit scale; `head_dim ** -0.5` when None.
    implementation: one of `IMPLEMENTATIONS`, or None for the best available on this backend.
    block_q, block_k, interpret: tiling and interpret-mode switches for blockwise kernels; the
      dense implementations ignore them.
  """
  _check_shapes(q, k, v)
  if window is not None and window < 1:
    raise ConfigError(f"attention window must be >= 1, got {window}")
  implementation = implementation or _default_implementation()
  if implementation == "reference":
    return reference.attention(q, k, v, causal=causal, window=window, scale=scale)
  if implementation in ("xla", "cudnn"):
    if implementation == "cudnn" and jax.default_backend() != "gpu":
      raise ConfigError("attention_impl='cudnn' needs a GPU; use 'xla' on this backend")
    local_window = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=causal or window is not None,
        local_window_size=local_window, implementation=implementation)
  raise ConfigError(
      f"unknown attention_impl {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
