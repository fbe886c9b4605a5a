"""The bridge from a config's `data` group to built tfds datasets and their properties."""

import dataclasses
import os

import jax
import ml_collections

import data_pipelines
from afx.errors import DataError


def split_names(split: str) -> list[str]:
  """The split names a tfds split expression reads: ``"fold1+fold2[:10]"`` -> fold1, fold2."""
  return [part.split("[", 1)[0].strip() for part in split.split("+")]


IN_MEMORY_BYTES = 2**30  # splits stored in at most this many bytes are kept in memory once decoded
_in_memory_sources: dict[tuple[str, int, str], "InMemorySource"] = {}  # (info file, its mtime, split)


class InMemorySource:
  """A source's records, each decoded on its first read and served from memory after that.

  Decoding a stored record (reading, parsing the example, converting to NumPy) costs about 0.7 ms,
  a third of a core at tiny scale's batch rates; epochs after the first and later runs over the same
  split in this process (a reproduced table's rows and stages) skip it.
  """

  def __init__(self, source):
    self._source = source
    self._records = [None] * len(source)
    self.split = source.split  # as tfds sources have it: what split-keyed statistics are looked up by

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    record = self._records[index]
    if record is None:  # two reader threads may both decode it: the same record either way
      record = self._records[index] = self._source[index]
    return record


@dataclasses.dataclass(frozen=True)
class Dataset:
  builder: object
  info: data_pipelines.DatasetInfo

  def source(self, split: str):
    """The split's examples; ``split`` may join splits and slices, as in ``fold1+fold2[:50%]``.  The source's
    ``split`` attribute is that expression (e.g. the key of the split's per-speaker feature statistics)."""
    # tfds reads such expressions itself; each named split is checked here for a clearer error.
    for name in split_names(split):
      if name not in self.builder.info.splits:
        known = ", ".join(sorted(self.builder.info.splits.keys()))
        raise DataError(f"dataset {self.builder.name} has no split {name!r}; its splits are {known}")
    try:
      source = self.builder.as_data_source(split=split)
    except ValueError as e:  # a malformed slice, e.g. fold1[:200%]
      raise DataError(f"split {split!r} of dataset {self.builder.name}: {str(e).splitlines()[0]}; write"
                      " splits like 'fold1+fold2' or 'train[:80%]'") from e
    if len(source) == 0:
      raise DataError(f"split {split!r} of dataset {self.builder.name} is empty")
    stored_bytes = sum(self.builder.info.splits[name].num_bytes for name in split_names(split))
    if stored_bytes > IN_MEMORY_BYTES:
      return source
    info_file = os.path.join(os.fspath(self.builder.data_dir), "dataset_info.json")
    key = (info_file, os.stat(info_file).st_mtime_ns, split)  # a rebuilt dataset is a new key
    if key not in _in_memory_sources:
      _in_memory_sources[key] = InMemorySource(source)
    return _in_memory_sources[key]


def open_dataset(data: ml_collections.ConfigDict) -> Dataset:
  """Build the dataset if needed (process 0 first, the others then read it) and describe it."""
  builder_kwargs = data.get("builder_kwargs")
  kwargs = builder_kwargs.to_dict() if builder_kwargs else {}
  for key in ("manual_dir", "folder"):
    if data.get(key):
      kwargs[key] = os.path.expanduser(data[key])
  make_builder = lambda: data_pipelines.get_builder(data.name, data_dir=data.get("data_dir") or None, **kwargs)
  if jax.process_index() == 0:
    builder = data_pipelines.prepare(make_builder())
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"dataset {data.name} prepared")
    if jax.process_index() != 0:
      builder = data_pipelines.prepare(make_builder())
  return Dataset(builder, data_pipelines.dataset_info(builder))
