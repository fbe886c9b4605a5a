"""The speech builders librispeech, wsj and speech_folder, from small trees in their exact layouts."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

import data_pipelines as dp
from afx.errors import DataError
from data_pipelines import audio_folder, builders, speech
from data_pipelines.librispeech import Librispeech
from data_pipelines.speech_folder import SpeechFolder
from data_pipelines.wsj import Wsj

UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ' "


def _tone(seconds, rate, freq=440.0):
  return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)


def _write(path, seconds, rate=16000, freq=440.0):
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, _tone(seconds, rate, freq), rate)


def _garbage(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"not audio at all" * 40)


def _build(builder_class, data_dir, **kwargs):
  builder = builder_class(data_dir=os.fspath(data_dir), file_format=builders.FILE_FORMAT, num_workers=1,
                          **kwargs)
  return dp.prepare(builder)


def _short(max_seconds):
  return speech.SpeechConfig(name=f"16k_max{max_seconds:g}s".replace(".", "_"), max_seconds=max_seconds)


def _text(value):
  return bytes(value).decode() if not isinstance(value, str) else value


def _read_split(builder, split):
  source = builder.as_data_source(split=split)
  examples = {}
  for i in range(len(source)):
    example = source[i]
    assert example["audio"].dtype == np.int16
    assert int(example["num_samples"]) == len(example["audio"])
    examples[_text(example["id"])] = {"text": _text(example["text"]), "speaker": _text(example["speaker"]),
                                      "samples": len(example["audio"])}
  return examples


def _report(builder):
  with open(os.path.join(builder.data_dir, builders.REPORT_FILE)) as f:
    return json.load(f)


def _skipped(report, reason):
  """{"split: file" prefix of each listed skip} of a reason, checking its count matches the list."""
  entry = report["skipped"][reason]
  assert entry["count"] == len(entry["files"])
  return sorted(line.split(" (")[0] for line in entry["files"])


def _one_line_error(build, *fragments):
  with pytest.raises(DataError) as caught:
    build()
  message = str(caught.value)
  assert "\n" not in message
  for fragment in fragments:
    assert str(fragment) in message
  return message


# librispeech


@pytest.fixture(scope="module")
def fake_librispeech(tmp_path_factory):
  """train-clean-100 (speakers 19 and 26, with every kind of bad utterance in 19/198) and dev-clean."""
  base = tmp_path_factory.mktemp("librispeech")
  subset = base / "LibriSpeech" / "train-clean-100"
  chapter = subset / "19" / "198"
  _write(chapter / "19-198-0000.flac", 0.5)
  _write(chapter / "19-198-0001.flac", 0.3)
  _write(chapter / "19-198-0002.flac", 0.3)  # no transcript line
  _garbage(chapter / "19-198-0004.flac")
  _write(chapter / "19-198-0005.flac", 0.3)  # empty transcript
  _write(chapter / "19-198-0006.flac", 1.0)  # longer than 0.8 s
  _write(chapter / "19-198-0007.flac", 0.3)  # a comma
  (chapter / "19-198.trans.txt").write_text(
      "19-198-0000 NORTHANGER ABBEY\n"
      "19-198-0001 THIS LITTLE WORK WAS FINISHED\n"
      "19-198-0001 THIS LITTLE WORK WAS FINISHED\n"
      "19-198-0003 LISTED BUT NEVER RECORDED\n"
      "19-198-0004 A BROKEN FILE\n"
      "19-198-0005\n"
      "19-198-0006 A LONG ONE\n"
      "19-198-0007 HELLO, WORLD\n"
  )
  _write(subset / "26" / "495" / "26-495-0000.flac", 0.4)
  (subset / "26" / "495" / "26-495.trans.txt").write_text("26-495-0000 IT'S THE SECOND SPEAKER\n")
  dev = base / "LibriSpeech" / "dev-clean" / "84" / "121123"
  _write(dev / "84-121123-0000.flac", 0.3)
  (dev / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
  return base


@pytest.fixture(scope="module")
def librispeech_built(tmp_path_factory, fake_librispeech):
  data_dir = tmp_path_factory.mktemp("librispeech_data")
  return _build(Librispeech, data_dir, manual_dir=fake_librispeech, config=_short(0.8), characters=UPPER)


def test_librispeech_builds_the_subsets_present(librispeech_built):
  builder = librispeech_built
  assert dp.sample_rate(builder) == 16000
  assert sorted(builder.info.splits) == ["dev_clean", "train_clean_100"]
  train = _read_split(builder, "train_clean_100")
  assert sorted(train) == ["19-198-0000", "19-198-0001", "26-495-0000"]
  assert train["19-198-0000"] == {"text": "NORTHANGER ABBEY", "speaker": "19", "samples": 8000}
  assert train["19-198-0001"]["samples"] == 4800
  assert train["26-495-0000"] == {"text": "IT'S THE SECOND SPEAKER", "speaker": "26", "samples": 6400}
  assert _read_split(builder, "dev_clean") == {
      "84-121123-0000": {"text": "GO DO YOU HEAR", "speaker": "84", "samples": 4800}}


def test_librispeech_reports_every_skip_and_the_missing_subsets(librispeech_built, fake_librispeech):
  report = _report(librispeech_built)
  assert report["written"] == {"train_clean_100": 3, "dev_clean": 1}
  assert _skipped(report, speech.EMPTY_TRANSCRIPT) == ["train_clean_100: 19-198-0002",
                                                       "train_clean_100: 19-198-0005"]
  assert "no line in 19-198.trans.txt" in " ".join(report["skipped"][speech.EMPTY_TRANSCRIPT]["files"])
  assert _skipped(report, "missing file") == ["train_clean_100: 19-198-0003"]
  assert _skipped(report, speech.UNREADABLE) == ["train_clean_100: 19-198-0004"]
  assert _skipped(report, speech.TOO_LONG) == ["train_clean_100: 19-198-0006"]
  assert _skipped(report, speech.OUTSIDE_CHARACTERS) == ["train_clean_100: 19-198-0007"]
  assert _skipped(report, "duplicate row") == ["train_clean_100: 19-198-0001"]
  assert report["num_skipped"] == 7
  root = fake_librispeech / "LibriSpeech"
  assert report["missing_splits"] == {
      split: str(root / folder) for split, folder in [
          ("train_clean_360", "train-clean-360"), ("train_other_500", "train-other-500"),
          ("dev_other", "dev-other"), ("test_clean", "test-clean"), ("test_other", "test-other")]}


def test_librispeech_accepts_the_librispeech_folder_itself(tmp_path, fake_librispeech, librispeech_built,
                                                           capsys):
  builder = _build(Librispeech, tmp_path, manual_dir=fake_librispeech / "LibriSpeech")
  assert "no train-clean-360, train-other-500, dev-other" in capsys.readouterr().out
  train = _read_split(builder, "train_clean_100")
  # The default config keeps 1 s utterances, and any character without `characters`.
  assert sorted(train) == ["19-198-0000", "19-198-0001", "19-198-0006", "19-198-0007", "26-495-0000"]
  assert train["19-198-0007"]["text"] == "HELLO, WORLD"
  assert _read_split(builder, "dev_clean") == _read_split(librispeech_built, "dev_clean")


def test_librispeech_missing_or_wrong_directory(tmp_path, fake_librispeech):
  missing = tmp_path / "not_downloaded"
  _one_line_error(lambda: Librispeech(data_dir=str(tmp_path), manual_dir=missing), missing, "openslr.org/12")
  (tmp_path / "empty").mkdir()
  _one_line_error(lambda: Librispeech(data_dir=str(tmp_path), manual_dir=tmp_path / "empty"),
                  tmp_path / "empty", "train-clean-100", "LibriSpeech/")
  subset = fake_librispeech / "LibriSpeech" / "train-clean-100"
  _one_line_error(lambda: Librispeech(data_dir=str(tmp_path), manual_dir=subset), subset, "two levels up")
  _one_line_error(lambda: dp.prepare(Librispeech(data_dir=str(tmp_path))), "manual_dir")


# wsj


@pytest.fixture(scope="module")
def fake_wsj(tmp_path_factory):
  """ESPnet's egs2/wsj/asr1 with dump/raw/{train_si284,test_dev93} (no test_eval92); manual_dir is dump/raw.

  train_si284: 011c0201 (relative to manual_dir, listed twice), 011c0202 (absolute path, 8 kHz flac),
  and one utterance of each bad kind.  test_dev93: a path relative to the recipe folder, no utt2spk.
  """
  recipe = tmp_path_factory.mktemp("wsj") / "asr1"
  data = recipe / "dump" / "raw"
  train = data / "train_si284"
  train.mkdir(parents=True)
  _write(train / "wav" / "011c0201.wav", 0.5)
  elsewhere = recipe.parent / "converted" / "011c0202.flac"
  _write(elsewhere, 0.5, rate=8000)
  _write(train / "wav" / "011c0205.wav", 0.3)
  _write(train / "wav" / "011c0207.wav", 0.3)
  _write(train / "wav" / "011c0208.wav", 0.3)
  _write(train / "wav" / "011c0209.wav", 1.2)
  _garbage(train / "wav" / "011c0211.wav")
  (train / "wav.scp").write_text(
      "011c0201 train_si284/wav/011c0201.wav\n"
      f"011c0202 {elsewhere}\n"
      "011c0203 /opt/kaldi/tools/sph2pipe_v2.5/sph2pipe -f wav /corpora/wsj0/si_tr_s/011/011c0203.wv1 |\n"
      "011c0204 train_si284/wav/011c0204.wav\n"
      "011c0205 train_si284/wav/011c0205.wav\n"
      "011c0207 train_si284/wav/011c0207.wav\n"
      "011c0208 train_si284/wav/011c0208.wav\n"
      "011c0209 train_si284/wav/011c0209.wav\n"
      "011c0210\n"
      "011c0211 train_si284/wav/011c0211.wav\n"
      "011c0201 train_si284/wav/011c0201.wav\n"
  )
  (train / "text").write_text(
      "011c0201 THE SALE OF THE HOTELS\n"
      "011c0202 IS PART OF HOLIDAY'S STRATEGY\n"
      "011c0203 A PIPED ONE\n"
      "011c0204 THE FILE IS GONE\n"
      "011c0206 NOT IN WAV SCP\n"
      "011c0207\n"
      "011c0208 lower case\n"
      "011c0209 TOO LONG\n"
      "011c0210 MALFORMED\n"
      "011c0211 UNREADABLE\n"
  )
  (train / "utt2spk").write_text("".join(f"011c02{i:02d} 011\n" for i in range(1, 12)))
  dev = data / "test_dev93"
  dev.mkdir()
  _write(data / "org" / "test_dev93" / "data" / "format.1" / "4k0c0301.flac", 0.4)
  (dev / "wav.scp").write_text("4k0c0301 dump/raw/org/test_dev93/data/format.1/4k0c0301.flac\n")
  (dev / "text").write_text("4k0c0301 NEW YORK\n")
  return data


@pytest.fixture(scope="module")
def wsj_built(tmp_path_factory, fake_wsj):
  data_dir = tmp_path_factory.mktemp("wsj_data")
  return _build(Wsj, data_dir, manual_dir=fake_wsj, config=_short(1.0), characters=UPPER)


def test_wsj_builds_the_data_directories_present(wsj_built):
  builder = wsj_built
  assert dp.sample_rate(builder) == 16000
  assert sorted(builder.info.splits) == ["test_dev93", "train_si284"]
  assert _read_split(builder, "train_si284") == {
      "011c0201": {"text": "THE SALE OF THE HOTELS", "speaker": "011", "samples": 8000},
      "011c0202": {"text": "IS PART OF HOLIDAY'S STRATEGY", "speaker": "011", "samples": 8000},  # from 8 kHz
  }
  assert _read_split(builder, "test_dev93") == {
      "4k0c0301": {"text": "NEW YORK", "speaker": "", "samples": 6400}}


def test_wsj_reports_every_skip(wsj_built, fake_wsj):
  report = _report(wsj_built)
  assert report["written"] == {"train_si284": 2, "test_dev93": 1}
  pipe = "wav.scp pipe commands are not run: convert with sph2pipe first"
  assert _skipped(report, pipe) == ["train_si284: 011c0203"]
  assert "sph2pipe -f wav" in report["skipped"][pipe]["files"][0]
  assert _skipped(report, "missing file") == ["train_si284: 011c0204", "train_si284: 011c0206"]
  assert _skipped(report, speech.EMPTY_TRANSCRIPT) == ["train_si284: 011c0205", "train_si284: 011c0207"]
  assert _skipped(report, speech.OUTSIDE_CHARACTERS) == ["train_si284: 011c0208"]
  assert _skipped(report, speech.TOO_LONG) == ["train_si284: 011c0209"]
  assert _skipped(report, "malformed line") == ["train_si284: wav.scp line 9"]
  assert _skipped(report, speech.UNREADABLE) == ["train_si284: 011c0211"]
  assert _skipped(report, "duplicate row") == ["train_si284: 011c0201"]
  assert report["num_skipped"] == 10
  assert report["missing_splits"] == {"test_eval92": str(fake_wsj / "test_eval92")}


def test_wsj_missing_or_wrong_directory(tmp_path, fake_wsj):
  missing = tmp_path / "nowhere"
  _one_line_error(lambda: Wsj(data_dir=str(tmp_path), manual_dir=missing), missing, "train_si284")
  split = fake_wsj / "train_si284"
  _one_line_error(lambda: Wsj(data_dir=str(tmp_path), manual_dir=split), split, "pass its parent")
  broken = tmp_path / "broken"
  (broken / "test_eval92").mkdir(parents=True)
  (broken / "test_eval92" / "wav.scp").write_text("x a.wav\n")
  _one_line_error(lambda: Wsj(data_dir=str(tmp_path), manual_dir=broken), broken / "test_eval92" / "text")


# speech_folder


def _speech_folder(root, rows, header="file,text,split,speaker"):
  root.mkdir(parents=True, exist_ok=True)
  (root / "transcripts.csv").write_text("\n".join([header, *rows]) + "\n")
  return root


@pytest.fixture(scope="module")
def fake_speech_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("speech_folder") / "mine"
  _write(root / "a.wav", 0.5)
  _write(root / "sub" / "b.flac", 0.5, rate=22050)
  sf.write(root / "c.ogg", _tone(0.3, 16000), 16000)
  _write(root / "d.wav", 0.3)
  _write(root / "empty.wav", 0.3)
  _write(root / "long.wav", 1.5)
  _garbage(root / "bad.wav")
  return _speech_folder(root, [
      "a.wav,hello world,train,alice",
      'sub/b.flac,"yes, and no",train,',
      "c.ogg,good morning,test,bob",
      "d.wav,wrong split,valid,bob",
      "a.wav,hello again,test,alice",
      "missing.wav,gone,train,",
      "empty.wav,,train,",
      "long.wav,a whole lecture,train,",
      "bad.wav,broken,test,",
  ])


def test_speech_folder_builds_and_reports(tmp_path, fake_speech_folder):
  builder = _build(SpeechFolder, tmp_path, folder=fake_speech_folder, config=_short(1.0))
  assert dp.sample_rate(builder) == 16000
  assert sorted(builder.info.splits) == ["test", "train"]  # no row asked for validation
  assert _read_split(builder, "train") == {
      "a.wav": {"text": "hello world", "speaker": "alice", "samples": 8000},
      "sub/b.flac": {"text": "yes, and no", "speaker": "", "samples": 8000},  # from 22.05 kHz
  }
  assert _read_split(builder, "test") == {
      "c.ogg": {"text": "good morning", "speaker": "bob", "samples": 4800}}
  report = _report(builder)
  assert report["written"] == {"train": 2, "test": 1}
  assert _skipped(report, audio_folder.UNKNOWN_SPLIT) == ["transcripts.csv: d.wav"]
  assert _skipped(report, audio_folder.DUPLICATE_ROW) == ["transcripts.csv: a.wav"]
  assert _skipped(report, "missing file") == ["train: missing.wav"]
  assert _skipped(report, speech.EMPTY_TRANSCRIPT) == ["train: empty.wav"]
  assert _skipped(report, speech.TOO_LONG) == ["train: long.wav"]
  long_file = report["skipped"][speech.TOO_LONG]["files"][0]
  assert "1.50 s > 1 s; cut it into utterances or raise max_seconds" in long_file
  assert _skipped(report, speech.UNREADABLE) == ["test: bad.wav"]
  assert report["num_skipped"] == 6


def test_speech_folder_characters(tmp_path, fake_speech_folder):
  builder = _build(SpeechFolder, tmp_path, folder=fake_speech_folder,
                   characters="abcdefghijklmnopqrstuvwxyz ")
  assert sorted(_read_split(builder, "train")) == ["a.wav", "long.wav"]  # long.wav fits 36 s
  assert _skipped(_report(builder), speech.OUTSIDE_CHARACTERS) == ["train: sub/b.flac"]


def test_speech_folder_hash_split_is_stable(tmp_path):
  names = [f"take_{i}.wav" for i in range(12)]
  folder = tmp_path / "unsplit"
  for name in names:
    _write(folder / name, 0.3)
  _speech_folder(folder, [f"{name},take {i}" for i, name in enumerate(names)], header="file,text")
  assignments = []
  for data_dir in ("one", "two"):
    builder = _build(SpeechFolder, tmp_path / data_dir, folder=folder)
    assignments.append({clip: split for split in builder.info.splits for clip in _read_split(builder, split)})
  assert assignments[0] == assignments[1] == {name: audio_folder.hash_split(name) for name in names}


def test_speech_folder_missing_folder_or_transcripts(tmp_path):
  missing = tmp_path / "nowhere"
  _one_line_error(lambda: SpeechFolder(data_dir=str(tmp_path), folder=missing), missing, "transcripts.csv")
  (tmp_path / "empty").mkdir()
  _one_line_error(lambda: SpeechFolder(data_dir=str(tmp_path), folder=tmp_path / "empty"),
                  tmp_path / "empty" / "transcripts.csv", "file,text")
  folder = _speech_folder(tmp_path / "empty", ["a.wav,dog"], header="file,labels")
  _one_line_error(lambda: SpeechFolder(data_dir=str(tmp_path), folder=folder), "no column text")
  _one_line_error(lambda: SpeechFolder(data_dir=str(tmp_path)), "folder=")


def test_speech_folder_with_no_usable_file(tmp_path):
  folder = tmp_path / "broken"
  _garbage(folder / "x.wav")
  _speech_folder(folder, ["x.wav,hello,train", "y.wav,gone,test"], header="file,text,split")
  _one_line_error(lambda: _build(SpeechFolder, tmp_path / "d", folder=folder), "no usable utterance", "x.wav")


# the registry


def test_get_builder_knows_librispeech_and_wsj(tmp_path, fake_librispeech, fake_wsj):
  librispeech = dp.get_builder("librispeech/16k", data_dir=tmp_path, manual_dir=fake_librispeech)
  assert isinstance(librispeech, Librispeech)
  assert isinstance(dp.get_builder("wsj", data_dir=tmp_path, manual_dir=fake_wsj), Wsj)


def test_speech_folders_get_their_own_data_dirs(tmp_path, fake_speech_folder):
  other = _speech_folder(tmp_path / "other", ["a.wav,hi"], header="file,text")
  one, two = (os.fspath(dp.get_builder("speech_folder", data_dir=tmp_path / "d", folder=folder).data_dir)
              for folder in (fake_speech_folder, other))
  assert one != two
  assert one.startswith(os.path.join(str(tmp_path / "d"), "speech_folder-"))
