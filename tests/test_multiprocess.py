"""Two processes of four CPU devices each, joined by jax.distributed on localhost: a pod in miniature."""

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_evaluate_and_checkpoint_together(tiny_config_path, tmp_path):
  workdir = str(tmp_path / "pod")
  env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{free_port()}", JAX_NUM_PROCESSES="2",
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  command = [sys.executable, os.path.join(REPO, "run.py"), "train", "--config", f"{tiny_config_path}:small,tiny",
             "--workdir", workdir]
  processes = [subprocess.Popen(command, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
  assert results[0] == results[1]  # both processes see every clip's score
  with open(os.path.join(workdir, "eval.json")) as f:
    assert json.load(f) == results[0]
  data_state = os.listdir(os.path.join(workdir, "checkpoints", "20", "data"))
  assert sum("process_0" in name for name in data_state) == 1 and sum("process_1" in name for name in data_state) == 1
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [5, 10, 15, 20]
