"""Catalogue cases for what a run writes: checkpoints, config.json, the data position, metrics.jsonl, locks, workdir paths, sweeps (see catalogue.py and runner.py)."""
from tests.reliability.runner import Case  # pylint: disable=unused-import

SMOKE = '--experiment=experiments/copy_task.py:smoke'

CASES = [
]
