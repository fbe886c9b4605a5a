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

Feature normalisation (the model's `normalization`, `afx.layers.speech.SpeechFrontEnd`): for "global",
`prepare` measures the training split's per-bin mean and standard deviation (up to `STATS_UTTERANCES`
utterances, evenly spaced) into `WORKDIR/feature_stats.json`, which the model is built with.  For
"speaker" (Kaldi's `compute-cmvn-stats --spk2utt` / `apply-cmvn --utt2spk`, as Dong et al. 2018), it
measures every utterance of every split the run reads (`splits_read`) per speaker of that split
(`data_pipelines.utterances.speaker_of`: an utterance without a speaker is its own), test speakers from the
test split itself, into the same file:

  {"mean", "std", "utterances", "frames": the training split's, over all of it,
   "speakers": {split: {speaker: {"mean", "std", "utterances", "frames"}}}}

and batches carry each utterance's speaker's as `feature_mean` / `feature_std` `[b, bins]`, which reach the
model's `speaker_stats` argument (`speaker_stats_of`).  The cost: one pass over each split's raw features
on the device and one more read of its records on the host (their speakers), before training; the file
holds 2 × bins numbers per speaker, so per utterance for a corpus without speaker labels (whose utterances
"utterance" normalises alike).  A split measured is not measured again; one not yet measured (a split
added to the config) is, when training is rerun on the workdir.  `run.py transcribe` knows no speakers:
each file is its own, its statistics from all of its chunks (`speaker_arrays`, one more pass over the
file's raw features on the device), and its chunks are decoded with them.

Evaluation: greedy CTC transcripts (on the device) scored against the references on the host:
`ctc_greedy_wer`, `ctc_greedy_cer`, the decoder's teacher-forced `attention_accuracy`, and `utterances`.

Beam search (`beam_rows`, the `beam_search` evaluator of `afx.train`): batched joint CTC/attention beam
search on the device (`afx.decoding.beam_search`) with the config's `decoding` group (`beam`, `ctc_weight`,
`length_penalty`), scored as `wer`, `cer` and `utterances` (`beam_metrics`).

Serving (`run.py transcribe`): `transcription_rows` decodes a batch of audio chunks on the device (the
model's `encode` and `ctc_logits`, greedy CTC with each token's first and last frame), or
`beam_transcription_rows` (`--beam`: the joint beam search's best hypothesis, its tokens' frames from the
Viterbi CTC alignment, `afx.decoding.ctc.forced_align`), and `transcript` turns a file's rows into its
text and words with start and end times from the CTC alignment (the model's `frame_seconds` per encoder
frame).
"""

import dataclasses
import json
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from afx.decoding import beam_search, ctc
from afx.errors import ConfigError
from afx.layers.speech import valid_mask
from afx.tasks.base import register_task
from afx.text import (SPACE, build_tokenizer, character_error_rate, load_tokenizer, normalize_for_scoring,
                      word_error_rate)
from data_pipelines.utterances import SpeakerStatistics, Utterances, speaker_of

TOKENIZER_FILE = "tokenizer.json"
FEATURE_STATS_FILE = "feature_stats.json"
STATS_UTTERANCES = 10_000  # utterances (evenly spaced over the training split) behind the global statistics
WORD_START = "\u2581"  # sentencepiece's mark of a piece that begins a word


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def speaker_stats_of(batch):
  """The model's `speaker_stats` argument: `(feature_mean, feature_std)` of a batch that has them, else None."""
  return (batch["feature_mean"], batch["feature_std"]) if "feature_mean" in batch else None


def splits_read(config) -> list[str]:
  """The splits a run of `config` reads, each once: training, `data.eval_split`, the evaluations' (`evals.*.split`)
  and the test split."""
  data = config.data
  evaluated = [entry.get("split") for entry in (config.get("evals") or {}).values()]
  return list(dict.fromkeys(split for split in (data.train_split, data.get("eval_split"), *evaluated,
                                                 data.test_split) if split))


@dataclasses.dataclass(frozen=True)
class MeasuredSpeakers:
  """The per-speaker feature statistics of the splits `path` (`FEATURE_STATS_FILE`) holds, by split; called
  with a source, those of its split (its `split`, which `afx.train.data.Dataset.source` gives it)."""
  path: str
  splits: Mapping[str, SpeakerStatistics]

  def __call__(self, source) -> SpeakerStatistics:
    split = getattr(source, "split", None)
    if split not in self.splits:
      measured = ", ".join(sorted(self.splits)) or "none"
      raise ConfigError(f"model.normalization 'speaker' needs the per-speaker feature statistics of split {split!r}, "
                        f"which {self.path} lacks (it has: {measured}); training measures those of each split its "
                        "config reads (data.train_split, data.eval_split, data.test_split, evals.*.split): "
                        "rerun `run.py train` on this workdir with the split among them")
    return self.splits[split]

  @classmethod
  def from_json(cls, path: str, speakers: dict) -> "MeasuredSpeakers":
    """From feature_stats.json's `speakers` (`{split: {speaker: {"mean", "std", ...}}}`)."""
    def table(entries):
      names = list(entries)
      return SpeakerStatistics({name: row for row, name in enumerate(names)},
                               np.asarray([entries[name]["mean"] for name in names], np.float32),
                               np.asarray([entries[name]["std"] for name in names], np.float32))
    return cls(path, {split: table(entries) for split, entries in speakers.items()})


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
  feature_stats: tuple | None = None  # (mean, std) per feature bin over the training split (`feature_statistics`)
  # normalization "speaker": what batches look their speakers' statistics up in (None: batches carry none)
  speaker_stats: MeasuredSpeakers | None = dataclasses.field(default=None, compare=False)
  headline_metric = "ctc_greedy_wer"

  def __post_init__(self):
    if not 0.0 <= self.ctc_weight <= 1.0:
      raise ConfigError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

  @classmethod
  def prepare(cls, config, dataset, workdir: str) -> None:
    """Build the tokenizer from the training split's transcripts into `workdir` unless it is there, and the
    feature statistics the model's normalization needs that `FEATURE_STATS_FILE` lacks (`measure_statistics`)."""
    if jax.process_index() != 0:
      return
    path = os.path.join(workdir, TOKENIZER_FILE)
    if not os.path.exists(path):
      source = dataset.source(config.data.train_split)
      options = dict(config.tokenizer)
      kind = options.pop("kind", "characters")
      texts = [_text(source[i]["text"]) for i in range(len(source))]
      build_tokenizer(kind, texts, **options).save(workdir)
    stats_path = os.path.join(workdir, FEATURE_STATS_FILE)
    saved = _read_json(stats_path) if os.path.exists(stats_path) else {}
    stats = measure_statistics(cls.from_config(config, dataset.info, {}, workdir), config, dataset, saved)
    if stats is not None:
      with open(stats_path + ".tmp", "w") as f:
        json.dump(stats, f)
      os.replace(stats_path + ".tmp", stats_path)

  @classmethod
  def from_config(cls, config, info, upstream, workdir: str | None = None):
    if workdir is None or not os.path.exists(os.path.join(workdir, TOKENIZER_FILE)):
      raise ConfigError(f"an asr run needs its tokenizer ({workdir}/{TOKENIZER_FILE}), which training writes; "
                        "train this workdir first")
    data = config.data
    buckets = tuple(round(seconds * info.sample_rate) for seconds in data.bucket_seconds)
    stats_path = os.path.join(workdir, FEATURE_STATS_FILE)
    saved = _read_json(stats_path) if os.path.exists(stats_path) else {}
    stats = (tuple(saved["mean"]), tuple(saved["std"])) if "mean" in saved else None
    speakers = None
    if config.model.get("normalization") == "speaker":
      speakers = MeasuredSpeakers.from_json(stats_path, saved.get("speakers", {}))
    return cls(load_tokenizer(workdir), buckets, int(data.max_tokens), ctc_weight=float(config.ctc_weight),
               label_smoothing=float(config.label_smoothing), feature_stats=stats, speaker_stats=speakers)

  @property
  def batching(self) -> Utterances:
    return Utterances(self.bucket_samples, self.max_tokens, encode_text=self.tokenizer.encode,
                      unknown_characters=self.tokenizer.unknown_characters, speaker_statistics=self.speaker_stats)

  train_batching = eval_batching = batching

  def model_kwargs(self) -> dict:
    return {"vocab_size": self.tokenizer.vocab_size, "feature_stats": self.feature_stats}

  def example_inputs(self) -> tuple:
    audio = np.zeros((1, self.bucket_samples[0]), np.float32)
    tokens = np.zeros((1, self.max_tokens + 1), np.int32)
    lengths = np.full((1,), audio.shape[1], np.int32)
    return audio, lengths, tokens, np.ones((1,), np.int32), self._example_speaker_stats()

  def _example_speaker_stats(self):
    if self.speaker_stats is None:
      return None
    if not self.speaker_stats.splits:
      raise ConfigError("model.normalization 'speaker' needs per-speaker feature statistics in "
                        f"{self.speaker_stats.path}, which training writes; train this workdir")
    bins = next(iter(self.speaker_stats.splits.values())).bins
    return np.zeros((1, bins), np.float32), np.ones((1, bins), np.float32)

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
    return batch["audio"], batch["audio_lengths"], inputs, lengths, speaker_stats_of(batch)

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

  @staticmethod
  def feature_sum_rows(model, variables, batch) -> dict:
    """`raw_feature_sums` of each row of `batch` through `model`'s front end, jitted (what `speaker_arrays` pools)."""
    return raw_feature_sums(model, variables, batch["audio"], batch["audio_lengths"])

  @staticmethod
  def speaker_arrays(rows: dict[str, np.ndarray], speakers: Sequence[str]) -> dict[str, np.ndarray]:
    """Each row's `feature_mean` and `feature_std` `float32[n, bins]`, its speaker's (`speakers[i]`: row i's) over
    all rows of that speaker, from their `raw_feature_sums` rows."""
    names, groups = np.unique(np.asarray(speakers), return_inverse=True)
    mean, std = mean_and_std(pool_rows(rows, groups, len(names)))
    return {"feature_mean": mean[groups].astype(np.float32), "feature_std": std[groups].astype(np.float32)}

  def transcription_rows(self, model, variables, batch) -> dict:
    """Greedy CTC transcripts of `batch["audio"]` (rows valid up to `batch["audio_lengths"]`), jitted: the
    emitted ids, their counts and the first and last encoder frame of each (see `afx.decoding.ctc.collapse`)."""
    encoded, lengths = model.apply(variables, batch["audio"], batch["audio_lengths"], speaker_stats_of(batch),
                                   method="encode")
    logits = model.apply(variables, encoded, method="ctc_logits")
    tokens, counts, first, last = ctc.greedy_decode(logits, lengths, blank_id=self.tokenizer.blank_id)
    return {"tokens": tokens, "lengths": counts, "first": first, "last": last, "index": batch["index"]}

  def _best_hypotheses(self, model, variables, batch, *, beam: int, ctc_weight: float, length_penalty: float):
    """`(tokens [b, max_tokens], counts [b], ctc_logits, encoder lengths)`: the best hypothesis of joint
    CTC/attention beam search (the decoder's key/value cache where the model has one) for each row of `batch`."""
    if ctc_weight < 1.0 and not getattr(model, "decoder_layers", 1):
      raise ConfigError(f"this {type(model).__name__} has no decoder (decoder_layers=0), so beam search can "
                        f"score by CTC only: pass --ctc-weight 1 (got {ctc_weight})")
    encoded, lengths = model.apply(variables, batch["audio"], batch["audio_lengths"], speaker_stats_of(batch),
                                   method="encode")
    ctc_logits = model.apply(variables, encoded, method="ctc_logits")
    decoder = beam_search.model_decoder(model, variables) if ctc_weight < 1.0 else None
    tokens, counts, _ = beam_search.beam_search(
        decoder, encoded, lengths, ctc_logits, beam=beam, max_length=self.max_tokens,
        sos_eos=self.tokenizer.sos_eos_id, ctc_weight=ctc_weight, length_penalty=length_penalty,
        blank=self.tokenizer.blank_id)
    return tokens[:, 0], counts[:, 0], ctc_logits, lengths

  def beam_transcription_rows(self, model, variables, batch, *, beam: int, ctc_weight: float,
                              length_penalty: float = 0.0) -> dict:
    """`transcription_rows` by joint CTC/attention beam search, jitted: the best hypothesis of each chunk, its
    length, and the first and last encoder frame of each of its tokens in its Viterbi CTC alignment
    (`afx.decoding.ctc.forced_align`; −1 where the hypothesis cannot be aligned to the chunk's frames)."""
    tokens, counts, ctc_logits, lengths = self._best_hypotheses(model, variables, batch, beam=beam,
                                                                ctc_weight=ctc_weight, length_penalty=length_penalty)
    first, last = ctc.forced_align(jax.nn.log_softmax(ctc_logits, axis=-1), lengths, tokens, counts,
                                   blank_id=self.tokenizer.blank_id)
    return {"tokens": tokens, "lengths": counts, "first": first, "last": last, "index": batch["index"]}

  def words(self, tokens, first, last, *, frame_seconds: float, offset: float = 0.0) -> list[dict]:
    """`[{"word", "start", "end"}]` of one chunk's emitted ids with their first and last frames; a word ends
    at a `<space>` token or where a sentencepiece piece begins a new word.  Frames of −1 (tokens with no
    alignment) give a start and end of None."""
    words, current = [], []

    def flush():
      if current:
        text = self.tokenizer.decode(np.asarray([token for token, _, _ in current])).strip()
        if text:
          start, end = current[0][1], current[-1][2]
          aligned = start >= 0 and end >= 0
          words.append({"word": text, "start": round(offset + start * frame_seconds, 3) if aligned else None,
                        "end": round(offset + (end + 1) * frame_seconds, 3) if aligned else None})
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
    tokens, counts, _, _ = self._best_hypotheses(model, variables, batch, beam=beam, ctc_weight=ctc_weight,
                                                 length_penalty=length_penalty)
    return {"hypothesis": tokens, "hypothesis_lengths": counts, "tokens": batch["tokens"],
            "token_lengths": batch["token_lengths"], "index": batch["index"]}

  def beam_metrics(self, rows: dict[str, np.ndarray]) -> dict:
    """`wer`, `cer` and `utterances` of `beam_rows` over a split."""
    keep = np.asarray(rows["index"]) >= 0
    references = self.texts(rows["tokens"][keep], rows["token_lengths"][keep])
    hypotheses = self.texts(rows["hypothesis"][keep], rows["hypothesis_lengths"][keep])
    return {"wer": word_error_rate(references, hypotheses), "cer": character_error_rate(references, hypotheses),
            "utterances": int(keep.sum())}


class _Every:
  """The records of `source` at `indices`, as a sequence."""

  def __init__(self, source, indices):
    self.source, self.indices = source, np.asarray(indices)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[int(self.indices[i])]


def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def raw_feature_sums(front_end, variables, audio, audio_lengths) -> dict:
  """Per row of a padded batch, jittable: `{"sums", "deviations"}` `[b, bins]`, the sums over its valid frames of
  `front_end`'s `raw_features` (a speech model's filterbanks before normalisation) and of their squared
  deviations from the row's mean, and `"frames"` `[b]`; only these leave the device.  (Squares summed in float32
  would lose the variance of bins with a large mean.)"""
  x, lengths = front_end.apply(variables, audio, audio_lengths, method="raw_features")
  valid = valid_mask(lengths, x.shape[1])[..., None]
  sums = jnp.sum(jnp.where(valid, x, 0.0), axis=1)
  mean = sums / jnp.maximum(lengths, 1)[:, None]
  deviations = jnp.sum(jnp.where(valid, jnp.square(x - mean[:, None]), 0.0), axis=1)
  return {"sums": sums, "deviations": deviations, "frames": lengths}


_raw_feature_sums = jax.jit(raw_feature_sums, static_argnums=0)  # one compilation per front end and bucket


def pool_rows(rows: dict, groups: np.ndarray, num_groups: int) -> dict[str, np.ndarray]:
  """`raw_feature_sums` rows added up per group in float64 (`groups[i]`: row i's group, −1: left out) as
  `{"sums", "squares" (of the features) [num_groups, bins], "frames", "utterances" [num_groups]}`."""
  groups = np.asarray(groups)
  keep = groups >= 0
  sums, frames = np.asarray(rows["sums"], np.float64), np.asarray(rows["frames"], np.float64)
  squares = np.asarray(rows["deviations"], np.float64) + np.square(sums) / np.maximum(frames, 1)[:, None]
  pooled = {}
  for key, values in {"sums": sums, "squares": squares, "frames": frames, "utterances": np.ones(len(groups))}.items():
    pooled[key] = np.zeros((num_groups, *values.shape[1:]))
    np.add.at(pooled[key], groups[keep], values[keep])
  return pooled


def mean_and_std(pooled: dict) -> tuple[np.ndarray, np.ndarray]:
  """Per-bin mean and standard deviation of pooled sums (`pool_rows`, any leading axes); the variance is
  floored at 1e-10, and a group without frames has mean 0."""
  frames = np.maximum(pooled["frames"], 1)[..., None]
  mean = pooled["sums"] / frames
  return mean, np.sqrt(np.maximum(pooled["squares"] / frames - np.square(mean), 1e-10))


def _statistics_entry(pooled: dict) -> dict:
  """One group's `{"mean", "std", "utterances", "frames"}`, as feature_stats.json holds it."""
  mean, std = mean_and_std(pooled)
  return {"mean": mean.tolist(), "std": std.tolist(), "utterances": int(pooled["utterances"]),
          "frames": int(pooled["frames"])}


def feature_sums(front_end, source, batching: Utterances, *, batch_size: int, groups: np.ndarray,
                 num_groups: int) -> dict[str, np.ndarray]:
  """`pool_rows` of every record of `source` (record i in group `groups[i]`) over `batching`'s evaluation
  batches: the frames summed on the device (`raw_feature_sums`), the rows added up on the host."""
  groups = np.asarray(groups)
  totals = None
  for batch in batching.evaluate(source, batch_size=batch_size):
    rows = jax.device_get(_raw_feature_sums(front_end, {}, batch["audio"], batch["audio_lengths"]))
    index = batch["index"]
    pooled = pool_rows(rows, np.where(index >= 0, groups[np.maximum(index, 0)], -1), num_groups)
    totals = pooled if totals is None else {key: totals[key] + pooled[key] for key in totals}
  return totals


def feature_statistics(front_end, source, batching: Utterances, *, batch_size: int,
                       max_utterances: int = STATS_UTTERANCES) -> dict:
  """`{"mean", "std", "utterances", "frames"}`: the per-bin mean and standard deviation of `front_end`'s
  `raw_features` over the valid frames of up to `max_utterances` records of `source`, evenly spaced, batched
  by `batching`'s buckets (ESPnet's `collect_stats`, from which its `global_mvn` reads)."""
  if len(source) > max_utterances:
    source = _Every(source, np.linspace(0, len(source) - 1, max_utterances).round().astype(np.int64))
  totals = feature_sums(front_end, source, batching, batch_size=batch_size, groups=np.zeros(len(source), np.int64),
                        num_groups=1)
  if not totals["frames"][0]:
    raise ConfigError("the training split has no frames to measure the feature statistics on")
  return _statistics_entry({key: value[0] for key, value in totals.items()})


def speaker_statistics(front_end, source, batching: Utterances, *, batch_size: int) -> tuple[dict, dict]:
  """`(over all, {speaker: ...})`: `feature_statistics`' entries over every record of `source` and over each
  speaker's (`speaker_of`: a record without a speaker is its own) from one pass on the device, after one
  read of every record on the host for its speaker."""
  names, groups = np.unique(np.asarray([speaker_of(source[i]) for i in range(len(source))]), return_inverse=True)
  totals = feature_sums(front_end, source, batching, batch_size=batch_size, groups=groups, num_groups=len(names))
  overall = _statistics_entry({key: value.sum(axis=0) for key, value in totals.items()})
  return overall, {str(name): _statistics_entry({key: value[row] for key, value in totals.items()})
                   for row, name in enumerate(names)}


def measure_statistics(task, config, dataset, saved: dict) -> dict | None:
  """`saved` (feature_stats.json's content) with what the model's normalization needs and it lacks measured:
  for "global" the training split's statistics (`feature_statistics`), for "speaker" those of each speaker of
  each split the run reads (`speaker_statistics`, the training split's over all beside them when missing);
  None when nothing was missing."""
  normalization = config.model.get("normalization")
  measure_global = normalization == "global" and "mean" not in saved
  measured = saved.get("speakers", {})
  splits = [split for split in splits_read(config) if split not in measured] if normalization == "speaker" else []
  if not (measure_global or splits):
    return None
  from afx import models  # the task builds the model's front end only to measure its features
  front_end = models.build_model({**config.model, "normalization": "none"}, **task.model_kwargs(),
                                 sample_rate=dataset.info.sample_rate)
  measure = dict(batching=dataclasses.replace(task.eval_batching, speaker_statistics=None),  # being measured
                 batch_size=config.get("eval_batch_size") or config.batch_size)
  stats = dict(saved)
  if measure_global:
    stats.update(feature_statistics(front_end, dataset.source(config.data.train_split), **measure))
  for split in splits:
    overall, speakers = speaker_statistics(front_end, dataset.source(split), **measure)
    stats["speakers"] = {**stats.get("speakers", {}), split: speakers}
    if split == config.data.train_split and "mean" not in stats:
      stats.update(overall)
  return stats


# The recipe the ASR tables share (`experiments/dong_2018_speech_transformer.py`, `gulati_2020_conformer.py`,
# `karita_2019_transformer_vs_rnn.py`): ESPnet's hybrid CTC/attention defaults at paper scale, and a
# minutes-long run on the embedded `synth_speech` corpus at tiny scale.
TINY_DATA = dict(name="synth_speech", train_split="train", eval_split="validation", test_split="test",
                 bucket_seconds=(3.0, 4.5, 6.5), max_tokens=90)


def recipe_config(model: dict, *, tiny: bool, data: dict | None = None, optimizer: dict | None = None,
                  decoding: dict | None = None, tokenizer: dict | None = None, **run):
  """An `asr` run's config: `model` (its `name` and options), the data group (`TINY_DATA` at tiny scale,
  else `data`, which must name the dataset and its splits), the optimiser (AdamW, Noam at paper scale,
  cosine at tiny scale), joint CTC/attention decoding with beam 10 as the final test evaluation, the
  tokenizer (lower-case characters unless `tokenizer` says otherwise), and any top-level key in `run`
  (`batch_size`, `total_steps`, `ctc_weight`, ...); each dict updates its group's defaults."""
  import ml_collections  # the config library is a dependency of experiment files, not of the task

  config = ml_collections.ConfigDict()
  config.task = "asr"
  config.seed = 0
  config.batch_size = 16 if tiny else 32
  config.eval_batch_size = 64 if tiny else 32
  config.total_steps = 1200 if tiny else 150_000
  config.log_every = 50 if tiny else 500
  config.checkpoint_every = 600 if tiny else 5000
  config.keep_checkpoints = 2 if tiny else 10
  config.average_checkpoints = 0 if tiny else 10
  config.eval_every = 0
  config.attention_impl = None
  config.fsdp = 1
  config.ctc_weight = 0.3
  config.label_smoothing = 0.1
  config.update(run)
  config.evals = ml_collections.ConfigDict(dict(
      val=dict(kind="metrics", split="validation", every=600 if tiny else 5000, final=False),
      beam=dict(kind="beam_search", split="validation", every=0, final=True)))
  config.decoding = ml_collections.ConfigDict({**dict(beam=10, ctc_weight=0.3, length_penalty=0.0), **(decoding or {})})
  config.tokenizer = ml_collections.ConfigDict(tokenizer or dict(kind="characters", case="lower"))
  config.data = ml_collections.ConfigDict(dict(
      data_dir=None, manual_dir=None, folder=None, num_threads=4, builder_kwargs=ml_collections.ConfigDict(),
      **{**(TINY_DATA if tiny else dict(bucket_seconds=(5.0, 10.0, 15.0, 20.0, 35.0), max_tokens=400)), **(data or {})}))
  config.model = ml_collections.ConfigDict(dict(model))
  config.optimizer = ml_collections.ConfigDict({**dict(
      name="adamw", learning_rate=5e-3 if tiny else 2e-3, b1=0.9, b2=0.98, weight_decay=0.0 if tiny else 1e-6,
      schedule="cosine" if tiny else "noam", warmup_steps=150 if tiny else 25_000, end_factor=0.0,
      grad_clip_norm=5.0), **(optimizer or {})})
  return config
