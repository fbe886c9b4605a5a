"""The synth_speech corpus: its grammar, held-out sentences, espeak-ng's voices, determinism, the build."""

import collections

import librosa
import numpy as np
import pytest

import data_pipelines as dp
from afx.errors import DataError
from data_pipelines import builders, synth_speech

RATE = 16000
TINY = {"train": 12, "validation": 4, "test": 6}
PLAIN = synth_speech.Prosody(rate=170, pitch=50, pitch_range=50, word_gap=0)
SHORT, MEDIUM, LONG = ("the old dog slept", "the old dog slept in the garden near the river",
                       "the old dog slept in the garden near the river after a long and happy day")


def _rms(signal):
  return float(np.sqrt(np.mean(np.asarray(signal, np.float64) ** 2)))


def _median_f0(samples):
  """The median YIN pitch of the loud frames (unvoiced frames are quieter than the vowels)."""
  waveform = samples.astype(np.float32) / 32768.0
  frames = {"frame_length": 1024, "hop_length": 256}
  f0 = librosa.yin(waveform, fmin=60, fmax=500, sr=synth_speech.ESPEAK_RATE, **frames)
  rms = librosa.feature.rms(y=waveform, **frames)[0][: len(f0)]
  return float(np.median(f0[rms > 0.3 * rms.max()]))


# The grammar.


def test_the_vocabulary_has_enough_words_of_the_small_character_set():
  words = synth_speech.vocabulary_words()
  assert len(words) >= 1500
  assert set("".join(words)) <= set(synth_speech.VOCABULARY) - {" "}
  assert synth_speech.VOCABULARY == tuple(sorted(" '" + "abcdefghijklmnopqrstuvwxyz"))
  lexicon = synth_speech.lexicon()
  assert len(lexicon.nouns) >= 500 and len(lexicon.adjectives) >= 300 and len(lexicon.transitive) >= 250
  assert ("mouse", "mice") in lexicon.nouns and ("box", "boxes") in lexicon.nouns
  assert ("cherry", "cherries") in lexicon.nouns and ("key", "keys") in lexicon.nouns
  carry = next(verb for verb in lexicon.transitive if verb.base == "carry")
  assert (carry.past, carry.third) == ("carried", "carries")


def test_sentences_use_the_vocabulary_and_have_4_to_12_words():
  rng = np.random.default_rng(0)
  sentences = [synth_speech.sentence(rng) for _ in range(5000)]
  lengths = collections.Counter(len(text.split()) for text in sentences)
  assert min(lengths) == synth_speech.MIN_WORDS and max(lengths) == synth_speech.MAX_WORDS
  words = collections.Counter(word for text in sentences for word in text.split())
  assert set(words) <= synth_speech.vocabulary_words()
  assert len(words) >= 1500  # the grammar draws on the whole lexicon, not a corner of it
  assert all(text == text.strip() and "  " not in text for text in sentences)
  assert len(set(sentences)) > 0.99 * len(sentences)
  for contraction in ("didn't", "don't", "there's", "let's"):
    assert words[contraction] > 0


def test_validation_and_test_sentences_never_occur_in_training():
  rng = np.random.default_rng(1)
  drawn = {split: [synth_speech.split_sentence(rng, split) for _ in range(count)]
           for split, count in (("train", 5000), ("validation", 1000), ("test", 1000))}
  for split, texts in drawn.items():
    assert {synth_speech.split_of(text) for text in texts} == {split}
  train = set(drawn["train"])
  assert not train & set(drawn["validation"]) and not train & set(drawn["test"])
  assert not set(drawn["validation"]) & set(drawn["test"])
  shares = collections.Counter(synth_speech.split_of(synth_speech.sentence(rng)) for _ in range(4000))
  assert abs(shares["train"] / 4000 - synth_speech.SPLIT_SHARES["train"]) < 0.03


# espeak-ng.


def test_every_voice_and_variant_is_in_the_shipped_data():
  speakers = synth_speech.SPEAKERS
  assert len(speakers) == len({speaker.id for speaker in speakers}) == 384
  names = [f"{voice}+m1" for voice in synth_speech.VOICES] + [f"en+{variant}" for variant in synth_speech.VARIANTS]
  for name in names:
    samples = synth_speech.synthesize("hello there", name, PLAIN)
    assert samples.dtype == np.int16 and len(samples) > 0.3 * synth_speech.ESPEAK_RATE, name
  with pytest.raises(DataError, match="no voice"):
    synth_speech.synthesize("hello", "xx-nowhere", PLAIN)


def test_synthesis_does_not_depend_on_what_was_spoken_before():
  first = synth_speech.synthesize(MEDIUM, "en-us+f3", PLAIN, noise_seed=3)
  synth_speech.synthesize("something else entirely, spoken faster", "en-gb-scotland+klatt2",
                          synth_speech.Prosody(220, 70, 30, 2), noise_seed=8)
  assert np.array_equal(first, synth_speech.synthesize(MEDIUM, "en-us+f3", PLAIN, noise_seed=3))
  # f3 breathes: its noise follows the seed.
  assert not np.array_equal(first, synth_speech.synthesize(MEDIUM, "en-us+f3", PLAIN, noise_seed=4))


