"""ESPnet's RNN attention encoder-decoder (the RNN side of Karita et al., ASRU 2019: `espnet/nets/pytorch_backend/
e2e_asr.py`), with a CTC head on the encoder for joint CTC/attention training, called as the `asr` task says.

  audio → 80 Kaldi filterbanks (+ Δ, ΔΔ if `use_deltas`) → per-utterance mean/variance normalisation
        → SpecAugment (training)
  encoder, ESPnet `blstmp` (`rnn/encoders.py` RNNP): `encoder_layers` × [BLSTM of `encoder_units` per direction
        (`birnn{i}`) → keep every `subsample[i + 1]`-th frame → Dense(`projection_units`) (`bt{i}`) → tanh, except
        after the last layer], padding masked to 0 → encoder states (CTC head: Dense(vocab), ESPnet's `ctc_lo`)
  attention, ESPnet `location` (`rnn/attentions.py` AttLoc): e_t = gvec·tanh(mlp_enc h_t + mlp_dec z + mlp_att
        (loc_conv * a_prev)_t), a = softmax(2·e) over each utterance's frames; loc_conv is `aconv_chans` filters of
        width 2·`aconv_filts` + 1 over the previous weights (the first step's are uniform over the valid frames)
  decoder (`rnn/decoders.py` Decoder, teacher forcing): at step i, with z⁰ the first LSTM layer's state after
        step i − 1 (zeros at i = 0):  c_i, a_i = AttLoc(h, z⁰, a_{i−1});  LSTM layer 0 reads [Embed(y_i); c_i],
        layer l > 0 reads layer l − 1's new state;  logits_i = Dense(vocab)(last layer's state)

The context feeds the decoder's input and not its output: ESPnet's default `context_residual=False` (True would
read [state; context]).  The token embedding is `decoder_units` wide, as ESPnet's, unless `embed_dim` is set.
Initialisation follows ESPnet's `init_like_chainer`: LeCun-normal weights, zero biases, N(0, 1) embeddings and
a forget-gate bias of 1 in the decoder's LSTMs.  Each BLSTM runs both directions in one `lax.scan`, the backward
one on each row reversed within its own length (`flax.linen.recurrent.flip_sequences`), so padding never reaches a
valid frame; the decoder steps run in one `nn.scan` (or one at a time from the LSTM and attention state,
`init_decode_cache` / `decode_step`, in beam search).

Differences from ESPnet: dropout (off by default, as ESPnet's) is applied in training only, where ESPnet's
encoder applies its `F.dropout` at inference too; the CTC head has no dropout; a zero-length row (a batch's
padding) gives zeros instead of NaN.  `params_from_espnet` maps an ESPnet `E2E` state dict onto these parameters.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.recurrent import flip_sequences

from afx.errors import ConfigError
from afx.layers import speech
from afx.models.speech_recognizer import SpeechRecognizer

_MASKED = -1e10  # finite, so a row with no valid frame gives zero weights instead of NaN


def subsample_factors(subsample: str | Sequence[int], layers: int) -> tuple[int, ...]:
  """ESPnet's `get_subsample` for `blstmp`: `layers + 1` factors from "1_2_2_1_1" (the input's first, then
  one after each layer; missing ones are 1, extra ones ignored).  RNNP never uses the input's factor, so it
  must be 1 here."""
  parts = subsample.split("_") if isinstance(subsample, str) else list(subsample)
  try:
    given = [int(part) for part in parts]
  except ValueError:
    raise ConfigError(f"model.subsample {subsample!r} is not integers joined by '_' (ESPnet's '1_2_2_1_1')") from None
  factors = (given + [1] * (layers + 1))[:layers + 1]
  if any(factor < 1 for factor in factors) or factors[0] != 1:
    raise ConfigError(f"model.subsample {subsample!r}: factors must be >= 1 and the first (the input's, which "
                      "ESPnet's RNNP ignores) must be 1")
  return tuple(factors)


def _lstm_update(gates, cell):
  """One LSTM update from the summed pre-activations `[..., 4·units]` in torch's gate order (i, f, g, o)."""
  i, f, g, o = jnp.split(gates.astype(jnp.float32), 4, axis=-1)
  cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
  return cell, jax.nn.sigmoid(o) * jnp.tanh(cell)


