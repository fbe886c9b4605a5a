"""Verma & Smith 2020, "A Framework for Contrastive and Generative Learning of Audio Representations"
(arXiv 2010.11459): linear-probe accuracy of a next-code Transformer's representation against SimCLR
and a supervised CNN.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale):
  supervised     VGG-style log-mel CNN trained on the labels                    paper 71.3 %
  simclr         SimCLR (patch removal, blur, time flip; NT-Xent) + linear probe  paper 55.6 %
  code_lm        patch autoencoder → k-means (256 codes) → causal Transformer
                 predicting the next code → linear probe on its mean state      paper 60.1 %
  code_lm_k16 … code_lm_k1024   the codes ablation: the same with 16, 64, 256, 1024 codes
`results.json` also carries `chance`: the test accuracy of always answering the most frequent class.

The representation rows train in stages (`afx.train.stages`): autoencoder → kmeans → code_lm →
probe, or simclr → probe.  `reproduce` keeps the stages in `WORKDIR/stages/`, shared between rows
(one autoencoder serves every codebook size; `code_lm` and `code_lm_k256` are the same run) and
reused or resumed when rerun.

Tiny scale (the embedded `synth_events/single_label`: 20 classes, 1 s clips, 5,000 training clips):
  python run.py reproduce verma_smith_2020 --scale tiny --workdir runs/vs
  64 mel bands, patches of 4 frames (40 ms, 25 per clip), autoencoder 256-128-64, Transformers
  with d=64 and 2 layers, a few hundred steps each.
  One row: python run.py train --config experiments/verma_smith_2020.py:code_lm,tiny --workdir runs/code_lm
  Measured (2026-12-02, jax 0.10.2, 2 CPU cores, clean clone, 15 min 9 s with the dataset build):
  supervised 1.000, simclr 0.928, code_lm 0.897; codes ablation k16 0.713, k64 0.831, k256 0.897,
  k1024 0.845; chance 0.043.  All rows are far above chance; the synthetic classes are separable
  enough for the supervised CNN to make no error, and SimCLR edges past the code LM (paper:
  supervised > code LM > SimCLR).
  The ablation has the paper's shape: too few codes lose information, too many lose robustness.

Paper scale (a labelled single-label collection in DIR with labels.csv, see the README's "your own data"):
  python run.py reproduce verma_smith_2020 --scale paper --workdir runs/vs --config.data.folder=DIR
  128 mel bands (25 ms windows, 10 ms hop), patches of 4 frames, autoencoder 1024-512-128,
  Transformers with d=256, 6 layers, 8 heads over 2 s windows.

Choices where the paper is silent [unconfirmed; see ../shared/reference/systems.md section B]:
  - Input: log-mel in dB floored 80 dB below each window's peak, standardised per window; patches of
    4 frames spanning every mel band; the autoencoder's bottleneck is linear, its loss MSE.
  - k-means: k-means++ seeding, Lloyd iterations on up to 200k bottleneck vectors of the training split.
  - Code LM: `raw_transformer` over the codes with rotary positions; the probe reads the mean of
    its normalised last-layer states over a window, averaged over the clip's windows.
  - SimCLR encoder: patch embedding + a non-causal Transformer of the code LM's size, mean over
    patches; projection MLP to 128 (tiny: 64) dimensions; temperature 0.1.
  - Supervised: the VGG-like CNN of `verma_berger_2021` with a softmax head.
  - Probe: standardised features, softmax linear classifier, full-batch AdamW (lr 0.01, weight
    decay 1e-4, 1000 steps) on the training clips; accuracy on the test clips.
  - No augmentation outside SimCLR, no label smoothing, no weight averaging, in any row.
"""

import ml_collections

TITLE = "Verma & Smith 2020: linear-probe accuracy of learned audio representations"
METRIC = "accuracy"
NOTES = {"chance": "Chance (always the most frequent class)"}
CODE_SIZES = (16, 64, 256, 1024)
DEFAULT_CODES = 256
ROWS = {
    "supervised": {"label": "Supervised VGG-style CNN", "paper": 0.713},
    "simclr": {"label": "SimCLR + linear probe", "paper": 0.556},
    "code_lm": {"label": f"Next-code Transformer ({DEFAULT_CODES} codes) + linear probe", "paper": 0.601},
    **{f"code_lm_k{k}": {"label": f"Next-code Transformer, {k} codes", "paper": None} for k in CODE_SIZES},
}

SPECTROGRAM = dict(n_mels=128, window_seconds=0.025, hop_seconds=0.010, patch_frames=4)
TINY_SPECTROGRAM = {**SPECTROGRAM, "n_mels": 64}
TRANSFORMER = dict(num_layers=6, num_heads=8, embed_dim=256, mlp_dim=1024, dropout_rate=0.1)
TINY_TRANSFORMER = dict(num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, dropout_rate=0.0)
VGG_LIKE = dict(name="vgg_like", n_mels=96, window_seconds=0.030, hop_seconds=0.010,
                channels=(32, 32, 32, 64, 64, 128), pool_after=(2, 4, 5), hidden=256, dropout_rate=0.0)
