"""The tfds builders: synth_events, fsd50k from a fake manual directory, audio_folder."""

import json
import os

import numpy as np
import pytest

import data_pipelines as dp
from afx.audio.io import write_audio
from afx.errors import DataError
from data_pipelines import audio_folder, builders

SMALL = {"train": 40, "validation": 8, "test": 8}


def _read_split(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _by_id(examples):
  return {bytes(ex["id"]).decode(): ex for ex in examples}


def _report(builder):
  with open(os.path.join(builder.data_dir, "build_report.json")) as f:
    return json.load(f)


# synth_events


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synth")
  return dp.prepare(dp.get_builder("synth_events", data_dir=data_dir, split_sizes=SMALL))


def test_synth_events_examples(small_synth):
  names = dp.class_names(small_synth)
  assert len(names) >= 20 and len(set(names)) == len(names)
  assert dp.sample_rate(small_synth) == 16000
  counts = []
  for split, size in SMALL.items():
    examples = _read_split(small_synth, split)
    assert len(examples) == size
    for ex in examples:
      assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (16000,)
      labels = list(ex["labels"])
      assert len(set(labels)) == len(labels) <= 3
      assert all(0 <= label < len(names) for label in labels)
      counts.append(len(labels))
      peak = np.abs(ex["audio"].astype(np.int32)).max()
      assert 0.2 * 32767 < peak < 32767  # normalised to -12..-1 dBFS
  # 0-3 events at about 0.1/0.4/0.3/0.2 over 56 clips: several counts must occur.
  assert len(set(counts)) >= 3 and max(counts) <= 3


def test_synth_events_report(small_synth):
  report = _report(small_synth)
  assert report["written"] == SMALL
  assert report["num_skipped"] == 0


def test_synth_events_single_label(tmp_path):
  builder = dp.prepare(dp.get_builder(
      "synth_events/single_label", data_dir=tmp_path, split_sizes={"train": 24, "validation": 4,
                                                                    "test": 4}))
  for split in ("train", "validation", "test"):
    assert all(len(ex["labels"]) == 1 for ex in _read_split(builder, split))


def test_synth_events_is_deterministic_across_seeds_and_worker_counts(tmp_path, small_synth):
  sizes = {"train": 80, "validation": 4, "test": 4}  # 80 > 2 chunks: really uses 2 processes
  one = dp.prepare(dp.get_builder("synth_events", data_dir=tmp_path / "a", split_sizes=sizes,
                                  num_workers=1))
  two = dp.prepare(dp.get_builder("synth_events", data_dir=tmp_path / "b", split_sizes=sizes,
                                  num_workers=2))
  other_seed = dp.prepare(dp.get_builder("synth_events", data_dir=tmp_path / "c",
                                         split_sizes=sizes, seed=1, num_workers=1))
  train_one = _by_id(_read_split(one, "train"))
  train_two = _by_id(_read_split(two, "train"))
  train_other = _by_id(_read_split(other_seed, "train"))
  assert train_one.keys() == train_two.keys() == train_other.keys()
  for clip_id, ex in train_one.items():
    assert np.array_equal(ex["audio"], train_two[clip_id]["audio"])
    assert list(ex["labels"]) == list(train_two[clip_id]["labels"])
  # Clip i does not depend on the split size either.
  small_train = _by_id(_read_split(small_synth, "train"))
  assert all(np.array_equal(ex["audio"], train_one[i]["audio"]) for i, ex in small_train.items())
  differing = sum(not np.array_equal(ex["audio"], train_other[i]["audio"])
                  for i, ex in train_one.items())
  assert differing == len(train_one)


def test_prepare_twice_does_not_rebuild(small_synth):
  report_path = os.path.join(small_synth.data_dir, "build_report.json")
  before = os.stat(report_path).st_mtime_ns
  again = dp.get_builder("synth_events", data_dir=small_synth.data_dir_root, split_sizes=SMALL)
  assert again.is_prepared()
  dp.prepare(again)
  assert os.stat(report_path).st_mtime_ns == before


def test_built_dataset_with_other_seed_is_not_silently_reused(small_synth):
  with pytest.raises(DataError, match="seed"):
    dp.get_builder("synth_events", data_dir=small_synth.data_dir_root, split_sizes=SMALL, seed=5)


def test_unknown_names_list_the_known_ones(tmp_path):
  with pytest.raises(DataError, match="synth_events.*fsd50k.*audio_folder"):
    dp.get_builder("synth_event", data_dir=tmp_path)
  with pytest.raises(DataError, match="single_label"):
    dp.get_builder("synth_events/one_label", data_dir=tmp_path)


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("AFX_DATA_DIR", str(tmp_path))
  assert dp.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("AFX_DATA_DIR")
  assert dp.default_data_dir() == os.path.join(os.path.expanduser("~"), "afx_data")


# fsd50k


def _tone(seconds, rate, freq=440.0):
  return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def fake_fsd50k(tmp_path):
  """6 dev clips (4 train, 2 val) and 3 eval clips at 44.1 kHz; d3 is cut, d6 has a bad label."""
  root = tmp_path / "FSD50K"
  for sub in ("FSD50K.dev_audio", "FSD50K.eval_audio", "FSD50K.ground_truth"):
    (root / sub).mkdir(parents=True)
  (root / "FSD50K.ground_truth" / "vocabulary.csv").write_text(
      "0,Bark,/m/05tny_\n1,Dog,/m/0bt9lr\n2,Guitar,/m/0342h\n"
  )
  (root / "FSD50K.ground_truth" / "dev.csv").write_text(
      "fname,labels,mids,split\n"
      '1,"Bark,Dog","/m/05tny_,/m/0bt9lr",train\n'
      "2,Guitar,/m/0342h,train\n"
      "3,Dog,/m/0bt9lr,train\n"
      "4,Guitar,/m/0342h,train\n"
      "5,Bark,/m/05tny_,val\n"
      '6,"Kazoo,Dog","/m/x,/m/0bt9lr",val\n'
  )
  (root / "FSD50K.ground_truth" / "eval.csv").write_text(
      "fname,labels,mids\n"
      "7,Guitar,/m/0342h\n"
      '8,"Dog,Guitar","/m/0bt9lr,/m/0342h"\n'
      "9,Bark,/m/05tny_\n"
  )
  for fname, seconds in [(1, 0.5), (2, 0.25), (3, 0.5), (4, 0.3), (5, 0.5), (6, 0.5)]:
    write_audio(root / "FSD50K.dev_audio" / f"{fname}.wav", _tone(seconds, 44100), 44100)
  for fname in (7, 8, 9):
    write_audio(root / "FSD50K.eval_audio" / f"{fname}.wav", _tone(0.2, 44100), 44100)
  _truncate(root / "FSD50K.dev_audio" / "3.wav")
  return root


def test_fsd50k_builds_splits_and_reports_skips(tmp_path, fake_fsd50k):
  builder = dp.prepare(dp.get_builder("fsd50k", data_dir=tmp_path / "data", manual_dir=fake_fsd50k))
  assert dp.class_names(builder) == ["Bark", "Dog", "Guitar"]
  assert dp.sample_rate(builder) == 16000
  train = _by_id(_read_split(builder, "train"))
  assert sorted(train) == ["1", "2", "4"]
  assert list(train["1"]["labels"]) == [0, 1]
  assert train["1"]["audio"].dtype == np.int16 and len(train["1"]["audio"]) == 8000  # 0.5 s
  assert len(train["2"]["audio"]) == 4000  # variable lengths kept
  assert sorted(_by_id(_read_split(builder, "validation"))) == ["5"]
  assert sorted(_by_id(_read_split(builder, "test"))) == ["7", "8", "9"]
  report = _report(builder)
  assert report["written"] == {"train": 3, "validation": 1, "test": 3}
  assert report["skipped"]["truncated audio"]["count"] == 1
  assert "3.wav" in report["skipped"]["truncated audio"]["files"][0]
  assert report["skipped"]["label not in vocabulary"]["count"] == 1
  assert "6.wav" in report["skipped"]["label not in vocabulary"]["files"][0]
  assert report["num_skipped"] == 2


def test_fsd50k_reopens_built_data_without_manual_dir(tmp_path, fake_fsd50k):
  dp.prepare(dp.get_builder("fsd50k", data_dir=tmp_path, manual_dir=fake_fsd50k))
  reopened = dp.get_builder("fsd50k", data_dir=tmp_path)
  assert reopened.is_prepared()
  assert dp.class_names(reopened) == ["Bark", "Dog", "Guitar"]


def test_fsd50k_manual_dir_given_to_prepare(tmp_path, fake_fsd50k):
  builder = dp.prepare(dp.get_builder("fsd50k", data_dir=tmp_path), manual_dir=fake_fsd50k)
  assert builder.is_prepared() and dp.class_names(builder) == ["Bark", "Dog", "Guitar"]


def test_fsd50k_missing_manual_dir(tmp_path):
  missing = tmp_path / "not_downloaded"
  with pytest.raises(DataError, match="4060432") as caught:
    dp.get_builder("fsd50k", data_dir=tmp_path, manual_dir=missing)
  assert str(missing) in str(caught.value)
  with pytest.raises(DataError, match="manual_dir"):
    dp.prepare(dp.get_builder("fsd50k", data_dir=tmp_path))


def test_fsd50k_missing_csv(tmp_path, fake_fsd50k):
  (fake_fsd50k / "FSD50K.ground_truth" / "eval.csv").unlink()
  with pytest.raises(DataError, match="eval.csv"):
    dp.get_builder("fsd50k", data_dir=tmp_path, manual_dir=fake_fsd50k)


# audio_folder


def _make_folder(root, with_split):
  root.mkdir()
  (root / "sub").mkdir()
  write_audio(root / "a.wav", _tone(0.5, 16000), 16000)
  write_audio(root / "sub" / "b.flac", _tone(0.5, 22050, 300.0), 22050)
  write_audio(root / "c.wav", _tone(0.25, 16000), 16000)
  (root / "bad.wav").write_bytes(b"not audio at all" * 50)
  write_audio(root / "d.wav", _tone(0.25, 16000), 16000)
  if with_split:
    rows = ["a.wav,dog,train", 'sub/b.flac,"dog,cat",train', "c.wav,cat,test",
            "bad.wav,cat,train", "d.wav,dog,valid"]
    header = "file,labels,split"
  else:
    rows = ["a.wav,dog", 'sub/b.flac,"dog,cat"', "c.wav,cat", "bad.wav,cat", "d.wav,"]
    header = "file,labels"
  (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
  return root


def test_audio_folder_with_split_column(tmp_path):
  folder = _make_folder(tmp_path / "mine", with_split=True)
  builder = dp.prepare(dp.get_builder("audio_folder", data_dir=tmp_path / "data", folder=folder))
  assert dp.class_names(builder) == ["cat", "dog"]
  train = _by_id(_read_split(builder, "train"))
  assert sorted(train) == ["a.wav", "sub/b.flac"]
  assert list(train["sub/b.flac"]["labels"]) == [0, 1]
  assert len(train["sub/b.flac"]["audio"]) == 8000  # 0.5 s resampled from 22.05 kHz to 16 kHz
  assert sorted(_by_id(_read_split(builder, "test"))) == ["c.wav"]
  assert "validation" not in builder.info.splits  # no row asked for it
  report = _report(builder)
  assert report["written"] == {"train": 2, "test": 1}
  assert report["skipped"]["unreadable audio"]["count"] == 1
  assert "bad.wav" in report["skipped"]["unreadable audio"]["files"][0]
  assert report["skipped"]["unknown split"]["count"] == 1
  assert "d.wav" in report["skipped"]["unknown split"]["files"][0]


def test_audio_folder_without_split_column(tmp_path):
  folder = _make_folder(tmp_path / "mine", with_split=False)
  builder = dp.prepare(dp.get_builder("audio_folder", data_dir=tmp_path / "data", folder=folder))
  ids = {}
  for split in builder.info.splits:
    for clip_id in _by_id(_read_split(builder, split)):
      ids[clip_id] = split
  assert sorted(ids) == ["a.wav", "c.wav", "d.wav", "sub/b.flac"]  # bad.wav skipped
  assert _report(builder)["num_skipped"] == 1
  # A second build elsewhere assigns the same splits.
  again = dp.prepare(dp.get_builder("audio_folder", data_dir=tmp_path / "data2", folder=folder))
  assert {i: s for s in again.info.splits for i in _by_id(_read_split(again, s))} == ids


def test_hash_split_is_stable_and_about_80_10_10():
  names = [f"clip_{i}.wav" for i in range(3000)]
  splits = [audio_folder.hash_split(name) for name in names]
  assert splits == [audio_folder.hash_split(name) for name in names]
  shares = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
  assert abs(shares["train"] - 0.8) < 0.03
  assert abs(shares["validation"] - 0.1) < 0.02 and abs(shares["test"] - 0.1) < 0.02


def test_audio_folders_get_their_own_data_dirs(tmp_path):
  first = _make_folder(tmp_path / "one", with_split=True)
  second = _make_folder(tmp_path / "two", with_split=True)
  dir_one = dp.get_builder("audio_folder", data_dir=tmp_path / "d", folder=first).data_dir
  dir_two = dp.get_builder("audio_folder", data_dir=tmp_path / "d", folder=second).data_dir
  assert dir_one != dir_two
  assert os.fspath(dir_one).startswith(builders.folder_data_dir(str(tmp_path / "d"), first))


def test_audio_folder_missing_labels_csv(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="labels.csv") as caught:
    dp.get_builder("audio_folder", data_dir=tmp_path / "d", folder=tmp_path / "empty")
  assert "file,labels" in str(caught.value)


def test_audio_folder_missing_labels_column(tmp_path):
  folder = tmp_path / "f"
  folder.mkdir()
  (folder / "labels.csv").write_text("file,tags\na.wav,dog\n")
  with pytest.raises(DataError, match="labels"):
    dp.get_builder("audio_folder", data_dir=tmp_path / "d", folder=folder)


def test_audio_folder_split_of_only_bad_files_is_left_out(tmp_path):
  folder = _make_folder(tmp_path / "mine", with_split=True)
  (folder / "labels.csv").write_text(
      "file,labels,split\na.wav,dog,train\nc.wav,cat,test\nbad.wav,cat,validation\n"
  )
  builder = dp.prepare(dp.get_builder("audio_folder", data_dir=tmp_path / "data", folder=folder))
  assert sorted(builder.info.splits) == ["test", "train"]
  report = _report(builder)
  assert report["written"] == {"train": 1, "test": 1}
  assert report["skipped"]["unreadable audio"]["files"][0].startswith("validation: bad.wav")


def test_audio_folder_with_no_usable_file(tmp_path):
  folder = tmp_path / "broken"
  folder.mkdir()
  (folder / "x.wav").write_bytes(b"nope" * 100)
  (folder / "labels.csv").write_text("file,labels\nx.wav,dog\nmissing.wav,cat\n")
  with pytest.raises(DataError, match="no usable audio file.*x.wav"):
    dp.prepare(dp.get_builder("audio_folder", data_dir=tmp_path / "d", folder=folder))
