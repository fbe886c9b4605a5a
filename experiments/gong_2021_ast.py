"""Gong, Chung & Glass 2021, "AST: Audio Spectrogram Transformer" (Interspeech 2021, arXiv 2104.01778):
AudioSet mAP with and without ImageNet initialisation, and ESC-50 accuracy.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale):
  audioset_balanced      AST, ImageNet (DeiT-B/384) init, balanced AudioSet (~20k clips)  paper mAP 0.347
  audioset_full          AST, ImageNet init, full AudioSet (balanced + unbalanced, ~2M)  paper mAP 0.459
  audioset_full_scratch  AST from random init, full AudioSet                             paper mAP 0.366
  esc50_fold1 … esc50_fold5  AST on ESC-50, fold k held out (accuracy)                 paper: none per fold
  esc50                  mean of the five folds (`mean_of`: trains nothing itself)       paper accuracy 95.6 %
The paper's 95.6 % fine-tunes AST after ImageNet *and* AudioSet training ("AST-P"); from ImageNet
alone the paper reports about 88.7 % ("AST-S": not in systems.md, from the paper's table, unchecked).

Tiny scale (the embedded `synth_events` set, 22 classes, 1 s clips, built on first use):
  python run.py reproduce gong_2021_ast --scale tiny --workdir /tmp/runs/gong
  No ImageNet weights at this size: every tiny row trains from scratch, so `audioset_full` and
  `audioset_full_scratch` are the same run (equal numbers are expected).  AudioSet rows use
  `synth_events/multi_label` (mAP; chance ≈ label prevalence, about 0.07); `audioset_balanced` trains
  on the first 10 % (500 clips) of its training split where the full rows use all 5,000, standing in
  for the 20k-vs-2M contrast.  ESC-50 rows use `synth_events/single_label` (accuracy; chance ≈
  1/22 = 0.045); its five "folds" are five seeds on the same split (synth_events has no folds).
  AST at d=64, 4 layers, 4 heads, MLP 256, on 100 frames × 128 Kaldi mel bins (1 s), patches 16×16 at
  stride 10 (12 × 9 = 108 patches); 500 steps (ESC-50: 300) of batch 32, AdamW 1e-3 with 50 warm-up steps, cosine.
  One row: python run.py train --config experiments/gong_2021_ast.py:audioset_full,tiny --workdir /tmp/runs/ast
  Measured from a clean clone (2026-12-02, jax 0.10.2, 2 CPU cores, partly shared with tests, so an
  upper bound: 9 min 30 s including the 26 s dataset build; 39 min on 2026-12-01's slower, loaded
  machine), the same numbers to the digit on both days: mAP audioset_balanced 0.440, audioset_full 0.712, audioset_full_scratch 0.712 (d′ 1.27,
  2.05, 2.05); ESC-50 accuracy per fold 0.883, 0.881, 0.890, 0.869, 0.884, mean esc50 0.881.  Every
  row is far above chance; ten times more training clips lift mAP by 0.27, as the full set lifts the
  paper's; the two full rows are one run.  225k parameters.

Paper scale (not yet run).  AudioSet in AUDIOSET (the official CSVs + audio/<YTID>.*, see the README's
`audioset` builder), ESC-50 in ESC50 (a clone of github.com/karolpiczak/ESC-50), and the ImageNet
weights DEIT = timm's `deit_base_distilled_patch16_384` saved as safetensors.  `reproduce` applies one
set of overrides to every row, and these rows need different ones (AudioSet or ESC-50 directory; no
weights for the scratch row), so train each row on its own into DIR/ROW, then collect the table:
  python run.py train --config experiments/gong_2021_ast.py:audioset_balanced --workdir runs/ast/audioset_balanced \\
      --config.data.manual_dir=AUDIOSET --config.init_from=DEIT
  python run.py train --config experiments/gong_2021_ast.py:audioset_full --workdir runs/ast/audioset_full \\
      --config.data.manual_dir=AUDIOSET --config.init_from=DEIT
  python run.py train --config experiments/gong_2021_ast.py:audioset_full_scratch \\
      --workdir runs/ast/audioset_full_scratch --config.data.manual_dir=AUDIOSET
  for k in 1 2 3 4 5; do python run.py train --config experiments/gong_2021_ast.py:esc50_fold$k \\
      --workdir runs/ast/esc50_fold$k --config.data.manual_dir=ESC50 --config.init_from=DEIT; done
  python run.py reproduce gong_2021_ast --scale paper --workdir runs/ast   # reuses the finished rows
  16 kHz, 128 Kaldi mel bins; 10 s AudioSet clips give 998 frames, zero-padded to 1024 as in AST, and
  5 s ESC-50 clips 498, padded to 512; 16×16 patches at stride 10 (12 × 101 = 1,212 for AudioSet);
  DeiT-B: d=768, 12 layers, 12 heads, MLP 3072 (86.6 M parameters with the 527-class head).
  AudioSet: batch 12, Adam (β 0.95, 0.999), lr 5e-5 for 42,500 steps (≈ 25 epochs of the ~20k
  balanced clips) or 1e-5 for 810,000 steps (≈ 5 epochs of ~1.95M clips), 1,000 warm-up steps.
  ESC-50: batch 48, lr 1e-5, 850 steps (≈ 25 epochs of 1,600 clips) per fold.
  Not run; no accelerator measurement yet.  Expected: full > balanced, ImageNet init > scratch by
  several points of mAP (the paper: 0.459 vs 0.366), and ESC-50 near 88.7 % from ImageNet weights
  alone (95.6 % needs the AudioSet-trained model as the starting point, which `init_from` cannot load).

Choices and gaps [unconfirmed; see ../shared/reference/systems.md section I; the recipe values
come from the authors' repository, github.com/YuanGongND/ast, as read, not from the paper's text]:
  - Schedule: AST halves the learning rate at epochs 10, 15, 20 (balanced) or 2, 3, 4 (full) and
    multiplies it by 0.85 per epoch from epoch 5 (ESC-50); afx has no step schedule, so every row uses
    cosine decay to 0.1 × the peak (ending near AST's last rate).  Warm-up: 1,000 steps (AudioSet),
    100 (ESC-50, whose runs are shorter than AST's warm-up).
  - Not in afx: mixup (0.5 for AudioSet), SpecAugment (time/frequency masks 192/48 for AudioSet,
    96/24 for ESC-50), AST's class-balanced sampling of the full set, its weight averaging of the
    epoch checkpoints, and Adam's 5e-7 L2 term.  Expect lower numbers than the paper's for them.
  - No gradient clipping and no dropout at paper scale (AST has neither); gradient clipping at 1.0
    at tiny scale.  Evaluation: one window per clip (10 s AudioSet, 5 s ESC-50 clips).
  - AudioSet has no validation split: validation and test are both `eval`, as in AST's recipe.
"""

