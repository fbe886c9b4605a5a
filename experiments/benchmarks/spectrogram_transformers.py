"""Training-step time and peak memory of spectrogram transformers at AudioSet's input size, in one run.

Rows: afx's AST, PaSST-S (overlapping patches, structured patchout of 40 time columns and 4
frequency rows, as the paper's AudioSet setting) and PaSST-N (no overlap, the same patchout), and
the PyTorch AST of Hugging Face `transformers` with the same configuration (needs `afx[parity]`).
Each model trains on random 1024 × 128 spectrograms with 527 sigmoid outputs: forward, binary
cross-entropy, backward and an AdamW update; the median of the timed steps after compilation /
warm-up.  Every measurement runs in its own process, so its peak memory (max RSS on CPU, the
allocator's peak on an accelerator) is its own.

  python experiments/benchmarks/spectrogram_transformers.py --out spectrogram_transformers.json

Summary: `passt_s_step_speedup_vs_ast` (AST's step time / PaSST-S's) and `afx_vs_torch_ast_step_time`
(afx's AST step time / PyTorch's; below 1 means afx is faster).  Ratios, not times, carry between machines.
"""

import argparse
import json
import sys

from benchmark_common import machine, peak_gib, run_as_worker, run_worker, timed_steps, write_result


CLASSES = 527
PATCHOUT = {"time_patchout": 40, "frequency_patchout": 4}
MODELS = {
    "afx_ast": {"framework": "jax", "name": "ast", "options": {}},
    "afx_passt_s": {"framework": "jax", "name": "passt", "options": {"stride": 10, **PATCHOUT}},
    "afx_passt_n": {"framework": "jax", "name": "passt", "options": {"stride": 16, **PATCHOUT}},
    "torch_ast": {"framework": "torch", "name": "ast", "options": {}},
}


def measure_jax(spec: dict) -> dict:
  import functools

  import jax
  import jax.numpy as jnp
  import optax

  from afx import models

  model = models.build_model({"name": spec["name"], "num_mel_bins": spec["mels"], "input_frames": spec["frames"],
                              "positional_frames": spec["frames"], "embed_dim": spec["dim"],
                              "num_layers": spec["layers"], "num_heads": spec["heads"], "mlp_dim": 4 * spec["dim"],
                              **spec["options"]}, num_classes=CLASSES)
  rng = jax.random.key(0)
  spectrogram = jax.random.normal(rng, (spec["batch"], spec["frames"], spec["mels"]))
  targets = (jax.random.uniform(rng, (spec["batch"], CLASSES)) < 0.02).astype(jnp.float32)
  params = model.init(rng, spectrogram[:1], method="from_spectrogram")["params"]
  tx = optax.adamw(1e-4)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, key):
    def loss(params):
      logits = model.apply({"params": params}, spectrogram, train=True, method="from_spectrogram",
                           rngs={"patchout": key, "dropout": key})
      return optax.sigmoid_binary_cross_entropy(logits, targets).sum(axis=-1).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  state = [params, tx.init(params)]
  keys = iter(jax.random.split(rng, spec["steps"] + 2))

  def run():
    state[0], state[1], value = step(state[0], state[1], next(keys))
    value.block_until_ready()

  run()  # compile
  return dict(spec, status="ok", **timed_steps(run, spec["steps"]), peak_gib=peak_gib(jax.devices()[0]),
              params=sum(x.size for x in jax.tree_util.tree_leaves(params)))


def measure_torch(spec: dict) -> dict:
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.ASTConfig(hidden_size=spec["dim"], num_hidden_layers=spec["layers"],
                                  num_attention_heads=spec["heads"], intermediate_size=4 * spec["dim"],
                                  max_length=spec["frames"], num_mel_bins=spec["mels"], num_labels=CLASSES,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model = transformers.ASTForAudioClassification(config).train()
  spectrogram = torch.randn(spec["batch"], spec["frames"], spec["mels"])
  targets = (torch.rand(spec["batch"], CLASSES) < 0.02).float()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

  def run():
    optimizer.zero_grad(set_to_none=True)
    logits = model(spectrogram).logits
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / spec["batch"]
    loss.backward()
    optimizer.step()

  run()  # warm-up
  return dict(spec, status="ok", **timed_steps(run, spec["steps"]), peak_gib=peak_gib(), threads=torch.get_num_threads(),
              params=sum(p.numel() for p in model.parameters()))


def summary(rows: list[dict]) -> dict:
  time_of = {row["model"]: row.get("step_s") for row in rows if row.get("status") == "ok"}
  ratio = lambda a, b: time_of[a] / time_of[b] if time_of.get(a) and time_of.get(b) else None
  return {"passt_s_step_speedup_vs_ast": ratio("afx_ast", "afx_passt_s"),
          "passt_n_step_speedup_vs_ast": ratio("afx_ast", "afx_passt_n"),
          "afx_vs_torch_ast_step_time": ratio("afx_ast", "torch_ast")}


def format_table(rows: list[dict]) -> str:
  lines = ["| model | batch | step s | peak GiB | faults/step | params | status |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    step = f"{row['step_s']:.3f}" if "step_s" in row else "–"
    peak = f"{row['peak_gib']:.2f}" if "peak_gib" in row else "–"
    params = f"{row['params'] / 1e6:.2f} M" if "params" in row else "–"
    faults = row.get("minor_faults_per_step", "–")
    lines.append(f"| {row['model']} | {row['batch']} | {step} | {peak} | {faults} | {params} | {row['status']} {row.get('note', '')}|")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="write {machine, rows, summary} JSON here")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=5, help="timed steps after the first")
  parser.add_argument("--frames", type=int, default=1024)
  parser.add_argument("--mels", type=int, default=128)
  parser.add_argument("--dim", type=int, default=192)
  parser.add_argument("--layers", type=int, default=6)
  parser.add_argument("--heads", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    run_as_worker(args.worker, measure_jax, measure_torch)
    return

  rows = []
  for name in args.models.split(","):
    spec = dict(MODELS[name], model=name, batch=args.batch, steps=args.steps, frames=args.frames, mels=args.mels,
                dim=args.dim, layers=args.layers, heads=args.heads)
    row = run_worker(__file__, spec, args.timeout)
    rows.append(row)
    print(f"  {name}: {row['status']} {row.get('step_s', row.get('note', ''))}", file=sys.stderr, flush=True)
  result = write_result(args.out, machine(), rows, summary(rows))
  print(format_table(rows))
  print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
  main()
