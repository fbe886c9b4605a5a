"""Speech recognition end to end on a tiny synth_speech build: the tokenizer made from the training split,
bucketed utterance batches, the joint CTC/attention loss and its logged parts, greedy-CTC evaluation, and
`run.py transcribe` (several files batched, a long file in chunks, a broken file, the wrong kind of run; beam
search with forced-alignment word times); and a run normalised per speaker (train, evaluate, transcribe, a
split without statistics)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from afx.errors import ConfigError
from afx.text import load_tokenizer
from afx.train import load_config, train
from afx.train.inference import evaluate, transcribe
from data_pipelines import get_builder, prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {"train": 32, "validation": 8, "test": 8}

ASR_CONFIG = '''"""A seconds-long speech recognition run for tests."""
import ml_collections


def get_config(variant=None):
  config = ml_collections.ConfigDict()
  config.task = "asr"
  config.seed = 0
  config.batch_size = 8
  config.eval_batch_size = 8
  config.total_steps = 24
  config.log_every = 6
  config.checkpoint_every = 12
  config.eval_every = 12
  config.attention_impl = None
  config.fsdp = 1
  config.ctc_weight = 0.3
  config.label_smoothing = 0.1
  config.evals = ml_collections.ConfigDict(dict(
      val=dict(kind="metrics", split="validation", every=12),
      beam=dict(kind="beam_search", split="validation", every=0, final=True)))
  config.decoding = ml_collections.ConfigDict(dict(beam=3, ctc_weight=0.3, length_penalty=0.0))
  config.tokenizer = ml_collections.ConfigDict(dict(kind="characters", case="lower"))
  config.data = ml_collections.ConfigDict(dict(
      name="synth_speech", data_dir={data_dir!r}, manual_dir=None, folder=None, train_split="train",
      eval_split="validation", test_split="test", bucket_seconds=(8.0,), max_tokens=120, num_threads=2,
      builder_kwargs=ml_collections.ConfigDict(dict(split_sizes={splits!r}, num_workers=1))))
  config.model = ml_collections.ConfigDict(dict(
      name="speech_transformer", num_mel_bins=40, use_deltas=False, normalization={normalization!r}, d_model=32,
      num_heads=2, mlp_dim=64, encoder_layers=1, decoder_layers=1, conv_channels=8, dropout_rate=0.0))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-3, b1=0.9, b2=0.98, weight_decay=0.0, schedule="cosine", warmup_steps=4,
      end_factor=0.0, grad_clip_norm=5.0))
  return config
'''


@pytest.fixture(scope="module")
def asr_root(tmp_path_factory):
  """Where this module's runs and their shared synth_speech build live."""
  return tmp_path_factory.mktemp("asr")


def _config_file(root, normalization: str) -> str:
  path = root / f"asr_{normalization}_config.py"
  path.write_text(ASR_CONFIG.format(data_dir=str(root / "data"), splits=SPLITS, normalization=normalization))
  return str(path)


@pytest.fixture(scope="module")
def asr_run(asr_root):
  path = _config_file(asr_root, "global")
  workdir = str(asr_root / "run")
  results = train(load_config(path), workdir)
  return path, workdir, results


@pytest.fixture(scope="module")
def speaker_run(asr_root):
  """A shorter run normalised per speaker, validated once during training."""
  path = _config_file(asr_root, "speaker")
  config = load_config(path)
  config.update(total_steps=12, checkpoint_every=12, log_every=6)
  config.evals.val.every = 6
  workdir = str(asr_root / "speaker_run")
  return path, workdir, train(config, workdir)


def _source(config_path, split):
  config = load_config(config_path)
  builder = prepare(get_builder("synth_speech", data_dir=config.data.data_dir, split_sizes=SPLITS, num_workers=1))
  return builder.as_data_source(split=split)


def run_cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "run.py"), *args], capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_asr_run_trains_on_bucketed_utterances_and_logs_both_losses(asr_run):
  config_path, workdir, results = asr_run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert all({"ctc_loss", "attention_loss", "attention_accuracy", "ctc_impossible"} <= set(r) for r in records)
  assert records[-1]["loss"] < 0.8 * records[0]["loss"]
  assert [r["step"] for r in records if "val_ctc_greedy_wer" in r] == [12]
  assert results["utterances"] == SPLITS["test"] and 0.0 <= results["ctc_greedy_cer"] <= 1.5
  assert 0.0 <= results["wer"] and 0.0 <= results["cer"]  # the final beam_search evaluation's
  assert 0.0 < results["attention_accuracy"] < 1.0
  tokenizer = load_tokenizer(workdir)  # built from the training split's transcripts
  assert tokenizer.tokens[0] == "<blank>" and tokenizer.tokens[-1] == "<sos/eos>"
  train_split = _source(config_path, "train")
  characters = set("".join(train_split[i]["text"].decode() for i in range(len(train_split))))
  assert set(tokenizer.tokens[2:-1]) == (characters - {" "}) | {"<space>"}
  with open(os.path.join(workdir, "feature_stats.json")) as f:  # normalization: global
    stats = json.load(f)
  assert len(stats["mean"]) == len(stats["std"]) == 40 and stats["utterances"] == SPLITS["train"]
  assert all(s > 0 for s in stats["std"])


