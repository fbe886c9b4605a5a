"""Speech-Transformer's 2D-Attention (Dong, Xu & Xu, ICASSP 2018, Fig. 2): self-attention over a
convolutional feature map `[batch, time, freq, channels]` along time and along frequency.

The paper: speech is a spectrogram with a time and a frequency axis, so attending along both may help.  Three
convolutional networks map the n-channel input to queries, keys and values of c channels each (one channel per
head); for each head, scaled dot-product attention runs along time (the transposed maps) and along frequency,
capturing temporal and spectral dependencies; the 2c outputs are concatenated and a last convolution maps them back
to n channels.  Its WSJ row stacks two of these modules after the ×4 subsampling convolutions.

Where the paper is silent, afx chooses:
  * every convolution is 3×3, stride 1, zero ("SAME") padding, with a bias and no activation (the linear Q/K/V/output
    maps of a Transformer's attention, made local);
  * the time attention's tokens are frames, each the head's frequency vector (d_k = freq bins); the frequency
    attention's tokens are bins, each the head's time vector (d_k = the utterance's frame count, so its 1/√d_k scale
    is 1/√length per utterance, not 1/√padded length);
  * the module is pre-LN residual, `x + Conv(2D-attention(LN(x)))`, as the encoder's Transformer blocks are, with the
    LayerNorm over channels at each (time, freq) cell: per cell, so padding and batch neighbours never enter its
    statistics (a BatchNorm's would), and dropout on the residual branch as the blocks have;
  * padding: frames at or past `lengths` are zeroed before every convolution and in the output (whatever the input
    holds there), so an utterance's valid frames see exactly what they see alone, where the "SAME" padding is
    zeros; the time attention masks padded keys (`kv_lengths`) and the frequency attention's time vectors hold
    zeros past the length.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from afx.kernels.attention import dot_product_attention
from afx.layers.speech import valid_mask

# The frequency attention's head dimension is the frame count (hundreds), beyond what fused kernels take, and its
# ~20 bin tokens gain nothing from blocking: it runs on a dense implementation.
DENSE_FOR_FREQUENCY = ("reference", "xla")


def _zero_padding(x, lengths):
  """`x [batch, time, ...]` with the frames at or past `lengths` set to zero."""
  mask = valid_mask(lengths, x.shape[1]).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
  return jnp.where(mask, x, jnp.zeros((), x.dtype))


def time_attention(q, k, v, lengths, *, implementation: str | None = None):
  """Per head, each frame's frequency vector attends over the utterance's valid frames.

  `q, k, v [batch, time, freq, heads]`, `lengths [batch]` → `[batch, time, freq, heads]`, zero past `lengths`;
  logits `q[t]·k[t'] / √freq`, softmax over `t' < length`.
  """
  as_tokens = lambda x: jnp.swapaxes(x, 2, 3)  # [batch, time, heads, freq]: frames are the tokens
  out = dot_product_attention(as_tokens(q), as_tokens(k), as_tokens(v), q_lengths=lengths, kv_lengths=lengths,
                              implementation=implementation)
  return jnp.swapaxes(out, 2, 3)


def frequency_attention(q, k, v, lengths, *, implementation: str | None = None):
  """Per head, each frequency bin's time vector (valid frames only) attends over all bins.

  `q, k, v [batch, time, freq, heads]`, `lengths [batch]` → `[batch, time, freq, heads]`, zero past `lengths`;
  logits `Σ_{t<length} q[t, f]·k[t, f'] / √length`, softmax over `f'`.
  """
  if implementation not in DENSE_FOR_FREQUENCY:
    implementation = "xla"
  q, k, v = (_zero_padding(x, lengths) for x in (q, k, v))
  as_tokens = lambda x: jnp.transpose(x, (0, 2, 3, 1))  # [batch, freq, heads, time]: bins are the tokens
  # The scale differs per utterance, and dot_product_attention takes one: fold it into the queries.
  scale = jax.lax.rsqrt(jnp.maximum(jnp.asarray(lengths), 1).astype(q.dtype))[:, None, None, None]
  out = dot_product_attention(as_tokens(q) * scale, as_tokens(k), as_tokens(v), scale=1.0,
                              implementation=implementation)
  return jnp.transpose(out, (0, 3, 1, 2))


class TwoDAttention(nn.Module):
  """One 2D-Attention module: `x + Conv₃ₓ₃(concat(time heads, frequency heads))` over `LN(x)` (see the module
  docstring for the paper's description and afx's choices).

  Attributes:
    heads: c, the heads (channels of each of the Q, K and V convolutions).
    dropout_rate: dropout on the residual branch in training.
    attention_impl: the time attention's implementation (`afx.kernels.attention`; one that takes lengths).
  """
  heads: int = 4
  dropout_rate: float = 0.0
  attention_impl: str | None = None
  layer_norm_epsilon: float = 1e-12
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths, *, train: bool = False):
    """`x [batch, time, freq, channels]` valid at frames before `lengths [batch]` → the same shape, zero past them."""
    conv = lambda features, name: nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype, name=name)
    # LayerNorm turns a zero padding cell into its bias: zero it again so the convolutions see zero padding.
    y = _zero_padding(nn.LayerNorm(self.layer_norm_epsilon, dtype=self.dtype, name="norm")(x), lengths)
    q, k, v = (_zero_padding(conv(self.heads, name)(y), lengths) for name in ("query", "key", "value"))
    heads = jnp.concatenate([time_attention(q, k, v, lengths, implementation=self.attention_impl),
                             frequency_attention(q, k, v, lengths, implementation=self.attention_impl)], axis=-1)
    y = conv(x.shape[-1], "output")(heads)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    return _zero_padding(x + y, lengths)