TINY_VGG_LIKE = {**VGG_LIKE, "n_mels": 64, "hop_seconds": 0.020, "channels": (16, 32, 32, 64),
                 "pool_after": (0, 1, 2, 3)}


def _optimizer(learning_rate: float, tiny: bool) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=learning_rate, b1=0.9, b2=0.999, weight_decay=1e-4, schedule="cosine",
      warmup_steps=50 if tiny else 2000, end_factor=0.0, grad_clip_norm=1.0))


def _training(task: str, model: dict, *, steps: int, batch_size: int, learning_rate: float, tiny: bool,
              **extra) -> ml_collections.ConfigDict:
  """The keys every training run has, for a row or a training stage."""
  return ml_collections.ConfigDict(dict(
      kind="train", task=task, batch_size=batch_size, eval_batch_size=128 if tiny else 256, total_steps=steps,
      log_every=50 if tiny else 500, checkpoint_every=200 if tiny else 5000, eval_every=0 if tiny else 10_000,
      keep_checkpoints=2, model=ml_collections.ConfigDict(model),
      optimizer=_optimizer(learning_rate, tiny), **extra))


def _code_lm_stages(num_codes: int, tiny: bool) -> dict:
  spectrogram = TINY_SPECTROGRAM if tiny else SPECTROGRAM
  autoencoder = dict(name="patch_autoencoder", **spectrogram, hidden=(256, 128) if tiny else (1024, 512),
                     bottleneck=64 if tiny else 128)
  return {
      "autoencoder": _training("patch_reconstruction", autoencoder, steps=600 if tiny else 50_000,
                               batch_size=64 if tiny else 128, learning_rate=1e-3, tiny=tiny),
      "codebook": ml_collections.ConfigDict(dict(
          kind="kmeans", upstream={"autoencoder": "autoencoder"}, num_codes=num_codes,
          max_points=40_000 if tiny else 200_000, iterations=50 if tiny else 100, tolerance=1e-4, seed=0)),
      "code_lm": _training("next_code", dict(name="raw_transformer", **(TINY_TRANSFORMER if tiny else TRANSFORMER)),
                           steps=800 if tiny else 100_000, batch_size=64 if tiny else 128,
                           learning_rate=2e-3 if tiny else 3e-4, tiny=tiny, feature_pooling="mean",
                           upstream={"autoencoder": "autoencoder", "codebook": "codebook"}),
      "probe": _probe("code_lm"),
  }


def _probe(representation: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(kind="linear_probe", upstream={"representation": representation},
                                        steps=1000, learning_rate=0.01, weight_decay=1e-4, seed=0))


def _simclr_stages(tiny: bool) -> dict:
  encoder = dict(name="patch_simclr", **(TINY_SPECTROGRAM if tiny else SPECTROGRAM),
                 **(TINY_TRANSFORMER if tiny else TRANSFORMER), projection_dim=64 if tiny else 128,
                 max_remove_fraction=0.5, max_blur_sigma=2.0, flip_probability=0.5)
  return {
      "simclr": _training("simclr", encoder, steps=800 if tiny else 100_000, batch_size=128 if tiny else 256,
                          learning_rate=1e-3 if tiny else 3e-4, tiny=tiny, temperature=0.1),
      "probe": _probe("simclr"),
  }


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, _, scale = (variant or "code_lm").partition(",")
  if row not in ROWS:
    raise KeyError(f"unknown row {row!r}; rows are {', '.join(ROWS)}")
  if scale not in ("", "tiny"):
    raise ValueError(f"unknown scale {scale!r}; use ROW or ROW,tiny")
  tiny = scale == "tiny"

  if row == "supervised":
    config = _training("single_label", TINY_VGG_LIKE if tiny else VGG_LIKE, steps=600 if tiny else 100_000,
                       batch_size=64 if tiny else 128, learning_rate=3e-3, tiny=tiny)
    del config["kind"]
  else:
    config = ml_collections.ConfigDict()
    stages = _simclr_stages(tiny) if row == "simclr" else \
        _code_lm_stages(int(row.removeprefix("code_lm_k")) if row.startswith("code_lm_k") else DEFAULT_CODES, tiny)
    config.stages = ml_collections.ConfigDict(stages)
  config.seed = 0
  config.attention_impl = None
  config.fsdp = 1
  config.data = ml_collections.ConfigDict(dict(
      name="synth_events/single_label" if tiny else "audio_folder",
      data_dir=None,           # default: $AFX_DATA_DIR or ~/afx_data
      manual_dir=None,
      folder=None,             # paper scale: the directory of labelled audio (labels.csv)
      clip_seconds=1.0 if tiny else 2.0,
      eval_hop_seconds=1.0,
      train_split="train",
      eval_split="validation",
      test_split="test",
      num_threads=4,
      builder_kwargs=ml_collections.ConfigDict(),
  ))
  return config
