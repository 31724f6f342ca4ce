"""`python -m transformer_jax <mode> [flags]`: the same as the `transformer-jax` command."""
from transformer_jax import cli

if __name__ == '__main__':
  cli.console_main()
