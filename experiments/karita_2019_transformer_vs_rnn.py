"""Karita et al. 2019, "A Comparative Study on Transformer vs RNN in Speech Applications" (ASRU 2019): ESPnet's
Transformer and RNN encoder-decoders, both with joint CTC/attention, on the same data and budget.

Rows (variant `ROW` at paper scale, `ROW,tiny` at tiny scale), LibriSpeech test-clean WER:
  transformer   12 encoder / 6 decoder blocks, d 256, 4 heads, FFN 2048       paper 2.6 % (test-other 5.7 %)
  rnn           ESPnet's BLSTMP encoder (5 × 1024), location-aware attention,
                2-layer LSTM decoder                                          paper: not in the sources at hand
The paper's numbers are with its language model [unconfirmed]; afx decodes without one.  The paper's claim is
the ordering: the Transformer beats the RNN on 13 of 15 ASR corpora.  afx's number is `wer` of the final beam
search (beam 10, CTC weight 0.3) on the test split.  A trivial system (the empty transcript) has WER 1.0.

Same data and budget: both rows train the same steps of the same batches with the same optimiser, schedule,
CTC weight and label smoothing; only the model differs.

Tiny scale (the embedded `synth_speech` corpus, built on first use in about a minute):
  python run.py reproduce karita_2019_transformer_vs_rnn --scale tiny --workdir runs/karita
  2 CPU cores: 9 min 44 s for the two rows (Transformer 2.2, RNN 6.2 min of training at batch 16, 1200 steps;
  the corpus already built).  Measured 2026-12-04 (jax 0.10.2, CPU): WER Transformer 0.810, RNN 0.415 (CER 0.352 /
  0.132; greedy CTC alone 0.961 / 0.663), against 1.0 for the empty transcript.  Tiny scale reverses the paper's
  ordering, in the direction the paper's own lessons predict: its Transformers need large batches, long warm-up
  and many epochs, while the BLSTM encoder and location-aware (monotonic) attention align quickly from little
  data; here both see 19,200 utterances (6 epochs) at batch 16.  The RNN costs 2.8× the Transformer's step time.
  Tiny models: 40 filterbanks, no SpecAugment; the Transformer d 96, 4 heads, FFN 384, 4 encoder blocks and one
  decoder block; the RNN 3 BLSTMP layers of 128 units (subsampling 1_2_2_1, ×4 as the Transformer's), attention
  128 with 10 location filters of width 51, one LSTM decoder layer of 128.

Paper scale (LibriSpeech 960 h in DIR, as for gulati_2020_conformer):
  python run.py reproduce karita_2019_transformer_vs_rnn --scale paper --workdir runs/karita --config.data.manual_dir=DIR
  300k steps of 32 utterances with 5k sentencepiece pieces, Noam (ESPnet's transformer-lr 10, 25k warm-up) for
  both rows (ESPnet trained its RNNs with AdaDelta), averaging the last 10 checkpoints.  Not yet run.
"""

import ml_collections

from afx.tasks.asr import recipe_config
from afx.train.config import table_variant

TITLE = "Karita et al. 2019: Transformer vs RNN, joint CTC/attention (LibriSpeech test-clean WER)"
METRIC = "wer"
LOWER_IS_BETTER = ("wer", "cer", "ctc_greedy_wer")
COLUMNS = ("cer", "ctc_greedy_wer", "paper_test_other")
ROWS = {
    "transformer": {"label": "Transformer (12 enc / 6 dec, d 256, FFN 2048)", "paper": 0.026,
                    "paper_test_other": 0.057},
    "rnn": {"label": "RNN (BLSTMP encoder, location attention, LSTM decoder)", "paper": None},
}

# Every model option is listed, so any of them can be changed with --config.model.KEY=VALUE.
TRANSFORMER = dict(name="speech_transformer", num_mel_bins=80, use_deltas=False, normalization="utterance",
                   spec_augment=True, freq_masks=2, freq_width=30, time_masks=2, time_width=40, conv_channels=256,
                   conv_batch_norm=False, num_2d_attention=0, d_model=256, num_heads=4, mlp_dim=2048,
                   encoder_layers=12, decoder_layers=6, dropout_rate=0.1)
RNN = dict(name="rnn_seq2seq", num_mel_bins=80, use_deltas=False, normalization="utterance", spec_augment=True,
           freq_masks=2, freq_width=30, time_masks=2, time_width=40, encoder_layers=5, encoder_units=1024,
           projection_units=1024, subsample="1_2_2_1_1_1", dropout_rate=0.0, att_dim=1024, aconv_chans=10,
           aconv_filts=100, attention_scaling=2.0, decoder_layers=2, decoder_units=1024, decoder_dropout_rate=0.0)
PAPER_MODELS = {"transformer": TRANSFORMER, "rnn": RNN}
TINY_MODELS = {
    "transformer": {**TRANSFORMER, "num_mel_bins": 40, "spec_augment": False, "conv_channels": 32, "d_model": 96, "mlp_dim": 384,
                    "encoder_layers": 4, "decoder_layers": 1},
    "rnn": {**RNN, "num_mel_bins": 40, "spec_augment": False, "encoder_layers": 3, "encoder_units": 128, "projection_units": 128,
            "subsample": "1_2_2_1", "att_dim": 128, "aconv_filts": 25, "decoder_layers": 1, "decoder_units": 128},
}
PAPER_DATA = dict(name="librispeech", train_split="train_clean_100+train_clean_360+train_other_500",
                  eval_split="dev_clean", test_split="test_clean")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  row, tiny = table_variant(variant, ROWS, "transformer")
  model = (TINY_MODELS if tiny else PAPER_MODELS)[row]
  if tiny:
    return recipe_config(model, tiny=True)
  # ESPnet's LibriSpeech recipes of 2019: 5k unigram pieces; the Transformer with Noam at ESPnet's
  # `transformer-lr: 10` (peak 10 · 256^-½ · 25000^-½ ≈ 4e-3), the RNN with AdaDelta there (AdamW and Noam here).
  return recipe_config(model, tiny=False, data=PAPER_DATA, batch_size=32, total_steps=300_000,
                       tokenizer=dict(kind="sentencepiece", vocab_size=5000, model_type="unigram", case="lower"),
                       optimizer=dict(learning_rate=10 * 256 ** -0.5 * 25_000 ** -0.5, warmup_steps=25_000))
