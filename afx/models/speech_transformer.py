"""Speech-Transformer (Dong, Xu & Xu, ICASSP 2018): an attention encoder-decoder over filterbanks, with a CTC
head on the encoder for joint CTC/attention training and decoding (as ESPnet trains it).

  audio → 80 Kaldi filterbanks (+ Δ, ΔΔ) → mean/variance normalisation → SpecAugment (training)
        → 2 × (3×3 conv, stride 2, BatchNorm, ReLU), 64 channels → `num_2d_attention` × 2D-attention (optional)
        → Dense(d_model) · √d_model + sinusoids
        → `encoder_layers` pre-LN Transformer blocks → LayerNorm → encoder states (CTC head: Dense(vocab))
  <sos> + tokens → Embed · √d_model + sinusoids → `decoder_layers` pre-LN decoder blocks (causal
        self-attention, cross-attention to the encoder states) → LayerNorm → Dense(vocab)

The optional 2D-attention modules (the paper's Fig. 2, `afx.layers.two_d_attention`) attend along time and along
frequency over the convolutions' `[batch, frames/4, bins/4, channels]` maps (`Conv2dSubsampling.convolve`), before
the projection (`project_maps`); its WSJ row uses 2 (`num_2d_attention`, default 0).

The paper normalises per speaker (`normalization: "speaker"`, Kaldi's per-speaker CMVN); the default is per
utterance (ESPnet's `utterance_mvn`), which needs no speaker labels.  Called as the `asr` task says
(`afx.tasks.asr`); `encode`, `ctc_logits` and `decode` are the pieces that decoding calls on their own.
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from afx.errors import ConfigError
from afx.layers import speech
from afx.layers.positional import sinusoidal_encoding
from afx.layers.transformer import TransformerBlock
from afx.layers.two_d_attention import TwoDAttention
from afx.models.speech_recognizer import SpeechRecognizer, TransformerDecoderMixin


class SpeechTransformer(TransformerDecoderMixin, SpeechRecognizer, kw_only=True):
  """Attributes (the front end's: see `afx.layers.speech.SpeechFrontEnd`; Δ and ΔΔ on by default, as the paper):
    vocab_size: output ids, blank and `<sos/eos>` included (from the run's tokenizer).
    conv_channels, conv_batch_norm: the ×4 subsampling convolutions.
    num_2d_attention, num_2d_attention_heads: the 2D-attention modules after them (0: none) and their heads c.
    d_model, num_heads, mlp_dim, encoder_layers, decoder_layers, dropout_rate: the Transformer's sizes.
  """
  vocab_size: int
  use_deltas: bool = True
  conv_channels: int = 64
  conv_batch_norm: bool = True
  num_2d_attention: int = 0
  num_2d_attention_heads: int = 4
  d_model: int = 256
  num_heads: int = 4
  mlp_dim: int = 1024
  encoder_layers: int = 6
  decoder_layers: int = 6
  dropout_rate: float = 0.1
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.num_2d_attention < 0:
      raise ConfigError(f"model.num_2d_attention must be >= 0, got {self.num_2d_attention}")
    self.subsampling = speech.Conv2dSubsampling(self.d_model, self.conv_channels, self.conv_batch_norm,
                                                dtype=self.dtype)
    self.two_d_attention = [TwoDAttention(self.num_2d_attention_heads, self.dropout_rate, self.attention_impl,
                                          dtype=self.dtype, name=f"two_d_attention_{i}")
                            for i in range(self.num_2d_attention)]
    self.encoder_blocks = [TransformerBlock(self.num_heads, self.mlp_dim, self.dropout_rate,
                                            attention_impl=self.attention_impl, layer_norm_epsilon=1e-12,
                                            activation="relu", dtype=self.dtype, name=f"encoder_{i}")
                           for i in range(self.encoder_layers)]
    self.encoder_norm = nn.LayerNorm(1e-12)
    self.ctc_head = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.transformer_decoder(self.mlp_dim)
    self.dropout = nn.Dropout(self.dropout_rate)

  @property
  def frame_seconds(self) -> float:
    """Seconds per encoder frame: the filterbank shift × 4 (the subsampling)."""
    return 4 * self.FRAME_SECONDS

  def _positions(self, x, train: bool):
    x = x * math.sqrt(self.d_model) + sinusoidal_encoding(jnp.arange(x.shape[1]), self.d_model).astype(x.dtype)
    return self.dropout(x, deterministic=not train)

  def encode(self, audio, audio_lengths, speaker_stats=None, *, train: bool = False):
    """Encoder states `[batch, frames/4, d_model]` and their lengths (`speaker_stats`: see `features`)."""
    x, lengths = self.features(audio, audio_lengths, speaker_stats, train=train)
    maps, lengths = self.subsampling.convolve(x, lengths, train=train)
    for block in self.two_d_attention:
      maps = block(maps, lengths, train=train)
    x = self.subsampling.project_maps(maps, lengths)
    x = self._positions(x, train)
    for block in self.encoder_blocks:
      x = block(x, train=train, lengths=lengths)
    return self.encoder_norm(x), lengths