def _forget_bias_one(key, shape, dtype=jnp.float32):
  """Zeros with the forget gate's quarter at 1 (ESPnet's `set_forget_bias_to_one`)."""
  del key
  units = shape[0] // 4
  return jnp.zeros(shape, dtype).at[units:2 * units].set(1.0)


class BiLSTM(nn.Module):
  """One bidirectional LSTM layer over padded rows: `x [b, T, d]` with `lengths` → `[b, T, 2·units]` (forward
  states, then backward ones, as torch's), zero past each length.  `{forward,backward}_ih` hold torch's input
  weights with `b_ih + b_hh` as their bias, `{forward,backward}_hh` its recurrent weights (transposed)."""
  units: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths):
    batch, frames, _ = x.shape
    gates = 4 * self.units
    backward_x = flip_sequences(x, lengths, num_batch_dims=1, time_major=False)
    inputs = jnp.stack([nn.Dense(gates, dtype=self.dtype, name="forward_ih")(x),
                        nn.Dense(gates, dtype=self.dtype, name="backward_ih")(backward_x)]).astype(jnp.float32)
    recurrent = jnp.stack([self.param(f"{side}_hh", nn.initializers.lecun_normal(), (self.units, gates))
                           for side in ("forward", "backward")])

    def step(carry, projected):  # projected [2, b, 4·units]: both directions at once
      cell, hidden = carry
      cell, hidden = _lstm_update(projected + jnp.einsum("dbu,dug->dbg", hidden, recurrent), cell)
      return (cell, hidden), hidden

    zeros = jnp.zeros((2, batch, self.units), jnp.float32)
    _, states = jax.lax.scan(step, (zeros, zeros), jnp.moveaxis(inputs, 2, 0))  # [T, 2, b, units]
    forward, backward = jnp.moveaxis(states, 0, 2)
    backward = flip_sequences(backward, lengths, num_batch_dims=1, time_major=False)
    y = jnp.concatenate([forward, backward], axis=-1)
    return jnp.where(speech.valid_mask(lengths, frames)[..., None], y, 0.0)


class BLSTMP(nn.Module):
  """ESPnet's RNNP encoder (`blstmp`): `x [b, T, d]` with `lengths` → `([b, T', projection_units], lengths')`,
  T' and the lengths shrunk by each layer's factor as ESPnet does (`x[:, ::s]`, L → (L + 1) // s)."""
  layers: int
  units: int
  projection_units: int
  subsample: tuple[int, ...]
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths, *, train: bool = False):
    lengths = jnp.asarray(lengths, jnp.int32)
    for layer in range(self.layers):
      x = BiLSTM(self.units, dtype=self.dtype, name=f"birnn{layer}")(x, lengths)
      factor = self.subsample[layer + 1]
      if factor > 1:
        x, lengths = x[:, ::factor], (lengths + 1) // factor
      x = nn.Dense(self.projection_units, dtype=self.dtype, name=f"bt{layer}")(x)
      if layer < self.layers - 1:
        x = jnp.tanh(nn.Dropout(self.dropout_rate)(x, deterministic=not train))
    return jnp.where(speech.valid_mask(lengths, x.shape[1])[..., None], x, 0.0), lengths


class LocationAttention(nn.Module):
  """One step of ESPnet's AttLoc.  `keys = mlp_enc(encoded)` comes precomputed (ESPnet's `pre_compute_enc_h`);
  `mask [b, T]` marks the valid frames, `query [b, units]` is the decoder state, `previous [b, T]` the last
  weights.  Returns the context `[b, eprojs]` and the weights `[b, T]` (0 on padding)."""
  att_dim: int
  conv_channels: int
  conv_filts: int
  scaling: float = 2.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, encoded, keys, mask, query, previous):
    width = 2 * self.conv_filts + 1
    location = nn.Conv(self.conv_channels, (width,), padding=((self.conv_filts, self.conv_filts),), use_bias=False,
                       dtype=self.dtype, name="loc_conv")(previous[..., None])
    location = nn.Dense(self.att_dim, use_bias=False, dtype=self.dtype, name="mlp_att")(location)
    query = nn.Dense(self.att_dim, use_bias=False, dtype=self.dtype, name="mlp_dec")(query)
    energy = nn.Dense(1, dtype=self.dtype, name="gvec")(jnp.tanh(location + keys + query[:, None]))[..., 0]
    energy = jnp.where(mask, self.scaling * energy.astype(jnp.float32), _MASKED)
    weights = jnp.where(mask, jax.nn.softmax(energy, axis=-1), 0.0)
    context = jnp.einsum("bt,btd->bd", weights, encoded.astype(jnp.float32))
    return context, weights


