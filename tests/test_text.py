"""Tokenizers (ids, round trips, save/load) and error rates (against jiwer)."""

import functools
import json
import re

import jiwer
import numpy as np
import pytest

from afx.errors import ConfigError, DataError
from afx.text import (CharacterTokenizer, SentencePieceTokenizer, Tokenizer, build_tokenizer, character_error_rate,
                      edit_distance, error_counts, load_tokenizer, normalize_for_scoring, word_error_rate)

WORDS = ("the", "a", "cat", "sat", "on", "mat", "speech", "is", "fun", "hello", "world", "quick", "brown", "fox",
         "jumps", "over", "lazy", "dog", "it's", "recognition", "of", "words", "and", "sounds")


def _corpus(seed=0, sentences=200):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(sentences)]


@functools.cache
def _sentencepiece(model_type="unigram", vocab_size=48, case="keep"):
  return build_tokenizer("sentencepiece", _corpus(), vocab_size=vocab_size, model_type=model_type, case=case)


def _tokenizers():
  return [build_tokenizer("characters", _corpus(), case="upper"), _sentencepiece("unigram"), _sentencepiece("bpe")]


# --- tokenizers ---


def test_character_token_list():
  tokenizer = build_tokenizer("characters", ["b a", "c\ta"], case="keep")
  assert tokenizer.tokens == ["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"]
  assert (tokenizer.blank_id, tokenizer.unk_id, tokenizer.sos_eos_id, tokenizer.vocab_size) == (0, 1, 6, 7)
  np.testing.assert_array_equal(tokenizer.encode("  a  b\nc "), [3, 2, 4, 2, 5])
  assert tokenizer.encode("abc").dtype == np.int32
  assert tokenizer.encode("").shape == (0,)


@pytest.mark.parametrize("case, expected", [("keep", "Hello World"), ("lower", "hello world"),
                                            ("upper", "HELLO WORLD")])
def test_character_round_trip_normalises(case, expected):
  tokenizer = build_tokenizer("characters", ["Hello World", "hello WORLD"], case=case)
  assert tokenizer.normalize("  Hello \t World\n") == expected
  assert tokenizer.decode(tokenizer.encode("  Hello \t World\n")) == expected


@pytest.mark.parametrize("index", range(3))
def test_round_trip_and_special_ids(index):
  tokenizer = _tokenizers()[index]
  assert isinstance(tokenizer, Tokenizer)
  tokens = tokenizer.tokens
  assert (tokens[0], tokens[1], tokens[-1]) == ("<blank>", "<unk>", "<sos/eos>")
  assert (tokenizer.blank_id, tokenizer.unk_id, tokenizer.sos_eos_id) == (0, 1, tokenizer.vocab_size - 1)
  assert len(set(tokens)) == len(tokens) == tokenizer.vocab_size
  for text in _corpus(seed=1, sentences=30) + ["  the  cat\tsat  "]:
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= 2 and ids.max() < tokenizer.sos_eos_id
    assert tokenizer.unknown_characters(text) == ""
    assert tokenizer.decode(ids) == tokenizer.normalize(text)


@pytest.mark.parametrize("index", range(3))
def test_decode_skips_blank_padding_and_sos_eos(index):
  tokenizer = _tokenizers()[index]
  ids = tokenizer.encode("the cat sat")
  padded = np.concatenate([[tokenizer.sos_eos_id, 0], ids[:1], [0, 0], ids[1:], [tokenizer.sos_eos_id, 0, -1, -1]])
  assert tokenizer.decode(padded) == tokenizer.decode(ids.tolist()) == tokenizer.normalize("the cat sat")
  assert tokenizer.decode([]) == ""
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tokenizer.decode([tokenizer.vocab_size])


@pytest.mark.parametrize("index", range(3))
def test_unknown_characters(index):
  tokenizer = _tokenizers()[index]
  text = "the café ate 7 cats!"  # "é", "7" and "!" never occur in the corpus
  assert tokenizer.unknown_characters(text) == "".join(sorted(set(tokenizer.normalize("!7é"))))
  assert tokenizer.unk_id in tokenizer.encode(text)
  assert "<unk>" in tokenizer.decode(tokenizer.encode(text))
  assert tokenizer.unknown_characters("the cat") == ""


def test_character_unknowns_follow_the_case():
  tokenizer = build_tokenizer("characters", ["abc"], case="lower")
  assert tokenizer.unknown_characters("ABCD d") == " d"
  np.testing.assert_array_equal(tokenizer.encode("ABCD"), [2, 3, 4, 1])


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_is_deterministic(model_type):
  first = _sentencepiece(model_type)
  second = build_tokenizer("sentencepiece", _corpus(), vocab_size=48, model_type=model_type)
  assert first.vocab_size == 48
  assert first.tokens == second.tokens
  assert first.model == second.model
  text = _corpus(seed=2, sentences=1)[0]
  np.testing.assert_array_equal(first.encode(text), second.encode(text))


