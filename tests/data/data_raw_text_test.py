"""raw_text.line_groups: a pipe read as lines arrive, in groups closed when full, after a
pause, or at the end; UTF-8 errors name the line of the whole stream."""
import io
import os
import threading
import time

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data import raw_text


def pipe_writing(*pieces):
  """A binary file over a pipe into which `pieces` are written: bytes, or a pause in seconds."""
  read_fd, write_fd = os.pipe()

  def write():
    for piece in pieces:
      if isinstance(piece, bytes):
        os.write(write_fd, piece)
      else:
        time.sleep(piece)
    os.close(write_fd)
  threading.Thread(target=write, daemon=True).start()
  return os.fdopen(read_fd, 'rb')


def test_a_group_closes_when_full_or_after_a_pause_before_the_input_ends():
  stream = pipe_writing(b'a\nb\r\n', 1.0, b'c\nd\ne\nf\ng', 1.0)
  groups = raw_text.line_groups(stream, 3, 0.2, '<stdin>', 'fix')
  start = time.monotonic()
  assert next(groups) == ['a', 'b']
  assert time.monotonic() - start < 0.9                 # handed over at the pause
  assert next(groups) == ['c', 'd', 'e']
  assert next(groups) == ['f']                          # the pause closes it; 'g' has no '\n'
  assert time.monotonic() - start < 1.9                 # still before the input ends
  assert list(groups) == [['g']]


def test_a_line_that_is_not_utf8_is_named_by_its_number_in_the_stream():
  stream = pipe_writing(b'one\ntwo\n', 0.5, b'three\ncaf\xe9\n')
  groups = raw_text.line_groups(stream, 16, 0.1, '<stdin>', 'give UTF-8')
  assert next(groups) == ['one', 'two']
  with pytest.raises(UserError, match=r'^<stdin>:4: byte 0xe9 at column 4 is not UTF-8: give'):
    next(groups)


def test_a_stream_without_a_file_descriptor_is_grouped_by_size():
  assert list(raw_text.line_groups(io.StringIO('x\ny\r\nz'), 2, 0.1, 'n', 'f')) == [
      ['x', 'y'], ['z']]


def test_only_a_file_on_disk_is_a_regular_file(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_text('5 6 7\n')
  with open(path, 'rb') as f:
    assert raw_text.is_regular_file(f)
  assert not raw_text.is_regular_file(pipe_writing(b''))
  assert not raw_text.is_regular_file(io.StringIO())
