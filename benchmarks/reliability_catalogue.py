"""Runs the catalogue of bad inputs (tests/reliability/catalogue.py) and counts the outcomes.

  python -m benchmarks.reliability_catalogue [--only=NAME,...] [--out=catalogue.json]

Run it from the checkout's root, as a module: the catalogue belongs to the test suite
(`tests.reliability`), which is not part of the installed package.

Prints one JSON object: how many inputs were tried, and how many ended as a clean one-line
error (exit 2, one `error:` line, no traceback, workdir unchanged), a traceback, a silent
accept (exit 0), a changed workdir, or something else; with the names of every case that
was not clean. The goal is all clean. `pytest tests/reliability` asserts the same per case.
"""
import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from tests.reliability import catalogue
from tests.reliability import runner


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', default='', help='comma-separated case names (default: all)')
  parser.add_argument('--out', default='', help='also write the JSON here')
  args = parser.parse_args()
  chosen = set(filter(None, args.only.split(',')))
  cases = [c for c in catalogue.CASES if not chosen or c.name in chosen]
  counts, not_clean, skipped = collections.Counter(), {}, []
  started = time.time()
  with tempfile.TemporaryDirectory() as scratch:
    smoke_run = runner.train_smoke_run(pathlib.Path(scratch) / 'smoke_run')
    for index, case in enumerate(cases):
      if case.needs_shared_data and not runner.SHARED_DATA.is_dir():
        skipped.append(case.name)
        continue
      tmp = pathlib.Path(scratch) / f'case{index}'
      tmp.mkdir()
      workdir = runner.lay_out(case.workdir, tmp, smoke_run)
      try:
        outcome = runner.run_case(case, tmp, workdir)
      except NotImplementedError:
        skipped.append(case.name)
        continue
      finally:
        while catalogue.HELD_LOCKS:
          os.close(catalogue.HELD_LOCKS.pop())
        while catalogue.IMMUTABLE:
          subprocess.run(['chattr', '-i', str(catalogue.IMMUTABLE.pop())], check=False)
      kind = outcome.kind
      if kind == 'clean' and case.expect not in outcome.error_lines[0]:
        kind = 'other'           # clean in form, but it does not say what the case expects
      counts[kind] += 1
      if kind != 'clean':
        not_clean[case.name] = {'kind': kind, 'returncode': outcome.returncode,
                                'last_line': outcome.stderr_tail.strip().splitlines()[-1:]}
      print(f'{case.name}: {kind}', file=sys.stderr, flush=True)
  result = {'inputs_tried': sum(counts.values()), 'clean_errors': counts['clean'],
            'tracebacks': counts['traceback'], 'silent_accepts': counts['silent'],
            'workdirs_changed': counts['changed'], 'other': counts['other'],
            'skipped': skipped, 'not_clean': not_clean,
            'seconds': round(time.time() - started, 1)}
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
  main()