def test_sentencepiece_lower_case_and_subwords():
  tokenizer = _sentencepiece("unigram", case="lower")
  assert tokenizer.decode(tokenizer.encode("The QUICK  Fox")) == "the quick fox"
  assert any(len(token) > 2 for token in tokenizer.tokens[2:-1])  # multi-character pieces


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_vocab_size_too_large_says_what_works(model_type):
  texts = ["hello world", "the quick brown fox"] * 10
  with pytest.raises(ConfigError, match="vocab_size=500 is too large") as error:
    build_tokenizer("sentencepiece", texts, vocab_size=500, model_type=model_type)
  largest = int(re.search(r"at most (\d+)", str(error.value)).group(1))
  assert build_tokenizer("sentencepiece", texts, vocab_size=largest, model_type=model_type).vocab_size == largest


def test_sentencepiece_vocab_size_too_small_says_what_works():
  texts = ["hello world", "the quick brown fox"]
  with pytest.raises(ConfigError, match="at least") as error:
    build_tokenizer("sentencepiece", texts, vocab_size=5)
  smallest = int(re.search(r"at least (\d+)", str(error.value)).group(1))
  assert build_tokenizer("sentencepiece", texts, vocab_size=smallest).vocab_size == smallest


def test_build_tokenizer_rejects_bad_options():
  with pytest.raises(ConfigError, match="unknown tokenizer kind 'words'"):
    build_tokenizer("words", ["a"])
  with pytest.raises(ConfigError, match="option 'vocab_size'"):
    build_tokenizer("characters", ["a"], vocab_size=10)
  with pytest.raises(ConfigError, match="needs vocab_size"):
    build_tokenizer("sentencepiece", ["a"])
  with pytest.raises(ConfigError, match="case 'title'"):
    build_tokenizer("characters", ["a"], case="title")
  with pytest.raises(ConfigError, match="model_type 'char'"):
    build_tokenizer("sentencepiece", ["a"], vocab_size=10, model_type="char")
  with pytest.raises(ConfigError, match="integer"):
    build_tokenizer("sentencepiece", ["a"], vocab_size="10")
  for kind in ("characters", "sentencepiece"):
    with pytest.raises(DataError, match="no training text"):
      build_tokenizer(kind, [" ", ""], **({"vocab_size": 10} if kind == "sentencepiece" else {}))


@pytest.mark.parametrize("index", range(3))
def test_save_load_round_trip(index, tmp_path):
  tokenizer = _tokenizers()[index]
  tokenizer.save(str(tmp_path / "tok"))
  loaded = load_tokenizer(str(tmp_path / "tok"))
  assert type(loaded) is type(tokenizer)
  assert loaded.tokens == tokenizer.tokens and loaded.case == tokenizer.case
  saved = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))
  assert saved["tokens"] == tokenizer.tokens and saved["kind"] == tokenizer.kind
  if isinstance(tokenizer, SentencePieceTokenizer):
    assert loaded.model == tokenizer.model and loaded.model_type == tokenizer.model_type
  for text in _corpus(seed=3, sentences=20) + ["Zebras ate 7!"]:
    np.testing.assert_array_equal(loaded.encode(text), tokenizer.encode(text))
    assert loaded.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    assert loaded.unknown_characters(text) == tokenizer.unknown_characters(text)


def test_save_load_keeps_unusual_characters(tmp_path):
  tokenizer = CharacterTokenizer.train(["naïve café", "日本語 «ok»", 'a "quote" \\ back'])
  tokenizer.save(str(tmp_path))
  loaded = load_tokenizer(str(tmp_path))
  assert loaded.tokens == tokenizer.tokens
  assert loaded.decode(loaded.encode("café 日本")) == "café 日本"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"kind": "characters"}',
                                     '{"kind": "characters", "tokens": ["a", "b"], "case": "keep"}',
                                     '{"kind": "words", "tokens": [], "case": "keep"}',
                                     '{"kind": "characters", "tokens": ["<blank>", "<unk>", "<sos/eos>"], '
                                     '"case": "title"}'])
def test_corrupt_tokenizer_json_raises_config_error(content, tmp_path):
  (tmp_path / "tokenizer.json").write_text(content)
  with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "tokenizer.json")) + ".*written by training"):
    load_tokenizer(str(tmp_path))


def test_missing_or_corrupt_tokenizer_files_raise_config_error(tmp_path):
  with pytest.raises(ConfigError, match="tokenizer.json does not exist.*written by training"):
    load_tokenizer(str(tmp_path / "nowhere"))
  _sentencepiece().save(str(tmp_path))
  (tmp_path / "tokenizer.model").write_bytes(b"not a model")
  with pytest.raises(ConfigError, match="tokenizer.model is corrupt.*written by training"):
    load_tokenizer(str(tmp_path))
  (tmp_path / "tokenizer.model").unlink()
  with pytest.raises(ConfigError, match="tokenizer.model does not exist"):
    load_tokenizer(str(tmp_path))
  _sentencepiece("bpe").save(str(tmp_path / "bpe"))
  (tmp_path / "tokenizer.model").write_bytes((tmp_path / "bpe" / "tokenizer.model").read_bytes())
  with pytest.raises(ConfigError, match="tokenizer.json is corrupt.*tokens"):
    load_tokenizer(str(tmp_path))