class _DecoderStep(nn.Module):
  """One step of ESPnet's `Decoder` (see the module docstring): `carry = (states, weights)`, the LSTM layers'
  `(cell, hidden)` `[b, units]` and the last attention weights `[b, T]`, and the step's embedded token `[b, e]`
  → `(carry, (the last layer's output [b, units], weights))`; scanned over the tokens in teacher forcing."""
  layers: int
  units: int
  att_dim: int
  conv_channels: int
  conv_filts: int
  scaling: float
  dropout_rate: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, carry, embedded, encoded, keys, mask, *, train: bool = False):
    states, weights = carry
    drop = lambda value: nn.Dropout(self.dropout_rate)(value, deterministic=not train)
    context, weights = LocationAttention(self.att_dim, self.conv_channels, self.conv_filts, self.scaling,
                                         dtype=self.dtype, name="att")(encoded, keys, mask, drop(states[0][1]), weights)
    x = jnp.concatenate([embedded, context.astype(embedded.dtype)], axis=-1)
    new_states = []
    for layer, (cell, hidden) in enumerate(states):
      gates = (nn.Dense(4 * self.units, dtype=self.dtype, bias_init=_forget_bias_one, name=f"lstm{layer}_ih")(x)
               + nn.Dense(4 * self.units, use_bias=False, dtype=self.dtype, name=f"lstm{layer}_hh")(hidden))
      cell, hidden = _lstm_update(gates, cell)
      new_states.append((cell, hidden))
      x = drop(hidden)
    return (tuple(new_states), weights), (x, weights)


class AttentionDecoder(nn.Module):
  """ESPnet's RNN `Decoder` with AttLoc.  Teacher-forced (`__call__`): `tokens [b, L]` (`<sos/eos>` first) over
  `encoded [b, T, eprojs]` with `encoded_lengths` → `(logits [b, L, vocab], attention weights [b, L, T])`.
  One token at a time (`start`, then `decode_step`), for inference."""
  vocab_size: int
  layers: int = 1
  units: int = 300
  embed_dim: int | None = None
  att_dim: int = 320
  conv_channels: int = 10
  conv_filts: int = 100
  scaling: float = 2.0
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.embed_dim or self.units, embedding_init=nn.initializers.normal(1.0))
    self.att_mlp_enc = nn.Dense(self.att_dim, dtype=self.dtype)
    self.step = _DecoderStep(self.layers, self.units, self.att_dim, self.conv_channels, self.conv_filts, self.scaling,
                             self.dropout_rate, dtype=self.dtype)
    self.output = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)

  def start(self, encoded, encoded_lengths):
    """`(carry, context)` before the first token.  carry: zero LSTM states `[b, units]` and the first step's
    previous attention weights `[b, T]`, uniform over each row's valid frames.  context: what every step reads,
    `{"encoded", "keys" (ESPnet's precomputed mlp_enc(encoded)) [b, T, att_dim], "mask" [b, T]}`."""
    batch, frames, _ = encoded.shape
    mask = speech.valid_mask(encoded_lengths, frames)
    zeros = jnp.zeros((batch, self.units), jnp.float32)
    states = tuple((zeros, zeros) for _ in range(self.layers))
    first = mask / jnp.maximum(jnp.asarray(encoded_lengths), 1).astype(jnp.float32)[:, None]
    return (states, first), {"encoded": encoded, "keys": self.att_mlp_enc(encoded), "mask": mask}

  def __call__(self, tokens, encoded, encoded_lengths, *, train: bool = False):
    carry, context = self.start(encoded, encoded_lengths)
    embedded = self.dropout(self.embed(tokens).astype(self.dtype), deterministic=not train)
    steps = nn.scan(lambda step, carry, embedded, encoded, keys, mask: step(carry, embedded, encoded, keys, mask,
                                                                            train=train),
                    variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                    in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=1)
    _, (hidden, weights) = steps(self.step, carry, embedded, context["encoded"], context["keys"], context["mask"])
    logits = self.output(hidden.astype(self.dtype))
    return logits.astype(jnp.float32), weights

  def decode_step(self, token, carry, context):
    """`token [b]` after `carry` (from `start` or the previous step) → `(logits [b, vocab], carry)`, the
    logits `__call__`'s at this token's position (no dropout)."""
    embedded = self.embed(token).astype(self.dtype)
    carry, (hidden, _) = self.step(carry, embedded, context["encoded"], context["keys"], context["mask"])
    return self.output(hidden.astype(self.dtype)).astype(jnp.float32), carry


