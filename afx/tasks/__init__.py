"""Task families: what a model is trained on, its loss, and how its evaluation becomes metrics.

`make_task(config, info, upstream)` builds the task that `config.task` names; the protocol a task
follows and its optional capabilities are in `afx.tasks.base`.  Importing this package registers
every task family:

  multi_label, single_label    clip classification (`afx.tasks.classification`)
  next_sample                  next-sample prediction on quantised raw audio (`afx.tasks.generation`)
  patch_reconstruction, next_code, simclr   representation learning (`afx.tasks.representation`)
  asr                          speech recognition, joint CTC/attention (`afx.tasks.asr`)
"""

from afx.tasks.base import (Task, WindowBatching, make_task, prepare_run, register_task, require, task_names,
                            tasks_with)
from afx.tasks.asr import SpeechRecognitionTask
from afx.tasks.classification import ClassificationTask
from afx.tasks.generation import NextSampleTask
from afx.tasks.representation import ContrastiveTask, NextCodeTask, ReconstructionTask, Tokenizer

__all__ = ["ClassificationTask", "ContrastiveTask", "NextCodeTask", "NextSampleTask", "ReconstructionTask", "SpeechRecognitionTask", "Task",
           "Tokenizer", "WindowBatching", "make_task", "prepare_run", "register_task", "require", "task_names",
           "tasks_with"]
