r"""Runs an experiment from the checkout: train (default), evaluate a checkpoint, translate,
sample an LM, or draw a Transformer's attention maps (--mode=visualize).

  python launch.py                                      # the default experiment (copy task)
  python launch.py --experiment=experiments/multi30k.py --workdir=runs/m30k
  python launch.py --experiment=experiments/multi30k.py:smoke --experiment.train.num_steps=10
  python launch.py --experiment=experiments/multi30k.py --workdir=runs/m30k --mode=eval \
      --experiment.eval.split=test

The command line lives in transformer_jax/cli.py (its docstring has the rest); the installed
`transformer-jax <mode> [flags]` command is the same with the mode as its first word. Mistakes
in flags, configs or data end with one line naming the problem and the fix (exit code 2);
--help (or -h) lists the flags and --version prints the versions.
"""
import os
import sys

from transformer_jax import cli

if __name__ == '__main__':
  code = cli.main(sys.argv, launcher=[sys.executable, os.path.abspath(__file__)])
  sys.exit(cli.ready_to_exit(code))
