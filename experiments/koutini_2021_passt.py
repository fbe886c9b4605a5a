"""Koutini, Schlüter, Eghbal-zadeh & Widmer 2021, "Efficient Training of Audio Transformers with
Patchout" (PaSST, arXiv 2110.05069): AudioSet mAP of the patchout variants, and PaSST-S downstream.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale):
  passt_s    PaSST-S: structured patchout (40 time columns, 4 frequency rows), stride 10  paper mAP 0.471
  passt_u    PaSST-U: unstructured patchout (60 % of the patches), stride 10             paper: none in systems.md
  passt_n    PaSST-N: no patch overlap (stride 16), structured patchout                 paper: none in systems.md
  passt_l    PaSST-L: PaSST-S with half the layers (6)                                   paper: none in systems.md
  esc50_fold1 … esc50_fold5  PaSST-S on ESC-50, fold k held out (accuracy)             paper: none per fold
  esc50      mean of the five folds (`mean_of`: trains nothing itself)                   paper accuracy 96.8 %
  fsd50k     PaSST-S on FSD50K (eval mAP)                                                paper mAP 0.653
The paper's downstream numbers fine-tune the AudioSet-trained PaSST-S; `init_from` loads ImageNet
ViT/DeiT weights only, so afx's downstream rows start from ImageNet (expect them lower).

Tiny scale (the embedded `synth_events` set, 22 classes, 1 s clips, built on first use):
  python run.py reproduce koutini_2021_passt --scale tiny --workdir /tmp/runs/koutini
  No ImageNet weights at this size: every tiny row trains from scratch.  AudioSet and FSD50K rows use
  `synth_events/multi_label` (mAP; chance ≈ label prevalence, about 0.07), ESC-50 rows
  `synth_events/single_label` (accuracy; chance ≈ 1/22 = 0.045), whose five "folds" are five seeds on
  the same split (synth_events has no folds).  The same encoder as `gong_2021_ast`'s tiny rows (d=64,
  4 layers, 4 heads, MLP 256; 100 frames × 128 Kaldi mel bins, 16×16 patches), the same batch, steps
  and optimiser, so the two tables compare step for step.  Patchout is scaled to the 12 × 9 patch
  grid in the paper's proportions: -S and -L drop 4 of 9 time columns and 4 of 12 frequency rows
  (40 of 108 patches kept), -U 60 % of the patches (43 kept), -N (stride 16: 8 × 6 = 48 patches)
  2 columns and 3 rows (20 kept), ESC-50 2 columns and 3 rows (63 kept), FSD50K 1 column and 4 rows (64 kept).
  One row: python run.py train --config experiments/koutini_2021_passt.py:passt_s,tiny --workdir /tmp/runs/passt_s
  Measured from a clean clone (2026-12-02, jax 0.10.2, 2 CPU cores partly shared with tests, so an upper
  bound: 7 min 14 s with the dataset already built; 31 min on 2026-12-01's slower, loaded machine), the
  same numbers to the digit on both days: mAP passt_s 0.596,
  passt_u 0.673, passt_n 0.519, passt_l 0.588, fsd50k 0.631 (d′ 1.80, 1.95, 1.60, 1.80, 1.89);
  ESC-50 accuracy per fold 0.833, 0.807, 0.829, 0.786, 0.831, mean esc50 0.817.  Every row is far
  above chance.  Patchout makes steps faster at this size too: one training step (batch 32, features
  included, timed back to back in one process) takes 0.374 s for gong_2021_ast's tiny AST, 0.157 s for
  -S (2.4× faster), 0.172 s for -U (2.2×), 0.067 s for -N and for -L (5.6×); the runs' logged median
  rates agree (AST 1.6, -S 2.9, -U 2.9, -N 5.9, -L 5.6 steps/s under the shared load).  At the same
  500 steps it costs accuracy here: -S 0.596 against AST's 0.712 mAP, ESC-50 0.817 against 0.881;
  unstructured patchout loses least (systems.md has no -U number to compare with), no overlap most.

Paper scale (not yet run).  AudioSet in AUDIOSET (the official CSVs + audio/<YTID>.*, see the README's
`audioset` builder), ESC-50 in ESC50 (a clone of github.com/karolpiczak/ESC-50), FSD50K in FSD50K
(zenodo record 4060432), and DEIT = timm's `deit_base_distilled_patch16_384` saved as safetensors.
`reproduce` applies one set of overrides to every row and the rows read different directories, so
train each row on its own into DIR/ROW, then collect the table:
  for row in passt_s passt_u passt_n passt_l; do python run.py train \\
      --config experiments/koutini_2021_passt.py:$row --workdir runs/passt/$row \\
      --config.data.manual_dir=AUDIOSET --config.init_from=DEIT; done
  for k in 1 2 3 4 5; do python run.py train --config experiments/koutini_2021_passt.py:esc50_fold$k \\
      --workdir runs/passt/esc50_fold$k --config.data.manual_dir=ESC50 --config.init_from=DEIT; done
  python run.py train --config experiments/koutini_2021_passt.py:fsd50k --workdir runs/passt/fsd50k \\
      --config.data.manual_dir=FSD50K --config.init_from=DEIT
  python run.py reproduce koutini_2021_passt --scale paper --workdir runs/passt   # reuses the finished rows
  32 kHz for AudioSet and ESC-50 (`audioset/32k`, `esc50/32k`); FSD50K at 16 kHz, because the fsd50k
  builder stores 16 kHz or 44.1 kHz and no 32 kHz (the 10 ms hop keeps the frame count).  25 ms / 10 ms
  frames, 128 mel bins; 998 frames for 10 s clips (12 × 99 patches at stride 10; PaSST-S trains on
  472 of them), 498 for ESC-50's 5 s clips; DeiT-B: d=768, 12 layers, 12 heads, MLP 3072, LayerNorm ε 1e-6.
  AudioSet: full set (balanced + unbalanced), batch 12, AdamW (weight decay 1e-4) lr 2e-5 for
  1,083,000 steps (130 "epochs" of 100,000 clips), 41,700 warm-up steps (5 epochs).
  ESC-50: batch 12, lr 1e-5, 1,340 steps (10 epochs of 1,600 clips), 670 warm-up steps, then constant.
  FSD50K: batch 12, lr 1e-5, 153,000 steps (50 epochs of 36,796 clips), 15,300 warm-up steps; 10 s crops.
  Not run; no accelerator measurement yet.  Expected: -S near the paper's 0.471, -U and -L a little
  below it, -N below -S at a fraction of the cost; downstream below the paper's (ImageNet start).

Choices and gaps [unconfirmed; see ../shared/reference/systems.md section J; recipe values come from
the authors' repository, github.com/kkoutini/PaSST, as read, not from the paper's text]:
  - Patchout of the variants the paper does not spell out here: -U drops 60 % of the patches (about
    -S's 472 of 1,188 kept); -N drops 25 of 62 time columns and 3 of 8 frequency rows (-S's
    proportions); -L keeps -S's patchout.  ESC-50 drops 10 time columns and 3 frequency rows, FSD50K
    10 and 4 (the repository's downstream recipes).
  - Features: afx's Kaldi filterbank normalised with AudioSet's mean and std, not PaSST's own
    torch mel (1024-point FFT, 800-sample window, (x + 4.5) / 5).
  - Schedule: PaSST warms up for 5 epochs, then decays linearly from epoch 50 to 100 (AudioSet) or
    10 to 20 (FSD50K) to 0.01 × the peak; afx has no plateau-then-linear schedule, so AudioSet and
    FSD50K use cosine decay to 0.01 × after the warm-up; ESC-50 (10 epochs) stays at the peak.
  - Not in afx: mixup (α 0.3, also of waveforms), SpecAugment-style masks (48 frequency bins, 192
    frames for AudioSet), gain and time-roll augmentation, the class-balanced sampler over the full
    set, and stochastic weight averaging.  Expect lower numbers than the paper's for them.
  - No dropout; no gradient clipping at paper scale (PaSST has neither); clipping at 1.0 at tiny scale.
  - AudioSet has no validation split: validation and test are both `eval`; ESC-50 validates and
    tests on the held-out fold.
"""

