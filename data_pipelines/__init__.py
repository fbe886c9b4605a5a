"""afx datasets: tfds builders writing ArrayRecord, read without TensorFlow.

  builder = data_pipelines.prepare(data_pipelines.get_builder("synth_events"))
  source = builder.as_data_source(split="train")  # random access, numpy examples

Known datasets: ``synth_events`` (procedural, built in about a minute), ``synth_piano``
(procedural piano pieces for raw-audio language models, 8 s each), ``synth_speech`` (espeak-ng
utterances for speech recognition), ``fsd50k``, ``audioset``, ``esc50``, ``librispeech`` and ``wsj``
(from a manual download), ``audio_folder`` (your own files and a labels.csv) and ``speech_folder``
(your own utterances and a transcripts.csv).
"""

from data_pipelines.builders import (
    BuildReport,
    DatasetInfo,
    class_names,
    dataset_info,
    default_data_dir,
    get_builder,
    known_names,
    prepare,
    read_report,
    sample_rate,
)

__all__ = [
    "BuildReport",
    "DatasetInfo",
    "class_names",
    "dataset_info",
    "default_data_dir",
    "get_builder",
    "known_names",
    "prepare",
    "read_report",
    "sample_rate",
]
