"""The one exception type for mistakes in what the user gave us.

launch.py catches `UserError` and prints its message as a single line (exit code 2),
so every message names the problem *and* the fix, e.g.
  "global batch of 12 rows is not divisible by 8 devices: set --experiment.data.tokens_per_batch ..."
Anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input (config, data, checkpoint, flags): the message says what is wrong and how to fix it."""
