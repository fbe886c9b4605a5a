"""synth_speech: English utterances spoken by espeak-ng, a speech-recognition corpus built on first use.

Each example is one sentence of 4-12 words from a small English grammar (statements, questions,
commands, reported speech, travel; past, present, future and modal tenses with agreement, some
negated and contracted) over a vocabulary of about 3,700 word forms (``synth_speech_words.txt``:
nouns and their plurals, adjectives, verbs in three forms, adverbs, first names, cities and
countries, plus the grammar's function words and spelt-out numbers).  Transcripts are lower-case
letters, apostrophes and spaces only (``VOCABULARY``).  A sentence's split is fixed by a hash of
its text (80 / 10 / 10 % of all sentences for train / validation / test), so no validation or
test sentence is ever spoken in training.

The sentence is synthesised by espeak-ng (the ``espeakng-loader`` wheel's library and data,
driven through ctypes) with one of ``SPEAKERS``: 8 English accents (British, American, received
pronunciation, Scottish, New York, Caribbean, Lancaster, West Midlands) x 16 voice variants (7
male, 5 female, 4 Klatt) x 3 base pitches, 384 in all, stored in the ``speaker`` feature as
``voice+variant+pitch``.  Per utterance the rate (130-220 words per minute), pitch (the
speaker's +-5), pitch range and pauses between words vary.  The 22.05 kHz output is resampled to
the config's rate (16 kHz by default), padded with 0.05-0.3 s of silence at both ends, convolved
with a short synthetic room response in half of the utterances (exponentially decaying noise,
RT60 0.15-0.5 s, direct-to-reverberant ratio 3-12 dB), mixed with white-to-brown noise at
20-40 dB SNR in 80 % of them, peak-normalised to -12..-2 dBFS and stored as int16 with the
features of ``data_pipelines.speech``.  The default splits hold 3000/200/200 utterances of
about 2.8 s (2.3 hours of training speech).

Utterance ``i`` of split ``s`` comes from ``np.random.default_rng([seed, SPLITS.index(s), i])``, so the
data do not depend on how many processes generate them or in which order.
"""

import _ctypes
import collections
import ctypes
import dataclasses
import functools
import os
import re
import string
import threading
from collections.abc import Callable

import espeakng_loader
import librosa
import numpy as np
import scipy.fft
import scipy.signal
import tensorflow_datasets as tfds

from afx.audio import synthesis as syn
from afx.errors import DataError
from data_pipelines import builders, speech

DEFAULT_SPLIT_SIZES = {"train": 3000, "validation": 200, "test": 200}
SPLIT_SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}  # of all sentences, by text hash
VOCABULARY = tuple(sorted(" '" + string.ascii_lowercase))
MIN_WORDS, MAX_WORDS = 4, 12
WORDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synth_speech_words.txt")
NO_AUDIO = "espeak-ng returned no audio"
_CHUNKSIZE = 8

# Speakers and prosody.
VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4")
BASE_PITCHES = (35, 50, 65)  # espeak-ng's pitch parameter, 0-100, relative to the variant's own
PITCH_JITTER = 5
RATE_WPM = (130, 220)
PITCH_RANGE = (25, 85)  # espeak-ng's intonation range, 0 (monotone) - 100
WORD_GAPS = (0, 1, 2, 3)  # extra pause between words, in 10 ms units
WORD_GAP_WEIGHTS = (0.6, 0.2, 0.12, 0.08)

# The room and the microphone.
PAD_SECONDS = (0.05, 0.3)
REVERB_PROBABILITY = 0.5
RT60_SECONDS = (0.15, 0.5)
DIRECT_TO_REVERB_DB = (3.0, 12.0)
NOISE_PROBABILITY = 0.8
SNR_DB = (20.0, 40.0)
NOISE_EXPONENT = (0.0, 2.0)  # white (0) to brown (2)
PEAK_DBFS = (-12.0, -2.0)

# espeak-ng's C interface (speak_lib.h).
ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7  # espeak_PARAMETER
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_ESPEAK_LOCK = threading.Lock()  # the library keeps global state: one synthesis at a time


# The lexicon.


