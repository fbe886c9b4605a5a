"""Conformer blocks (Gulati et al., Interspeech 2020) as ESPnet builds them (`espnet.nets.pytorch_backend.conformer`,
`macaron_style`, `rel_pos_type: latest`, `normalize_before`, Swish):

  x + ½ · FFN(LN(x))                     Dense(mlp_dim) → Swish → dropout → Dense(d)
  x + RelPositionMHSA(LN(x), positions)  Transformer-XL relative sinusoids (`RelativePositionAttention`)
  x + Conv(LN(x))                        Dense(2d) → GLU → depthwise conv → BatchNorm → Swish → Dense(d)
  x + ½ · FFN(LN(x)) → LN

with dropout on every residual branch.  The layer names are ESPnet's (`feed_forward_macaron`, `self_attn`,
`conv_module`, `norm_mha`, ...), so its checkpoints map onto them one tensor at a time
(`afx.models.conformer.params_from_espnet`).

Padding: keys past `lengths` are masked in attention and frames past `lengths` are zeroed before the
depthwise convolution, so no padded frame reaches a valid one.  ESPnet does neither in the convolution
module: there the last (kernel − 1)/2 valid frames of a padded utterance see the padding's values.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.kernels.attention import dot_product_attention
from afx.layers.positional import sinusoidal_encoding
from afx.layers.speech import valid_mask
from afx.layers.transformer import MlpBlock


def relative_positions(length: int, features: int):
  """`[2·length − 1, features]` float32 sinusoids of the relative positions length − 1, …, 1, 0, −1, …,
  −(length − 1) (ESPnet's `RelPositionalEncoding`): row n encodes how far query i is after key j when
  n = length − 1 − (i − j)."""
  return sinusoidal_encoding(jnp.arange(length - 1, -length, -1), features)


def rel_shift(scores):
  """`[..., q, 2q − 1]` scores of each query against every relative position (`relative_positions` order) →
  `[..., q, q]` scores against each key: `out[..., i, j] = scores[..., i, q − 1 − i + j]`.

  Transformer-XL's shift, as ESPnet computes it: pad one zero column, view the rows shifted, drop the first.
  """
  *lead, q, positions = scores.shape
  padded = jnp.pad(scores, [(0, 0)] * len(lead) + [(0, 0), (1, 0)]).reshape(*lead, positions + 1, q)
  return padded[..., 1:, :].reshape(*lead, q, positions)[..., :q]


class RelativePositionAttention(nn.Module):
  """Self-attention with Transformer-XL relative positions (Dai et al. 2019, §3.3; ESPnet's
  `RelPositionMultiHeadedAttention`):

    logits_ij = ((q_i + u) · k_j + rel_shift((q_i + v) · W_pos p)_ij) / √d_k

  with learned `pos_bias_u`, `pos_bias_v` `[heads, d_k]` and `pos` (no bias) projecting the sinusoids
  `p` of `relative_positions`.  The content term goes through `dot_product_attention`, so its masks,
  lengths and implementations apply; the position term is its `bias` (`attention_impl` must take one:
  'reference' or 'xla'; None picks 'xla').

  Parameters: `query`, `key`, `value` (`[d, heads, d_k]` kernels), `pos`, `out`, `pos_bias_u`, `pos_bias_v`.
  """
  num_heads: int
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions=None, *, lengths=None):
    """`x [batch, T, d]` → `[batch, T, d]`; `positions` `[2T − 1, d]` (default `relative_positions(T, d)`);
    keys past `lengths [batch]` are hidden."""
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f"features ({features}) must be divisible by num_heads ({self.num_heads})")
    head_dim = features // self.num_heads
    dense = lambda name, **kwargs: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name, **kwargs)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    if positions is None:
      positions = relative_positions(x.shape[1], features)
    p = dense("pos", use_bias=False)(positions.astype(self.dtype))  # [2T − 1, heads, d_k]
    bias_u = self.param("pos_bias_u", nn.initializers.xavier_uniform(), (self.num_heads, head_dim))
    bias_v = self.param("pos_bias_v", nn.initializers.xavier_uniform(), (self.num_heads, head_dim))
    scale = 1.0 / math.sqrt(head_dim)
    position_scores = rel_shift(jnp.einsum("bqhd,phd->bhqp", q + bias_v.astype(q.dtype), p))
    attended = dot_product_attention(q + bias_u.astype(q.dtype), k, v, scale=scale, kv_lengths=lengths,
                                     bias=position_scores.astype(jnp.float32) * scale,
                                     implementation=self.attention_impl)
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype, name="out")(attended)


def _shifted_sum(x, kernel, before: int):
  """Σ_i x_padded[:, i:i + T] · kernel[i] for `x [batch, T, channels]`, `kernel [k, channels]`, zero-padded by
  `before` frames before and k − 1 − before after."""
  size, frames = kernel.shape[0], x.shape[1]
  padded = jnp.pad(x, ((0, 0), (before, size - 1 - before), (0, 0)))
  return sum(padded[:, i:i + frames] * kernel[i] for i in range(size))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x, kernel, before: int):
  """Depthwise 'SAME' convolution over time (cross-correlation, as `nn.Conv`) of `x [batch, T, channels]` with
  `kernel [k, channels]`, as a sum of k shifted, scaled copies.  Its gradients are written out: autodiff of the
  copies pads a full-size gradient for each of the k slices; here the input's gradient is the same shifted sum
  of the output's gradient with the kernel reversed, and the kernel's is k multiply-reductions."""
  return _shifted_sum(x, kernel, before)


def _depthwise_forward(x, kernel, before):
  return _shifted_sum(x, kernel, before), (x, kernel)


def _depthwise_backward(before, residuals, grad):
  x, kernel = residuals
  size, frames = kernel.shape[0], x.shape[1]
  grad_x = _shifted_sum(grad, kernel[::-1], size - 1 - before)
  padded = jnp.pad(x, ((0, 0), (before, size - 1 - before), (0, 0)))
  grad_kernel = jnp.stack([jnp.sum(padded[:, i:i + frames] * grad, axis=(0, 1)) for i in range(size)])
  return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


depthwise_conv.defvjp(_depthwise_forward, _depthwise_backward)


class DepthwiseConv1D(nn.Module):
  """`nn.Conv(channels, (kernel_size,), padding="SAME", feature_group_count=channels)` over `[batch, T, channels]`,
  the same parameters (`kernel [k, 1, channels]`, `bias`) and initialisation, computed by `depthwise_conv`:
  XLA:CPU's grouped convolution takes about 3× as long forward and backward.  'SAME' pads (k − 1) // 2 frames
  before and k // 2 after."""
  kernel_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, 1, channels)).astype(self.dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), (channels,)).astype(self.dtype)
    return depthwise_conv(x.astype(self.dtype), kernel[:, 0], (self.kernel_size - 1) // 2) + bias


class ConvolutionModule(nn.Module):
  """Dense(2d) → GLU → depthwise conv over time → BatchNorm → Swish → Dense(d) (ESPnet's `ConvolutionModule`;
  its pointwise convolutions are the Dense layers `pointwise_conv1`, `pointwise_conv2`).

  `kernel_size` 31 is ESPnet's ((k − 1)/2 frames each side); the paper's 32 pads TensorFlow's 'SAME'
  way, as Lingvo does: 15 frames before, 16 after.  Frames past `lengths` are zeroed before the depthwise
  convolution and left out of the BatchNorm statistics in training (ESPnet's `BatchNorm1d` counts them),
  so a batch's padding changes neither its valid outputs nor the running statistics.
  """
  kernel_size: int = 31
  momentum: float = 0.9  # PyTorch's BatchNorm momentum 0.1
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, lengths=None, train: bool = False):
    channels = x.shape[-1]
    y = nn.Dense(2 * channels, dtype=self.dtype, name="pointwise_conv1")(x)
    y = nn.glu(y, axis=-1)
    mask = None if lengths is None else valid_mask(lengths, x.shape[1])[..., None]
    if mask is not None:
      y = jnp.where(mask, y, jnp.zeros((), y.dtype))
    y = DepthwiseConv1D(self.kernel_size, dtype=self.dtype, name="depthwise_conv")(y)
    y = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype,
                     name="norm")(y, mask=mask)
    return nn.Dense(channels, dtype=self.dtype, name="pointwise_conv2")(nn.swish(y))


