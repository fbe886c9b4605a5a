"""Training, evaluation, prediction and sampling: library functions that `run.py` and notebooks call."""

from afx.train.config import apply_overrides, load_config
from afx.train.inference import evaluate, load_run, predict, sample_audio, transcribe
from afx.train.reproduce import reproduce
from afx.train.stages import train_row
from afx.train.trainer import Run, TrainState, make_run, train

__all__ = ["Run", "TrainState", "apply_overrides", "evaluate", "load_config", "load_run", "make_run",
           "predict", "reproduce", "sample_audio", "train", "train_row", "transcribe"]
