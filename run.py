#!/usr/bin/env python3
"""afx's command line: train, eval, predict, transcribe, sample, reproduce, convert, launch.

  python run.py train --config experiments/verma_berger_2021.py:small,tiny --workdir runs/small
  python run.py eval --workdir runs/small [--split validation]
  python run.py predict --workdir runs/small clip1.wav clip2.flac
  python run.py transcribe --workdir runs/asr speech1.wav speech2.flac [--beam 10] [--ctc-weight 0.3]
  python run.py sample --workdir runs/t3 --seconds 2 [--temperature 1.0] [--prime FILE] --out sample.wav
  python run.py reproduce verma_berger_2021 --scale tiny --workdir runs/demo
  python run.py launch --tpu my-pod --zone us-central2-b [--dry-run] -- train --config ... --workdir gs://...

Options `--config.KEY=VALUE` (train, reproduce) override any config key.  The work happens in
`afx.train`; this file only parses arguments and reports errors.
"""

import argparse
import json
import shlex
import sys


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, no usage dump: the user sees what to fix
    sys.stderr.write(f"error: {message} (see python run.py {self.prog.split()[-1]} --help)\n")
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="run.py", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

  train = commands.add_parser("train", help="train and evaluate one config; rerun to resume")
  train.add_argument("--config", required=True, help="FILE.py[:VARIANT]")
  train.add_argument("--workdir", required=True)

  evaluate = commands.add_parser("eval", help="print a trained run's eval.json, or evaluate another split")
  evaluate.add_argument("--workdir", required=True)
  evaluate.add_argument("--split", default=None)

  predict = commands.add_parser("predict", help="top-5 labels for audio files, one JSON line each")
  predict.add_argument("--workdir", required=True)
  predict.add_argument("files", nargs="+")
  predict.add_argument("--top", type=int, default=5)

  transcribe = commands.add_parser("transcribe", help="speech recognition: text and word times, one JSON line per file")
  transcribe.add_argument("--workdir", required=True)
  transcribe.add_argument("files", nargs="+")
  transcribe.add_argument("--beam", type=int, default=None, metavar="K",
                          help="joint CTC/attention beam search of width K instead of greedy CTC")
  transcribe.add_argument("--ctc-weight", type=float, default=None, metavar="W",
                          help="CTC's weight in the beam search's score (default: the run's decoding.ctc_weight)")

  sample = commands.add_parser("sample", help="generate audio from a next_sample run into a wav file")
  sample.add_argument("--workdir", required=True)
  sample.add_argument("--seconds", type=float, required=True)
  sample.add_argument("--temperature", type=float, default=1.0, help="0 takes the most likely sample")
  sample.add_argument("--prime", default=None, help="audio file whose end starts the generation")
  sample.add_argument("--seed", type=int, default=0)
  sample.add_argument("--out", required=True, help="the wav file to write")

  reproduce = commands.add_parser("reproduce", help="train every row of experiments/TABLE.py and print the table")
  reproduce.add_argument("table")
  reproduce.add_argument("--scale", choices=("tiny", "paper"), required=True)
  reproduce.add_argument("--workdir", required=True)

  convert = commands.add_parser("convert", help="turn a Hugging Face AST checkpoint into a workdir for predict/eval")
  convert.add_argument("--from-hf", required=True, metavar="DIR",
                       help="config.json + model.safetensors or pytorch_model.bin [+ preprocessor_config.json]")
  convert.add_argument("--workdir", required=True)

  launch = commands.add_parser("launch", help="run `run.py ARGS` on every worker of a TPU VM pod")
  launch.add_argument("--tpu", required=True)
  launch.add_argument("--zone", required=True)
  launch.add_argument("--project", default=None)
  launch.add_argument("--repo-dir", default="~/afx", help="the afx checkout on the workers")
  launch.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
  return parser


def main(argv: list[str]) -> int:
  remote_args: list[str] = []
  if "--" in argv:
    split = argv.index("--")
    argv, remote_args = argv[:split], argv[split + 1:]
  overrides = [a for a in argv if a.startswith("--config.")]
  argv = [a for a in argv if not a.startswith("--config.")]
  args = _parser().parse_args(argv)
  if overrides and args.command not in ("train", "reproduce", "convert"):
    _Parser(prog=f"run.py {args.command}").error(f"{args.command} takes no --config.KEY=VALUE overrides")

  from afx.errors import NonFiniteLossError, UserError
  from afx.cpu_setup import setup_cpu_process
  setup_cpu_process()  # before JAX starts its backend
  try:
    if args.command == "launch":
      from afx.train.launch import launch, launch_command
      command = launch_command(tpu=args.tpu, zone=args.zone, args=remote_args, project=args.project,
                               repo_dir=args.repo_dir)
      if args.dry_run:
        print(shlex.join(command))
        return 0
      return launch(command)
    import afx.train
    if args.command == "train":
      config = afx.train.apply_overrides(afx.train.load_config(args.config), overrides)
      results = afx.train.train_row(config, args.workdir)
      if results is not None:
        print(json.dumps(results))
    elif args.command == "eval":
      print(json.dumps(afx.train.evaluate(args.workdir, args.split)))
    elif args.command == "predict":
      failed = False
      for line in afx.train.predict(args.workdir, args.files, top_k=args.top):
        failed |= "error" in line
        print(json.dumps(line), flush=True)
      return 1 if failed else 0
    elif args.command == "transcribe":
      failed = False
      for line in afx.train.transcribe(args.workdir, args.files, beam=args.beam, ctc_weight=args.ctc_weight):
        failed |= "error" in line
        print(json.dumps(line), flush=True)
      return 1 if failed else 0
    elif args.command == "sample":
      print(json.dumps(afx.train.sample_audio(args.workdir, seconds=args.seconds, out=args.out,
                                              temperature=args.temperature, prime=args.prime, seed=args.seed)))
    elif args.command == "convert":
      from afx.train.convert import convert_hf
      print(json.dumps(convert_hf(args.from_hf, args.workdir, overrides)))
    elif args.command == "reproduce":
      afx.train.reproduce(args.table, scale=args.scale, workdir=args.workdir, overrides=overrides)
  except UserError as error:
    sys.stderr.write(f"error: {error}\n")
    return 2
  except NonFiniteLossError as error:
    sys.stderr.write(f"error: {error}\n")
    return 1
  except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
