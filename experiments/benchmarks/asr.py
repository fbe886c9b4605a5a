"""Speech recognition against ESPnet (PyPI `espnet`, needs `afx[parity]`) on this machine, in one run: the
Conformer's training step and joint CTC/attention beam search.

Both frameworks hold the same model: ESPnet2's `ESPnetASRModel` (Conformer encoder with macaron FFNs,
`rel_pos_type: latest`, conv2d subsampling, the Transformer decoder, CTC weight 0.3, label smoothing 0.1)
built with random weights, and afx's `conformer` with those weights imported (`params_from_espnet`), on
random utterances of `--seconds` (a 16 kHz waveform and its transcript of `--tokens` characters).

  train step   forward, joint CTC/attention loss, backward and an AdamW update, batch `--batch`, dropout
               and SpecAugment on; the median of the timed steps after the first.  afx's step starts from
               the waveform (Kaldi filterbanks on the device); ESPnet's from the same filterbanks computed
               before the timed steps (its recipes dump features once), so afx's time includes work
               ESPnet's does not.
  beam search  joint CTC/attention decoding with beam `--beam` (CTC weight 0.3, no length bonus, up to
               `--max-tokens` tokens) of `--utterances` utterances: afx batched on the device (one call for
               all, after a first compiling call), ESPnet's `BatchBeamSearch` (its default) per utterance
               over the same filterbanks; each the median of `--decode-runs` runs after a first, both
               including their encoder.  The real-time factor of each is its time / seconds of audio;
               `afx_espnet_hypothesis_token_error_rate` is the token error rate of afx's best hypotheses
               against ESPnet's (near 0: the two searches agree; a random model's scores are close to
               ties, so a few tokens may differ).

  pip install -e ".[parity]" && pip install --no-deps espnet==202511   # as .ci/run does
  python experiments/benchmarks/asr.py --out experiments/benchmarks/results/asr_cpu_2core.json

Summary: `afx_vs_espnet_conformer_step_time` (afx's step time / ESPnet's; target ≤ 0.8),
`afx_vs_espnet_beam_search_time` (afx's batched decoding time / ESPnet's; target ≤ 0.2),
`afx_beam_search_rtf` and `espnet_beam_search_rtf`.  Each measurement runs in its own process.
"""

import argparse
import json
import sys

import numpy as np
from benchmark_common import machine, peak_gib, run_as_worker, run_worker, timed_steps, write_result


SAMPLE_RATE = 16000
ALPHABET = "abcdefghijklmnopqrstuvwxyz '"
ROWS = {
    "afx_conformer_step": ("jax", "step"), "espnet_conformer_step": ("torch", "step"),
    "afx_beam_search": ("jax", "beam"), "espnet_beam_search": ("torch", "beam"),
}


