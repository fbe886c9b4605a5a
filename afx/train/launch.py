"""Run `run.py ARGS` on every worker of a TPU VM pod through gcloud."""

import shlex
import shutil
import subprocess
from typing import Sequence

from afx.errors import UserError


def launch_command(*, tpu: str, zone: str, args: Sequence[str], project: str | None = None,
                   repo_dir: str = "~/afx", python: str = "python3") -> list[str]:
  """The gcloud command that starts `run.py ARGS` in `repo_dir` on all workers (multi-host JAX on)."""
  if not args:
    raise UserError("launch needs the run.py arguments after '--', e.g. launch --tpu NAME --zone ZONE -- train --config ...")
  remote = f"cd {repo_dir} && AFX_DISTRIBUTED=1 {python} run.py {shlex.join(args)}"
  command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}", "--worker=all",
             f"--command={remote}"]
  if project:
    command.insert(5, f"--project={project}")
  return command


def launch(command: list[str]) -> int:
  if shutil.which(command[0]) is None:
    raise UserError("gcloud is not on PATH; install the Google Cloud CLI, or use --dry-run to print the command")
  return subprocess.call(command)