class ConformerBlock(nn.Module):
  """One Conformer block (see the module docstring); `__call__(x, positions, lengths=, train=)`."""
  num_heads: int
  mlp_dim: int
  conv_kernel: int = 31
  dropout_rate: float = 0.0
  attention_impl: str | None = None
  layer_norm_epsilon: float = 1e-12  # ESPnet's LayerNorm
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions=None, *, lengths=None, train: bool = False):
    """`x [batch, T, d]` valid up to `lengths [batch]`; `positions` as `RelativePositionAttention` takes them
    (computed once per encoder, and dropped out there, as ESPnet's `RelPositionalEncoding` does)."""
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    norm = lambda name: nn.LayerNorm(self.layer_norm_epsilon, name=name)
    feed_forward = lambda name: MlpBlock(self.mlp_dim, self.dropout_rate, activation="swish", dtype=self.dtype,
                                         name=name)
    x = x + 0.5 * drop(feed_forward("feed_forward_macaron")(norm("norm_ff_macaron")(x), train=train))
    attention = RelativePositionAttention(self.num_heads, self.attention_impl, dtype=self.dtype, name="self_attn")
    x = x + drop(attention(norm("norm_mha")(x), positions, lengths=lengths))
    convolution = ConvolutionModule(self.conv_kernel, dtype=self.dtype, name="conv_module")
    x = x + drop(convolution(norm("norm_conv")(x), lengths=lengths, train=train))
    x = x + 0.5 * drop(feed_forward("feed_forward")(norm("norm_ff")(x), train=train))
    return norm("norm_final")(x)