def test_transcribe_batches_files_cuts_long_ones_and_reports_broken_ones(asr_run, tmp_path):
  config_path, workdir, _ = asr_run
  source = _source(config_path, "test")
  utterances = [np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in range(3)]
  short = str(tmp_path / "short.wav")
  sf.write(short, utterances[0], 16000)
  long_audio = np.concatenate(utterances + utterances)  # longer than the 8 s bucket: decoded in chunks
  assert long_audio.shape[0] > 8 * 16000
  long = str(tmp_path / "long.flac")
  sf.write(long, long_audio, 16000)
  broken = str(tmp_path / "broken.wav")
  with open(broken, "wb") as f:
    f.write(b"RIFF not really a wav file")

  result = run_cli("transcribe", "--workdir", workdir, short, broken, long)
  assert result.returncode == 1, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [line["file"] for line in lines] == [short, broken, long]
  assert "error" in lines[1] and "broken.wav" in lines[1]["error"]
  for line, seconds in ((lines[0], utterances[0].shape[0] / 16000), (lines[2], long_audio.shape[0] / 16000)):
    assert isinstance(line["text"], str) and line["text"] == " ".join(word["word"] for word in line["words"])
    starts = [word["start"] for word in line["words"]]
    assert starts == sorted(starts)
    assert all(0 <= word["start"] < word["end"] <= seconds + 0.05 for word in line["words"])


def test_transcribe_with_beam_search_times_words_by_forced_alignment(asr_run, tmp_path):
  config_path, workdir, _ = asr_run
  source = _source(config_path, "test")
  files, seconds = [], []
  for i in range(2):
    audio = np.asarray(source[i]["audio"], np.float32) / 32768.0
    files.append(str(tmp_path / f"u{i}.wav"))
    seconds.append(audio.shape[0] / 16000)
    sf.write(files[-1], audio, 16000)
  refused = run_cli("transcribe", "--workdir", workdir, files[0], "--beam", "0")
  assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--beam" in refused.stderr

  # CTC only: this briefly trained decoder's hypotheses run to max_tokens, more than CTC can align (no times).
  result = run_cli("transcribe", "--workdir", workdir, *files, "--beam", "2", "--ctc-weight", "1")
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [line["file"] for line in lines] == files
  assert any(line["words"] for line in lines)
  for line, duration in zip(lines, seconds):
    assert isinstance(line["text"], str) and line["text"] == " ".join(word["word"] for word in line["words"])
    times = [time for word in line["words"] for time in (word["start"], word["end"])]
    assert times == sorted(times)  # one chunk per file: words in order, none overlapping
    assert all(0 <= word["start"] < word["end"] <= duration + 0.05 for word in line["words"])


def test_transcribe_needs_an_asr_run(trained_workdir, tmp_path):
  audio = str(tmp_path / "a.wav")
  sf.write(audio, np.zeros(16000, np.float32), 16000)
  result = run_cli("transcribe", "--workdir", trained_workdir, audio)
  assert result.returncode == 2 and "`run.py transcribe` needs a run of asr" in result.stderr
  assert "this run serves `run.py predict`" in result.stderr and "Traceback" not in result.stderr


def test_a_run_normalised_per_speaker_measures_each_split_trains_evaluates_and_transcribes(speaker_run, tmp_path):
  config_path, workdir, results = speaker_run
  with open(os.path.join(workdir, "feature_stats.json")) as f:
    stats = json.load(f)
  assert sorted(stats["speakers"]) == sorted(SPLITS)  # each split its config reads, test speakers from test
  for split, size in SPLITS.items():
    source = _source(config_path, split)
    speakers = {source[i]["speaker"].decode() for i in range(len(source))}
    assert set(stats["speakers"][split]) == speakers
    assert sum(entry["utterances"] for entry in stats["speakers"][split].values()) == size
  assert stats["utterances"] == SPLITS["train"] and len(stats["mean"]) == 40  # the global keys beside them
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "val_ctc_greedy_wer" in r] == [6]
  assert all(np.isfinite(r["loss"]) for r in records)
  assert results["utterances"] == SPLITS["test"] and 0.0 <= results["wer"] and 0.0 <= results["ctc_greedy_cer"]

  source = _source(config_path, "test")
  utterances = [np.asarray(source[i]["audio"], np.float32) / 32768.0 for i in range(3)]
  short, long = str(tmp_path / "short.wav"), str(tmp_path / "long.wav")
  sf.write(short, utterances[0], 16000)
  sf.write(long, np.concatenate(utterances + utterances), 16000)  # in chunks: its statistics from all of them
  together = list(transcribe(workdir, [short, long]))
  alone = list(transcribe(workdir, [short]))
  assert [line["file"] for line in together] == [short, long]
  assert all(isinstance(line["text"], str) for line in together)
  assert together[0] == alone[0]  # a file is its own speaker: the other files change nothing

  with pytest.raises(ConfigError) as error:  # a split training did not measure
    evaluate(workdir, "train[:4]")
  assert "feature_stats.json" in str(error.value) and "'train[:4]'" in str(error.value)
