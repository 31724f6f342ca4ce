"""Catalogue cases for exports and load_pretrained: damaged or edited exports (see catalogue.py and runner.py)."""
from tests.reliability.runner import Case  # pylint: disable=unused-import

SMOKE = '--experiment=experiments/copy_task.py:smoke'

CASES = [
]
