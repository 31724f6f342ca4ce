"""Reading the text files users hand us (raw corpora, translate input) with one-line errors.

Every dataset module reads its raw files through `read_gzip_lines` (whole files) or
`iter_lines` / `count_lines` (streamed, for corpora too big for memory), so a file that is
not gzip, is damaged, is empty or holds bytes that are not UTF-8 ends in a `UserError`
naming the file (and the line), whichever dataset asked. Lines are split on '\\n' only and
lose their '\\r\\n' or '\\n' end; a stray '\\r' inside a line stays part of it.
`line_groups` reads a pipe or terminal as lines arrive (interactive --mode=translate).
"""
import contextlib
import gzip
import os
import select
import sys
import stat
import zlib
from typing import Iterator, List

from transformer_jax.base.errors import UserError


def check_folder(path: str, key: str, holds: str) -> None:
  """Raises UserError if `path` exists but is not a folder this process can list and read.

  Args:
    path: the folder named by config key `key`; a missing one is left to the caller.
    key: the config key, e.g. 'data.raw_dir' (the fix names --experiment.<key>).
    holds: what the folder should hold, for the fix, e.g. 'train.tsv.gz and dev.tsv.gz'.
  """
  if not path or not os.path.exists(path):
    return
  if not os.path.isdir(path):
    raise UserError(f'{key} {os.path.abspath(path)} is a file, not a folder: set '
                    f'--experiment.{key} to the folder holding {holds}')
  if not os.access(path, os.R_OK | os.X_OK):
    raise UserError(f'cannot read the folder {os.path.abspath(path)} ({key}): make it readable '
                    f'(chmod u+rx) or set --experiment.{key} to a readable folder holding {holds}')


def split_lines(data: bytes, name: str, fix: str) -> List[str]:
  """The UTF-8 lines of `data`, without their ends.

  Args:
    data: the whole file.
    name: how errors name the file, e.g. a path or '<stdin>'.
    fix: the end of the message for bytes that are not UTF-8.

  Raises:
    UserError '<name>:<line>: byte 0x.. at column <c> is not UTF-8: <fix>'.
  """
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise _not_utf8(data, e, name, fix) from None
  lines = text.split('\n')
  if lines[-1] == '':
    lines.pop()                       # the end of the last line, not an extra empty line
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def read_gzip_lines(path: str, fix: str) -> List[str]:
  """The lines of a gzipped UTF-8 text file, refusing anything else.

  Args:
    path: the `.gz` file.
    fix: how to get a good file, ending each message, e.g. 'replace it with the original
      from <url>'.

  Returns:
    list of str, one per line, without line ends; never empty.

  Raises:
    UserError naming `path` when it is unreadable, not gzip, damaged, empty, or not UTF-8
    (then with the line number).
  """
  with _reading(path, fix), gzip.open(path, 'rb') as f:
    data = f.read()
  if not data.strip():
    raise UserError(f'{path} is empty: {fix}')
  return split_lines(data, path, f're-encode it as UTF-8 or {fix}')


def _first_bytes(path: str, count: int = 8) -> bytes:
  with open(path, 'rb') as f:
    return f.read(count)


def iter_lines(path: str, fix: str) -> Iterator[str]:
  """Yields the lines of a UTF-8 text file one at a time, gzipped if `path` ends in `.gz`.

  Streams, so memory stays flat for corpora of millions of lines. Nothing is checked for
  emptiness here (see `count_lines`).

  Args:
    path: the plain or `.gz` file.
    fix: how to get a good file, ending each message.

  Yields:
    str, one per line, without its '\\n' or '\\r\\n' end.

  Raises:
    UserError naming `path` when it is unreadable, not gzip or damaged, and `path:line`
    for bytes that are not UTF-8.
  """
  with _reading(path, fix), _open_binary(path) as f:
    for number, line in enumerate(f, start=1):    # binary files split on b'\n' only
      line = line[:-1] if line.endswith(b'\n') else line
      line = line[:-1] if line.endswith(b'\r') else line
      try:
        text = line.decode('utf-8')
      except UnicodeDecodeError as e:
        raise _not_utf8(line, e, path, f're-encode it as UTF-8 or {fix}', number - 1) from None
      yield text


def count_lines(path: str, fix: str, chunk_bytes: int = 1 << 24) -> int:
  """The number of lines of a UTF-8 text file (plain, or gzipped if `path` ends in `.gz`),
  read in chunks of `chunk_bytes`, every byte checked to be UTF-8.

  Counts as `iter_lines` yields: a last line without '\\n' counts too. Runs at roughly the
  speed of the disk (or of gunzip) rather than of a Python loop per line.

  Raises:
    UserError naming `path` when it is unreadable, not gzip, damaged or empty (blank lines
    only), and `path:line` for bytes that are not UTF-8.
  """
  lines, tail, has_text = 0, b'', False
  with _reading(path, fix), _open_binary(path) as f:
    while chunk := f.read(chunk_bytes):
      data = tail + chunk
      end = data.rfind(b'\n') + 1           # decode whole lines: no character is cut
      _check_utf8(data[:end], path, fix, lines)
      has_text = has_text or bool(data[:end].strip())
      lines += data.count(b'\n', 0, end)
      tail = data[end:]
  if tail:
    _check_utf8(tail, path, fix, lines)
    has_text, lines = has_text or bool(tail.strip()), lines + 1
  if not has_text:
    raise UserError(f'{path} is empty: {fix}')
  return lines


def _check_utf8(data: bytes, path: str, fix: str, lines_before: int) -> None:
  try:
    data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise _not_utf8(data, e, path, f're-encode it as UTF-8 or {fix}', lines_before) from None