@dataclasses.dataclass(frozen=True)
class Verb:
  base: str
  past: str
  third: str  # the third person singular of the present


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """The open word classes of the grammar; nouns as (singular, plural)."""

  nouns: tuple[tuple[str, str], ...]
  adjectives: tuple[str, ...]
  transitive: tuple[Verb, ...]
  intransitive: tuple[Verb, ...]
  adverbs: tuple[str, ...]
  names: tuple[str, ...]
  places: tuple[str, ...]


def add_s(word: str, *, o_takes_es: bool = False) -> str:
  """The regular plural of a noun (or with ``o_takes_es``, the third person of a verb: goes)."""
  if word.endswith(("s", "x", "z", "ch", "sh")) or (o_takes_es and word.endswith("o")):
    return word + "es"
  if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
    return word[:-1] + "ies"
  return word + "s"


def read_word_lists(path: str = WORDS_FILE) -> dict[str, list[list[str]]]:
  """Each ``[category]`` of the words file: its entries, each a list of forms."""
  sections = collections.defaultdict(list)
  category = None
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      header = re.fullmatch(r"\[(\w+)\]", line)
      if header:
        category = header.group(1)
      else:
        sections[category].append(line.split())
  return sections


@functools.cache
def lexicon() -> Lexicon:
  sections = read_word_lists()
  verbs = lambda key: tuple(
      Verb(base, past, rest[0] if rest else add_s(base, o_takes_es=True)) for base, past, *rest in sections[key]
  )
  plain = lambda key: tuple(entry[0] for entry in sections[key])
  return Lexicon(
      nouns=tuple((noun, rest[0] if rest else add_s(noun)) for noun, *rest in sections["noun"]),
      adjectives=plain("adjective"), transitive=verbs("transitive"), intransitive=verbs("intransitive"),
      adverbs=plain("adverb"), names=plain("name"), places=plain("place"),
  )


# Function words and fixed phrases of the grammar.

SUBJECT_PRONOUNS = {"i": "first", "you": "plural", "he": "third", "she": "third", "it": "third",
                    "we": "plural", "they": "plural"}
OBJECT_PRONOUNS = ("me", "you", "him", "her", "it", "us", "them")
CONTRACTED_BE = {"i": "i'm", "you": "you're", "he": "he's", "she": "she's", "it": "it's", "we": "we're",
                 "they": "they're"}
SINGULAR_DETERMINERS = ("the", "the", "the", "a", "a", "this", "that", "every", "each", "my", "your", "his",
                        "her", "our", "their", "one", "another", "no")
PLURAL_DETERMINERS = ("the", "the", "these", "those", "some", "many", "my", "your", "his", "her", "our",
                      "their", "all the", "a few", "lots of", "no", "several", "both")
A_BEFORE = ("uni", "use", "usu", "eu", "one")  # vowel letters that sound like a consonant: a uniform
AN_BEFORE = ("hour", "honest", "heir")
INTENSIFIERS = ("very", "quite", "rather", "really", "so", "too", "extremely", "fairly", "a bit")
PREPOSITIONS = ("in", "on", "under", "over", "behind", "beside", "near", "into", "onto", "from", "to", "with",
                "without", "across", "through", "around", "along", "past", "towards", "above", "below",
                "beyond", "against", "inside", "outside", "by", "for", "at", "next to", "in front of")
FREQUENCY_ADVERBS = ("always", "often", "sometimes", "never", "usually", "rarely", "seldom", "just", "also",
                     "still", "nearly", "almost")
MODALS = ("will", "can", "could", "should", "must", "might", "may", "won't", "can't", "couldn't",
          "shouldn't", "mustn't")
REPORT_VERBS = ("said", "thought", "knew", "heard", "remembered", "promised", "explained", "guessed", "believed",
                "noticed", "told me", "told us", "wrote", "dreamed", "hoped", "wondered if", "asked if")
QUESTION_WORDS = ("where", "why", "when", "how")
CONJUNCTIONS = ("and", "but", "because", "so", "when", "while", "before", "after", "if", "until", "although")
MOTION_VERBS = (Verb("go", "went", "goes"), Verb("travel", "travelled", "travels"), Verb("fly", "flew", "flies"),
                Verb("drive", "drove", "drives"), Verb("move", "moved", "moves"), Verb("sail", "sailed", "sails"),
                Verb("return", "returned", "returns"), Verb("walk", "walked", "walks"),
                Verb("cycle", "cycled", "cycles"), Verb("hurry", "hurried", "hurries"),
                Verb("come", "came", "comes"), Verb("run", "ran", "runs"))
