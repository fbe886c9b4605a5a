"""Text tokenizers for speech recognition and synthesis, with ESPnet's token-list conventions.

Every tokenizer's id → token list starts with `<blank>` (0, the CTC blank and the padding id) and
`<unk>` (1), and ends with `<sos/eos>` (the last id).  `encode` normalises its text first (runs of
whitespace become one space, the ends are stripped, the case is changed as `case` says), so
`decode(encode(text)) == normalize(text)` whenever `unknown_characters(text)` is empty.

`save(directory)` writes `directory/tokenizer.json` (`{"kind", "tokens", "case", ...}`) and, for
sentencepiece, the model beside it as `directory/tokenizer.model`; `load_tokenizer` reads either back.
"""

import io
import json
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece

from afx.errors import ConfigError, DataError

KINDS = ("characters", "sentencepiece")
CASES = ("keep", "lower", "upper")
MODEL_TYPES = ("unigram", "bpe")
BLANK, UNK, SOS_EOS, SPACE = "<blank>", "<unk>", "<sos/eos>", "<space>"
BLANK_ID, UNK_ID = 0, 1
CONFIG_FILE, MODEL_FILE = "tokenizer.json", "tokenizer.model"


@runtime_checkable
class Tokenizer(Protocol):
  """What speech tasks need from a tokenizer; `CharacterTokenizer` and `SentencePieceTokenizer` provide it."""

  @property
  def tokens(self) -> list[str]:
    """The id → token list: `<blank>`, `<unk>`, ..., `<sos/eos>`."""

  @property
  def vocab_size(self) -> int: ...

  @property
  def blank_id(self) -> int: ...

  @property
  def unk_id(self) -> int: ...

  @property
  def sos_eos_id(self) -> int: ...

  def normalize(self, text: str) -> str: ...

  def encode(self, text: str) -> np.ndarray:
    """The int32 ids of the normalised `text`, without `<sos/eos>`."""

  def decode(self, ids) -> str:
    """The text of `ids`, skipping `<blank>` (padding), `<sos/eos>` and negative (ignored) ids."""

  def unknown_characters(self, text: str) -> str:
    """The characters of the normalised `text` that `encode` maps to `<unk>`, sorted, each once."""

  def save(self, directory: str) -> None: ...


def normalize_text(text: str, case: str = "keep") -> str:
  """`text` with runs of whitespace made one space, the ends stripped and the case kept, lowered or raised."""
  text = " ".join(text.split())
  if case == "lower":
    return text.lower()
  return text.upper() if case == "upper" else text


def _check_case(case) -> str:
  if case not in CASES:
    raise ConfigError(f"unknown tokenizer case {case!r}; choose one of {', '.join(CASES)}")
  return case


