"""The audioset and esc50 builders, from fake manual directories in the official layouts."""

import json
import os

import ml_collections
import numpy as np
import pytest

import data_pipelines as dp
from afx.audio.io import write_audio
from afx.errors import DataError
from afx.train import data as afx_data
from afx.train.data import open_dataset


def _tone(seconds, rate, freq=440.0):
  return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def _read_split(builder, split):
  source = builder.as_data_source(split=split)
  return {bytes(source[i]["id"]).decode(): source[i] for i in range(len(source))}


def _report(builder):
  with open(os.path.join(builder.data_dir, "build_report.json")) as f:
    return json.load(f)


def _one_line_error(build, match):
  with pytest.raises(DataError, match=match) as caught:
    build()
  assert "\n" not in str(caught.value)
  return str(caught.value)


# audioset

SEGMENTS_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=4, num_segs=4, num_unique_labels=4, num_positive_labels=6\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


@pytest.fixture
def fake_audioset(tmp_path):
  """class_labels_indices.csv (rows out of index order), balanced and eval segments, audio/.

  balanced_train: --4gqARaEJE (Bark, Dog; 0.5 s at 22.05 kHz in a subfolder), -0RWZT-miFs
  (Music; 0.25 s at 48 kHz), missingAud1 (no audio file), badLabel_01 (a mid not in the classes).
  eval: evalClip001 (Male speech; flac at 48 kHz), and PANNs-named YevalClip002.wav.
  """
  root = tmp_path / "audioset"
  (root / "audio" / "balanced_train").mkdir(parents=True)
  (root / "audio" / "eval").mkdir()
  (root / "class_labels_indices.csv").write_text(
      "index,mid,display_name\n"
      '2,/m/04rlf,"Music"\n'
      '0,/m/05zppz,"Male speech, man speaking"\n'
      '1,/m/05tny_,"Bark"\n'
      '3,/m/0bt9lr,"Dog"\n'
  )
  (root / "balanced_train_segments.csv").write_text(
      SEGMENTS_HEADER
      + '--4gqARaEJE, 0.000, 10.000, "/m/05tny_,/m/0bt9lr"\n'
      + '-0RWZT-miFs, 30.000, 40.000, "/m/04rlf"\n'
      + 'missingAud1, 10.000, 20.000, "/m/04rlf"\n'
      + 'badLabel_01, 0.000, 10.000, "/m/0bt9lr,/m/notaclass"\n'
  )
  (root / "eval_segments.csv").write_text(
      SEGMENTS_HEADER
      + 'evalClip001, 0.000, 10.000, "/m/05zppz"\n'
      + 'evalClip002, 20.000, 30.000, "/m/04rlf,/m/05zppz"\n'
  )
  write_audio(root / "audio" / "balanced_train" / "--4gqARaEJE.wav", _tone(0.5, 22050), 22050)
  write_audio(root / "audio" / "-0RWZT-miFs.wav", _tone(0.25, 48000), 48000)
  write_audio(root / "audio" / "badLabel_01.wav", _tone(0.25, 48000), 48000)
  write_audio(root / "audio" / "eval" / "evalClip001.flac", _tone(0.5, 48000), 48000)
  write_audio(root / "audio" / "eval" / "YevalClip002.wav", _tone(0.25, 22050), 22050)
  return root


