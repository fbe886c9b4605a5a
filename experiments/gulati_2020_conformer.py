"""Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech Recognition" (Interspeech 2020):
LibriSpeech WER of the S, M and L Conformers.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale), LibriSpeech test-clean / test-other WER without
a language model:
  s   Conformer (S), d 144, 16 layers, 4 heads     paper 2.7 / 6.3 %, 10.3 M parameters
  m   Conformer (M), d 256, 16 layers, 4 heads     paper 2.3 / 5.0 %, 30.7 M parameters
  l   Conformer (L), d 512, 17 layers, 8 heads     paper 2.1 / 4.3 %, 118.8 M parameters
afx's number is `wer` of the final joint CTC/attention beam search (beam 10, CTC weight 0.3) on the test
split; `ctc_greedy_wer` is greedy CTC alone.  A trivial system (the empty transcript) has WER 1.0.

Tiny scale (the embedded `synth_speech` corpus, built on first use in about a minute):
  python run.py reproduce gulati_2020_conformer --scale tiny --workdir runs/conformer
  2 CPU cores, from a clean clone: 14 min 45 s for the three rows (S 3.3, M 4.0, L 6.0 min of training at batch
  16, 1200 steps; the corpus already built).  Measured 2026-12-04 (jax 0.10.2, CPU): WER S 0.655, M 0.564,
  L 0.571 (CER 0.215 / 0.172 / 0.189; greedy CTC alone 0.793 / 0.711 / 0.732), against 1.0 for the empty
  transcript.  Earlier runs that day: 0.672 / 0.566 / 0.594 (before the depthwise convolution's gradients were
  written out, the same function to float rounding) and 0.660 / 0.579 / 0.591 (before its rewrite as shifted
  copies; equal within 5e-7), 16 min 49 s.  Most errors are spelling (`"she travelled to ireland"` →
  `"she traveld toir lond"`): a character model learns orthography from 3,000 utterances in 6 epochs, so every
  row is far from the paper's few percent.  The paper's ordering holds from S to M and breaks at L (level with
  M): with the same 1200 steps the largest model (2.4 M parameters) is not yet better trained than M; the paper
  trains each size to convergence on 960 h.
  Tiny models: 4 Conformer blocks (L: 5) of d 64 / 96 / 128, kernel 15, one decoder block, 32-channel
  subsampling convolutions, no SpecAugment (it slows convergence more than it helps in 6 epochs), AdamW at
  5e-3 with 150 warm-up steps and cosine decay.

  One row: python run.py train --config experiments/gulati_2020_conformer.py:m,tiny --workdir runs/conformer_m

Paper scale (LibriSpeech 960 h from https://www.openslr.org/12, unpacked so that DIR holds LibriSpeech/):
  python run.py reproduce gulati_2020_conformer --scale paper --workdir runs/conformer --config.data.manual_dir=DIR
  Each row trains 150k steps of 128 utterances with 1k sentencepiece pieces, the paper's Noam schedule (peak
  0.05/√d, 10k warm-up), SpecAugment with 10 time masks, and averages its last 10 checkpoints before the test;
  expect days on one H100 for L.  Not yet run.

Differences from the paper [unconfirmed where noted; see ../shared/reference/systems.md section H]:
  - The paper's decoder is a single-layer LSTM transducer (RNN-T); afx's Conformer is ESPnet's hybrid: the
    same encoder with a CTC head and a 6-layer Transformer attention decoder (FFN 2048), joint loss with CTC
    weight 0.3 and label smoothing 0.1, joint beam search.  Parameter counts therefore differ from the paper's.
  - The depthwise kernel is ESPnet's 31 (the paper's 32); Kaldi filterbanks with per-utterance normalisation
    (the paper's 80 log-mels with its own normalisation [unconfirmed]).
  - No variational noise and no language model.
"""

import ml_collections

from afx.tasks.asr import recipe_config
from afx.train.config import table_variant

TITLE = "Gulati et al. 2020: Conformer S / M / L (LibriSpeech test-clean WER)"
METRIC = "wer"
LOWER_IS_BETTER = ("wer", "cer", "ctc_greedy_wer")
COLUMNS = ("cer", "ctc_greedy_wer", "paper_test_other")
ROWS = {
    "s": {"label": "Conformer (S)", "paper": 0.027, "paper_test_other": 0.063, "paper_params": 10_300_000},
    "m": {"label": "Conformer (M)", "paper": 0.023, "paper_test_other": 0.050, "paper_params": 30_700_000},
    "l": {"label": "Conformer (L)", "paper": 0.021, "paper_test_other": 0.043, "paper_params": 118_800_000},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
CONFORMER = dict(name="conformer", num_mel_bins=80, normalization="utterance", spec_augment=True, freq_masks=2,
                 freq_width=27, time_masks=10, time_width_ratio=0.05, conv_channels=None, d_model=256, num_heads=4,
                 mlp_dim=1024, encoder_layers=16, conv_kernel=31, decoder_layers=6, decoder_mlp_dim=2048,
                 dropout_rate=0.1)
PAPER_MODELS = {
    "s": {**CONFORMER, "d_model": 144, "mlp_dim": 576},
    "m": CONFORMER,
    "l": {**CONFORMER, "d_model": 512, "num_heads": 8, "mlp_dim": 2048, "encoder_layers": 17},
}
TINY_CONFORMER = {**CONFORMER, "spec_augment": False, "conv_channels": 32, "encoder_layers": 4, "conv_kernel": 15,
                  "decoder_layers": 1}
TINY_MODELS = {
    "s": {**TINY_CONFORMER, "d_model": 64, "mlp_dim": 256, "decoder_mlp_dim": 256},
    "m": {**TINY_CONFORMER, "d_model": 96, "mlp_dim": 384, "decoder_mlp_dim": 384},
    "l": {**TINY_CONFORMER, "d_model": 128, "num_heads": 8, "mlp_dim": 512, "decoder_mlp_dim": 512,
          "encoder_layers": 5},
}
PAPER_DATA = dict(name="librispeech", train_split="train_clean_100+train_clean_360+train_other_500",
                  eval_split="dev_clean", test_split="test_clean")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, tiny = table_variant(variant, ROWS, "m")
  model = (TINY_MODELS if tiny else PAPER_MODELS)[row]
  if tiny:
    return recipe_config(model, tiny=True)
  # The paper: 1k word pieces, Adam (β₂ 0.98) with the Noam schedule at peak 0.05/√d_model and 10k warm-up
  # steps, 10 time masks of up to 5 % of each utterance, dropout 0.1; LibriSpeech 960 h.
  return recipe_config(model, tiny=False, data=PAPER_DATA, batch_size=128, total_steps=150_000,
                       tokenizer=dict(kind="sentencepiece", vocab_size=1024, model_type="unigram", case="lower"),
                       optimizer=dict(learning_rate=0.05 / model["d_model"] ** 0.5, warmup_steps=10_000))