class _TokenList:
  """The id conventions shared by the tokenizers; `_tokens` holds the id → token tuple."""

  kind = ""

  def __init__(self, tokens: Sequence[str], case: str):
    tokens = tuple(tokens)
    if len(tokens) < 3 or (tokens[0], tokens[1], tokens[-1]) != (BLANK, UNK, SOS_EOS):
      raise ValueError(f"the token list must start with {BLANK}, {UNK} and end with {SOS_EOS}")
    if not all(isinstance(token, str) for token in tokens) or len(set(tokens)) != len(tokens):
      raise ValueError("the token list must hold distinct strings")
    self._tokens = tokens
    self.case = _check_case(case)

  @property
  def tokens(self) -> list[str]:
    return list(self._tokens)

  @property
  def vocab_size(self) -> int:
    return len(self._tokens)

  @property
  def blank_id(self) -> int:
    return BLANK_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def sos_eos_id(self) -> int:
    return len(self._tokens) - 1

  def normalize(self, text: str) -> str:
    return normalize_text(text, self.case)

  def _content_ids(self, ids) -> np.ndarray:
    """`ids` without blank/padding, `<sos/eos>` and negative ids (ESPnet pads targets with -1)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
      raise ValueError(f"decode takes a 1-D sequence of integer ids, got shape {ids.shape} of {ids.dtype}")
    ids = ids[(ids > BLANK_ID) & (ids != self.sos_eos_id)]
    if ids.size and ids.max() >= self.vocab_size:
      raise ValueError(f"id {int(ids.max())} is outside the vocabulary of {self.vocab_size} tokens")
    return ids

  def _saved_fields(self) -> dict:
    return {"kind": self.kind, "tokens": list(self._tokens), "case": self.case}

  def __repr__(self) -> str:
    return f"{type(self).__name__}(vocab_size={self.vocab_size}, case={self.case!r})"


class CharacterTokenizer(_TokenList):
  """One token per character: `<blank>`, `<unk>`, the training texts' characters in code-point order
  (the space written `<space>`, as ESPnet does), `<sos/eos>`."""

  kind = "characters"

  def __init__(self, tokens: Sequence[str], case: str = "keep"):
    super().__init__(tokens, case)
    characters = [" " if token == SPACE else token for token in self._tokens[2:-1]]
    if not all(len(c) == 1 for c in characters):
      raise ValueError("a character token list holds single characters between <unk> and <sos/eos>")
    self._ids = {c: i for i, c in enumerate(characters, start=2)}
    self._surfaces = ("", UNK, *characters, "")  # id → decoded text

  @classmethod
  def train(cls, texts: Iterable[str], *, case: str = "keep") -> "CharacterTokenizer":
    """The tokenizer of every character in the normalised `texts`."""
    _check_case(case)
    characters = set()
    for text in texts:
      characters.update(normalize_text(text, case))
    if not characters:
      raise DataError("the character tokenizer got no training text; pass the training split's transcripts")
    return cls([BLANK, UNK, *(SPACE if c == " " else c for c in sorted(characters)), SOS_EOS], case)

  def encode(self, text: str) -> np.ndarray:
    text = self.normalize(text)
    return np.fromiter((self._ids.get(c, UNK_ID) for c in text), np.int32, count=len(text))

  def decode(self, ids) -> str:
    return "".join(self._surfaces[i] for i in self._content_ids(ids))

  def unknown_characters(self, text: str) -> str:
    return "".join(sorted(set(self.normalize(text)) - self._ids.keys()))

  def save(self, directory: str) -> None:
    _write(os.path.join(directory, CONFIG_FILE), _to_json(self._saved_fields()))


class SentencePieceTokenizer(_TokenList):
  """Sentencepiece subwords: `<blank>`, `<unk>`, the model's other pieces in its id order, `<sos/eos>`.

  The model holds `<unk>` at its id 0 and no other special pieces, so our id is the model's id + 1.
  It is trained on already normalised text with sentencepiece's own normalisation off, which keeps
  `normalize` the only rewriting of the text.  A run of unknown characters encodes as one `<unk>`.
  """

  kind = "sentencepiece"

  def __init__(self, model: bytes, case: str = "keep", model_type: str = "unigram"):
    self.model = bytes(model)  # the serialised sentencepiece ModelProto
    self.model_type = model_type
    self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
    size = self._processor.get_piece_size()
    if self._processor.unk_id() != 0 or any(self._processor.is_control(i) or self._processor.is_byte(i)
                                            for i in range(size)):
      raise ValueError("the sentencepiece model must hold <unk> at id 0 and no control or byte pieces")
    super().__init__([BLANK, UNK, *map(self._processor.id_to_piece, range(1, size)), SOS_EOS], case)

  @classmethod
  def train(cls, texts: Iterable[str], *, vocab_size: int, model_type: str = "unigram",
            case: str = "keep") -> "SentencePieceTokenizer":
    """A model trained on the normalised `texts` whose token list (specials included) has `vocab_size` tokens."""
    _check_case(case)
    if model_type not in MODEL_TYPES:
      raise ConfigError(f"unknown sentencepiece model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    if not isinstance(vocab_size, numbers.Integral) or isinstance(vocab_size, bool):
      raise ConfigError(f"tokenizer vocab_size must be an integer, got {vocab_size!r}")
    sentences = [s for s in (normalize_text(text, case) for text in texts) if s]
    if not sentences:
      raise DataError("the sentencepiece tokenizer got no training text; pass the training split's transcripts")
    model = io.BytesIO()
    try:
      sentencepiece.SentencePieceTrainer.train(
          sentence_iterator=iter(sentences), model_writer=model, model_type=model_type,
          vocab_size=max(int(vocab_size) - 2, 1),  # <blank> and <sos/eos> are ours; <unk> is the model's
          character_coverage=1.0, normalization_rule_name="identity",
          unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, unk_surface=UNK,
          # Longer sentences would be dropped from training, and their characters with them.
          max_sentence_length=max(4192, max(len(s.encode()) for s in sentences) + 1),
          num_threads=1,  # the trained pieces depend on the thread count
          minloglevel=2)
    except RuntimeError as error:
      vocab_size_error = _vocab_size_error(str(error), vocab_size)
      if vocab_size_error is None:
        raise
      raise vocab_size_error from error
    return cls(model.getvalue(), case, model_type)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._processor.encode(self.normalize(text), out_type=int), np.int32) + 1

  def decode(self, ids) -> str:
    return self._processor.decode((self._content_ids(ids) - 1).tolist())

  def unknown_characters(self, text: str) -> str:
    # A character with its own piece always encodes; sentencepiece writes the space as "▁".
    characters = set(self.normalize(text))
    return "".join(sorted(c for c in characters if self._processor.piece_to_id("▁" if c == " " else c) == 0))

  def save(self, directory: str) -> None:
    _write(os.path.join(directory, MODEL_FILE), self.model)
    # Last, so that a tokenizer.json on disk always has its model beside it.
    _write(os.path.join(directory, CONFIG_FILE),
           _to_json({**self._saved_fields(), "model_type": self.model_type, "model": MODEL_FILE}))


def _vocab_size_error(message: str, vocab_size: int) -> ConfigError | None:
  """A ConfigError from sentencepiece's message about an impossible vocabulary size (our sizes are its + 2)."""
  too_big = re.search(r"Please set it to a value <= (\d+)", message)
  if too_big:
    return ConfigError(f"tokenizer vocab_size={vocab_size} is too large for these training texts; "
                       f"set vocab_size to at most {int(too_big.group(1)) + 2}")
  too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
  if too_small:
    return ConfigError(f"tokenizer vocab_size={vocab_size} cannot hold every character of the training texts; "
                       f"set vocab_size to at least {int(too_small.group(1)) + 2}")
  return None