import ml_collections

from afx.train.config import table_variant

TITLE = "Koutini et al. 2021: PaSST, patchout spectrogram transformers (AudioSet mAP, downstream)"
METRIC = "mAP"
COLUMNS = ("d_prime",)
FOLDS = tuple(range(1, 6))
ROWS = {
    "passt_s": {"label": "PaSST-S, structured patchout, stride 10", "paper": 0.471},
    "passt_u": {"label": "PaSST-U, unstructured patchout, stride 10", "paper": None},
    "passt_n": {"label": "PaSST-N, no overlap (stride 16)", "paper": None},
    "passt_l": {"label": "PaSST-L, half the layers", "paper": None},
    **{f"esc50_fold{k}": {"label": f"PaSST-S, ESC-50 fold {k} held out", "paper": None, "metric": "accuracy"}
       for k in FOLDS},
    "esc50": {"label": "PaSST-S, ESC-50, mean of 5 folds", "paper": 0.968, "metric": "accuracy",
              "mean_of": [f"esc50_fold{k}" for k in FOLDS]},
    "fsd50k": {"label": "PaSST-S, FSD50K", "paper": 0.653},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
PASST = dict(name="passt", num_mel_bins=128, input_frames=998, positional_frames=998, patch_size=16, stride=10,
             time_patchout=40, frequency_patchout=4, patchout_probability=0.0, embed_dim=768, num_layers=12,
             num_heads=12, mlp_dim=3072, dropout_rate=0.0, layer_norm_epsilon=1e-6)
PAPER_MODELS = {
    "passt_s": PASST,
    "passt_u": {**PASST, "time_patchout": 0, "frequency_patchout": 0, "patchout_probability": 0.6},
    "passt_n": {**PASST, "stride": 16, "time_patchout": 25, "frequency_patchout": 3},
    "passt_l": {**PASST, "num_layers": 6},
    "esc50": {**PASST, "input_frames": 498, "time_patchout": 10, "frequency_patchout": 3},
    "fsd50k": {**PASST, "time_patchout": 10, "frequency_patchout": 4},
}
# Tiny: gong_2021_ast's tiny encoder on 1 s windows (98 Kaldi frames, padded to 100) → 12 × 9 patches.
TINY_PASST = {**PASST, "input_frames": 100, "positional_frames": 100, "time_patchout": 4, "frequency_patchout": 4,
              "embed_dim": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 256}
TINY_MODELS = {
    "passt_s": TINY_PASST,
    "passt_u": {**TINY_PASST, "time_patchout": 0, "frequency_patchout": 0, "patchout_probability": 0.6},
    "passt_n": {**TINY_PASST, "stride": 16, "time_patchout": 2, "frequency_patchout": 3},
    "passt_l": {**TINY_PASST, "num_layers": 2},
    "esc50": {**TINY_PASST, "time_patchout": 2, "frequency_patchout": 3},
    "fsd50k": {**TINY_PASST, "time_patchout": 1, "frequency_patchout": 4},
}

# Paper-scale training per row kind: data, steps, peak learning rate, warm-up, schedule (batch 12 throughout).
AUDIOSET = dict(data=dict(name="audioset/32k", clip_seconds=10.0, eval_hop_seconds=10.0,
                          train_split="balanced_train+unbalanced_train", eval_split="eval", test_split="eval"),
                total_steps=1_083_000, learning_rate=2e-5, warmup_steps=41_700, schedule="cosine")
PAPER_RUNS = {
    "audioset": AUDIOSET,
    "esc50": dict(data=dict(name="esc50/32k", clip_seconds=5.0, eval_hop_seconds=5.0), total_steps=1340,
                  learning_rate=1e-5, warmup_steps=670, schedule="constant"),
    "fsd50k": dict(data=dict(name="fsd50k/16k", clip_seconds=10.0, eval_hop_seconds=5.0, train_split="train",
                             eval_split="validation", test_split="test"),
                   total_steps=153_000, learning_rate=1e-5, warmup_steps=15_300, schedule="cosine"),
}
TINY_DATA = dict(clip_seconds=1.0, eval_hop_seconds=0.5, train_split="train", eval_split="validation",
                 test_split="test")
TINY_RUNS = {
    "audioset": dict(data={**TINY_DATA, "name": "synth_events/multi_label"}),
    "esc50": dict(data={**TINY_DATA, "name": "synth_events/single_label"}, total_steps=300),
    "fsd50k": dict(data={**TINY_DATA, "name": "synth_events/multi_label"}),
}


def _kind(row: str) -> str:
  return "esc50" if row.startswith("esc50") else "fsd50k" if row == "fsd50k" else "audioset"


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, tiny = table_variant(variant, ROWS, "passt_s")
  kind = _kind(row)
  fold = int(row.removeprefix("esc50_fold")) if kind == "esc50" else None
  run = dict(total_steps=500, learning_rate=1e-3, warmup_steps=50, schedule="cosine") if tiny else {}
  run.update((TINY_RUNS if tiny else PAPER_RUNS)[kind])
  data = dict(run["data"])
  if fold and not tiny:  # leave-one-fold-out: train on the other four folds, validate and test on this one
    data.update(train_split="+".join(f"fold{k}" for k in FOLDS if k != fold), eval_split=f"fold{fold}",
                test_split=f"fold{fold}")

  config = ml_collections.ConfigDict()
  config.task = "single_label" if kind == "esc50" else "multi_label"
  config.seed = fold - 1 if fold and tiny else 0  # at tiny scale the five "folds" are five seeds
  config.batch_size = 32 if tiny else 12
  config.eval_batch_size = 128 if tiny else 48
  config.total_steps = run["total_steps"]
  config.log_every = 50 if tiny else 200
  config.checkpoint_every = 500 if tiny else (5000 if run["total_steps"] > 5000 else run["total_steps"])
  config.eval_every = 0 if tiny or kind == "esc50" else 10_000
  config.keep_checkpoints = 2
  config.attention_impl = None
  config.fsdp = 1
  # A timm ViT/DeiT weight file (DeiT-B/384 distilled) every paper-scale row starts from; give it with
  # --config.init_from=PATH.  Tiny rows start from random weights.
  config.init_from = None

  config.data = ml_collections.ConfigDict(dict(
      data_dir=None,           # default: $AFX_DATA_DIR or ~/afx_data
      manual_dir=None,         # paper scale: the AudioSet, ESC-50 or FSD50K directory
      folder=None,
      num_threads=4,
      builder_kwargs=ml_collections.ConfigDict(),
      **data,
  ))
  models = TINY_MODELS if tiny else PAPER_MODELS
  config.model = ml_collections.ConfigDict(dict(models[row if row in models else kind]))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=run["learning_rate"], b1=0.9, b2=0.999, weight_decay=1e-4,
      schedule=run["schedule"], warmup_steps=run["warmup_steps"], end_factor=0.1 if tiny else 0.01,
      grad_clip_norm=1.0 if tiny else 0.0))
  return config