class RnnSeq2Seq(SpeechRecognizer, kw_only=True):
  """Attributes (ESPnet's names in brackets; defaults from ESPnet's common small RNN recipe config; the front
  end's: see `afx.layers.speech.SpeechFrontEnd`):
    vocab_size: output ids, blank and `<sos/eos>` included (from the run's tokenizer).
    encoder_layers [elayers], encoder_units [eunits, per direction], projection_units [eprojs], subsample
      [subsample, "1_2_2_1_1": ×4], dropout_rate [dropout-rate]: the BLSTMP encoder.
    att_dim [adim], aconv_chans, aconv_filts, attention_scaling: the location-aware attention.
    decoder_layers [dlayers; 0: CTC only], decoder_units [dunits], embed_dim (None: dunits, as ESPnet's),
      decoder_dropout_rate [dropout-rate-decoder]: the LSTM decoder.
  """
  vocab_size: int
  encoder_layers: int = 4
  encoder_units: int = 320
  projection_units: int = 320
  subsample: str | tuple[int, ...] = "1_2_2_1_1"
  dropout_rate: float = 0.0
  att_dim: int = 320
  aconv_chans: int = 10
  aconv_filts: int = 100
  attention_scaling: float = 2.0
  decoder_layers: int = 1
  decoder_units: int = 300
  embed_dim: int | None = None
  decoder_dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.encoder_layers < 1:
      raise ConfigError(f"model.encoder_layers must be >= 1, got {self.encoder_layers}")
    self.encoder = BLSTMP(self.encoder_layers, self.encoder_units, self.projection_units,
                          subsample_factors(self.subsample, self.encoder_layers), self.dropout_rate, dtype=self.dtype)
    self.ctc_head = nn.Dense(self.vocab_size, dtype=self.dtype)
    if self.decoder_layers:
      self.decoder = AttentionDecoder(self.vocab_size, self.decoder_layers, self.decoder_units, self.embed_dim,
                                      self.att_dim, self.aconv_chans, self.aconv_filts, self.attention_scaling,
                                      self.decoder_dropout_rate, dtype=self.dtype)

  def subsampling_factor(self) -> int:
    return int(np.prod(subsample_factors(self.subsample, self.encoder_layers)))

  @property
  def frame_seconds(self) -> float:
    """Seconds per encoder frame: the filterbank shift × the encoder's subsampling."""
    return self.subsampling_factor() * self.FRAME_SECONDS

  def encode(self, audio, audio_lengths, speaker_stats=None, *, train: bool = False):
    """Encoder states `[batch, frames/4, projection_units]` (with the default subsampling) and their lengths
    (`speaker_stats`: see `features`)."""
    x, lengths = self.features(audio, audio_lengths, speaker_stats, train=train)
    return self.encoder(x.astype(self.dtype), lengths, train=train)

  def decode(self, tokens, token_lengths, encoded, encoded_lengths, *, train: bool = False,
             return_attention: bool = False):
    """Next-token logits `[batch, L, vocab]` after each prefix of `tokens [batch, L]` (`<sos/eos>` first), and
    with `return_attention` the attention weights `[batch, L, frames]` of each step.  The decoder is causal,
    so `token_lengths` is not needed: positions past a length do not change those before it."""
    del token_lengths
    logits, weights = self.decoder(tokens, encoded, encoded_lengths, train=train)
    return (logits, weights) if return_attention else logits

  def init_decode_cache(self, encoded, encoded_lengths, slots: int, hypotheses: int = 1):
    """What `decode_step` starts from, for `encoded [batch, T, projection_units]` valid up to `encoded_lengths
    [batch]` and `hypotheses` rows per utterance: `(cache, context)`.  cache (one row per hypothesis, an
    utterance's consecutive): the decoder LSTMs' states and the last attention weights
    (`AttentionDecoder.start`); context (read only): the encoder states, their attention keys and mask, one
    copy per hypothesis (location-aware attention's energies differ by hypothesis anyway).  `slots` (the
    most positions to decode) is not needed: the state does not grow."""
    del slots
    return self.decoder.start(jnp.repeat(encoded, hypotheses, axis=0), jnp.repeat(encoded_lengths, hypotheses, axis=0))

  def decode_step(self, token, cache, context, step):
    """`decode` one token at a time (inference, no dropout): `token [n]` (`<sos/eos>` first) → `(logits
    [n, vocab], cache)`, `decode`'s logits at this position.  `step` is not needed: the state carries it."""
    del step
    return self.decoder.decode_step(token, cache, context)


