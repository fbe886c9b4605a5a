"""Word and character error rates, as jiwer 4.0 defines them.

Both are corpus-level: the edit distances summed over the sentence pairs over the number of
reference units.  Words are the whitespace-separated pieces of a sentence; characters are those of
the sentence with its ends stripped, spaces between words included (and every space of a run of
them counted, as jiwer's `cer` does).  Nothing else is normalised: apply `normalize_for_scoring` to
both sides first to score without case and punctuation.
"""

import unicodedata
from collections.abc import Sequence

import numpy as np

UNITS = ("word", "char")


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
  """Levenshtein distance: the fewest substitutions, deletions and insertions turning one into the other."""
  reference, hypothesis = list(reference), list(hypothesis)
  # A common prefix and suffix cost nothing; dropping them first makes near-correct hypotheses cheap.
  start = 0
  while start < min(len(reference), len(hypothesis)) and reference[start] == hypothesis[start]:
    start += 1
  end = 0
  while (end < min(len(reference), len(hypothesis)) - start
         and reference[len(reference) - 1 - end] == hypothesis[len(hypothesis) - 1 - end]):
    end += 1
  reference, hypothesis = reference[start:len(reference) - end], hypothesis[start:len(hypothesis) - end]
  if len(reference) < len(hypothesis):  # loop over the shorter one, vectorise over the longer
    reference, hypothesis = hypothesis, reference
  if not hypothesis:
    return len(reference)
  codes = {}
  long = np.array([codes.setdefault(x, len(codes)) for x in reference])
  short = [codes.setdefault(x, len(codes)) for x in hypothesis]
  offsets = np.arange(long.size + 1)
  row = offsets  # distances from the empty prefix of `short` to each prefix of `long`
  for i, code in enumerate(short, start=1):
    best = np.empty_like(row)
    best[0] = i
    best[1:] = np.minimum(row[1:] + 1, row[:-1] + (long != code))
    # The chain row[j] = row[j-1] + 1 along the row is a running minimum of row[k] - k.
    row = np.minimum.accumulate(best - offsets) + offsets
  return int(row[-1])


def _units(text: str, unit: str) -> list[str]:
  return text.split() if unit == "word" else list(text.strip())


def _sentences(texts) -> list[str]:
  return [texts] if isinstance(texts, str) else list(texts)


def error_counts(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word") -> dict[str, int]:
  """Corpus totals over the sentence pairs: `errors` (summed edit distances), `reference_units`,
  `hypothesis_units` and `sentences`.  `unit` is "word" or "char"; a lone string is one sentence."""
  if unit not in UNITS:
    raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
  references, hypotheses = _sentences(references), _sentences(hypotheses)
  if not references:
    raise ValueError("no reference sentences to score")
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} reference sentences but {len(hypotheses)} hypotheses; "
                     "pass one of each per utterance")
  counts = {"errors": 0, "reference_units": 0, "hypothesis_units": 0, "sentences": len(references)}
  for reference, hypothesis in zip(references, hypotheses):
    reference, hypothesis = _units(reference, unit), _units(hypothesis, unit)
    counts["errors"] += edit_distance(reference, hypothesis)
    counts["reference_units"] += len(reference)
    counts["hypothesis_units"] += len(hypothesis)
  return counts


def _error_rate(references, hypotheses, unit: str) -> float:
  counts = error_counts(references, hypotheses, unit)
  if counts["reference_units"] == 0:
    # jiwer returns the insertion count here, which is no rate
    raise ValueError(f"the references hold no {unit}s, so the error rate is undefined")
  return counts["errors"] / counts["reference_units"]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
  """Total word edits over total reference words (jiwer's `wer`)."""
  return _error_rate(references, hypotheses, "word")


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
  """Total character edits over total reference characters, spaces included (jiwer's `cer`)."""
  return _error_rate(references, hypotheses, "char")


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'"})  # typographic apostrophes → '


def normalize_for_scoring(text: str) -> str:
  """`text` lower-cased, its punctuation other than apostrophes made spaces, runs of spaces made one, stripped."""
  text = text.lower().translate(_APOSTROPHES)
  text = "".join(" " if c != "'" and unicodedata.category(c).startswith("P") else c for c in text)
  return " ".join(text.split())
