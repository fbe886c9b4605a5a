"""Every test sees 8 simulated CPU devices, as a small pod would present them."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from afx.xla_flags import add_cpu_compiler_flags  # noqa: E402  (before any JAX backend starts)

add_cpu_compiler_flags()
os.environ.setdefault("TFDS_DISABLE_PROGRESS_BAR", "1")

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT_SIZES = {"train": 96, "validation": 16, "test": 32}

TINY_CONFIG = '''"""A seconds-long variant of experiments/verma_berger_2021.py for tests."""
from afx.train.config import load_config


def get_config(variant=None):
  config = load_config({experiment!r} + ":" + (variant or "small,tiny"))
  config.data.data_dir = {data_dir!r}
  config.data.builder_kwargs = {{"split_sizes": {split_sizes!r}}}
  config.data.num_threads = 2
  config.batch_size = 16
  config.eval_batch_size = 16
  config.total_steps = 20
  config.log_every = 5
  config.checkpoint_every = 5
  config.eval_every = 10
  config.optimizer.warmup_steps = 2
  if config.model.name == "audio_transformer":
    config.model.frontend_hidden = 32
    config.model.num_layers = 1
    config.model.mlp_dim = 32
  return config
'''


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory):
  """A config file whose runs train in seconds on a 144-clip synth_events build shared by the session."""
  root = tmp_path_factory.mktemp("tiny")
  path = root / "tiny_config.py"
  path.write_text(TINY_CONFIG.format(experiment=os.path.join(REPO, "experiments", "verma_berger_2021.py"),
                                     data_dir=str(root / "data"), split_sizes=SPLIT_SIZES))
  return str(path)


@pytest.fixture(scope="session")
def trained_workdir(tiny_config_path, tmp_path_factory):
  """A finished 20-step run of the tiny Audio Transformer."""
  from afx.train import load_config, train
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train(load_config(f"{tiny_config_path}:small,tiny"), workdir)
  return workdir


PIANO_CONFIG = '''"""A seconds-long variant of experiments/verma_chafe_2021.py for tests."""
from afx.train.config import load_config
from afx.train.config import load_module

_EXPERIMENT = load_module({experiment!r})
TITLE, METRIC, ROWS, BASELINES = _EXPERIMENT.TITLE, _EXPERIMENT.METRIC, _EXPERIMENT.ROWS, _EXPERIMENT.BASELINES
COLUMNS = _EXPERIMENT.COLUMNS


def get_config(variant=None):
  config = load_config({experiment!r} + ":" + (variant or "transformer3,tiny"))
  config.data.data_dir = {data_dir!r}
  config.data.builder_kwargs = {{"split_sizes": {{"train": 6, "validation": 2, "test": 2}}}}
  config.data.num_threads = 2
  config.data.context_samples = 64
  config.data.eval_hop_samples = 8000
  if config.data.past_samples:
    config.data.past_samples = 256
    config.model.condition_layers = 4
    config.model.condition_channels = 8
  config.batch_size = 8
  config.eval_batch_size = 8
  config.total_steps = 6
  config.log_every = 3
  config.checkpoint_every = 3
  config.optimizer.warmup_steps = 1
  if config.model.name == "wavenet":
    config.model.update(layers_per_stack=3, residual_channels=8, skip_channels=8, output_channels=8)
  else:
    config.model.update(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32)
  return config
'''


@pytest.fixture(scope="session")
def piano_config_path(tmp_path_factory):
  """A config file (and experiment table) whose next-sample runs train in seconds on a 10-piece synth_piano."""
  root = tmp_path_factory.mktemp("piano")
  path = root / "experiments" / "piano_table.py"
  path.parent.mkdir()
  path.write_text(PIANO_CONFIG.format(experiment=os.path.join(REPO, "experiments", "verma_chafe_2021.py"),
                                      data_dir=str(root / "data")))
  return str(path)


REPRESENTATION_CONFIG = '''"""A seconds-long variant of experiments/verma_smith_2020.py for tests."""
from afx.train.config import load_config
from afx.train.config import load_module

_EXPERIMENT = load_module({experiment!r})
TITLE, METRIC, ROWS, NOTES = _EXPERIMENT.TITLE, _EXPERIMENT.METRIC, _EXPERIMENT.ROWS, _EXPERIMENT.NOTES


def _shrink(config):
  config.batch_size = 16
  config.eval_batch_size = 16
  config.total_steps = 6
  config.log_every = 3
  config.checkpoint_every = 3
  config.optimizer.warmup_steps = 1
  if "num_layers" in config.model:
    config.model.update(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32)
  if config.model.name == "patch_autoencoder":
    config.model.update(hidden=(32, 16), bottleneck=8)
  if config.model.name == "patch_simclr":
    config.model.projection_dim = 8


def get_config(variant=None):
  config = load_config({experiment!r} + ":" + (variant or "code_lm,tiny"))
  config.data.data_dir = {data_dir!r}
  config.data.builder_kwargs = {{"split_sizes": {split_sizes!r}}}
  config.data.num_threads = 2
  if "stages" not in config:
    _shrink(config)
    return config
  for stage in config.stages.values():
    if stage.kind == "train":
      _shrink(stage)
    elif stage.kind == "kmeans":
      stage.num_codes = min(stage.num_codes, 16)
    else:
      stage.steps = 100
  return config
'''


@pytest.fixture(scope="session")
def representation_config_path(tmp_path_factory):
  """A config file (and experiment table) whose representation rows train in seconds on a small synth_events/single_label."""
  root = tmp_path_factory.mktemp("representation")
  path = root / "experiments" / "representation_table.py"
  path.parent.mkdir()
  path.write_text(REPRESENTATION_CONFIG.format(
      experiment=os.path.join(REPO, "experiments", "verma_smith_2020.py"), data_dir=str(root / "data"),
      split_sizes={"train": 64, "validation": 8, "test": 32}))
  return str(path)