def _not_utf8(data: bytes, error: UnicodeDecodeError, name: str, fix: str,
              lines_before: int = 0) -> UserError:
  """'<name>:<line>: byte 0x.. at column <c> is not UTF-8: <fix>' for an error in `data`,
  which starts after `lines_before` lines of the file."""
  # '\n' never occurs inside a multi-byte UTF-8 sequence, so counting it finds the line.
  line = lines_before + data.count(b'\n', 0, error.start) + 1
  column = error.start - (data.rfind(b'\n', 0, error.start) + 1) + 1
  return UserError(f'{name}:{line}: byte 0x{data[error.start]:02x} at column {column} is not '
                   f'UTF-8: {fix}')


def _open_binary(path: str):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


@contextlib.contextmanager
def _reading(path: str, fix: str):
  """Turns the errors of opening and reading `path` into UserErrors naming it."""
  try:
    yield
  except PermissionError as e:
    raise UserError(f'cannot read {path} ({e.strerror}): make it readable (chmod u+r) or '
                    f'{fix}') from None
  except gzip.BadGzipFile as e:
    if str(e).startswith('Not a gzipped file'):
      raise UserError(f'{path} is not gzip-compressed (it starts with '
                      f'{_first_bytes(path)!r}): compress it with gzip or {fix}') from None
    raise UserError(f'{path} is a damaged gzip file ({e}): {fix}') from None
  except (EOFError, zlib.error) as e:   # cut short, or corrupt compressed data
    raise UserError(f'{path} is a damaged gzip file ({e}): {fix}') from None


def decode_line(line: bytes, number: int, name: str, fix: str) -> str:
  """One line (without its '\\n'; a '\\r' before it is dropped) as text.

  Raises:
    UserError '<name>:<number>: byte 0x.. at column <c> is not UTF-8: <fix>'.
  """
  line = line[:-1] if line.endswith(b'\r') else line
  try:
    return line.decode('utf-8')
  except UnicodeDecodeError as e:
    raise _not_utf8(line, e, name, fix, number - 1) from None


def is_regular_file(stream) -> bool:
  """Whether `stream` reads a file on disk (e.g. stdin redirected with <), not a pipe or tty."""
  try:
    return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
  except (AttributeError, OSError, ValueError):     # no file descriptor (a StringIO)
    return False


def line_groups(stream, size: int, wait_s: float, name: str, fix: str) -> Iterator[List[str]]:
  """The lines of a pipe or terminal in groups, each yielded as soon as it is complete.

  A group is complete when it holds `size` lines, when `wait_s` seconds pass without a new
  line after its last one, or at the end of the input: a person typing a sentence gets it
  back without filling a group, while a fast pipe still fills whole groups.

  Args:
    stream: binary stdin (`sys.stdin.buffer`), read through its file descriptor; anything
      without one (a StringIO of text or bytes lines) is grouped by `size` only.
    size: most lines a group holds (>= 1).
    wait_s: the pause that closes a group early.
    name, fix: as for `split_lines`; line numbers count from the start of the stream.
  """
  try:
    fd = stream.fileno()
  except (AttributeError, OSError, ValueError):
    fd = None
  if fd is None:
    yield from _fixed_groups(stream, size, name, fix)
    return
  group, pending, number = [], b'', 0
  while True:
    if group and not select.select([fd], [], [], wait_s)[0]:
      yield group                        # a pause: hand over what has come so far
      group = []
      continue
    chunk = os.read(fd, 1 << 16)         # blocks only while no group is waiting
    if not chunk:
      break
    *complete, pending = (pending + chunk).split(b'\n')
    for line in complete:
      number += 1
      group.append(decode_line(line, number, name, fix))
      if len(group) == size:
        yield group
        group = []
  if pending:                            # a last line without its '\\n'
    group.append(decode_line(pending, number + 1, name, fix))
  if group:
    yield group


def _fixed_groups(lines, size: int, name: str, fix: str) -> Iterator[List[str]]:
  group = []
  for number, line in enumerate(lines, start=1):
    if isinstance(line, bytes):
      line = decode_line(line.rstrip(b'\n'), number, name, fix)
    group.append(line.rstrip('\r\n'))
    if len(group) == size:
      yield group
      group = []
  if group:
    yield group


INPUT_FIX = 'give --input as UTF-8 text (e.g. convert it with iconv -t UTF-8)'


def check_stdin_open() -> None:
  """Refuses to read a standard input that does not exist (fd 0 closed: sys.stdin is None)."""
  if sys.stdin is None or sys.stdin.closed:
    raise UserError('--input=- reads standard input, but it is closed: give --input=FILE, or '
                    'pipe the lines in (e.g. `< lines.txt` or `cat lines.txt |`)')


def read_input_lines(input_path: str) -> List[str]:
  """The lines of --input (a file, or - for stdin), refusing bytes that are not UTF-8."""
  fix = INPUT_FIX
  if input_path == '-':
    check_stdin_open()
    stdin = getattr(sys.stdin, 'buffer', None)
    if stdin is None:                          # already text (a test's StringIO)
      return [line.rstrip('\r\n') for line in sys.stdin]
    return split_lines(stdin.read(), '<stdin>', fix)
  if not os.path.exists(input_path):
    raise UserError(f'--input file {input_path} does not exist: give a file of source sentences '
                    'or - for stdin')
  if os.path.isdir(input_path):
    raise UserError(f'--input {input_path} is a folder: give a file of source sentences '
                    'or - for stdin')
  with open(input_path, 'rb') as f:
    return split_lines(f.read(), input_path, fix)
