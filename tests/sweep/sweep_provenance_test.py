"""Sweep members' provenance records: git state of a throwaway repository, checksums of files
and folders, the identity that decides pooling, the resume check and the record files."""
import hashlib
import json
import os
import pathlib
import platform
import re
import subprocess
import sys

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.sweep import provenance

REPO = pathlib.Path(__file__).resolve().parents[2]
COMMIT_A = 'c4f77d2aefcb9a18b70b74b76f5c2dd2eab5f497'
COMMIT_B = '0108429d1e6b7c2f0a9e8d7c6b5a4f3e2d1c0b9a'
DIFF = '3f2a1b9c' + '0' * 56


def git(repo, *args):
  return subprocess.run(
      ['git', '-c', 'user.email=test@example.com', '-c', 'user.name=Test', '-c',
       'commit.gpgsign=false', '-c', 'init.defaultBranch=main', '-C', str(repo), *args],
      check=True, capture_output=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
  """A git repository with one committed file, tracked.txt; git never looks above tmp_path."""
  monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
  path = tmp_path / 'repo'
  path.mkdir()
  git(path, 'init', '-q')
  (path / 'tracked.txt').write_text('one\n')
  (path / 'sub').mkdir()
  (path / 'sub' / 'kept.txt').write_text('kept\n')
  git(path, 'add', 'tracked.txt', 'sub/kept.txt')
  git(path, 'commit', '-q', '-m', 'first')
  return path


def record(commit=COMMIT_A, diff=None, **versions):
  libraries = {'python': '3.11.7', 'jax': '0.10.2', 'jaxlib': '0.10.2', 'flax': '0.12.8',
               'optax': '0.2.8', 'orbax-checkpoint': '0.12.8', 'numpy': '2.4.6',
               'sacrebleu': '2.6.0', 'scipy': '1.17.1'}
  libraries.update(versions)
  return {'schema': 1, 'libraries': libraries,
          'code': {'commit': commit, 'dirty': diff is not None, 'diff_sha256': diff,
                   'untracked': 0}}


def test_code_state_follows_the_work_tree(repo):
  state = provenance.code_state(repo)
  assert state == {'commit': git(repo, 'rev-parse', 'HEAD').decode().strip(), 'dirty': False,
                   'diff_sha256': None, 'untracked': 0}

  # Untracked files are counted (from a subfolder too) but do not make the tree dirty;
  # ignored ones are not counted.
  (repo / 'new.txt').write_text('new\n')
  (repo / '.git' / 'info' / 'exclude').write_text('ignored.txt\n')
  (repo / 'ignored.txt').write_text('ignored\n')
  assert provenance.code_state(repo)['untracked'] == 1
  assert provenance.code_state(repo / 'sub') == {**state, 'untracked': 1}

  (repo / 'tracked.txt').write_text('two\n')
  first = provenance.code_state(repo)
  assert first['dirty'] is True and first['commit'] == state['commit']
  assert first['diff_sha256'] == hashlib.sha256(git(repo, 'diff', 'HEAD', '--binary')).hexdigest()
  (repo / 'tracked.txt').write_text('three\n')
  second = provenance.code_state(repo)
  assert second['dirty'] is True and second['diff_sha256'] != first['diff_sha256']

  (repo / 'tracked.txt').write_text('one\n')
  assert provenance.code_state(repo) == {**state, 'untracked': 1}
  git(repo, 'add', 'new.txt')  # staged: a tracked change, no longer untracked
  staged = provenance.code_state(repo)
  assert staged['dirty'] is True and staged['untracked'] == 0 and staged['diff_sha256']


def test_code_state_outside_git_is_unknown(tmp_path, monkeypatch):
  monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
  plain = tmp_path / 'plain'
  plain.mkdir()
  unknown = {'commit': None, 'dirty': None, 'diff_sha256': None, 'untracked': None}
  assert provenance.code_state(plain) == unknown
  assert provenance.code_state(tmp_path / 'missing') == unknown
  monkeypatch.setenv('PATH', str(tmp_path))  # no git (and no nvidia-smi) to be found
  assert provenance.code_state(REPO) == unknown
  assert provenance.machine()['gpus'] == []


def test_checksum_paths(tmp_path):
  (tmp_path / 'a').write_bytes(b'same bytes')
  (tmp_path / 'b').write_bytes(b'same bytes')
  (tmp_path / 'c').write_bytes(b'same bytez')
  for folder in ('d1', 'd2', 'd3', 'd4'):
    (tmp_path / folder / 'inner').mkdir(parents=True)
    (tmp_path / folder / 'x.txt').write_bytes(b'x' * 3_000_000)  # several chunks
    (tmp_path / folder / 'inner' / 'y.txt').write_bytes(b'y')
  (tmp_path / 'd3' / 'inner' / 'y.txt').write_bytes(b'z')
  (tmp_path / 'd4' / 'inner' / 'y.txt').rename(tmp_path / 'd4' / 'inner' / 'w.txt')
  paths = [str(tmp_path / name) for name in ('a', 'b', 'c', 'd1', 'd2', 'd3', 'd4', 'gone')]
  sums = provenance.checksum_paths(paths)
  assert list(sums) == paths
  a, b, c, d1, d2, d3, d4, gone = sums.values()
  assert a == b == hashlib.sha256(b'same bytes').hexdigest()
  assert c != a and re.fullmatch('[0-9a-f]{64}', c)
  assert d1 == d2 and re.fullmatch('[0-9a-f]{64}', d1)
  assert len({d1, d3, d4}) == 3  # one byte changed; one file renamed
  assert gone is None
  assert provenance.checksum_paths([]) == {}


def test_identity_differences_and_label():
  old = record()
  assert provenance.identity(old) == {
      'commit': COMMIT_A, 'diff_sha256': None,
      'libraries': {'python': '3.11.7', 'jax': '0.10.2', 'jaxlib': '0.10.2', 'flax': '0.12.8',
                    'optax': '0.2.8', 'orbax-checkpoint': '0.12.8', 'numpy': '2.4.6',
                    'sacrebleu': '2.6.0'}}
  # Machines, data, timings and libraries outside the identity do not matter.
  other = dict(record(scipy='9.9'), machine={'hostname': 'elsewhere'}, started=1.0)
  assert provenance.differences(old, other) == []
  new = record(COMMIT_B, DIFF, jaxlib='0.11.2')
  assert provenance.differences(old, new) == [
      'commit c4f77d2 vs 0108429', 'uncommitted changes none vs 3f2a1b9c',
      'jaxlib 0.10.2 vs 0.11.2']
  assert provenance.differences(record(diff=DIFF), old) == ['uncommitted changes 3f2a1b9c vs none']

  assert provenance.label(old) == 'c4f77d2 jax 0.10.2 flax 0.12.8 optax 0.2.8 numpy 2.4.6'
  assert provenance.label(new) == ('0108429+dirty(3f2a1b9c) jax 0.10.2 jaxlib 0.11.2 flax 0.12.8 '
                                   'optax 0.2.8 numpy 2.4.6')
  partial = {'code': {'commit': COMMIT_A, 'diff_sha256': DIFF},
             'libraries': {'jax': '0.10.2', 'flax': '0.12.8'}}
  assert provenance.label(partial) == 'c4f77d2+dirty(3f2a1b9c) jax 0.10.2 flax 0.12.8'
  assert provenance.label(record(None)).startswith('unknown code jax 0.10.2')

  # Old or partial records: what is missing reads as None.
  assert provenance.identity({})['commit'] is None
  assert provenance.identity({'code': None})['libraries']['jax'] is None
  assert provenance.differences({}, {}) == []
  assert provenance.differences({}, record())[:2] == ['commit unknown vs c4f77d2',
                                                       'python none vs 3.11.7']


def test_check_resume(tmp_path):
  path = tmp_path / 'base_seed0' / 'provenance.json'
  assert provenance.check_resume(path, record()) == []  # never started
  path.parent.mkdir()
  provenance.write(path, record())
  assert provenance.check_resume(path, record()) == []
  assert provenance.check_resume(path, dict(record(), machine={'hostname': 'x'})) == []

  current = record(COMMIT_B, jaxlib='0.11.2')
  with pytest.raises(UserError) as caught:
    provenance.check_resume(path, current)
  assert str(caught.value) == (
      'member base_seed0 started with c4f77d2 jax 0.10.2 flax 0.12.8 optax 0.2.8 numpy 2.4.6 '
      'but this run is 0108429 jax 0.10.2 jaxlib 0.11.2 flax 0.12.8 optax 0.2.8 numpy 2.4.6 '
      '(commit c4f77d2 vs 0108429; jaxlib 0.10.2 vs 0.11.2): finish it with the code it started '
      'with, re-run it with --sweep_rerun, or give --sweep_allow_mixed')
  assert provenance.check_resume(path, current, allow_mixed=True) == [
      'commit c4f77d2 vs 0108429', 'jaxlib 0.10.2 vs 0.11.2']
  assert provenance.read(path) == record()  # the check never rewrites the record


def test_write_read_finish(tmp_path):
  path = tmp_path / 'provenance.json'
  assert provenance.read(path) is None
  assert provenance.finish(path) is None and not path.exists()
  provenance.write(path, record())
  assert json.loads(path.read_text()) == record() == provenance.read(path)
  assert path.read_text().startswith('{\n  "schema": 1')  # indent 2
  finished = provenance.finish(path)
  assert provenance.read(path) == finished
  assert finished['code'] == record()['code']
  assert isinstance(finished['finished'], float)
  assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', finished['finished_utc'])
  assert sorted(os.listdir(tmp_path)) == ['provenance.json']  # no temporary files left

  for bad in ('{"schema": 1, "code": ', '\x00\xff garbage', '[1, 2]'):
    path.write_text(bad, encoding='latin-1')
    with pytest.raises(UserError) as caught:
      provenance.read(path)
    message = str(caught.value)
    assert str(path) in message and '--sweep_rerun' in message and '\n' not in message
    with pytest.raises(UserError):
      provenance.check_resume(path, record())


def test_machine_uses_the_given_cores_and_env():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'CUDA_VISIBLE_DEVICES': '1'}
  info = provenance.machine(cores=[0], env=env)
  assert info['affinity'] == [0]
  assert info['xla_flags'] == env['XLA_FLAGS']
  assert info['jax_platforms'] == '' and info['cuda_visible_devices'] == '1'
  assert info['hostname'] == platform.node() and info['cpu_count'] == os.cpu_count()
  assert isinstance(info['cpu_model'], str) and isinstance(info['gpus'], list)
  assert provenance.machine(cores={3, 1})['affinity'] == [1, 3]
  unpinned = provenance.machine(env={})
  assert unpinned['xla_flags'] == '' and unpinned['cuda_visible_devices'] is None
  if hasattr(os, 'sched_getaffinity'):
    assert unpinned['affinity'] == sorted(os.sched_getaffinity(0))