def test_audioset_16k_builds_balanced_and_eval(tmp_path, fake_audioset):
  builder = dp.prepare(dp.get_builder("audioset/16k", data_dir=tmp_path / "data",
                                      manual_dir=fake_audioset))
  assert dp.class_names(builder) == ["Male speech, man speaking", "Bark", "Music", "Dog"]
  assert dp.sample_rate(builder) == 16000 and builder.info.metadata["sample_rate"] == 16000
  # No unbalanced_train_segments.csv: that split is simply not built.
  assert sorted(builder.info.splits) == ["balanced_train", "eval"]
  train = _read_split(builder, "balanced_train")
  assert sorted(train) == ["--4gqARaEJE", "-0RWZT-miFs"]
  assert list(train["--4gqARaEJE"]["labels"]) == [1, 3]  # Bark and Dog
  assert list(train["-0RWZT-miFs"]["labels"]) == [2]
  assert train["--4gqARaEJE"]["audio"].dtype == np.int16
  assert len(train["--4gqARaEJE"]["audio"]) == 8000  # 0.5 s from 22.05 kHz
  assert len(train["-0RWZT-miFs"]["audio"]) == 4000  # 0.25 s from 48 kHz, not padded to 10 s
  test = _read_split(builder, "eval")
  assert sorted(test) == ["evalClip001", "evalClip002"]
  assert list(test["evalClip002"]["labels"]) == [0, 2]
  assert len(test["evalClip001"]["audio"]) == 8000  # a flac in a subfolder
  report = _report(builder)
  assert report["written"] == {"balanced_train": 2, "eval": 2}
  assert report["skipped"]["missing audio"]["count"] == 1
  assert "balanced_train: missingAud1" in report["skipped"]["missing audio"]["files"][0]
  assert report["skipped"]["label not in class_labels_indices.csv"]["count"] == 1
  assert "/m/notaclass" in report["skipped"]["label not in class_labels_indices.csv"]["files"][0]
  assert report["num_skipped"] == 2


def test_audioset_32k_with_unbalanced_train(tmp_path, fake_audioset):
  (fake_audioset / "unbalanced_train_segments.csv").write_text(
      SEGMENTS_HEADER
      + 'unbal000001, 0.000, 10.000, "/m/0bt9lr"\n'
      + 'unbal000002, 0.000, 10.000, "/m/05tny_"\n'  # audio not downloaded
  )
  write_audio(fake_audioset / "audio" / "unbal000001.wav", _tone(0.5, 22050), 22050)
  builder = dp.prepare(dp.get_builder("audioset/32k", data_dir=tmp_path / "data",
                                      manual_dir=fake_audioset))
  assert dp.sample_rate(builder) == 32000
  assert sorted(builder.info.splits) == ["balanced_train", "eval", "unbalanced_train"]
  unbalanced = _read_split(builder, "unbalanced_train")
  assert sorted(unbalanced) == ["unbal000001"]
  assert list(unbalanced["unbal000001"]["labels"]) == [3]
  assert len(unbalanced["unbal000001"]["audio"]) == 16000  # 0.5 s at 32 kHz
  assert len(_read_split(builder, "balanced_train")["-0RWZT-miFs"]["audio"]) == 8000
  assert _report(builder)["skipped"]["missing audio"]["count"] == 2


@pytest.mark.parametrize("csv_name", ["balanced_train_segments.csv", "eval_segments.csv",
                                      "class_labels_indices.csv"])
def test_audioset_missing_required_csv(tmp_path, fake_audioset, csv_name):
  (fake_audioset / csv_name).unlink()
  message = _one_line_error(
      lambda: dp.get_builder("audioset/16k", data_dir=tmp_path, manual_dir=fake_audioset),
      "missing")
  assert str(fake_audioset / csv_name) in message


def test_audioset_needs_manual_dir(tmp_path):
  _one_line_error(lambda: dp.prepare(dp.get_builder("audioset", data_dir=tmp_path)), "manual_dir")


# esc50

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take\n"
# (fold, target, category) per clip; rows not in target order, as in the real esc50.csv.
ESC50_CLIPS = [(fold, target, category) for fold in range(1, 6)
               for target, category in [(2, "pig"), (0, "dog"), (1, "rooster")]]


def _esc50_name(fold, target):
  return f"{fold}-{100 + target}-A-{target}.wav"


@pytest.fixture(scope="module")
def fake_esc50(tmp_path_factory):
  """3 classes x 5 folds of 0.2 s clips at 44.1 kHz; 3-101-A-1.wav is listed but absent."""
  root = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
  (root / "audio").mkdir(parents=True)
  (root / "meta").mkdir()
  rows = [f"{_esc50_name(fold, target)},{fold},{target},{category},False,{100 + target},A"
          for fold, target, category in ESC50_CLIPS]
  (root / "meta" / "esc50.csv").write_text(ESC50_HEADER + "\n".join(rows) + "\n")
  for fold, target, _ in ESC50_CLIPS:
    if (fold, target) != (3, 1):
      write_audio(root / "audio" / _esc50_name(fold, target), _tone(0.2, 44100, 200.0 * (target + 1)),
                  44100)
  return root