import ml_collections

from afx.train.config import table_variant

TITLE = "Gong, Chung & Glass 2021: AST, Audio Spectrogram Transformer (AudioSet mAP, ESC-50 accuracy)"
METRIC = "mAP"
COLUMNS = ("d_prime",)
FOLDS = tuple(range(1, 6))
ROWS = {
    "audioset_balanced": {"label": "AST, ImageNet init, balanced AudioSet", "paper": 0.347},
    "audioset_full": {"label": "AST, ImageNet init, full AudioSet", "paper": 0.459},
    "audioset_full_scratch": {"label": "AST, no ImageNet init, full AudioSet", "paper": 0.366},
    **{f"esc50_fold{k}": {"label": f"AST, ImageNet init, ESC-50 fold {k} held out", "paper": None,
                          "metric": "accuracy"} for k in FOLDS},
    "esc50": {"label": "AST, ESC-50, mean of 5 folds", "paper": 0.956, "metric": "accuracy",
              "mean_of": [f"esc50_fold{k}" for k in FOLDS]},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
AST = dict(name="ast", num_mel_bins=128, input_frames=1024, positional_frames=1024, positional_resize="crop",
           patch_size=16, frequency_stride=10, time_stride=10, embed_dim=768, num_layers=12, num_heads=12,
           mlp_dim=3072, dropout_rate=0.0, layer_norm_epsilon=1e-12)
ESC50_AST = {**AST, "input_frames": 512, "positional_frames": 512}
# Tiny: 1 s windows (98 Kaldi frames, padded to 100) → 12 × 9 patches.
TINY_AST = {**AST, "input_frames": 100, "positional_frames": 100, "embed_dim": 64, "num_layers": 4,
            "num_heads": 4, "mlp_dim": 256}

# Paper-scale training per row kind: data, batch, steps, peak learning rate, warm-up.
AUDIOSET_DATA = dict(name="audioset/16k", clip_seconds=10.0, eval_hop_seconds=10.0, eval_split="eval",
                     test_split="eval")
FULL_AUDIOSET = "balanced_train+unbalanced_train"
PAPER_RUNS = {
    "audioset_balanced": dict(data={**AUDIOSET_DATA, "train_split": "balanced_train"}, batch_size=12,
                              total_steps=42_500, learning_rate=5e-5, warmup_steps=1000),
    "audioset_full": dict(data={**AUDIOSET_DATA, "train_split": FULL_AUDIOSET}, batch_size=12,
                          total_steps=810_000, learning_rate=1e-5, warmup_steps=1000),
    "esc50": dict(data=dict(name="esc50/16k", clip_seconds=5.0, eval_hop_seconds=5.0), batch_size=48,
                  total_steps=850, learning_rate=1e-5, warmup_steps=100),
}
TINY_DATA = dict(clip_seconds=1.0, eval_hop_seconds=0.5, train_split="train", eval_split="validation",
                 test_split="test")
TINY_RUNS = {
    "audioset_balanced": dict(data={**TINY_DATA, "name": "synth_events/multi_label", "train_split": "train[:10%]"}),
    "audioset_full": dict(data={**TINY_DATA, "name": "synth_events/multi_label"}),
    "esc50": dict(data={**TINY_DATA, "name": "synth_events/single_label"}, total_steps=300),
}


def _kind(row: str) -> str:
  return "esc50" if row.startswith("esc50") else "audioset_full" if row.startswith("audioset_full") else row


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, tiny = table_variant(variant, ROWS, "audioset_balanced")
  kind = _kind(row)
  fold = int(row.removeprefix("esc50_fold")) if kind == "esc50" else None
  run = dict(batch_size=32, total_steps=500, learning_rate=1e-3, warmup_steps=50) if tiny else {}
  run.update((TINY_RUNS if tiny else PAPER_RUNS)[kind])
  data = dict(run["data"])
  if fold and not tiny:  # leave-one-fold-out: train on the other four folds, validate and test on this one
    data.update(train_split="+".join(f"fold{k}" for k in FOLDS if k != fold), eval_split=f"fold{fold}",
                test_split=f"fold{fold}")

  config = ml_collections.ConfigDict()
  config.task = "single_label" if kind == "esc50" else "multi_label"
  config.seed = fold - 1 if fold and tiny else 0  # at tiny scale the five "folds" are five seeds
  config.batch_size = run["batch_size"]
  config.eval_batch_size = 128 if tiny else 48
  config.total_steps = run["total_steps"]
  config.log_every = 50 if tiny else 200
  config.checkpoint_every = 500 if tiny else (5000 if run["total_steps"] > 5000 else 850)
  config.eval_every = 0 if tiny or kind == "esc50" else 10_000
  config.keep_checkpoints = 2
  config.attention_impl = None
  config.fsdp = 1
  # A timm ViT/DeiT weight file (DeiT-B/384 distilled) the ImageNet rows start from at paper scale;
  # give it with --config.init_from=PATH.  The scratch row and every tiny row start from random weights.
  config.init_from = None

  config.data = ml_collections.ConfigDict(dict(
      data_dir=None,           # default: $AFX_DATA_DIR or ~/afx_data
      manual_dir=None,         # paper scale: the AudioSet or ESC-50 directory
      folder=None,
      num_threads=4,
      builder_kwargs=ml_collections.ConfigDict(),
      **data,
  ))
  config.model = ml_collections.ConfigDict(dict(TINY_AST if tiny else ESC50_AST if kind == "esc50" else AST))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw" if tiny else "adam", learning_rate=run["learning_rate"], b1=0.9 if tiny else 0.95, b2=0.999,
      weight_decay=1e-4 if tiny else 0.0, schedule="cosine", warmup_steps=run["warmup_steps"], end_factor=0.1,
      grad_clip_norm=1.0 if tiny else 0.0))
  return config