def _linear(state, prefix, bias=True):
  params = {"kernel": state[f"{prefix}.weight"].T}
  if bias:
    params["bias"] = state[f"{prefix}.bias"]
  return params


def _lstm_ih(state, prefix, suffix=""):
  return {"kernel": state[f"{prefix}.weight_ih{suffix}"].T,
          "bias": state[f"{prefix}.bias_ih{suffix}"] + state[f"{prefix}.bias_hh{suffix}"]}


def params_from_espnet(state: dict, model=None) -> dict:
  """`RnnSeq2Seq` parameters from the tensors of an ESPnet `E2E` (`e2e_asr.py`, etype `blstmp`, atype
  `location`, dtype `lstm`) state dict: the encoder (`enc.enc.0.*`), the CTC head (`ctc.ctc_lo.*`) and the
  decoder (`dec.*`, `att.0.*`), each where the dict has it.  `model` (the registry's `weight_import` argument) is
  not needed: sizes come from the tensors, and shapes are checked when the result is merged."""
  del model
  state = {key: np.asarray(value, np.float32) for key, value in state.items()}
  if "enc.enc.0.conv1_1.weight" in state or "enc.enc.1.birnn0.weight_ih_l0" in state:
    raise ValueError("the ESPnet encoder is a VGG front end + RNN (vggblstmp); afx's RnnSeq2Seq is blstmp")
  params = {}
  encoder, layer = {}, 0
  while f"enc.enc.0.birnn{layer}.weight_ih_l0" in state:
    prefix = f"enc.enc.0.birnn{layer}"
    encoder[f"birnn{layer}"] = {"forward_ih": _lstm_ih(state, prefix, "_l0"),
                                "forward_hh": state[f"{prefix}.weight_hh_l0"].T,
                                "backward_ih": _lstm_ih(state, prefix, "_l0_reverse"),
                                "backward_hh": state[f"{prefix}.weight_hh_l0_reverse"].T}
    encoder[f"bt{layer}"] = _linear(state, f"enc.enc.0.bt{layer}")
    layer += 1
  if encoder:
    params["encoder"] = encoder
  if "ctc.ctc_lo.weight" in state:
    params["ctc_head"] = _linear(state, "ctc.ctc_lo")
  if "dec.embed.weight" in state:
    att = "att.0" if "att.0.mlp_enc.weight" in state else "dec.att.0"
    if f"{att}.loc_conv.weight" not in state:
      raise ValueError("the ESPnet decoder's attention is not AttLoc (atype location)")
    conv = state[f"{att}.loc_conv.weight"]  # [channels, 1, 1, width]
    step = {"att": {"loc_conv": {"kernel": conv[:, 0, 0, :].T[:, None, :]},
                    "mlp_att": _linear(state, f"{att}.mlp_att", bias=False),
                    "mlp_dec": _linear(state, f"{att}.mlp_dec", bias=False),
                    "gvec": _linear(state, f"{att}.gvec")}}
    layer = 0
    while f"dec.decoder.{layer}.weight_ih" in state:
      step[f"lstm{layer}_ih"] = _lstm_ih(state, f"dec.decoder.{layer}")
      step[f"lstm{layer}_hh"] = {"kernel": state[f"dec.decoder.{layer}.weight_hh"].T}
      layer += 1
    params["decoder"] = {"embed": {"embedding": state["dec.embed.weight"]},
                         "att_mlp_enc": _linear(state, f"{att}.mlp_enc"), "step": step,
                         "output": _linear(state, "dec.output")}
  return params
