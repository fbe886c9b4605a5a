"""Training metrics: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events, process 0 only."""

import json
import os

import jax


def truncate_jsonl(path: str, last_step: int) -> None:
  """Drop records after `last_step`, left by a run killed after its last checkpoint."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= last_step:
        kept.append(line)
    except (json.JSONDecodeError, KeyError):
      continue  # a line cut short by the kill
  with open(path, "w") as f:
    f.writelines(kept)


class MetricWriter:
  """Appends `{"step": ..., **scalars}` to `workdir/metrics.jsonl` and writes TensorBoard scalars."""

  def __init__(self, workdir: str, *, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if self.enabled:
      truncate_jsonl(self.path, resume_step)
      from tensorboardX import SummaryWriter
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in scalars.items():
      self._tensorboard.add_scalar(name, float(value), int(step))
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
