"""The three ways to start the command line (`python launch.py`, the installed `transformer-jax`
script, `python -m transformer_jax`) in subprocesses: --help and --version exit 0, the two
console forms print the same usage, and `cli.main` called from Python returns exit codes."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax
import jax
import pytest

import transformer_jax

REPO = pathlib.Path(__file__).resolve().parents[2]
# What the console script pip writes does (see `pip show -f transformer-jax`): its argv[0] is
# the script's path. Run with the checkout on PYTHONPATH, so no install is needed.
CONSOLE_SCRIPT = ('import re, sys\nfrom transformer_jax.cli import console_main\n'
                  "sys.argv[0] = '/venv/bin/transformer-jax'\nsys.exit(console_main())\n")
ENTRY_POINTS = {
    'launch.py': [str(REPO / 'launch.py')],
    'python -m transformer_jax': ['-m', 'transformer_jax'],
    'transformer-jax': ['-c', CONSOLE_SCRIPT],
}


def start(entry: str, *args: str, cwd=REPO, timeout=120):
  """`entry` with `args`, run in `cwd` with the checkout importable."""
  env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')
  return subprocess.run([sys.executable, *ENTRY_POINTS[entry], *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('entry, flag', [('launch.py', '--help'), ('launch.py', '-h'),
                                         ('launch.py', '--helpshort'),
                                         ('transformer-jax', '-h')])
def test_help_exits_0_and_lists_the_flags(entry, flag):
  result = start(entry, flag)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--workdir' in result.stdout and '--experiment' in result.stdout
  assert '--version' in result.stdout
  assert 'error' not in result.stderr


def test_python_m_shows_the_usage_of_the_console_command():
  console, module = start('transformer-jax', '--help'), start('python -m transformer_jax', '--help')
  assert (console.returncode, module.returncode) == (0, 0), module.stderr[-2000:]
  assert module.stdout == console.stdout
  first = module.stdout.splitlines()[0]
  assert first == ('usage: transformer-jax <train|eval|translate|sample|visualize|report|'
                   'archive|export> [flags]')
  assert 'transformer-jax train --experiment=' in module.stdout
  assert '\ntransformer-jax:\n' in module.stdout       # the flags, under the command's name


@pytest.mark.parametrize('entry', sorted(ENTRY_POINTS))
def test_version_is_one_line_from_anywhere_without_workdir_or_experiment(entry, tmp_path):
  result = start(entry, '--version', cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == (f'transformer-jax {transformer_jax.__version__} '
                           f'(jax {jax.__version__}, flax {flax.__version__})\n')
  assert result.stderr == ''
  assert not list(tmp_path.iterdir())                    # nothing written, no runs/


def test_version_after_the_mode_word_too():
  result = start('transformer-jax', 'train', '--version')
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith('transformer-jax ')


# Called from Python: exit codes come back; nothing ends the interpreter. The flags of one call
# do not leak into the next; sys.argv is the caller's again afterwards.
MAIN_FROM_PYTHON = textwrap.dedent("""
    import json
    import sys
    from transformer_jax import cli
    from transformer_jax.base.errors import UserError
    smoke = '--experiment=experiments/copy_task.py:smoke'
    codes = {'version': cli.main(['launch.py', '--version'])}
    codes['version_loaded'] = sorted({'jax', 'flax'} & set(sys.modules))
    codes['print_config'] = cli.main(['launch.py', smoke, '--experiment.train.num_steps=5',
                                      '--print_config'])
    codes['unknown_flag'] = cli.main(['launch.py', '--workdirr=x'])
    codes['help'] = cli.main(['launch.py', '--help'])
    codes['again'] = cli.main(['launch.py', smoke, '--print_config'])

    def fail(argv, launcher):
      raise UserError('a mistake: the fix')

    def interrupt(argv, launcher):
      raise KeyboardInterrupt

    cli.run = fail
    codes['user_error'] = cli.main(['launch.py', smoke])
    cli.run = interrupt
    codes['interrupted'] = cli.main(['launch.py', smoke])
    codes['argv'] = sys.argv
    print('CODES', json.dumps(codes))
    """)


def test_main_called_from_python_returns_exit_codes():
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, '-c', MAIN_FROM_PYTHON], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  codes = json.loads(result.stdout.splitlines()[-1].removeprefix('CODES '))
  assert codes == {'version': 0, 'version_loaded': [], 'print_config': 0, 'unknown_flag': 2,
                   'help': 0, 'again': 0, 'user_error': 2, 'interrupted': 130, 'argv': ['-c']}
  numbers = [line for line in result.stdout.splitlines() if line.startswith('train.num_steps')]
  assert numbers == ['train.num_steps = 5  # int', 'train.num_steps = 2  # int']
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert errors == ['error: unknown flag --workdirr: did you mean --workdir? (--help lists the '
                    'flags; experiment fields are --experiment.<section>.<field>=<value>)',
                    'error: a mistake: the fix']
  assert 'Traceback' not in result.stderr


def test_a_thread_left_blocked_does_not_keep_the_process_alive_after_its_error_line():
  # What launch.py does with main's exit code; orbax can leave such a thread after a failed write.
  script = textwrap.dedent("""
      import sys, threading
      from transformer_jax import cli
      from transformer_jax.base.errors import UserError
      def fail(argv, launcher):
        threading.Thread(target=threading.Event().wait).start()     # never ends
        raise UserError('the write failed: free some space')
      cli.run = fail
      code = cli.main(['launch.py', '--experiment=experiments/copy_task.py:smoke'])
      sys.exit(cli.ready_to_exit(code))
      """)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == 'error: the write failed: free some space'