_OPTIONS = {"characters": ("case",), "sentencepiece": ("vocab_size", "model_type", "case")}


def build_tokenizer(kind: str, texts: Iterable[str], **options) -> Tokenizer:
  """A tokenizer of `kind` ("characters" or "sentencepiece") trained on `texts`.

  Options: `case` ("keep", "lower" or "upper") for both; `vocab_size` (required, the whole token list)
  and `model_type` ("unigram" or "bpe") for sentencepiece.
  """
  if kind not in KINDS:
    raise ConfigError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
  unknown = sorted(set(options) - set(_OPTIONS[kind]))
  if unknown:
    raise ConfigError(f"unknown {kind} tokenizer option {unknown[0]!r}; choose from {', '.join(_OPTIONS[kind])}")
  if kind == "characters":
    return CharacterTokenizer.train(texts, **options)
  if "vocab_size" not in options:
    raise ConfigError("the sentencepiece tokenizer needs vocab_size; set it (e.g. 5000) in the tokenizer options")
  return SentencePieceTokenizer.train(texts, **options)


def load_tokenizer(directory: str) -> Tokenizer:
  """The tokenizer that `save(directory)` wrote, exactly as it was."""
  path = os.path.join(directory, CONFIG_FILE)
  saved = _read(path, lambda f: json.loads(f.read().decode("utf-8")))
  try:
    kind, tokens, case = saved["kind"], saved["tokens"], _check_case(saved["case"])
    if kind == "characters":
      return CharacterTokenizer(tokens, case)
    if kind != "sentencepiece":
      raise ValueError(f"unknown kind {kind!r}")
  except (KeyError, TypeError, ValueError, ConfigError) as error:
    raise _unusable(path, error) from error
  model_path = os.path.join(directory, MODEL_FILE)
  model = _read(model_path, lambda f: f.read())
  try:
    tokenizer = SentencePieceTokenizer(model, case, saved.get("model_type", "unigram"))
  except (RuntimeError, ValueError) as error:
    raise _unusable(model_path, error) from error
  if tokenizer.tokens != tokens:
    raise _unusable(path, ValueError(f"its tokens are not those of {MODEL_FILE}"))
  return tokenizer


def _unusable(path: str, error: Exception) -> ConfigError:
  reason = " ".join(str(error).split()) or type(error).__name__
  if isinstance(error, KeyError):
    reason = f"no key {reason}"
  return ConfigError(f"{path} is corrupt ({reason}); it is written by training the tokenizer: train it again")


def _read(path: str, parse):
  try:
    with open(path, "rb") as f:
      return parse(f)
  except FileNotFoundError:
    raise ConfigError(f"{path} does not exist; it is written by training the tokenizer: train it first "
                      "or point at the directory it was saved in") from None
  except (OSError, ValueError) as error:  # json and utf-8 errors are ValueErrors
    raise _unusable(path, error) from error


def _to_json(fields: dict) -> bytes:
  return (json.dumps(fields, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _write(path: str, payload: bytes) -> None:
  """Write `payload` to `path` atomically, making its directory if need be."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(payload)
  os.replace(tmp, path)
