"""Dong, Xu & Xu 2018, "Speech-Transformer: a no-recurrence sequence-to-sequence model for speech recognition"
(ICASSP 2018): WSJ eval92 WER of characters without a language model.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale), WSJ eval92 WER:
  base      6 encoder / 6 decoder blocks, d 256, 4 heads, FFN 1024      paper 12.20 %
  base_2d   base + two 2D-Attention modules after the convolutions     paper 11.43 %
  big       12 encoder / 6 decoder blocks, FFN 2048                     paper 10.92 %
afx's number is `wer` of the final beam search (beam 10) on the test split; `ctc_greedy_wer` is greedy CTC
on the same model.  A trivial system (the empty transcript) has WER 1.0.

Tiny scale (the embedded `synth_speech` corpus, built on first use in about a minute):
  python run.py reproduce dong_2018_speech_transformer --scale tiny --workdir runs/speech_transformer
  2 CPU cores: 13 min 57 s for the three rows (base 2.5, base_2d 4.3, big 4.5 min of training at batch 16,
  1200 steps; the corpus already built).  Measured 2026-12-04 (jax 0.10.2, CPU): WER base 0.774, base_2d
  0.738, big 0.729 (CER 0.315 / 0.286 / 0.284), against 1.0 for the empty transcript.  The paper's ordering
  holds (big < base + 2D-attention < base), by similar relative margins (−5 % and −6 % of base's WER here,
  −6 % and −10 % in the paper); most errors are spelling, as in every tiny ASR table.  The Speech-Transformer
  trails the tiny Conformers (gulati_2020_conformer) at the same budget.
  Tiny models: 40 filterbanks + Δ + ΔΔ, 32-channel convolutions with BatchNorm, d 96, 4 heads, FFN 384 (big:
  768), 4 encoder blocks (big: 8) and one decoder block; the 2D-attention modules have 4 heads (c = 4).
  These numbers were measured with per-utterance normalisation, before the rows switched to the paper's
  per-speaker normalisation (below); the table has not been rerun since.

Paper scale (WSJ, LDC93S6B + LDC94S13B, prepared as Kaldi data directories train_si284, test_dev93 and
test_eval92 in DIR, see the README's "Data"):
  python run.py reproduce dong_2018_speech_transformer --scale paper --workdir runs/st --config.data.manual_dir=DIR
  Each row trains 100k steps of 32 utterances (the paper: ~25 s of audio per batch on one GPU), Noam with 25k
  warm-up, averaging the last 10 checkpoints (every 1k steps), beam 10 on the attention scores alone (decoding
  CTC weight 0), the CTC head trained beside (weight 0.3) as ESPnet does.  Not yet run.

Normalisation: per speaker, as the paper (`normalization: "speaker"`, a one-line setting of the model dict
below): Kaldi's per-speaker mean subtraction and variance normalisation, each split's speakers measured from
that split before training (`afx.tasks.asr`; `--config.model.normalization=utterance` for ESPnet's per
utterance).  synth_speech and WSJ (utt2spk) name their speakers.

Differences from the paper [unconfirmed; see ../shared/reference/systems.md section D]:
  - The CTC head (the paper trains attention alone).
  - The 2D-Attention module's layout where the paper is silent (`afx.layers.two_d_attention`).
"""

import ml_collections

from afx.tasks.asr import recipe_config
from afx.train.config import table_variant

TITLE = "Dong, Xu & Xu 2018: Speech-Transformer (WSJ eval92 WER, characters, no LM)"
METRIC = "wer"
LOWER_IS_BETTER = ("wer", "cer", "ctc_greedy_wer")
COLUMNS = ("cer", "ctc_greedy_wer")
ROWS = {
    "base": {"label": "base model (6 enc / 6 dec, FFN 1024)", "paper": 0.1220},
    "base_2d": {"label": "base model + 2 × 2D-Attention", "paper": 0.1143},
    "big": {"label": "big model (12 enc / 6 dec, FFN 2048)", "paper": 0.1092},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
SPEECH_TRANSFORMER = dict(name="speech_transformer", num_mel_bins=80, use_deltas=True, normalization="speaker",
                          spec_augment=False, conv_channels=64, conv_batch_norm=True, num_2d_attention=0,
                          d_model=256, num_heads=4, mlp_dim=1024, encoder_layers=6, decoder_layers=6,
                          dropout_rate=0.1)
PAPER_MODELS = {
    "base": SPEECH_TRANSFORMER,
    "base_2d": {**SPEECH_TRANSFORMER, "num_2d_attention": 2},
    "big": {**SPEECH_TRANSFORMER, "mlp_dim": 2048, "encoder_layers": 12},
}
TINY_TRANSFORMER = {**SPEECH_TRANSFORMER, "num_mel_bins": 40, "conv_channels": 32, "d_model": 96, "mlp_dim": 384,
                    "encoder_layers": 4, "decoder_layers": 1}
TINY_MODELS = {
    "base": TINY_TRANSFORMER,
    "base_2d": {**TINY_TRANSFORMER, "num_2d_attention": 2},
    "big": {**TINY_TRANSFORMER, "mlp_dim": 768, "encoder_layers": 8},
}
# WSJ (LDC93S6B + LDC94S13B) in the layout `afx.tasks`' `wsj` builder documents; si284 to train, dev93, eval92.
PAPER_DATA = dict(name="wsj", train_split="train_si284", eval_split="test_dev93", test_split="test_eval92")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, tiny = table_variant(variant, ROWS, "base")
  model = (TINY_MODELS if tiny else PAPER_MODELS)[row]
  if tiny:
    return recipe_config(model, tiny=True)
  # The paper: 100k steps of ~25 s of audio per GPU batch on one GPU, warm-up 25k steps (Noam k = 10), averaging
  # of the last 10 checkpoints (every 1k steps), beam 10 without the CTC term.
  return recipe_config(model, tiny=False, data=PAPER_DATA, batch_size=32, total_steps=100_000,
                       checkpoint_every=1000, ctc_weight=0.3, decoding=dict(ctc_weight=0.0))