RESIDENCE_VERBS = (Verb("live", "lived", "lives"), Verb("work", "worked", "works"), Verb("stay", "stayed", "stays"),
                   Verb("study", "studied", "studies"), Verb("grow up", "grew up", "grows up"),
                   Verb("teach", "taught", "teaches"), Verb("sing", "sang", "sings"))
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
PERIODS = ("night", "week", "month", "year", "summer", "winter", "spring", "autumn", "weekend", "term")
PARTS_OF_DAY = ("morning", "afternoon", "evening")
UNITS = ("day", "week", "month", "year", "hour", "minute")
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
BE = {("first", "present"): "am", ("third", "present"): "is", ("plural", "present"): "are",
      ("first", "past"): "was", ("third", "past"): "was", ("plural", "past"): "were"}
NEGATED_BE = {"am": "am not", "is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't"}
COPULA_ALTERNATIVES = ("will be", "might be", "must be", "can't be", "won't be", "felt", "looked")
TENSES = ("past", "present", "future", "negative_past", "negative_present")
TENSE_WEIGHTS = (0.4, 0.2, 0.25, 0.08, 0.07)


def number_words(n: int) -> list[str]:
  """``n`` (0-999) spelt out: three hundred and twelve."""
  if n < 20:
    return [ONES[n]]
  if n < 100:
    return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])
  hundreds = [ONES[n // 100], "hundred"]
  return hundreds + (["and"] + number_words(n % 100) if n % 100 else [])


def _pick(rng: np.random.Generator, options):
  return options[rng.integers(len(options))]


def _maybe(rng: np.random.Generator, probability: float) -> bool:
  return bool(rng.random() < probability)


def _words(*phrases) -> list[str]:
  """The words of phrases given as strings (possibly several words) or lists of words."""
  out = []
  for phrase in phrases:
    out += phrase.split() if isinstance(phrase, str) else list(phrase)
  return out


def indefinite_article(word: str) -> str:
  if word.startswith(AN_BEFORE):
    return "an"
  return "an" if word[0] in "aeiou" and not word.startswith(A_BEFORE) else "a"


def count_words(rng: np.random.Generator) -> list[str]:
  """A number above one, mostly small."""
  r = rng.random()
  n = int(rng.integers(2, 13)) if r < 0.6 else int(rng.integers(13, 100)) if r < 0.9 else int(rng.integers(100, 1000))
  return number_words(n)


def noun_phrase(rng: np.random.Generator, lex: Lexicon, plural: bool = False) -> list[str]:
  """A determiner, 0-2 adjectives and a noun: the old red car, seven small birds, anna's kite."""
  singular, plural_form = _pick(rng, lex.nouns)
  adjectives = [_pick(rng, lex.adjectives) for _ in range(rng.choice(3, p=(0.45, 0.42, 0.13)))]
  if plural:
    determiner = count_words(rng) if _maybe(rng, 0.35) else _words(_pick(rng, PLURAL_DETERMINERS))
    return determiner + adjectives + [plural_form]
  if _maybe(rng, 0.08):
    determiner = _pick(rng, lex.names) + "'s"
  else:
    determiner = _pick(rng, SINGULAR_DETERMINERS)
    if determiner == "a":
      determiner = indefinite_article((adjectives or [singular])[0])
  return [determiner] + adjectives + [singular]


def subject(rng: np.random.Generator, lex: Lexicon) -> tuple[list[str], str]:
  """A subject and its agreement: "first" (i), "third" (he, anna, the dog) or "plural"."""
  r = rng.random()
  if r < 0.25:
    pronoun = _pick(rng, tuple(SUBJECT_PRONOUNS))
    return [pronoun], SUBJECT_PRONOUNS[pronoun]
  if r < 0.45:
    return [_pick(rng, lex.names)], "third"
  if r < 0.5:
    return [_pick(rng, lex.names), "and", _pick(rng, lex.names)], "plural"
  plural = _maybe(rng, 0.35)
  return noun_phrase(rng, lex, plural), "plural" if plural else "third"


def object_phrase(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  r = rng.random()
  if r < 0.12:
    return [_pick(rng, OBJECT_PRONOUNS)]
  if r < 0.25:
    return [_pick(rng, lex.names)]
  return noun_phrase(rng, lex, plural=_maybe(rng, 0.3))


def prepositional_phrase(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  if _maybe(rng, 0.15):
    return [_pick(rng, ("in", "near", "from", "to", "outside")), _pick(rng, lex.places)]
  return _words(_pick(rng, PREPOSITIONS), noun_phrase(rng, lex, plural=_maybe(rng, 0.2)))


def time_phrase(rng: np.random.Generator, when: str) -> list[str]:
  """When it happens, fitting the tense: "past" (yesterday), "future" (next week) or "present" (every day)."""
  pick = functools.partial(_pick, rng)
  if when == "past":
    options = (lambda: ["yesterday"], lambda: ["last", pick(PERIODS + DAYS)], lambda: ["this", pick(PARTS_OF_DAY)],
               lambda: ["on", pick(DAYS)], lambda: ["in", pick(MONTHS)],
               lambda: count_words(rng) + [add_s(pick(UNITS)), "ago"], lambda: ["an", "hour", "ago"],
               lambda: ["earlier", "today"], lambda: ["at", pick(("noon", "midnight", "dawn"))])
  elif when == "future":
    options = (lambda: ["tomorrow"], lambda: ["next", pick(PERIODS + DAYS)], lambda: ["on", pick(DAYS)],
               lambda: ["in", pick(MONTHS)], lambda: ["in"] + count_words(rng) + [add_s(pick(UNITS))],
               lambda: ["soon"], lambda: ["later"], lambda: ["tonight"], lambda: ["this", pick(PARTS_OF_DAY)],
               lambda: ["after", "lunch"])
  else:
    options = (lambda: ["every", pick(("day", "week", "year", "night") + PARTS_OF_DAY + DAYS)],
               lambda: ["on", add_s(pick(DAYS))], lambda: ["in", "the", pick(PARTS_OF_DAY)],
               lambda: ["at", "weekends"], lambda: ["in", "the", pick(("summer", "winter", "spring", "autumn"))],
               lambda: ["twice", "a", pick(UNITS)])
  return pick(options)()


def verb_phrase(rng: np.random.Generator, verb: Verb, agreement: str, tense: str) -> list[str]:
  """The verb in ``tense`` (one of TENSES, "future" including the other modals) agreeing with the subject."""
  if tense == "past":
    return _words(verb.past)
  if tense == "present":
    return _words(verb.third if agreement == "third" else verb.base)
  if tense == "future":
    return _words(_pick(rng, MODALS), verb.base)
  if tense == "negative_past":
    return _words("never", verb.past) if _maybe(rng, 0.25) else _words(_pick(rng, ("didn't", "did not")), verb.base)
  return _words("doesn't" if agreement == "third" else "don't", verb.base)


def _tense(rng: np.random.Generator) -> tuple[str, str]:
  """A tense and the time its time phrase refers to."""
  tense = TENSES[rng.choice(len(TENSES), p=TENSE_WEIGHTS)]
  return tense, {"negative_past": "past", "negative_present": "present"}.get(tense, tense)


def _tail(rng: np.random.Generator, lex: Lexicon, when: str) -> list[str]:
  """What may follow a clause's verb and object: a place, a manner, a time, or nothing."""
  r = rng.random()
  if r < 0.3:
    return prepositional_phrase(rng, lex)
  if r < 0.45:
    return [_pick(rng, lex.adverbs)]
  if r < 0.65:
    return time_phrase(rng, when)
  if r < 0.75:
    return prepositional_phrase(rng, lex) + time_phrase(rng, when)
  return []


def _with_frequency(rng: np.random.Generator, verb_words: list[str], tense: str) -> list[str]:
  # "anna often bakes bread", "we always walked home": only before a simple past or present verb.
  if tense in ("past", "present") and _maybe(rng, 0.15):
    return [_pick(rng, FREQUENCY_ADVERBS)] + verb_words
  return verb_words


def transitive_clause(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  words, agreement = subject(rng, lex)
  tense, when = _tense(rng)
  verb = verb_phrase(rng, _pick(rng, lex.transitive), agreement, tense)
  return words + _with_frequency(rng, verb, tense) + object_phrase(rng, lex) + _tail(rng, lex, when)


def intransitive_clause(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  words, agreement = subject(rng, lex)
  tense, when = _tense(rng)
  verb = verb_phrase(rng, _pick(rng, lex.intransitive), agreement, tense)
  tail = _tail(rng, lex, when) or [_pick(rng, lex.adverbs)]
  return words + _with_frequency(rng, verb, tense) + tail


def copula_clause(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """The soup was very hot; i'm tired and hungry; those boxes aren't heavy."""
  words, agreement = subject(rng, lex)
  when = "present" if _maybe(rng, 0.5) else "past"
  be = BE[agreement, when]
  if _maybe(rng, 0.15):
    be = NEGATED_BE[be]
  elif _maybe(rng, 0.1):
    be = _pick(rng, COPULA_ALTERNATIVES)
  if words[0] in CONTRACTED_BE and len(words) == 1 and be == BE[agreement, "present"] and _maybe(rng, 0.5):
    words, be = [CONTRACTED_BE[words[0]]], ""
  adjectives = _words(_pick(rng, INTENSIFIERS)) if _maybe(rng, 0.4) else []
  adjectives.append(_pick(rng, lex.adjectives))
  if _maybe(rng, 0.3):
    adjectives += [_pick(rng, ("and", "but", "or")), _pick(rng, lex.adjectives)]
  return words + _words(be) + adjectives + (time_phrase(rng, when) if _maybe(rng, 0.2) else [])


def there_clause(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """There were three dogs in the garden."""
  plural = _maybe(rng, 0.5)
  when = "present" if _maybe(rng, 0.5) else "past"
  be = BE["plural" if plural else "third", when]
  opening = ["there's"] if be == "is" and _maybe(rng, 0.5) else ["there", NEGATED_BE[be] if _maybe(rng, 0.1) else be]
  return opening + noun_phrase(rng, lex, plural) + prepositional_phrase(rng, lex)


def question(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """Did anna paint the fence; where will they put the old piano; who ate my sandwich."""
  words, agreement = subject(rng, lex)
  verb = _pick(rng, lex.transitive)
  r = rng.random()
  if r < 0.15:
    return ["who", verb.past] + object_phrase(rng, lex) + _tail(rng, lex, "past")
  if r < 0.3:
    return ["what", _pick(rng, ("did", "will", "can", "should"))] + words + _words(verb.base)
  aux, when = _pick(rng, (("did", "past"), ("will", "future"), ("can", "future"), ("could", "future"),
                          ("should", "future"), ("do", "present")))
  if aux == "do" and agreement == "third":
    aux = "does"
  opening = [_pick(rng, QUESTION_WORDS), aux] if r < 0.55 else [aux]
  return opening + words + _words(verb.base) + object_phrase(rng, lex) + _tail(rng, lex, when)


def command(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """Please open the window; don't touch the red button; let's visit rome next week."""
  verb = _pick(rng, lex.transitive)
  opening = _words(_pick(rng, ("please", "don't", "let's", "never", "always", "", "", "")))
  return opening + _words(verb.base) + object_phrase(rng, lex) + _tail(rng, lex, "future")


def reported(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """Anna said that the train was late."""
  words, _ = subject(rng, lex)
  verb = _words(_pick(rng, REPORT_VERBS))
  that = ["that"] if verb[-1] != "if" and _maybe(rng, 0.6) else []
  clause = _pick(rng, (transitive_clause, intransitive_clause, copula_clause))(rng, lex)
  return words + verb + that + clause


def travel(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """My uncle flew to tokyo last week; they live in a cottage near paris."""
  words, agreement = subject(rng, lex)
  tense, when = _tense(rng)
  if _maybe(rng, 0.6):
    verb = verb_phrase(rng, _pick(rng, MOTION_VERBS), agreement, tense)
    route = (["from", _pick(rng, lex.places)] if _maybe(rng, 0.25) else []) + ["to", _pick(rng, lex.places)]
  else:
    verb = verb_phrase(rng, _pick(rng, RESIDENCE_VERBS), agreement, tense)
    route = ["in", _pick(rng, lex.places)]
  return words + verb + route + (time_phrase(rng, when) if _maybe(rng, 0.5) else [])


def compound(rng: np.random.Generator, lex: Lexicon) -> list[str]:
  """Two short clauses joined: the dog barked and the baby cried."""
  first = _pick(rng, (intransitive_clause, copula_clause))(rng, lex)
  second = _pick(rng, (intransitive_clause, copula_clause, transitive_clause))(rng, lex)
  return first + [_pick(rng, CONJUNCTIONS)] + second


SentenceForm = Callable[[np.random.Generator, Lexicon], list[str]]
SENTENCE_FORMS: tuple[SentenceForm, ...] = (transitive_clause, intransitive_clause, copula_clause, there_clause,
                                            question, command, reported, travel, compound)
SENTENCE_FORM_WEIGHTS = (0.27, 0.13, 0.12, 0.06, 0.13, 0.08, 0.08, 0.08, 0.05)


def sentence(rng: np.random.Generator) -> str:
  """A random sentence of MIN_WORDS-MAX_WORDS words (longer or shorter drafts are drawn again)."""
  lex = lexicon()
  while True:
    form = SENTENCE_FORMS[rng.choice(len(SENTENCE_FORMS), p=SENTENCE_FORM_WEIGHTS)]
    words = form(rng, lex)
    if MIN_WORDS <= len(words) <= MAX_WORDS:
      return " ".join(words)


def split_of(text: str) -> str:
  """The split a sentence belongs to, fixed by its text alone."""
  fraction, total = builders.hash_fraction(text), 0.0
  for split, share in SPLIT_SHARES.items():
    total += share
    if fraction < total:
      return split
  return split


def split_sentence(rng: np.random.Generator, split: str) -> str:
  """A random sentence of ``split``: drafts belonging to another split are drawn again."""
  while True:
    text = sentence(rng)
    if split_of(text) == split:
      return text


@functools.cache
def vocabulary_words() -> frozenset[str]:
  """Every word a sentence can contain."""
  lex = lexicon()
  words = {form for pair in lex.nouns for form in pair}
  words |= {word for verb in lex.transitive + lex.intransitive + MOTION_VERBS + RESIDENCE_VERBS
            for form in (verb.base, verb.past, verb.third) for word in form.split()}
  words |= set(lex.adjectives + lex.adverbs + lex.names + lex.places + MONTHS + DAYS + PERIODS + PARTS_OF_DAY + ONES)
  words |= {name + "'s" for name in lex.names} | {add_s(word) for word in DAYS + UNITS} | set(UNITS)
  fixed = (SINGULAR_DETERMINERS, PLURAL_DETERMINERS, INTENSIFIERS, PREPOSITIONS, FREQUENCY_ADVERBS, MODALS,
           REPORT_VERBS, QUESTION_WORDS, CONJUNCTIONS, TENS, tuple(SUBJECT_PRONOUNS), OBJECT_PRONOUNS,
           tuple(CONTRACTED_BE.values()), tuple(BE.values()), tuple(NEGATED_BE.values()), COPULA_ALTERNATIVES)
  words |= {word for group in fixed for phrase in group for word in phrase.split()}
  words |= set(_words("a an and hundred there there's who what did do does don't doesn't didn't not please let's "
                      "never always that to from in near outside the lunch weekends twice ago today earlier "
                      "yesterday tomorrow soon later tonight this next last every noon midnight dawn but or"))
  return frozenset(words)


# Speakers and their voices.


@dataclasses.dataclass(frozen=True)
class Speaker:
  """An espeak-ng voice (an accent), a variant of it and a base pitch."""

  voice: str
  variant: str
  pitch: int

  @property
  def id(self) -> str:
    return f"{self.voice}+{self.variant}+{self.pitch}"

  @property
  def espeak_name(self) -> str:
    return f"{self.voice}+{self.variant}"


SPEAKERS = tuple(Speaker(voice, variant, pitch) for voice in VOICES for variant in VARIANTS for pitch in BASE_PITCHES)


@dataclasses.dataclass(frozen=True)
class Prosody:
  """How one utterance is spoken: espeak-ng's rate (words per minute), pitch and pitch range
  (0-100) and extra pause between words (10 ms units)."""

  rate: int
  pitch: int
  pitch_range: int
  word_gap: int


def draw_prosody(rng: np.random.Generator, speaker: Speaker) -> Prosody:
  return Prosody(
      rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
      pitch=int(np.clip(speaker.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100)),
      pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
      word_gap=int(rng.choice(WORD_GAPS, p=WORD_GAP_WEIGHTS)),
  )


# espeak-ng through ctypes.


def _declare(library: ctypes.CDLL) -> None:
  library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
  library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
  library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
  library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
  library.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                   ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]


def _speak(library: ctypes.CDLL, text: str, voice: str, prosody: Prosody, noise_seed: int) -> np.ndarray:
  chunks = []

  def collect(samples, count, events):
    del events
    if count > 0:
      chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
    return 0  # go on

  callback = _SynthCallback(collect)
  rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
  if rate != ESPEAK_RATE:
    raise DataError(f"espeak-ng did not start (espeak_Initialize returned {rate}); reinstall espeakng-loader")
  try:
    library.espeak_SetSynthCallback(callback)
    if library.espeak_SetVoiceByName(voice.encode()) != 0:
      raise DataError(f"espeak-ng has no voice {voice!r}; its data in {espeakng_loader.get_data_path()} lacks it")
    for parameter, value in ((_RATE, prosody.rate), (_PITCH, prosody.pitch), (_RANGE, prosody.pitch_range),
                             (_WORDGAP, prosody.word_gap)):
      library.espeak_SetParameter(parameter, value, 0)
    # The breathy variants (f2, f3, f5, m7) draw noise from a generator espeak_Initialize seeds with
    # the time of day.
    library.espeak_ng_SetRandSeed(noise_seed)
    encoded = text.encode()
    status = library.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if status != 0:
      raise DataError(f"espeak-ng failed to speak {text!r} with {voice} (error {status})")
  finally:
    library.espeak_Terminate()
  return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@functools.cache
def _check_unloaded(path: str) -> None:
  """Raises DataError where the library outlives ``dlclose`` (something else in the process loaded it)."""
  if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as f:
      if os.path.realpath(path) in f.read():
        raise DataError(f"{path} is loaded elsewhere in this process, so synth_speech cannot reload it between "
                        "utterances and its audio would depend on what was spoken before; build synth_speech "
                        "in a process that does not use espeak-ng otherwise")


def synthesize(text: str, voice: str, prosody: Prosody, noise_seed: int = 0) -> np.ndarray:
  """``text`` spoken by espeak-ng ``voice`` ("en-us+m3"): int16 samples at ESPEAK_RATE.

  ``noise_seed`` seeds the noise (breath, frication) of the breathy variants.

  espeak-ng keeps synthesis state (pitch flutter and waveform phases) in C statics that
  ``espeak_Terminate`` does not reset, so the same call gives slightly different audio depending on
  what the process spoke before.  The library is therefore loaded and initialised afresh for every
  utterance (a few milliseconds) and unloaded after, which makes the audio a function of the
  arguments alone.
  """
  path = espeakng_loader.get_library_path()
  with _ESPEAK_LOCK:
    library = ctypes.CDLL(path)
    handle = library._handle  # pylint: disable=protected-access
    try:
      _declare(library)
      return _speak(library, text, voice, prosody, noise_seed)
    finally:
      del library
      _ctypes.dlclose(handle)
      _check_unloaded(path)


# The room and the microphone.


def _db_to_gain(db: float) -> float:
  return float(10.0 ** (db / 20.0))


def resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
  """espeak-ng's int16 output as float32 in [-1, 1] at ``sample_rate``."""
  waveform = samples.astype(np.float32) / 32768.0
  if sample_rate == ESPEAK_RATE:
    return waveform
  return librosa.resample(waveform, orig_sr=ESPEAK_RATE, target_sr=sample_rate, res_type="soxr_hq")


def room_impulse_response(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
  """A direct path and an exponentially decaying noise tail (-60 dB after RT60 s) a few dB below it."""
  rt60 = rng.uniform(*RT60_SECONDS)
  t = np.arange(int(rt60 * sample_rate)) / sample_rate
  tail = rng.standard_normal(len(t)) * np.exp(-np.log(1000.0) * t / rt60)
  tail[: int(rng.uniform(0.001, 0.005) * sample_rate)] = 0.0  # the first reflection arrives after the direct sound
  tail *= np.sqrt(1.0 / (10.0 ** (rng.uniform(*DIRECT_TO_REVERB_DB) / 10.0) * np.sum(tail**2)))
  tail[0] = 1.0
  return tail


def room_and_microphone(waveform: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
  """The utterance padded with silence, maybe reverberated, maybe in noise, peak-normalised."""
  speech_power = float(np.mean(waveform.astype(np.float64) ** 2))
  pads = [syn.num_samples(rng.uniform(*PAD_SECONDS), sample_rate) for _ in range(2)]
  mix = np.pad(waveform.astype(np.float64), pads)
  if _maybe(rng, REVERB_PROBABILITY):
    mix = scipy.signal.fftconvolve(mix, room_impulse_response(rng, sample_rate))[: len(mix)]
  if _maybe(rng, NOISE_PROBABILITY):
    # An FFT-friendly length: the inverse FFT of a length with a large prime factor is slow.
    noise_length = scipy.fft.next_fast_len(len(mix), real=True)
    noise = syn.coloured_noise(noise_length, rng, exponent=rng.uniform(*NOISE_EXPONENT))[: len(mix)]
    mix += noise * np.sqrt(speech_power / 10.0 ** (rng.uniform(*SNR_DB) / 10.0))
  peak = np.max(np.abs(mix))
  if peak > 0:
    mix *= _db_to_gain(rng.uniform(*PEAK_DBFS)) / peak
  return mix


def generate_example(index: int, *, seed: int, split: str, sample_rate: int) -> dict | builders.Skip:
  """Utterance ``index`` of ``split``, as the features of ``data_pipelines.speech``; a pure function of its
  arguments."""
  rng = np.random.default_rng([seed, builders.SPLITS.index(split), index])
  utterance_id = f"{split}/{index:06d}"
  text = split_sentence(rng, split)
  skip = speech.transcript_skip(utterance_id, text, "".join(VOCABULARY))
  if skip is not None:
    return skip
  speaker = SPEAKERS[rng.integers(len(SPEAKERS))]
  spoken = synthesize(text, speaker.espeak_name, draw_prosody(rng, speaker), noise_seed=int(rng.integers(2**31)))
  if not spoken.size:
    return builders.Skip(utterance_id, NO_AUDIO, f"{speaker.id}: {text!r}")
  waveform = room_and_microphone(resample(spoken, sample_rate), rng, sample_rate)
  return speech.speech_example(waveform, text, utterance_id, speaker.id)


@dataclasses.dataclass(eq=False)
class SynthSpeechConfig(tfds.core.BuilderConfig):
  """The sample rate of the utterances."""

  sample_rate: int = 16000


class SynthSpeech(builders.ProceduralBuilder, skip_registration=True):
  """espeak-ng utterances of grammar sentences (see the module docstring); kwargs as
  ``builders.ProceduralBuilder``."""

  name = "synth_speech"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "espeak-ng utterances of 4-12 word sentences at 16 kHz, 384 speakers."}
  BUILDER_CONFIGS = [SynthSpeechConfig(name="default", description="Utterances at 16 kHz.")]
  DEFAULT_SPLIT_SIZES = DEFAULT_SPLIT_SIZES
  CHUNKSIZE = _CHUNKSIZE
  example_function = staticmethod(generate_example)

  def example_kwargs(self) -> dict:
    return {"sample_rate": self.builder_config.sample_rate}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=speech.speech_features(),
        metadata=tfds.core.MetadataDict(sample_rate=self.builder_config.sample_rate, seed=self.seed,
                                        split_sizes=self.split_sizes, vocabulary=list(VOCABULARY),
                                        num_speakers=len(SPEAKERS)),
    )
