"""One check shared by the LM and translation tests: a beam of one is greedy search, except that
beam search ends a hypothesis that reaches the length limit with EOS (charged log p(EOS), see
decode.py) where greedy search simply stops."""
import numpy as np


def assert_beam_of_one_is_greedy(beam: np.ndarray, greedy: np.ndarray, eos: int) -> None:
  """Row by row: equal where greedy ended with EOS; where greedy ran to the limit, the beam's
  row is greedy's with its last token replaced by EOS."""
  assert beam.shape == greedy.shape
  for row_beam, row_greedy in zip(beam, greedy):
    expected = row_greedy.copy()
    if eos not in row_greedy:
      last = np.flatnonzero(row_greedy)[-1]
      expected[last] = eos
    np.testing.assert_array_equal(row_beam, expected)