def test_collect_and_library_versions(repo, tmp_path):
  versions = provenance.library_versions()
  assert list(versions) == ['python', *provenance.LIBRARIES]
  assert versions['python'] == platform.python_version()
  assert versions['jax'] and versions['numpy'] and versions['flax']
  (tmp_path / 'data.txt').write_text('data')
  rec = provenance.collect(repo_dir=repo, data_paths=[str(tmp_path / 'data.txt')],
                           tokenizer_paths=[str(tmp_path / 'no_tokenizer')], cores=[0],
                           env={'XLA_FLAGS': '--flag'})
  assert rec['schema'] == 1 and rec['code'] == provenance.code_state(repo)
  assert rec['libraries'] == versions
  assert rec['machine']['affinity'] == [0] and rec['machine']['xla_flags'] == '--flag'
  assert rec['data'] == {str(tmp_path / 'data.txt'): hashlib.sha256(b'data').hexdigest()}
  assert rec['tokenizer'] == {str(tmp_path / 'no_tokenizer'): None}
  assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', rec['started_utc'])
  provenance.write(tmp_path / 'p.json', rec)
  assert provenance.read(tmp_path / 'p.json') == rec
  assert provenance.differences(rec, provenance.collect(repo_dir=repo)) == []


def test_collect_does_not_import_jax():
  code = ('import json, sys; from transformer_jax.sweep import provenance; '
          "provenance.collect(repo_dir='.'); "
          "print(json.dumps([m for m in ('jax', 'jaxlib', 'flax', 'numpy', 'tensorflow') "
          'if m in sys.modules]))')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, capture_output=True,
                       text=True, timeout=120).stdout
  assert json.loads(out.strip().splitlines()[-1]) == []