# --- metrics ---


@functools.cache
def _levenshtein(a: tuple, b: tuple) -> int:
  """The textbook recursion, straight from the definition."""
  if not a or not b:
    return len(a) + len(b)
  return min(_levenshtein(a[1:], b) + 1, _levenshtein(a, b[1:]) + 1, _levenshtein(a[1:], b[1:]) + (a[0] != b[0]))


@pytest.mark.parametrize("reference, hypothesis, distance", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("abc", "abc", 0),
    ("abc", "cba", 2), ("intention", "execution", 5), (["the", "cat"], ["the", "cat", "sat"], 1),
    (("a", "b", "c"), ("x", "b", "y", "z"), 3), ([1, 2, 3], np.array([3, 2, 1]), 2)])
def test_edit_distance_known_cases(reference, hypothesis, distance):
  assert edit_distance(reference, hypothesis) == distance
  assert edit_distance(hypothesis, reference) == distance


def test_edit_distance_matches_the_recursion():
  rng = np.random.default_rng(0)
  for _ in range(300):
    a, b = (tuple(rng.integers(0, 3, size=rng.integers(0, 8)).tolist()) for _ in range(2))
    assert edit_distance(a, b) == _levenshtein(a, b), (a, b)


def _edited(words: list[str], rng) -> list[str]:
  """`words` with random substitutions, deletions and insertions."""
  out = []
  for word in words:
    action = rng.choice(["keep", "substitute", "delete", "insert"], p=[0.6, 0.15, 0.15, 0.1])
    if action == "substitute":
      out.append(str(rng.choice(WORDS)))
    elif action == "insert":
      out += [word, str(rng.choice(WORDS))]
    elif action == "keep":
      out.append(word)
  return out


def _sentence_pairs(seed=0, count=40):
  rng = np.random.default_rng(seed)
  pairs = []
  for i in range(count):
    reference = [str(w) for w in rng.choice(WORDS, size=rng.integers(0 if i % 10 == 9 else 1, 15))]
    hypothesis = _edited(reference, rng)
    # ragged whitespace: jiwer strips the ends and, for CER, counts every inner space
    separator = "  " if i % 7 == 3 else " "
    pairs.append((" ".join(reference) + (" " if i % 5 == 0 else ""), separator.join(hypothesis)))
  return [p[0] for p in pairs], [p[1] for p in pairs]


def test_error_rates_match_jiwer():
  references, hypotheses = _sentence_pairs()
  assert word_error_rate(references, hypotheses) == pytest.approx(jiwer.wer(references, hypotheses), abs=1e-12)
  assert character_error_rate(references, hypotheses) == pytest.approx(jiwer.cer(references, hypotheses), abs=1e-12)
  for reference, hypothesis in zip(references, hypotheses):
    if reference.strip():
      assert word_error_rate([reference], [hypothesis]) == pytest.approx(jiwer.wer(reference, hypothesis), abs=1e-12)
      assert character_error_rate([reference], [hypothesis]) == pytest.approx(jiwer.cer(reference, hypothesis),
                                                                              abs=1e-12)


def test_error_counts():
  counts = error_counts(["the cat sat", "on the mat"], ["the bat sat down", "on mat"])
  assert counts == {"errors": 3, "reference_units": 6, "hypothesis_units": 6, "sentences": 2}
  assert error_counts(["ab c"], ["abc"], unit="char") == {"errors": 1, "reference_units": 4, "hypothesis_units": 3,
                                                           "sentences": 1}
  assert word_error_rate("the cat", "the bat") == 0.5  # a lone string is one sentence
  assert character_error_rate([" ab  c "], ["ab c"]) == pytest.approx(1 / 5)


def test_error_rates_reject_what_they_cannot_score():
  with pytest.raises(ValueError, match="no reference"):
    word_error_rate([], [])
  with pytest.raises(ValueError, match="2 reference sentences but 1"):
    character_error_rate(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no words"):
    word_error_rate(["", "  "], ["a", ""])
  with pytest.raises(ValueError, match="unknown unit"):
    error_counts(["a"], ["a"], unit="phone")


def test_normalize_for_scoring():
  assert normalize_for_scoring("  Hello,  World! It's a TEST.  ") == "hello world it's a test"
  assert normalize_for_scoring("Don\u2019t — stop; (now)") == "don't stop now"
  assert normalize_for_scoring("well-known \"quotes\"") == "well known quotes"
  assert word_error_rate([normalize_for_scoring("The cat, sat.")], [normalize_for_scoring("the CAT sat")]) == 0.0