@pytest.fixture(scope="module")
def esc50_16k(tmp_path_factory, fake_esc50):
  data_dir = tmp_path_factory.mktemp("esc50_data")
  return dp.prepare(dp.get_builder("esc50/16k", data_dir=data_dir, manual_dir=fake_esc50)), data_dir


def test_esc50_builds_folds(esc50_16k):
  builder, _ = esc50_16k
  assert dp.class_names(builder) == ["dog", "rooster", "pig"]  # by target
  assert dp.sample_rate(builder) == 16000 and builder.info.metadata["sample_rate"] == 16000
  assert sorted(builder.info.splits) == ["fold1", "fold2", "fold3", "fold4", "fold5"]
  fold1 = _read_split(builder, "fold1")
  assert sorted(fold1) == ["1-100-A-0.wav", "1-101-A-1.wav", "1-102-A-2.wav"]
  assert list(fold1["1-102-A-2.wav"]["labels"]) == [2]  # pig
  assert list(fold1["1-100-A-0.wav"]["labels"]) == [0]  # dog
  assert len(fold1["1-100-A-0.wav"]["audio"]) == 3200  # 0.2 s from 44.1 kHz
  report = _report(builder)
  assert report["written"] == {"fold1": 3, "fold2": 3, "fold3": 2, "fold4": 3, "fold5": 3}
  assert report["skipped"]["missing file"]["count"] == 1
  assert report["skipped"]["missing file"]["files"][0].startswith("fold3: 3-101-A-1.wav")


def test_esc50_32k(tmp_path, fake_esc50):
  builder = dp.prepare(dp.get_builder("esc50/32k", data_dir=tmp_path, manual_dir=fake_esc50))
  assert dp.sample_rate(builder) == 32000
  assert len(_read_split(builder, "fold5")["5-101-A-1.wav"]["audio"]) == 6400  # 0.2 s at 32 kHz


def test_esc50_leave_one_fold_out_through_afx(esc50_16k, fake_esc50):
  _, data_dir = esc50_16k
  data = ml_collections.ConfigDict({"name": "esc50/16k", "data_dir": str(data_dir),
                                    "manual_dir": str(fake_esc50)})
  dataset = open_dataset(data)
  train = dataset.source("fold1+fold2+fold3+fold4")
  train_ids = {bytes(train[i]["id"]).decode() for i in range(len(train))}
  assert len(train) == 11
  assert train_ids == {_esc50_name(fold, target) for fold, target, _ in ESC50_CLIPS
                       if fold != 5 and (fold, target) != (3, 1)}
  assert len(dataset.source("fold5")) == 3
  with pytest.raises(DataError, match="no split 'fold6'.*fold1, fold2, fold3, fold4, fold5"):
    dataset.source("fold1+fold6")
  with pytest.raises(DataError, match="no split 'folds'.*fold1"):
    dataset.source("folds")


def test_esc50_missing_meta_csv(tmp_path):
  root = tmp_path / "ESC-50"
  (root / "audio").mkdir(parents=True)
  message = _one_line_error(lambda: dp.get_builder("esc50", data_dir=tmp_path, manual_dir=root),
                            "esc50.csv")
  assert str(root / "meta" / "esc50.csv") in message and "ESC-50" in message


def test_small_splits_are_decoded_once_and_then_served_from_memory(esc50_16k, fake_esc50, monkeypatch):
  _, data_dir = esc50_16k
  data = ml_collections.ConfigDict({"name": "esc50/16k", "data_dir": str(data_dir),
                                    "manual_dir": str(fake_esc50)})
  dataset = open_dataset(data)
  source = dataset.source("fold2")
  assert isinstance(source, afx_data.InMemorySource)
  stored = dataset.builder.as_data_source(split="fold2")
  first = [source[i] for i in range(len(source))]
  for got, want in zip(first, stored):
    assert bytes(got["id"]) == bytes(want["id"]) and np.array_equal(got["audio"], want["audio"])
  assert open_dataset(data).source("fold2") is source  # later runs in this process share it
  assert all(source[i] is first[i] for i in range(len(source)))  # not decoded again
  monkeypatch.setattr(afx_data, "IN_MEMORY_BYTES", 0)  # a split too large to keep: read from disk
  assert not isinstance(dataset.source("fold3"), afx_data.InMemorySource)
