"""`python -m transformer_jax <mode> [flags]`: the same as the `transformer-jax` command."""
import sys

from transformer_jax import cli

if __name__ == '__main__':
  sys.exit(cli.console_main())
