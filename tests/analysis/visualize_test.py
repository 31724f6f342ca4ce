"""--mode=visualize and eval.attention_stats through launch.py on a two-step copy-task run
(2 layers x 2 heads), and the position table each positional kind draws."""
import json
import math
import os
import pathlib
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image

# Subprocess runs end to end (minutes on 2 cores): `python -m pytest -m slow`.
pytestmark = pytest.mark.slow

from transformer_jax.analysis import visualize
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn import positional

REPO = pathlib.Path(__file__).resolve().parents[2]
# Two decoder positions past the source at most: an untrained model rambles to max_len.
RUN = ['--experiment=experiments/copy_task.py:smoke', '--experiment.model.num_layers=2',
       '--experiment.decode.max_extra_len=2']
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def launch(*args):
  env = dict(os.environ, PYTHONUNBUFFERED='1')    # keeps conftest's 8 host devices
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('copy') / 'run'
  trained = launch(*RUN, f'--workdir={workdir}')
  assert trained.returncode == 0, trained.stderr[-3000:]
  return workdir


def snapshot(folder: pathlib.Path):
  return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob('*'))


def png_size(path):
  """(width, height) from the PNG header, after checking the signature."""
  with open(path, 'rb') as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE, path
  return struct.unpack('>II', head[16:24])


def test_visualize_draws_each_sentence_and_the_position_table(run, tmp_path):
  sentences = tmp_path / 'sentences.txt'
  sentences.write_text('5 6 7 8 9 10 11 12 13 14\n20 3 3 17\n')
  result = launch(*RUN, f'--workdir={run}', '--mode=visualize', f'--input={sentences}')
  assert result.returncode == 0, result.stderr[-3000:]
  names = ['sentence_1.png', 'sentence_2.png', 'positional_encoding.png']
  assert result.stdout.split() == [str(run / 'visualize' / name) for name in names]
  assert sorted(os.listdir(run / 'visualize')) == sorted(names)
  for name in names:
    path = run / 'visualize' / name
    width, height = png_size(path)
    assert 300 <= width <= 4000 and 300 <= height <= 4000, (name, width, height)
    pixels = image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.05, name          # drawn, not a blank canvas
  # 3 kinds x 2 layers of rows over 2 heads: the 10-token grid is taller than wide.
  width, height = png_size(run / 'visualize' / 'sentence_1.png')
  assert height > 2 * width


def test_visualize_refuses_text_for_a_copy_task_and_writes_nothing(run, tmp_path):
  sentences = tmp_path / 'sentences.txt'
  sentences.write_text('A dog runs.\n')
  before = snapshot(run)
  result = launch(*RUN, f'--workdir={run}', '--mode=visualize', f'--input={sentences}')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: line 1') and 'is not a sequence of token ids' in last, last
  assert snapshot(run) == before


def test_visualize_needs_a_trained_run(tmp_path):
  result = launch(*RUN, f'--workdir={tmp_path}', '--mode=visualize')
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: no config.json in') and 'train there first' in last, last
  assert os.listdir(tmp_path) == []


def test_eval_writes_attention_statistics_trained_and_at_init(run):
  result = launch(*RUN, f'--workdir={run}', '--mode=eval', '--experiment.eval.attention_stats=True')
  assert result.returncode == 0, result.stderr[-3000:]
  [path] = (run / 'eval').glob('*.json')
  metrics = json.loads(path.read_text())
  for prefix in ('', 'init_'):
    # Copy-task sources hold at most 16 tokens and EOS: no row spreads over more keys.
    assert 0 <= metrics[f'{prefix}attention_entropy'] <= math.log(17)
    assert 0 <= metrics[f'{prefix}attention_saturated'] <= 1
    for kind in ('encoder_self_attention', 'decoder_self_attention', 'cross_attention'):
      assert 0 <= metrics[f'{prefix}{kind}_layer1_head1_entropy'] <= math.log(17)
  # The decoder's first row sees only itself: some rows are saturated even at init.
  assert metrics['init_decoder_self_attention_saturated'] > 0


@pytest.mark.parametrize('kind', ['sinusoidal', 'learned', 'multiplicative', 'rotary', 'none'])
def test_position_tables(kind):
  config = TransformerConfig(vocab_size=12, model_dim=8, num_heads=2, mlp_dim=16, num_layers=1,
                             max_len=10, positional=kind)
  ids = jnp.ones((1, 4), jnp.int32)
  params = Transformer(config).init(jax.random.PRNGKey(0), ids, ids)['params']
  tables = visualize.position_tables(config, params)
  if kind == 'sinusoidal':
    [table] = tables.values()
    np.testing.assert_array_equal(table, positional.sinusoidal_table(10, 8))
  elif kind in ('learned', 'multiplicative'):
    assert list(tables) == [f'{kind}, encoder', f'{kind}, decoder']
    for (_, table), stack in zip(tables.items(), ('encoder', 'decoder')):
      np.testing.assert_array_equal(table, params[stack]['positions']['table'])
      assert table.shape == (10, 8)
  else:
    assert tables == {}
