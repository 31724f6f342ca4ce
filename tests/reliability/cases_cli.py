"""Catalogue cases for the command line and the run modes: flags a mode does not use, experiment files that exit or return the wrong thing, translate without input (see catalogue.py and runner.py)."""
from tests.reliability.runner import Case  # pylint: disable=unused-import

SMOKE = '--experiment=experiments/copy_task.py:smoke'

CASES = [
]
