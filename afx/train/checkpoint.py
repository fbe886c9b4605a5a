"""Orbax checkpoints of the train state together with the grain data iterator's position."""

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from afx.errors import ConfigError


def abstract_with_shardings(abstract_tree, shardings):
  """`jax.ShapeDtypeStruct`s carrying the shardings a restored tree should have."""
  return jax.tree_util.tree_map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      abstract_tree, shardings)


class Checkpoints:
  """`workdir/checkpoints/<step>/{state,data}`: keep the newest `keep`, saved asynchronously.

  A save interrupted by `kill -9` leaves only a temporary directory, which orbax ignores; the newest
  complete step is what `latest_step` returns.
  """

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """The saved steps, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None) -> None:
    """Save `state` (and the data iterator's position, unless None: e.g. converted weights)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, abstract_state, data_iterator=None):
    """The state at `step` (placed as `abstract_state`'s shardings say); the iterator is restored in
    place when the checkpoint holds its position (else it starts from the beginning)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None and os.path.isdir(os.path.join(self.directory, str(step), "data")):
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as error:
      raise ConfigError(
          f"the checkpoint at {self.directory}/{step} does not fit this config ({str(error).splitlines()[0]}); "
          "train in a new --workdir or restore the config this one was trained with") from None
    return restored["state"]

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


ARRAYS = "arrays"  # the subdirectory `save_arrays` writes


def save_arrays(directory: str, arrays: dict) -> None:
  """Write a dict of arrays (e.g. a codebook) as an orbax checkpoint in `directory/arrays`, atomically."""
  checkpointer = ocp.StandardCheckpointer()
  # force: a stage interrupted after this save and rerun writes its arrays again
  checkpointer.save(os.path.join(os.path.abspath(directory), ARRAYS), arrays, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def load_arrays(directory: str, *, what: str = "arrays") -> dict:
  """The dict `save_arrays` wrote, as NumPy arrays."""
  directory = os.path.join(os.path.abspath(directory), ARRAYS)
  if not os.path.isdir(directory):
    raise ConfigError(f"{what}: {directory} does not exist; point it at a finished stage's directory")
  checkpointer = ocp.StandardCheckpointer()
  try:
    return jax.tree_util.tree_map(np.asarray, checkpointer.restore(directory))
  finally:
    checkpointer.close()
