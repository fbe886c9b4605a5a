"""What the `asr` task's models share (`afx.tasks.asr`): the front end, the CTC head's logits, the joint
forward pass, and ESPnet's Transformer decoder.

  SpeechRecognizer          `__call__(audio, audio_lengths, decoder_inputs, decoder_lengths, train=)` →
                            `{"ctc_logits", "encoder_lengths", "decoder_logits"}` from the subclass's `encode`,
                            `ctc_head` and `decode` (no `decoder_logits` when `decoder_layers` is 0)
  TransformerDecoderMixin   `decode` through ESPnet's pre-LN Transformer decoder: Embed · √d_model + sinusoids →
                            `DecoderBlock`s (causal self-attention, cross-attention to the encoder states) →
                            LayerNorm → Dense(vocab); its modules come from `transformer_decoder(mlp_dim)` in setup
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from afx.errors import ConfigError
from afx.layers import speech
from afx.layers.positional import sinusoidal_encoding
from afx.layers.transformer import DecoderBlock


class SpeechRecognizer(speech.SpeechFrontEnd):
  """Base of the ASR models: subclasses define `encode`, `decode`, a `ctc_head` and `decoder_layers`."""

  def ctc_logits(self, encoded):
    return self.ctc_head(encoded).astype(jnp.float32)

  def __call__(self, audio, audio_lengths, decoder_inputs, decoder_lengths, *, train: bool = False):
    encoded, lengths = self.encode(audio, audio_lengths, train=train)
    outputs = {"ctc_logits": self.ctc_logits(encoded), "encoder_lengths": lengths}
    if self.decoder_layers:
      outputs["decoder_logits"] = self.decode(decoder_inputs, decoder_lengths, encoded, lengths, train=train)
    return outputs


class TransformerDecoderMixin:
  """ESPnet's Transformer decoder for a `SpeechRecognizer` with `d_model`, `num_heads`, `decoder_layers`,
  `dropout_rate`, `attention_impl`, `dtype`, `vocab_size` and a `dropout` module."""

  def transformer_decoder(self, mlp_dim: int) -> None:
    """Create the decoder's modules (`embed`, `decoder_blocks`, `decoder_norm`, `output`); call from `setup`."""
    self.embed = nn.Embed(self.vocab_size, self.d_model)
    self.decoder_blocks = [DecoderBlock(self.num_heads, mlp_dim, self.dropout_rate, attention_impl=self.attention_impl,
                                        dtype=self.dtype, name=f"decoder_{i}") for i in range(self.decoder_layers)]
    self.decoder_norm = nn.LayerNorm(1e-12)
    self.output = nn.Dense(self.vocab_size, dtype=self.dtype)

  def decode(self, tokens, token_lengths, encoded, encoded_lengths, *, train: bool = False):
    """Next-token logits `[batch, L, vocab]` after each prefix of `tokens [batch, L]` (`<sos/eos>` first)."""
    if not self.decoder_layers:
      raise ConfigError(f"this {type(self).__name__} has no decoder (decoder_layers=0): decode with CTC, or set "
                        "model.decoder_layers")
    x = self.embed(tokens).astype(self.dtype) * math.sqrt(self.d_model)
    x = self.dropout(x + sinusoidal_encoding(jnp.arange(x.shape[1]), self.d_model).astype(x.dtype),
                     deterministic=not train)
    for block in self.decoder_blocks:
      x = block(x, encoded, encoded_lengths, train=train, lengths=token_lengths)
    return self.output(self.decoder_norm(x)).astype(jnp.float32)
