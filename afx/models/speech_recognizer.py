"""What the `asr` task's models share (`afx.tasks.asr`): the front end, the CTC head's logits, the joint
forward pass, and ESPnet's Transformer decoder.

  SpeechRecognizer          `__call__(audio, audio_lengths, decoder_inputs, decoder_lengths, speaker_stats=None,
                            train=)` →
                            `{"ctc_logits", "encoder_lengths", "decoder_logits"}` from the subclass's `encode`,
                            `ctc_head` and `decode` (no `decoder_logits` when `decoder_layers` is 0)
  TransformerDecoderMixin   `decode` through ESPnet's pre-LN Transformer decoder: Embed · √d_model + sinusoids →
                            `DecoderBlock`s (causal self-attention, cross-attention to the encoder states) →
                            LayerNorm → Dense(vocab); its modules come from `transformer_decoder(mlp_dim)` in setup;
                            `init_decode_cache` / `decode_step` run it one token at a time from a key/value cache
                            (what `afx.decoding.beam_search` calls)
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from afx.errors import ConfigError
from afx.layers import speech
from afx.layers.positional import sinusoidal_encoding
from afx.layers.transformer import DecoderBlock


class SpeechRecognizer(speech.SpeechFrontEnd):
  """Base of the ASR models: subclasses define `encode(audio, audio_lengths, speaker_stats=None, *, train)`
  (`speaker_stats` goes to the front end's `features`), `decode`, a `ctc_head` and `decoder_layers`."""

  def ctc_logits(self, encoded):
    return self.ctc_head(encoded).astype(jnp.float32)

  def __call__(self, audio, audio_lengths, decoder_inputs, decoder_lengths, speaker_stats=None, *,
               train: bool = False):
    encoded, lengths = self.encode(audio, audio_lengths, speaker_stats, train=train)
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

  def _check_decoder(self) -> None:
    if not self.decoder_layers:
      raise ConfigError(f"this {type(self).__name__} has no decoder (decoder_layers=0): decode with CTC, or set "
                        "model.decoder_layers")

  def _embed_tokens(self, tokens, positions):
    """Embed · √d_model + the sinusoids of `positions`: `tokens [batch, L]` → `[batch, L, d_model]`."""
    x = self.embed(tokens).astype(self.dtype) * math.sqrt(self.d_model)
    return x + sinusoidal_encoding(positions, self.d_model).astype(x.dtype)

  def decode(self, tokens, token_lengths, encoded, encoded_lengths, *, train: bool = False):
    """Next-token logits `[batch, L, vocab]` after each prefix of `tokens [batch, L]` (`<sos/eos>` first)."""
    self._check_decoder()
    x = self.dropout(self._embed_tokens(tokens, jnp.arange(tokens.shape[1])), deterministic=not train)
    for block in self.decoder_blocks:
      x = block(x, encoded, encoded_lengths, train=train, lengths=token_lengths)
    return self.output(self.decoder_norm(x)).astype(jnp.float32)

  def init_decode_cache(self, encoded, encoded_lengths, slots: int, hypotheses: int = 1):
    """What `decode_step` starts from, for `encoded [batch, M, d_model]` valid up to `encoded_lengths [batch]`
    and `hypotheses` rows per utterance: `(cache, context)`.  cache (one row per hypothesis, n = batch ×
    hypotheses, an utterance's consecutive): per decoder block the self-attention keys and values
    `{"key", "value"}` `[n, heads, slots, d_model / heads]`, zeros (positions 0..slots − 1 can be decoded).
    context (read only, one copy per utterance): `{"memory": per block the cross-attention keys/values of
    encoded, "memory_lengths"}`."""
    self._check_decoder()
    rows = encoded.shape[0] * hypotheses
    cache = [block.empty_cache(rows, slots, self.d_model) for block in self.decoder_blocks]
    context = {"memory": [block.project_memory(encoded) for block in self.decoder_blocks],
               "memory_lengths": jnp.asarray(encoded_lengths, jnp.int32)}
    return cache, context

  def decode_step(self, token, cache, context, step):
    """`decode` one position at a time (inference, no dropout): `token [n]` at position `step` (int32 scalar,
    `<sos/eos>` at 0) with `cache` holding positions 0..step − 1 → `(logits [n, vocab], cache)`, the logits
    `decode`'s at row `step` of the same prefix (over its utterance's memory in context)."""
    x = self._embed_tokens(token[:, None], jnp.reshape(step, (1,)))
    new_cache = []
    for block, layer_cache, memory_kv in zip(self.decoder_blocks, cache, context["memory"]):
      x, layer_cache = block.decode_step(x, layer_cache, memory_kv, context["memory_lengths"], step)
      new_cache.append(layer_cache)
    return self.output(self.decoder_norm(x))[:, 0].astype(jnp.float32), new_cache
