"""Conformer (Gulati et al., Interspeech 2020) as ESPnet trains it for ASR: a Conformer encoder with a CTC head and
a Transformer decoder, for joint CTC/attention training and decoding (ESPnet2's `conformer` encoder with
`rel_pos_type: latest`, `macaron_style`, Swish, `input_layer: conv2d`, and its `transformer` decoder).

  audio → 80 Kaldi filterbanks → per-utterance mean/variance normalisation → SpecAugment (training)
        → 2 × (3×3 conv, stride 2, ReLU), d_model channels → Dense(d_model) · √d_model → dropout
        → `encoder_layers` Conformer blocks (`afx.layers.conformer`; relative sinusoidal positions enter
          each block's attention, not x) → LayerNorm → encoder states (CTC head: Dense(vocab))
  <sos> + tokens → Embed · √d_model + sinusoids → `decoder_layers` pre-LN decoder blocks (ReLU FFN of
        `decoder_mlp_dim`) → LayerNorm → Dense(vocab);  decoder_layers=0: a CTC-only model

Paper sizes (`d_model`, `num_heads`, `mlp_dim`, `encoder_layers`): S 144/4/576/16, M 256/4/1024/16 (the
defaults), L 512/8/2048/17, with `conv_kernel` 32 in the paper and 31 in ESPnet (the default).  The paper's
decoder is a single-LSTM transducer; this is ESPnet's attention decoder (6 layers, FFN 2048 by default).

Called as the `asr` task says (`afx.tasks.asr`); `encode`, `ctc_logits` and `decode` are the pieces that
decoding calls on their own, `encode_features` the encoder after the front end.  `params_from_espnet`
and `batch_stats_from_espnet` map an ESPnet ASR checkpoint's tensors onto the model.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from afx.layers import speech
from afx.layers.conformer import ConformerBlock, relative_positions
from afx.models.speech_recognizer import SpeechRecognizer, TransformerDecoderMixin


class Conformer(TransformerDecoderMixin, SpeechRecognizer, kw_only=True):
  """Attributes (the front end's: see `afx.layers.speech.SpeechFrontEnd`):
    vocab_size: output ids, blank and `<sos/eos>` included (from the run's tokenizer).
    time_masks, time_width_ratio: SpecAugment's time masks default to the paper's and ESPnet's LibriSpeech
      Conformer's, 10 × ≤ 5 % of each utterance (with 2 × ≤ 27 bins; neither's time warping).
    conv_channels: channels of the ×4 subsampling convolutions; None: d_model (ESPnet's conv2d).
    d_model, num_heads, mlp_dim, encoder_layers, conv_kernel: the encoder's sizes.
    decoder_layers, decoder_mlp_dim: the attention decoder (0 layers: CTC only).
    dropout_rate: on every residual branch, the FFN hidden layers, the scaled inputs and the positions.
  """
  vocab_size: int
  time_masks: int = 10
  time_width_ratio: float | None = 0.05
  conv_channels: int | None = None
  d_model: int = 256
  num_heads: int = 4
  mlp_dim: int = 1024
  encoder_layers: int = 16
  conv_kernel: int = 31
  decoder_layers: int = 6
  decoder_mlp_dim: int = 2048
  dropout_rate: float = 0.1
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.subsampling = speech.Conv2dSubsampling(self.d_model, self.conv_channels or self.d_model, batch_norm=False,
                                                dtype=self.dtype)
    self.encoder_blocks = [ConformerBlock(self.num_heads, self.mlp_dim, self.conv_kernel, self.dropout_rate,
                                          attention_impl=self.attention_impl, dtype=self.dtype, name=f"encoder_{i}")
                           for i in range(self.encoder_layers)]
    self.encoder_norm = nn.LayerNorm(1e-12)
    self.ctc_head = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.transformer_decoder(self.decoder_mlp_dim)
    self.dropout = nn.Dropout(self.dropout_rate)

  @property
  def frame_seconds(self) -> float:
    """Seconds per encoder frame: the filterbank shift × 4 (the subsampling)."""
    return 4 * self.FRAME_SECONDS

  def encode_features(self, features, lengths, *, train: bool = False):
    """Encoder states `[batch, frames/4, d_model]` and their lengths from filterbanks `[batch, frames, bins]`."""
    x, lengths = self.subsampling(features, lengths, train=train)
    x = self.dropout(x * math.sqrt(self.d_model), deterministic=not train)
    positions = self.dropout(relative_positions(x.shape[1], self.d_model).astype(x.dtype), deterministic=not train)
    for block in self.encoder_blocks:
      x = block(x, positions, lengths=lengths, train=train)
    return self.encoder_norm(x), lengths

  def encode(self, audio, audio_lengths, speaker_stats=None, *, train: bool = False):
    """Encoder states `[batch, frames/4, d_model]` and their lengths (`speaker_stats`: see `features`)."""
    x, lengths = self.features(audio, audio_lengths, speaker_stats, train=train)
    return self.encode_features(x, lengths, train=train)


# ESPnet checkpoints.  Torch's Linear weights are [out, in]; afx's kernels [in, out] (attention: [in, heads, d_k]
# and [heads, d_k, out]).


def _array(state: dict, key: str):
  return np.asarray(state[key], np.float32)


def _dense(state: dict, prefix: str) -> dict:
  return {"kernel": _array(state, f"{prefix}.weight").T, "bias": _array(state, f"{prefix}.bias")}


def _norm(state: dict, prefix: str) -> dict:
  return {"scale": _array(state, f"{prefix}.weight"), "bias": _array(state, f"{prefix}.bias")}


def _heads(state: dict, prefix: str, num_heads: int, *, bias: bool = True) -> dict:
  """A [d, d] projection into heads: kernel [d, heads, d_k], bias [heads, d_k]."""
  weight = _array(state, f"{prefix}.weight")
  params = {"kernel": weight.T.reshape(weight.shape[1], num_heads, -1)}
  if bias:
    params["bias"] = _array(state, f"{prefix}.bias").reshape(num_heads, -1)
  return params


def _attention(state: dict, prefix: str, num_heads: int) -> dict:
  weight = _array(state, f"{prefix}.linear_out.weight")
  params = {name: _heads(state, f"{prefix}.linear_{short}", num_heads)
            for name, short in (("query", "q"), ("key", "k"), ("value", "v"))}
  params["out"] = {"kernel": weight.T.reshape(num_heads, -1, weight.shape[0]),
                   "bias": _array(state, f"{prefix}.linear_out.bias")}
  return params


def _feed_forward(state: dict, prefix: str) -> dict:
  return {"Dense_0": _dense(state, f"{prefix}.w_1"), "Dense_1": _dense(state, f"{prefix}.w_2")}


def encoder_layer_params_from_espnet(state: dict, prefix: str, *, num_heads: int) -> dict:
  """`ConformerBlock` parameters from the tensors under `prefix` (e.g. "encoder.encoders.3") of an ESPnet
  conformer `EncoderLayer` (macaron, rel_selfattn with rel_pos_type "latest", the convolution module)."""
  attention = _attention(state, f"{prefix}.self_attn", num_heads)
  attention["pos"] = _heads(state, f"{prefix}.self_attn.linear_pos", num_heads, bias=False)
  for name in ("pos_bias_u", "pos_bias_v"):
    attention[name] = _array(state, f"{prefix}.self_attn.{name}")
  conv = f"{prefix}.conv_module"
  pointwise = lambda name: {"kernel": _array(state, f"{conv}.{name}.weight")[:, :, 0].T,
                            "bias": _array(state, f"{conv}.{name}.bias")}
  return {
      "norm_ff_macaron": _norm(state, f"{prefix}.norm_ff_macaron"),
      "feed_forward_macaron": _feed_forward(state, f"{prefix}.feed_forward_macaron"),
      "norm_mha": _norm(state, f"{prefix}.norm_mha"),
      "self_attn": attention,
      "norm_conv": _norm(state, f"{prefix}.norm_conv"),
      "conv_module": {
          "pointwise_conv1": pointwise("pointwise_conv1"),
          # torch's depthwise weight [channels, 1, k]; flax's [k, 1, channels]
          "depthwise_conv": {"kernel": _array(state, f"{conv}.depthwise_conv.weight").transpose(2, 1, 0),
                             "bias": _array(state, f"{conv}.depthwise_conv.bias")},
          "norm": _norm(state, f"{conv}.norm"),
          "pointwise_conv2": pointwise("pointwise_conv2")},
      "norm_ff": _norm(state, f"{prefix}.norm_ff"),
      "feed_forward": _feed_forward(state, f"{prefix}.feed_forward"),
      "norm_final": _norm(state, f"{prefix}.norm_final"),
  }


def decoder_layer_params_from_espnet(state: dict, prefix: str, *, num_heads: int) -> dict:
  """`afx.layers.transformer.DecoderBlock` parameters from an ESPnet Transformer `DecoderLayer` under `prefix`
  (e.g. "decoder.decoders.0"; self_attn, src_attn, a ReLU feed_forward, normalize_before)."""
  return {"norm_self": _norm(state, f"{prefix}.norm1"),
          "self_attention": _attention(state, f"{prefix}.self_attn", num_heads),
          "norm_cross": _norm(state, f"{prefix}.norm2"),
          "cross_attention": _attention(state, f"{prefix}.src_attn", num_heads),
          "norm_mlp": _norm(state, f"{prefix}.norm3"),
          "mlp": _feed_forward(state, f"{prefix}.feed_forward")}


def params_from_espnet(state: dict, model: Conformer, *, with_vocabulary: bool = False) -> dict:
  """The parameters of `model` that an ESPnet ASR checkpoint (`encoder.*`, `decoder.*`, `ctc.ctc_lo.*`; an
  ESPnet2 `ESPnetASRModel` or ESPnet1 `E2E` with a conformer encoder and `input_layer: conv2d`) gives it.

  The token-indexed tensors (CTC head, decoder embedding and output layer) come only `with_vocabulary`:
  an ESPnet token list numbers tokens its own way, so by default they keep their initialisation
  (`afx.models.ast.merge_params`).  BatchNorm statistics are not parameters: `batch_stats_from_espnet`.
  ESPnet's features (its STFT front end, global MVN) differ from afx's Kaldi filterbanks, so an imported
  encoder wants fine-tuning before it decodes well.
  """
  channels = _array(state, "encoder.embed.conv.0.weight").shape[0]
  project = _array(state, "encoder.embed.out.0.weight")  # [d, channels · bins'], channels major
  d_model = project.shape[0]
  bins = project.shape[1] // channels
  conv = lambda index: {"kernel": _array(state, f"encoder.embed.conv.{index}.weight").transpose(2, 3, 1, 0),
                        "bias": _array(state, f"encoder.embed.conv.{index}.bias")}
  params = {
      "subsampling": {"conv0": conv(0), "conv1": conv(2),
                      # afx flattens (bins', channels), bins major
                      "project": {"kernel": project.reshape(d_model, channels, bins).transpose(2, 1, 0)
                                  .reshape(bins * channels, d_model),
                                  "bias": _array(state, "encoder.embed.out.0.bias")}},
      "encoder_norm": _norm(state, "encoder.after_norm"),
  }
  for i in range(model.encoder_layers):
    params[f"encoder_{i}"] = encoder_layer_params_from_espnet(state, f"encoder.encoders.{i}",
                                                              num_heads=model.num_heads)
  if model.decoder_layers:
    params["decoder_norm"] = _norm(state, "decoder.after_norm")
    for i in range(model.decoder_layers):
      params[f"decoder_{i}"] = decoder_layer_params_from_espnet(state, f"decoder.decoders.{i}",
                                                                num_heads=model.num_heads)
  if with_vocabulary:
    params["ctc_head"] = _dense(state, "ctc.ctc_lo")
    if model.decoder_layers:
      params["embed"] = {"embedding": _array(state, "decoder.embed.0.weight")}
      params["output"] = _dense(state, "decoder.output_layer")
  return params


def batch_stats_from_espnet(state: dict, model: Conformer) -> dict:
  """The `batch_stats` collection (each convolution module's BatchNorm running mean and variance)."""
  stats = lambda i, name: _array(state, f"encoder.encoders.{i}.conv_module.norm.running_{name}")
  return {f"encoder_{i}": {"conv_module": {"norm": {"mean": stats(i, "mean"), "var": stats(i, "var")}}}
          for i in range(model.encoder_layers)}
