"""WaveNet next-sample model (van den Oord et al. 2016), as used by Verma & Chafe 2021 over 256 mu-law codes.

codes → Embed(residual_channels) → causal input conv (kernel 2) → `num_stacks` stacks of gated residual
layers with dilations 1, 2, 4, …, 2^(layers_per_stack−1) → sum of the layers' skip outputs → ReLU →
1×1 conv → ReLU → 1×1 conv → `num_classes` logits for the next code.

Each layer: z = tanh(W_f ∗ x) ⊙ sigmoid(W_g ∗ x) with ∗ a dilated causal convolution of kernel 2;
skip = 1×1 conv(z); next x = x + 1×1 conv(z).  The last layer's residual conv would feed nothing, so it
has none.  Every convolution pads with zeros on the left: activations before the sequence start are zero,
which is exactly what a zero-initialised decoding cache holds, so `decode_step` from position 0 reproduces
`__call__`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def shift_right(x, distance: int):
  """`x` `[batch, n, features]` delayed by `distance` steps along n, zeros filling the first `distance`."""
  return jnp.pad(x, ((0, 0), (distance, 0), (0, 0)))[:, :x.shape[1]]


class CausalConv(nn.Module):
  """Kernel-2 causal convolution as a two-tap map: `past @ kernel[0] + present @ kernel[1] + bias`.

  The dilation d lives in what the caller pairs: over a sequence `conv(shift_right(x, d), x)`, for one
  step `conv(x[t - d], x[t])`.  Works on any leading shape.
  """
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, past, present):
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                        (2, present.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    past, present, kernel, bias = nn.dtypes.promote_dtype(past, present, kernel, bias, dtype=self.dtype)
    return past @ kernel[0] + present @ kernel[1] + bias


class ResidualLayer(nn.Module):
  """One gated layer on `(x[t - d], x[t])`, each `[..., residual_channels]`.

  Returns `(next residual input or None, skip output [..., skip_channels])`; None when
  `residual_output` is False (the network's last layer).
  """
  residual_channels: int
  skip_channels: int
  residual_output: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, past, present):
    filter_and_gate = CausalConv(2 * self.residual_channels, dtype=self.dtype, name="dilated")(past, present)
    filtered, gate = jnp.split(filter_and_gate, 2, axis=-1)
    z = jnp.tanh(filtered) * nn.sigmoid(gate)
    skip = nn.Dense(self.skip_channels, dtype=self.dtype, name="skip")(z)
    if not self.residual_output:
      return None, skip
    return present + nn.Dense(self.residual_channels, dtype=self.dtype, name="residual")(z), skip


class WaveNet(nn.Module):
  """Attributes:
    num_classes: code alphabet size (256 mu-law levels); also the number of logits.
    num_stacks, layers_per_stack: dilations 1 … 2^(layers_per_stack−1), repeated num_stacks times.
    residual_channels: width of the embedding, the residual stream and each gate.
    skip_channels: width of each layer's skip output and of their sum.
    output_channels: width of the hidden 1×1 conv of the output head.
    dtype: computation dtype; parameters stay float32 and logits come back float32.
  """
  num_classes: int = 256
  num_stacks: int = 1
  layers_per_stack: int = 10
  residual_channels: int = 128
  skip_channels: int = 128
  output_channels: int = 128
  dtype: jnp.dtype = jnp.float32

  past_samples = 0  # conditions on no window beyond the codes it is given

  @property
  def dilations(self) -> tuple[int, ...]:
    """Dilation of each residual layer, in order."""
    return tuple(2 ** layer for _ in range(self.num_stacks) for layer in range(self.layers_per_stack))

  @property
  def receptive_field(self) -> int:
    """Codes each logit sees, its own included: 2 through the input conv, plus d for each dilated layer.

    `num_stacks * (2**layers_per_stack - 1) + 2`: 1025 for 1 × 10 layers, 3071 for 3 × 10.
    """
    return sum(self.dilations) + 2

  def setup(self):
    self.embed = nn.Embed(self.num_classes, self.residual_channels, dtype=self.dtype)
    self.input_conv = CausalConv(self.residual_channels, dtype=self.dtype)
    count = len(self.dilations)
    self.layers = [ResidualLayer(self.residual_channels, self.skip_channels,
                                 residual_output=index < count - 1, dtype=self.dtype)
                   for index in range(count)]
    self.hidden = nn.Dense(self.output_channels, dtype=self.dtype)
    self.logits = nn.Dense(self.num_classes, dtype=self.dtype)

  def head(self, skip_sum):
    return self.logits(nn.relu(self.hidden(nn.relu(skip_sum)))).astype(jnp.float32)

  def __call__(self, codes, *, train: bool):
    """codes int32[batch, n] -> float32 logits [batch, n, num_classes].

    logits[:, t] is the distribution of codes[:, t+1] and depends only on
    codes[:, max(0, t - receptive_field + 1):t + 1].  `train` is unused (no dropout).
    """
    del train
    x = self.embed(codes)
    x = self.input_conv(shift_right(x, 1), x)
    # Skips are summed in float32 so a low-precision dtype does not lose the many small terms.
    skip_sum = 0.0
    for layer, dilation in zip(self.layers, self.dilations):
      x, skip = layer(shift_right(x, dilation), x)
      skip_sum = skip_sum + skip.astype(jnp.float32)
    return self.head(skip_sum)

  def init_cache(self, batch_size: int):
    """Zeros shaped as the decoding state, computed from attributes alone (callable unbound).

    `{"input": [batch, 1, residual_channels]` (the previous embedded code),
    `"layers": (` one `[batch, dilation, residual_channels]` ring buffer per residual layer `)}`.
    A layer's buffer slot `p % dilation` holds its input at the last position p with that residue, so
    at position t it holds x[t - dilation] until it is overwritten by x[t].
    """
    def queue(length):
      return jnp.zeros((batch_size, length, self.residual_channels), self.dtype)
    return {"input": queue(1), "layers": tuple(queue(dilation) for dilation in self.dilations)}

  def decode_step(self, cache, codes_t, position):
    """codes_t int32[batch] at absolute `position` -> (float32 logits [batch, num_classes], new cache).

    The logits equal `__call__(codes)[:, position]` when every position from 0 was fed, in order,
    starting from `init_cache`.  `position` may be traced; it only picks ring-buffer slots.
    """
    x = self.embed(codes_t)
    new_cache = {"input": x[:, None].astype(cache["input"].dtype)}
    x = self.input_conv(cache["input"][:, 0], x)
    new_queues = []
    skip_sum = 0.0
    for layer, dilation, queue in zip(self.layers, self.dilations, cache["layers"]):
      slot = position % dilation
      past = jax.lax.dynamic_index_in_dim(queue, slot, axis=1, keepdims=False)
      new_queues.append(jax.lax.dynamic_update_index_in_dim(queue, x.astype(queue.dtype), slot, axis=1))
      x, skip = layer(past, x)
      skip_sum = skip_sum + skip.astype(jnp.float32)
    new_cache["layers"] = tuple(new_queues)
    return self.head(skip_sum), new_cache