def test_utterances_last_longer_with_more_words_and_at_a_slower_rate():
  durations = [len(synth_speech.synthesize(text, "en+m3", PLAIN)) for text in (SHORT, MEDIUM, LONG)]
  assert durations[0] < durations[1] < durations[2]
  assert durations[2] > 2.5 * durations[0]
  slow = synth_speech.synthesize(MEDIUM, "en+m3", synth_speech.Prosody(130, 50, 50, 0))
  fast = synth_speech.synthesize(MEDIUM, "en+m3", synth_speech.Prosody(220, 50, 50, 0))
  assert len(slow) > 1.3 * len(fast)


def test_female_variants_and_higher_pitches_sound_higher():
  male = _median_f0(synth_speech.synthesize(MEDIUM, "en+m1", PLAIN))
  female = _median_f0(synth_speech.synthesize(MEDIUM, "en+f2", PLAIN))
  assert 70 < male < 180 and female > 1.4 * male
  low = _median_f0(synth_speech.synthesize(MEDIUM, "en+m1", synth_speech.Prosody(170, 30, 50, 0)))
  high = _median_f0(synth_speech.synthesize(MEDIUM, "en+m1", synth_speech.Prosody(170, 70, 50, 0)))
  assert high > 1.15 * low


# The utterances and the tfds builder.


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
  builder = synth_speech.SynthSpeech(data_dir=tmp_path_factory.mktemp("speech"), split_sizes=TINY, num_workers=1,
                                     file_format=builders.FILE_FORMAT)
  return dp.prepare(builder)


def _examples(builder, split):
  source = builder.as_data_source(split=split)
  decode = lambda value: bytes(value).decode()
  return [{**source[i], "id": decode(source[i]["id"]), "text": decode(source[i]["text"]),
           "speaker": decode(source[i]["speaker"])} for i in range(len(source))]


def test_build_writes_the_requested_utterances(tiny_build):
  metadata = tiny_build.info.metadata
  assert metadata["sample_rate"] == RATE and metadata["seed"] == 0 and metadata["split_sizes"] == TINY
  assert dp.dataset_info(tiny_build).vocabulary == synth_speech.VOCABULARY
  assert dp.read_report(tiny_build)["written"] == TINY
  speaker_ids = {speaker.id for speaker in synth_speech.SPEAKERS}
  for split, size in TINY.items():
    examples = _examples(tiny_build, split)
    assert sorted(example["id"] for example in examples) == [f"{split}/{i:06d}" for i in range(size)]
    for example in examples:
      audio = example["audio"]
      assert audio.dtype == np.int16 and audio.size > 0.5 * RATE
      assert example["num_samples"] == len(audio)
      assert example["text"] and set(example["text"]) <= set(synth_speech.VOCABULARY)
      assert synth_speech.split_of(example["text"]) == split
      assert example["speaker"] in speaker_ids
      assert _rms(audio) > 0.02 * 32767  # speech, not a near-silent file


def test_utterances_come_from_many_speakers_and_last_longer_with_more_words(tiny_build):
  examples = [example for split in TINY for example in _examples(tiny_build, split)]
  assert len({example["speaker"] for example in examples}) >= 12
  words = [len(example["text"].split()) for example in examples]
  seconds = [example["num_samples"] / RATE for example in examples]
  assert np.corrcoef(words, seconds)[0, 1] > 0.6
  assert 1.0 < np.mean(seconds) < 4.0


def test_a_rebuilt_utterance_is_identical_and_another_seed_differs(tiny_build):
  built = {example["id"]: example for example in _examples(tiny_build, "test")}
  again = synth_speech.generate_example(3, seed=0, split="test", sample_rate=RATE)
  assert np.array_equal(built["test/000003"]["audio"], again["audio"])
  assert built["test/000003"]["text"] == again["text"] and built["test/000003"]["speaker"] == again["speaker"]
  other = synth_speech.generate_example(3, seed=1, split="test", sample_rate=RATE)
  assert other["text"] != again["text"]
  assert not np.array_equal(other["audio"][: len(again["audio"])], again["audio"][: len(other["audio"])])


def test_a_build_with_another_seed_is_not_silently_reused(tiny_build):
  with pytest.raises(DataError, match="seed"):
    synth_speech.SynthSpeech(data_dir=tiny_build.data_dir_root, split_sizes=TINY, seed=3)
  with pytest.raises(DataError, match="split sizes"):
    synth_speech.SynthSpeech(data_dir=tiny_build.data_dir_root, split_sizes={"train": 4})


def test_get_builder_knows_synth_speech(tiny_build):
  assert "synth_speech" in dp.known_names()
  builder = dp.get_builder("synth_speech", data_dir=tiny_build.data_dir_root, split_sizes=TINY)
  assert builder.is_prepared() and isinstance(builder, synth_speech.SynthSpeech)
