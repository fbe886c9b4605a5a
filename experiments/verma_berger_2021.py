"""Verma & Berger 2021, "Audio Transformers: Transformer Architectures for Large Scale Audio
Understanding. Adieu Convolutions" (arXiv 2105.00335 v1): FSD50K eval mAP.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale):
  small       Audio Transformer, 3 layers           paper mAP 0.469, 0.9 M parameters
  large       Audio Transformer, 6 layers           paper mAP 0.525, 2.3 M parameters
  large_pool  6 layers + multi-rate wavelet pooling paper mAP 0.537, 2.3 M parameters
  vgg_like    FSD50K's VGG-like log-mel CNN         paper mAP 0.434, 0.27 M parameters

Tiny scale (the embedded `synth_events` set, 22 classes, built on first use in ~30 s):
  python run.py reproduce verma_berger_2021 --scale tiny --workdir runs/demo
  2 CPU cores: 11 min 43 s from a clean clone including `pip install -e .` (each row 1.8-3.3 min).
  Measured (2026-11-22, jax 0.10.2, CPU): small 0.662, large 0.671, large_pool 0.686, vgg_like 0.972
  mAP (chance ≈ label prevalence, about 0.07); on 2026-12-03's machine 0.653 / 0.673 / 0.695 / 0.971.  The Transformer rows keep the paper's ordering; the
  log-mel CNN beats them at this scale because learning a filterbank from 5,000 one-second clips
  in 1,200 steps is harder than starting from a mel spectrogram.
  One row: python run.py train --config experiments/verma_berger_2021.py:large_pool,tiny --workdir runs/lp

Paper scale (FSD50K from https://zenodo.org/record/4060432, unpacked so that DIR holds
FSD50K.dev_audio/, FSD50K.eval_audio/ and FSD50K.ground_truth/):
  python run.py reproduce verma_berger_2021 --scale paper --workdir runs/vb --config.data.manual_dir=DIR
  Building the dataset (resampling 51k clips to 16 kHz) takes about an hour on 16 cores; each row then
  trains 100k steps of batch 128 (1 s crops) — on one H100 roughly 1-2 h per Transformer row.
  Expected: the paper's ordering large_pool > large > small > vgg_like, numbers near the paper's.

Choices where the paper is silent [unconfirmed; see ../shared/reference/systems.md section C]:
  - Transformer sizes.  The 25 ms → Dense(2048) → Dense(64) front end alone has 0.95 M parameters,
    so the 0.9 M small model cannot carry it: small uses a 1024-unit front end, 3 layers, FFN 1024
    (0.94 M); large uses the 2048-unit front end, 6 layers, FFN 1536 (2.26 M).  d_model 64, 8 heads.
  - Pooling: "large_pool" uses the parameter-free multi-rate (wavelet) pooling after every layer;
    temporal average pooling is `--config.model.pooling=average`.
  - Head: LayerNorm, mean over time, Dense(classes), sigmoid; binary cross-entropy; AdamW with cosine
    decay (1e-3 for the Transformers, 3e-3 for the CNN and at tiny scale); dropout 0.1; no augmentation
    beyond random 1 s crops; evaluation averages 1 s windows at 0.5 s hop.
  - The VGG-like baseline uses the dataset's 16 kHz rather than the FSD50K paper's 22.05 kHz.
"""

import ml_collections

TITLE = "Verma & Berger 2021: Audio Transformers on raw waveforms (FSD50K eval mAP)"
METRIC = "mAP"
COLUMNS = ("d_prime",)
ROWS = {
    "small": {"label": "Small Transformer", "paper": 0.469, "paper_params": 900_000},
    "large": {"label": "Large Transformer (6 layers)", "paper": 0.525, "paper_params": 2_300_000},
    "large_pool": {"label": "Large Transformer + pooling", "paper": 0.537, "paper_params": 2_300_000},
    "vgg_like": {"label": "VGG-like CNN (FSD50K baseline)", "paper": 0.434, "paper_params": 270_000},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
TRANSFORMER = dict(name="audio_transformer", patch_size=400, frontend_hidden=2048, d_model=64, num_layers=6,
                   num_heads=8, mlp_dim=1536, dropout_rate=0.1, pooling="none")
VGG_LIKE = dict(name="vgg_like", n_mels=96, window_seconds=0.030, hop_seconds=0.010,
                channels=(32, 32, 32, 64, 64, 128), pool_after=(2, 4, 5), hidden=256, dropout_rate=0.0)

PAPER_MODELS = {
    "small": {**TRANSFORMER, "frontend_hidden": 1024, "num_layers": 3, "mlp_dim": 1024},
    "large": TRANSFORMER,
    "large_pool": {**TRANSFORMER, "pooling": "wavelet"},
    "vgg_like": VGG_LIKE,
}

# Tiny scale keeps each row's shape (small < large, pooling on/off) at sizes that train in minutes
# on 2 CPU cores; the CNN sees 64 mel bands at a 20 ms hop and pools after every conv.
TINY_TRANSFORMER = {**TRANSFORMER, "frontend_hidden": 256, "mlp_dim": 128}
TINY_MODELS = {
    "small": {**TINY_TRANSFORMER, "num_layers": 2},
    "large": {**TINY_TRANSFORMER, "num_layers": 4},
    "large_pool": {**TINY_TRANSFORMER, "num_layers": 4, "pooling": "wavelet"},
    "vgg_like": {**VGG_LIKE, "n_mels": 64, "hop_seconds": 0.020, "channels": (16, 32, 32, 64),
                 "pool_after": (0, 1, 2, 3)},
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, _, scale = (variant or "large_pool").partition(",")
  if row not in ROWS:
    raise KeyError(f"unknown row {row!r}; rows are {', '.join(ROWS)}")
  if scale not in ("", "tiny"):
    raise ValueError(f"unknown scale {scale!r}; use ROW or ROW,tiny")
  tiny = scale == "tiny"
  transformer = row != "vgg_like"

  config = ml_collections.ConfigDict()
  config.task = "multi_label"
  config.seed = 0
  config.batch_size = 64 if tiny else 128
  config.eval_batch_size = 128 if tiny else 256
  config.total_steps = 1200 if tiny else 100_000
  config.log_every = 50 if tiny else 200
  config.checkpoint_every = 300 if tiny else 5000
  config.eval_every = 0 if tiny else 5000
  config.keep_checkpoints = 2
  config.attention_impl = None
  config.fsdp = 1

  config.data = ml_collections.ConfigDict(dict(
      name="synth_events" if tiny else "fsd50k",
      data_dir=None,           # default: $AFX_DATA_DIR or ~/afx_data
      manual_dir=None,         # paper scale: the directory holding FSD50K.dev_audio/ etc.
      folder=None,             # audio_folder datasets: the user's directory
      clip_seconds=1.0,
      eval_hop_seconds=0.5,
      train_split="train",
      eval_split="validation",
      test_split="test",
      num_threads=4,
      builder_kwargs=ml_collections.ConfigDict(),
  ))
  config.model = ml_collections.ConfigDict(dict((TINY_MODELS if tiny else PAPER_MODELS)[row]))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-3 if tiny or not transformer else 1e-3, b1=0.9, b2=0.999,
      weight_decay=1e-4, schedule="cosine", warmup_steps=100 if tiny else 2000, end_factor=0.0,
      grad_clip_norm=1.0))
  return config
