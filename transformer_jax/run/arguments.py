"""The command line's arguments before absl parses them: the mode as the first word
(`transformer-jax eval --workdir=...`), the help and version flags answered before anything
loads, and the version line.

Plain lists of strings in and out; the command line (transformer_jax/cli.py) defines and reads
the flags. Nothing here imports jax.
"""
import difflib
import importlib.metadata
from typing import List, Sequence

from transformer_jax.base.errors import UserError

# absl's help flags (it exits 1 after printing the usage; the command line exits 0), and -h,
# which absl lacks.
HELP_FLAGS = ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')
VERSION_FLAG = '--version'


def flag_words(argv: Sequence[str]) -> List[str]:
  """The arguments absl reads as flags: all but the program's name, up to `--`."""
  words = list(argv[1:])
  return words[:words.index('--')] if '--' in words else words


def asks(argv: Sequence[str], names: Sequence[str]) -> bool:
  """Whether one of the flags `names` is in `argv` (absl takes `-name` for `--name`, too)."""
  return any(word in names or f'-{word}' in names for word in flag_words(argv))


def long_help(argv: Sequence[str]) -> List[str]:
  """`argv` with a flag `-h` written as absl's `--help`."""
  argv = list(argv)
  if '-h' in flag_words(argv):
    argv[argv.index('-h')] = '--help'
  return argv


def nearest(word: str, choices: Sequence[str], aliases=None):
  """The choice spelled most like `word` (difflib), or an alias's choice where the alias is
  the closer spelling (`aliases`: other name -> choice); None when nothing is close."""
  aliases = aliases or {}
  close = difflib.get_close_matches(word.lower(), [*choices, *aliases], n=1, cutoff=0.6)
  return aliases.get(close[0], close[0]) if close else None


def version_line(program: str, version: str) -> str:
  """`<program> <version> (jax <version>, flax <version>)`, from jax's and flax's installed
  metadata: neither is imported (but where they run from source, without metadata)."""
  try:
    jax_version, flax_version = (importlib.metadata.version(package)
                                 for package in ('jax', 'flax'))
  except importlib.metadata.PackageNotFoundError:
    import flax
    import jax
    jax_version, flax_version = jax.__version__, flax.__version__
  return f'{program} {version} (jax {jax_version}, flax {flax_version})'


def subcommand_argv(argv: Sequence[str], modes: Sequence[str], program: str) -> List[str]:
  """`<program> <mode> [flags]` as `[argv[0], --mode=<mode>, flags...]`; argv without a leading
  word is returned as it is (the mode then comes from --mode, default train).

  Args:
    argv: the program's name, then its arguments.
    modes: the words that name a mode (the values of --mode).
    program: the command's name, for the example in an error.

  Raises:
    UserError: the first word is no mode, or a --mode flag names the mode too.
  """
  argv = list(argv)
  if len(argv) < 2 or argv[1].startswith('-'):
    return argv
  word, rest = argv[1], argv[2:]
  if word not in modes:
    close = nearest(word, modes)
    fix = (f'give one of {", ".join(modes)} first, e.g. {program} train '
           '--experiment=experiments/copy_task.py')
    raise UserError(f'unknown command {word!r}: did you mean {close}? ({fix})' if close else
                    f'unknown command {word!r}: {fix}')
  given = [a for a in rest if a.startswith(('--mode=', '-mode='))]
  if any(a.split('=', 1)[1] != word for a in given) or any(a in ('--mode', '-mode') for a in rest):
    raise UserError(f'the command {word!r} and a --mode flag both name the mode: drop --mode')
  return [argv[0], f'--mode={word}', *rest]
