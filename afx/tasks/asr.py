"""Speech recognition with a joint CTC/attention objective (Kim, Hori & Watanabe 2017; ESPnet's hybrid loss).

Batches are whole utterances padded to a few static lengths (`data_pipelines.utterances.Utterances`,
buckets from `config.data.bucket_seconds`), their transcripts encoded by the run's tokenizer, which is
built from the training split's transcripts and saved as `WORKDIR/tokenizer.json` (`prepare`).

A model of this task is called as `model(audio, audio_lengths, decoder_inputs, decoder_lengths, train=)`
and returns `{"ctc_logits" [b, frames, vocab], "encoder_lengths" [b], "decoder_logits" [b, L, vocab]}`
(`decoder_logits` may be absent when `ctc_weight` is 1).  The decoder reads `<sos/eos>` + tokens and is
trained to emit tokens + `<sos/eos>`.

  loss = ctc_weight · CTC + (1 − ctc_weight) · attention cross-entropy with label smoothing

each summed over an utterance and averaged over the batch, as ESPnet does (its label smoothing is
the KL divergence to the smoothed target, which is what is computed here).  Both parts, the decoder's
token accuracy and the count of utterances too long for CTC are logged beside the loss.

Evaluation: greedy CTC transcripts (on the device) scored against the references on the host:
`ctc_greedy_wer`, `ctc_greedy_cer`, the decoder's teacher-forced `attention_accuracy`, and `utterances`.

Beam search (`beam_rows`, the `beam_search` evaluator of `afx.train`): batched joint CTC/attention beam
search on the device (`afx.decoding.beam_search`) with the config's `decoding` group (`beam`, `ctc_weight`,
`length_penalty`), scored as `wer`, `cer` and `utterances` (`beam_metrics`).

Serving (`run.py transcribe`): `transcription_rows` decodes a batch of audio chunks on the device (the
model's `encode` and `ctc_logits`, greedy CTC with each token's first and last frame) and `transcript`
turns a file's rows into its text and words with start and end times from the CTC alignment (the
model's `frame_seconds` per encoder frame).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from afx.decoding import beam_search, ctc
from afx.errors import ConfigError
from afx.layers.speech import valid_mask
from afx.tasks.base import register_task
from afx.text import (SPACE, build_tokenizer, character_error_rate, load_tokenizer, normalize_for_scoring,
                      word_error_rate)
from data_pipelines.utterances import Utterances

TOKENIZER_FILE = "tokenizer.json"
WORD_START = "\u2581"  # sentencepiece's mark of a piece that begins a word


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def smoothed_cross_entropy(logits, targets, mask, *, smoothing: float):
  """ESPnet's `LabelSmoothingLoss` summed over unmasked positions: KL(smoothed target ‖ softmax(logits)),
  the target `1 − smoothing` on the label and `smoothing / (vocab − 1)` on every other id."""
  vocab = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  off = smoothing / (vocab - 1)
  target = jnp.where(jax.nn.one_hot(targets, vocab, dtype=bool), 1.0 - smoothing, off)
  entropy = jnp.sum(jnp.where(target > 0, target * jnp.log(jnp.where(target > 0, target, 1.0)), 0.0), axis=-1)
  kl = entropy - jnp.sum(target * log_probs, axis=-1)
  return jnp.sum(jnp.where(mask, kl, 0.0))


@register_task("asr")
@dataclasses.dataclass(frozen=True)
class SpeechRecognitionTask:
  """Joint CTC/attention speech recognition (see the module docstring)."""
  tokenizer: object  # an `afx.text.Tokenizer`
  bucket_samples: tuple[int, ...]
  max_tokens: int
  ctc_weight: float = 0.3
  label_smoothing: float = 0.1
  headline_metric = "ctc_greedy_wer"

  def __post_init__(self):
    if not 0.0 <= self.ctc_weight <= 1.0:
      raise ConfigError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

  @classmethod
  def prepare(cls, config, dataset, workdir: str) -> None:
    """Build the tokenizer from the training split's transcripts into `workdir` unless it is there."""
    path = os.path.join(workdir, TOKENIZER_FILE)
    if os.path.exists(path) or jax.process_index() != 0:
      return
    options = dict(config.tokenizer)
    kind = options.pop("kind", "characters")
    source = dataset.source(config.data.train_split)
    texts = [_text(source[i]["text"]) for i in range(len(source))]
    build_tokenizer(kind, texts, **options).save(workdir)

  @classmethod
  def from_config(cls, config, info, upstream, workdir: str | None = None):
    if workdir is None or not os.path.exists(os.path.join(workdir, TOKENIZER_FILE)):
      raise ConfigError(f"an asr run needs its tokenizer ({workdir}/{TOKENIZER_FILE}), which training writes; "
                        "train this workdir first")
    data = config.data
    buckets = tuple(round(seconds * info.sample_rate) for seconds in data.bucket_seconds)
    return cls(load_tokenizer(workdir), buckets, int(data.max_tokens), ctc_weight=float(config.ctc_weight),
               label_smoothing=float(config.label_smoothing))

  @property
  def batching(self) -> Utterances:
    return Utterances(self.bucket_samples, self.max_tokens, encode_text=self.tokenizer.encode)

  train_batching = eval_batching = batching

  def model_kwargs(self) -> dict:
    return {"vocab_size": self.tokenizer.vocab_size}

  def example_inputs(self) -> tuple:
    audio = np.zeros((1, self.bucket_samples[0]), np.float32)
    tokens = np.zeros((1, self.max_tokens + 1), np.int32)
    return audio, np.full((1,), audio.shape[1], np.int32), tokens, np.ones((1,), np.int32)

  def decoder_sequences(self, batch):
    """`(inputs, targets, lengths)`: `<sos/eos>` + tokens, tokens + `<sos/eos>`, each `[b, max_tokens + 1]`."""
    tokens, lengths = batch["tokens"], batch["token_lengths"]
    sos_eos = self.tokenizer.sos_eos_id
    inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), sos_eos, tokens.dtype), tokens], axis=1)
    padded = jnp.concatenate([tokens, jnp.zeros((tokens.shape[0], 1), tokens.dtype)], axis=1)
    targets = jnp.where(jnp.arange(padded.shape[1])[None] == lengths[:, None], sos_eos, padded)
    return inputs, targets, lengths + 1

  def model_inputs(self, batch):
    inputs, _, lengths = self.decoder_sequences(batch)
    return batch["audio"], batch["audio_lengths"], inputs, lengths

  def _parts(self, outputs, batch):
    """Per-utterance CTC and attention losses, their masks and the decoder's correct-token counts."""
    ctc_losses, possible = ctc.ctc_loss(outputs["ctc_logits"], outputs["encoder_lengths"], batch["tokens"],
                                        batch["token_lengths"], blank_id=self.tokenizer.blank_id)
    parts = {"ctc": ctc_losses, "possible": possible}
    if "decoder_logits" in outputs:
      _, targets, lengths = self.decoder_sequences(batch)
      mask = valid_mask(lengths, targets.shape[1])
      logits = outputs["decoder_logits"]
      parts["attention"] = jax.vmap(lambda l, t, m: smoothed_cross_entropy(l, t, m, smoothing=self.label_smoothing))(
          logits, targets, mask)
      parts["correct"] = jnp.sum((jnp.argmax(logits, axis=-1) == targets) & mask, axis=1)
      parts["decoder_tokens"] = jnp.sum(mask, axis=1)
    return parts

  def loss(self, outputs, batch):
    parts = self._parts(outputs, batch)
    batch_size = batch["tokens"].shape[0]
    ctc_loss = jnp.sum(parts["ctc"]) / jnp.maximum(jnp.sum(parts["possible"]), 1)
    aux = {"ctc_loss": ctc_loss, "ctc_impossible": jnp.sum(~parts["possible"])}
    if self.ctc_weight == 1.0 or "attention" not in parts:
      if self.ctc_weight < 1.0:
        raise ConfigError("ctc_weight < 1 needs a model with a decoder (it returned no decoder_logits)")
      return ctc_loss, aux
    attention_loss = jnp.sum(parts["attention"]) / batch_size
    aux.update(attention_loss=attention_loss,
               attention_accuracy=jnp.sum(parts["correct"]) / jnp.maximum(jnp.sum(parts["decoder_tokens"]), 1))
    return self.ctc_weight * ctc_loss + (1.0 - self.ctc_weight) * attention_loss, aux

  def eval_outputs(self, outputs, batch) -> dict:
    tokens, lengths, _, _ = ctc.greedy_decode(outputs["ctc_logits"], outputs["encoder_lengths"],
                                              blank_id=self.tokenizer.blank_id)
    rows = {"ctc_tokens": tokens, "ctc_lengths": lengths, "tokens": batch["tokens"],
            "token_lengths": batch["token_lengths"], "index": batch["index"]}
    if "decoder_logits" in outputs:
      parts = self._parts(outputs, batch)
      rows.update(correct=parts["correct"], decoder_tokens=parts["decoder_tokens"])
    return rows

  def texts(self, tokens, lengths) -> list[str]:
    """Token rows (ids before each length) as text, normalised for scoring."""
    return [normalize_for_scoring(self.tokenizer.decode(row[:length])) for row, length in zip(tokens, lengths)]

  def metrics(self, rows: dict[str, np.ndarray], num_examples: int) -> dict:
    keep = np.asarray(rows["index"]) >= 0
    references = self.texts(rows["tokens"][keep], rows["token_lengths"][keep])
    hypotheses = self.texts(rows["ctc_tokens"][keep], rows["ctc_lengths"][keep])
    results = {"ctc_greedy_wer": word_error_rate(references, hypotheses),
               "ctc_greedy_cer": character_error_rate(references, hypotheses), "utterances": int(keep.sum())}
    if "correct" in rows:
      results["attention_accuracy"] = float(rows["correct"][keep].sum() / max(rows["decoder_tokens"][keep].sum(), 1))
    return results

  def transcription_rows(self, model, variables, batch) -> dict:
    """Greedy CTC transcripts of `batch["audio"]` (rows valid up to `batch["audio_lengths"]`), jitted: the
    emitted ids, their counts and the first and last encoder frame of each (see `afx.decoding.ctc.collapse`)."""
    encoded, lengths = model.apply(variables, batch["audio"], batch["audio_lengths"], method="encode")
    logits = model.apply(variables, encoded, method="ctc_logits")
    tokens, counts, first, last = ctc.greedy_decode(logits, lengths, blank_id=self.tokenizer.blank_id)
    return {"tokens": tokens, "lengths": counts, "first": first, "last": last, "index": batch["index"]}

  def words(self, tokens, first, last, *, frame_seconds: float, offset: float = 0.0) -> list[dict]:
    """`[{"word", "start", "end"}]` of one chunk's emitted ids with their first and last frames; a word ends
    at a `<space>` token or where a sentencepiece piece begins a new word."""
    words, current = [], []

    def flush():
      if current:
        text = self.tokenizer.decode(np.asarray([token for token, _, _ in current])).strip()
        if text:
          words.append({"word": text, "start": round(offset + current[0][1] * frame_seconds, 3),
                        "end": round(offset + (current[-1][2] + 1) * frame_seconds, 3)})
        current.clear()

    for token, start, end in zip(np.asarray(tokens).tolist(), np.asarray(first).tolist(), np.asarray(last).tolist()):
      piece = self.tokenizer.tokens[token]
      if piece == SPACE or piece.startswith(WORD_START):
        flush()
      if piece != SPACE:
        current.append((token, start, end))
    flush()
    return words

  def transcript(self, chunks: list[tuple[float, dict]], *, frame_seconds: float) -> dict:
    """A file's `{"text", "words"}` from its chunks' rows `(offset in seconds, row of transcription_rows)`."""
    words = []
    for offset, row in chunks:
      count = int(row["lengths"])
      words += self.words(row["tokens"][:count], row["first"][:count], row["last"][:count],
                          frame_seconds=frame_seconds, offset=offset)
    return {"text": " ".join(word["word"] for word in words), "words": words}

  def beam_rows(self, model, variables, batch, *, beam: int, ctc_weight: float, length_penalty: float = 0.0) -> dict:
    """The best hypothesis of joint CTC/attention beam search for every utterance of `batch`, jitted:
    `{"hypothesis" [b, max_tokens], "hypothesis_lengths", "tokens", "token_lengths", "index"}`."""
    encoded, lengths = model.apply(variables, batch["audio"], batch["audio_lengths"], method="encode")
    ctc_logits = model.apply(variables, encoded, method="ctc_logits")

    def decode(tokens, token_lengths, memory, memory_lengths):
      return model.apply(variables, tokens, token_lengths, memory, memory_lengths, method="decode")

    tokens, token_lengths, _ = beam_search.beam_search(
        decode if ctc_weight < 1.0 else None, encoded, lengths, ctc_logits, beam=beam, max_length=self.max_tokens,
        sos_eos=self.tokenizer.sos_eos_id, ctc_weight=ctc_weight, length_penalty=length_penalty,
        blank=self.tokenizer.blank_id)
    return {"hypothesis": tokens[:, 0], "hypothesis_lengths": token_lengths[:, 0], "tokens": batch["tokens"],
            "token_lengths": batch["token_lengths"], "index": batch["index"]}

  def beam_metrics(self, rows: dict[str, np.ndarray]) -> dict:
    """`wer`, `cer` and `utterances` of `beam_rows` over a split."""
    keep = np.asarray(rows["index"]) >= 0
    references = self.texts(rows["tokens"][keep], rows["token_lengths"][keep])
    hypotheses = self.texts(rows["hypothesis"][keep], rows["hypothesis_lengths"][keep])
    return {"wer": word_error_rate(references, hypotheses), "cer": character_error_rate(references, hypotheses),
            "utterances": int(keep.sum())}

