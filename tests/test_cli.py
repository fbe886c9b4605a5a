"""run.py as a user drives it: one-line errors, predict over good and broken files, kill -9 and SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from afx.audio import synthesis, write_audio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(REPO, "run.py")


def run_cli(*args, timeout=300):
  return subprocess.run([sys.executable, RUN_PY, *args], capture_output=True, text=True, timeout=timeout,
                        cwd=REPO)


def start_cli(*args):
  return subprocess.Popen([sys.executable, RUN_PY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=REPO)


def wait_for(path, process, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline, f"{path} did not appear"
    time.sleep(0.02)


def test_user_errors_are_one_line_on_stderr_with_exit_2(tiny_config_path, tmp_path):
  cases = [
      (["train", "--config", f"{REPO}/experiments/verma_berger_2021.py:huge", "--workdir", str(tmp_path / "a")],
       "unknown row 'huge'"),
      (["train", "--config", f"{tiny_config_path}:small,tiny", "--workdir", str(tmp_path / "b"),
        "--config.optimizer.lr=0.1"], "'optimizer.lr'"),
      (["eval", "--workdir", str(tmp_path / "never_trained")], "config.json does not exist"),
      (["reproduce", "no_such_table", "--scale", "tiny", "--workdir", str(tmp_path / "c")], "known tables"),
      (["train", "--workdir", str(tmp_path / "d")], "--config"),
      (["launch", "--tpu", "pod", "--zone", "z", "--dry-run"], "after '--'"),
  ]
  for args, message in cases:
    result = run_cli(*args)
    assert result.returncode == 2, (args, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_predict_prints_top5_for_good_files_and_names_each_broken_one(trained_workdir, tmp_path):
  rng = np.random.default_rng(0)
  good = str(tmp_path / "long_good.wav")  # 2.5 s at 44.1 kHz: resampled, cut into windows
  write_audio(good, 0.3 * synthesis.karplus_strong(220.0, 2.5, 44100, decay=1.0, rng=rng), 44100)
  not_audio = tmp_path / "notes.wav"
  not_audio.write_bytes(b"this is not a wav file at all")
  truncated = tmp_path / "cut.wav"
  write_audio(str(truncated), rng.normal(size=16000).astype(np.float32) * 0.1, 16000)
  truncated.write_bytes(truncated.read_bytes()[:9000])
  missing = str(tmp_path / "missing.flac")

  result = run_cli("predict", "--workdir", trained_workdir, good, str(not_audio), str(truncated), missing)
  assert result.returncode == 1, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [line["file"] for line in lines] == [good, str(not_audio), str(truncated), missing]
  with open(os.path.join(trained_workdir, "dataset.json")) as f:
    class_names = json.load(f)["class_names"]
  top = lines[0]["top"]
  assert len(top) == 5 and all(entry["label"] in class_names for entry in top)
  assert [entry["score"] for entry in top] == sorted((entry["score"] for entry in top), reverse=True)
  for line, reason in zip(lines[1:], ("unreadable", "truncated", "missing")):
    assert "top" not in line and line["file"] in line["error"] and reason in line["error"]


def test_eval_prints_the_runs_eval_json(trained_workdir):
  result = run_cli("eval", "--workdir", trained_workdir)
  assert result.returncode == 0, result.stderr
  with open(os.path.join(trained_workdir, "eval.json")) as f:
    assert json.loads(result.stdout) == json.load(f)


def test_launch_dry_run_prints_the_pod_command():
  result = run_cli("launch", "--tpu", "my-pod", "--zone", "us-central2-b", "--dry-run", "--",
                   "train", "--config", "experiments/verma_berger_2021.py:large", "--workdir", "/tmp/r")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --worker=all")
  assert "AFX_DISTRIBUTED=1" in result.stdout
  assert "run.py train --config experiments/verma_berger_2021.py:large --workdir /tmp/r" in result.stdout


@pytest.mark.slow  # about 40 s: two training subprocesses (resuming to the same result is also tested in-process in test_train); run with -m slow
def test_kill_9_mid_training_then_rerun_gives_the_uninterrupted_eval(tiny_config_path, trained_workdir, tmp_path):
  workdir = str(tmp_path / "killed")
  args = ("train", "--config", f"{tiny_config_path}:small,tiny", "--workdir", workdir)
  process = start_cli(*args)
  wait_for(os.path.join(workdir, "checkpoints", "5"), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(workdir, "eval.json"))
  result = run_cli(*args)
  assert result.returncode == 0, result.stderr
  with open(os.path.join(trained_workdir, "eval.json")) as f, open(os.path.join(workdir, "eval.json")) as g:
    assert json.load(g) == json.load(f)


def test_sigterm_saves_a_checkpoint_and_exits_0(tiny_config_path, tmp_path):
  workdir = str(tmp_path / "preempted")
  process = start_cli("train", "--config", f"{tiny_config_path}:small,tiny", "--workdir", workdir,
                      "--config.total_steps=100000", "--config.checkpoint_every=1000")
  wait_for(os.path.join(workdir, "metrics.jsonl"), process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  assert "rerun the same command to resume" in stderr
  steps = [int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit()]
  assert steps and max(steps) >= 5