def utterances(spec: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """`(audio [n, samples], lengths [n], texts)`: `spec["utterances"]` (train rows: `spec["batch"]`) random
  waveforms of 0.75–1 × `seconds` and transcripts of 0.75–1 × `tokens` characters."""
  count = spec["batch"] if spec["kind"] == "step" else spec["utterances"]
  rng = np.random.default_rng(0)
  samples = int(spec["seconds"] * SAMPLE_RATE)
  lengths = rng.integers(int(0.75 * samples), samples + 1, count)
  lengths[0] = samples
  audio = (0.1 * rng.standard_normal((count, samples))).astype(np.float32)
  audio[np.arange(samples)[None] >= lengths[:, None]] = 0.0
  texts = ["".join(rng.choice(list(ALPHABET), rng.integers(int(0.75 * spec["tokens"]), spec["tokens"] + 1)))
           for _ in range(count)]
  return audio, lengths.astype(np.int32), texts


def tokenizer():
  from afx.text import build_tokenizer
  return build_tokenizer("characters", [ALPHABET], case="lower")


def espnet_model(spec: dict, vocab: int):
  """ESPnet2's hybrid CTC/attention Conformer at the benchmark's size, seeded."""
  import torch
  from espnet2.asr.ctc import CTC
  from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
  from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
  from espnet2.asr.espnet_model import ESPnetASRModel
  from espnet2.asr.specaug.specaug import SpecAug
  from espnet2.layers.utterance_mvn import UtteranceMVN

  torch.manual_seed(0)
  d = spec["d_model"]
  encoder = ConformerEncoder(spec["mels"], output_size=d, attention_heads=spec["heads"], linear_units=spec["mlp_dim"],
                             num_blocks=spec["encoder_layers"], dropout_rate=0.1, positional_dropout_rate=0.1,
                             input_layer="conv2d", macaron_style=True, rel_pos_type="latest",
                             pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
                             activation_type="swish", use_cnn_module=True, cnn_module_kernel=spec["conv_kernel"],
                             use_flash_attn=False)
  decoder = TransformerDecoder(vocab, d, attention_heads=spec["heads"], linear_units=spec["decoder_mlp_dim"],
                               num_blocks=spec["decoder_layers"], dropout_rate=0.1, use_flash_attn=False)
  specaug = SpecAug(apply_time_warp=False, freq_mask_width_range=(0, 27), num_freq_mask=2,
                    time_mask_width_ratio_range=(0.0, 0.05), num_time_mask=10)
  tokens = tokenizer().tokens
  return ESPnetASRModel(vocab, list(tokens), frontend=None, specaug=specaug,
                        normalize=UtteranceMVN(norm_means=True, norm_vars=True), preencoder=None, encoder=encoder,
                        postencoder=None, decoder=decoder, ctc=CTC(vocab, d), joint_network=None, ctc_weight=0.3,
                        lsm_weight=0.1, report_cer=False, report_wer=False)


def afx_model(spec: dict, vocab: int, state: dict):
  """afx's Conformer of the same size holding the ESPnet model's weights (`state`: its state dict as numpy)."""
  from afx.models.conformer import Conformer, batch_stats_from_espnet, params_from_espnet

  model = Conformer(vocab_size=vocab, num_mel_bins=spec["mels"], d_model=spec["d_model"], num_heads=spec["heads"],
                    mlp_dim=spec["mlp_dim"], encoder_layers=spec["encoder_layers"], conv_kernel=spec["conv_kernel"],
                    decoder_layers=spec["decoder_layers"], decoder_mlp_dim=spec["decoder_mlp_dim"],
                    dropout_rate=0.1)
  return model, {"params": params_from_espnet(state, model, with_vocabulary=True),
                 "batch_stats": batch_stats_from_espnet(state, model)}


def filterbanks(audio, lengths, mels: int):
  """afx's Kaldi filterbanks of the waveforms, as numpy `(features [n, frames, mels], frame_counts [n])`."""
  from afx.layers.speech import filterbank
  features, counts = filterbank(audio, lengths, sample_rate=SAMPLE_RATE, num_mel_bins=mels)
  return np.asarray(features), np.asarray(counts)


def asr_task(spec: dict):
  from afx.tasks.asr import SpeechRecognitionTask
  return SpeechRecognitionTask(tokenizer(), (int(spec["seconds"] * SAMPLE_RATE),), spec["max_tokens"])


def token_batch(task, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
  encoded = [task.tokenizer.encode(text) for text in texts]
  tokens = np.zeros((len(texts), task.max_tokens), np.int32)
  for row, ids in enumerate(encoded):
    tokens[row, :len(ids)] = ids
  return tokens, np.array([len(ids) for ids in encoded], np.int32)


def measure_torch(spec: dict) -> dict:
  import torch
  from espnet.nets.batch_beam_search import BatchBeamSearch
  from espnet.nets.scorers.ctc import CTCPrefixScorer

  task = asr_task(spec)
  vocab = task.tokenizer.vocab_size
  model = espnet_model(spec, vocab)
  audio, lengths, texts = utterances(spec)
  features, counts = filterbanks(audio, lengths, spec["mels"])
  features, counts = torch.from_numpy(features), torch.from_numpy(counts).long()
  tokens, token_lengths = token_batch(task, texts)
  row = dict(spec, status="ok", threads=torch.get_num_threads(), params=sum(p.numel() for p in model.parameters()))
  if spec["kind"] == "step":
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.from_numpy(tokens).long()
    text[torch.arange(text.shape[1])[None] >= torch.from_numpy(token_lengths)[:, None]] = -1  # ESPnet's padding

    def step():
      optimizer.zero_grad(set_to_none=True)
      loss, _, _ = model(features, counts, text, torch.from_numpy(token_lengths).long())
      loss.backward()
      optimizer.step()

    step()  # warm-up
    return dict(row, **timed_steps(step, spec["steps"]), peak_gib=peak_gib())

  model.eval()
  sos_eos = task.tokenizer.sos_eos_id
  search = BatchBeamSearch(
      scorers={"decoder": model.decoder, "ctc": CTCPrefixScorer(model.ctc, sos_eos)},
      weights={"decoder": 1.0 - spec["ctc_weight"], "ctc": spec["ctc_weight"]}, beam_size=spec["beam"],
      vocab_size=vocab, sos=sos_eos, eos=sos_eos, token_list=list(task.tokenizer.tokens), pre_beam_score_key="full")
  hypotheses = []

  def decode():
    hypotheses.clear()
    with torch.no_grad():
      for index in range(features.shape[0]):
        encoded, _ = model.encode(features[index:index + 1, :counts[index]], counts[index:index + 1])
        best = search(encoded[0], maxlenratio=-float(spec["max_tokens"]), minlenratio=0.0)[0]
        hypotheses.append([int(t) for t in best.yseq[1:] if int(t) != sos_eos])

  decode()  # warm-up
  timing = timed_steps(decode, spec["decode_runs"])
  state = {key: value.numpy() for key, value in model.state_dict().items()}
  np.savez(spec["weights"], **state)
  return dict(row, **decode_timing(timing, lengths), hypotheses=hypotheses, peak_gib=peak_gib())


def decode_timing(timing: dict, lengths) -> dict:
  """`timed_steps` of whole decoding runs as `decode_s` (the median run), `fastest_decode_s` and the real-time
  factor of the median."""
  return {"decode_s": timing["step_s"], "fastest_decode_s": timing["fastest_step_s"],
          "rtf": timing["step_s"] / (lengths.sum() / SAMPLE_RATE)}


def measure_jax(spec: dict) -> dict:
  import functools

  import jax
  import optax

  task = asr_task(spec)
  vocab = task.tokenizer.vocab_size
  if spec["kind"] == "step":  # the same seeded ESPnet weights as its step row's
    state = {key: value.numpy() for key, value in espnet_model(spec, vocab).state_dict().items()}
  else:
    with np.load(spec["weights"]) as saved:
      state = dict(saved)
  model, variables = afx_model(spec, vocab, state)
  audio, lengths, texts = utterances(spec)
  tokens, token_lengths = token_batch(task, texts)
  batch = {"audio": audio, "audio_lengths": lengths, "tokens": tokens, "token_lengths": token_lengths,
           "index": np.arange(len(texts), dtype=np.int32)}
  row = dict(spec, status="ok", params=sum(x.size for x in jax.tree_util.tree_leaves(variables["params"])))
  if spec["kind"] == "step":
    tx = optax.adamw(1e-4)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, batch_stats, opt_state, key, batch):
      def loss(params):
        dropout, augment = jax.random.split(key)
        outputs, updates = model.apply({"params": params, "batch_stats": batch_stats}, *task.model_inputs(batch),
                                       train=True, rngs={"dropout": dropout, "augment": augment},
                                       mutable=["batch_stats"])
        return task.loss(outputs, batch)[0], updates["batch_stats"]
      (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), batch_stats, opt_state, value

    params = variables["params"]
    train_state = [params, variables["batch_stats"], tx.init(params)]
    keys = iter(jax.random.split(jax.random.key(0), spec["steps"] + 2))
    device_batch = jax.device_put(batch)

    def step():
      *train_state[:], value = train_step(*train_state, next(keys), device_batch)
      value.block_until_ready()

    step()  # compile
    return dict(row, **timed_steps(step, spec["steps"]), peak_gib=peak_gib(jax.devices()[0]))

  decode = jax.jit(functools.partial(task.beam_rows, model, beam=spec["beam"], ctc_weight=spec["ctc_weight"]))
  rows = {}

  def run():
    rows.update(jax.device_get(decode(variables, batch)))

  run()  # compile
  timing = timed_steps(run, spec["decode_runs"])
  hypotheses = [row[:length].tolist() for row, length in zip(rows["hypothesis"], rows["hypothesis_lengths"])]
  return dict(row, **decode_timing(timing, lengths), hypotheses=hypotheses, peak_gib=peak_gib(jax.devices()[0]))


def summary(rows: list[dict]) -> dict:
  ok = {row["row"]: row for row in rows if row.get("status") == "ok"}
  ratio = lambda a, b, key: ok[a][key] / ok[b][key] if a in ok and b in ok else None
  result = {"afx_vs_espnet_conformer_step_time": ratio("afx_conformer_step", "espnet_conformer_step", "step_s"),
            "afx_vs_espnet_beam_search_time": ratio("afx_beam_search", "espnet_beam_search", "decode_s"),
            "afx_beam_search_rtf": ok.get("afx_beam_search", {}).get("rtf"),
            "espnet_beam_search_rtf": ok.get("espnet_beam_search", {}).get("rtf")}
  if "afx_beam_search" in ok and "espnet_beam_search" in ok:
    from afx.text import character_error_rate
    as_text = lambda hypotheses: ["".join(chr(0x100 + token) for token in ids) for ids in hypotheses]
    result["afx_espnet_hypothesis_token_error_rate"] = character_error_rate(
        as_text(ok["espnet_beam_search"]["hypotheses"]), as_text(ok["afx_beam_search"]["hypotheses"]))
  return result


def format_table(rows: list[dict]) -> str:
  lines = ["| row | seconds | per | peak GiB | params | status |", "|---|---|---|---|---|---|"]
  for row in rows:
    seconds = row.get("step_s", row.get("decode_s"))
    per = "step" if "step_s" in row else f"{row['utterances']} utterances"
    shown = f"{seconds:.3f}" if seconds is not None else "–"
    peak = f"{row['peak_gib']:.2f}" if "peak_gib" in row else "–"
    params = f"{row['params'] / 1e6:.2f} M" if "params" in row else "–"
    lines.append(f"| {row['row']} | {shown} | {per} | {peak} | {params} | {row['status']} {row.get('note', '')}|")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="write {machine, rows, summary} JSON here")
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument("--batch", type=int, default=8, help="utterances per training step")
  parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
  parser.add_argument("--utterances", type=int, default=8, help="utterances decoded by beam search")
  parser.add_argument("--seconds", type=float, default=4.0, help="longest utterance")
  parser.add_argument("--tokens", type=int, default=50, help="longest transcript, characters")
  parser.add_argument("--max-tokens", type=int, default=60, help="longest hypothesis")
  parser.add_argument("--beam", type=int, default=10)
  parser.add_argument("--decode-runs", type=int, default=3, help="timed beam-search runs (the median is reported)")
  parser.add_argument("--ctc-weight", type=float, default=0.3)
  parser.add_argument("--mels", type=int, default=80)
  parser.add_argument("--d-model", type=int, default=144, help="Conformer S's width")
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--mlp-dim", type=int, default=576)
  parser.add_argument("--encoder-layers", type=int, default=16)
  parser.add_argument("--conv-kernel", type=int, default=31)
  parser.add_argument("--decoder-layers", type=int, default=6)
  parser.add_argument("--decoder-mlp-dim", type=int, default=2048)
  parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    run_as_worker(args.worker, measure_jax, measure_torch)
    return

  import tempfile
  sizes = {key: getattr(args, key) for key in ("batch", "steps", "utterances", "seconds", "tokens", "max_tokens",
                                               "beam", "decode_runs", "ctc_weight", "mels", "d_model", "heads", "mlp_dim",
                                               "encoder_layers", "conv_kernel", "decoder_layers", "decoder_mlp_dim")}
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    # ESPnet's beam row saves its weights for afx's, so that both decode with the same model.
    names = sorted(args.rows.split(","), key=lambda name: name != "espnet_beam_search")
    for name in names:
      framework, kind = ROWS[name]
      spec = dict(sizes, row=name, framework=framework, kind=kind, weights=f"{scratch}/espnet_weights.npz")
      row = run_worker(__file__, spec, args.timeout)
      rows.append(row)
      shown = row.get("step_s", row.get("decode_s", row.get("note", "")))
      print(f"  {name}: {row['status']} {shown}", file=sys.stderr, flush=True)
  for row in rows:
    row.pop("weights", None)
  result = write_result(args.out, machine(), rows, summary(rows))
  print(format_table(rows))
  print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
  main()
