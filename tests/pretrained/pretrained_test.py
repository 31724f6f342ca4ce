"""--mode=export and transformer_jax.load_pretrained, end to end through launch.py.

A 200-step copy-task smoke run (outputs that depend on the input, two checkpoints averaged) is
exported by launch.py; a fresh Python process outside the checkout loads it and translates as
`launch.py --mode=translate` does on the same lines, greedy (the run's setting) and beam.
The Multi30k (sentencepiece) and LM exports need ../shared/data and train for about a minute
each, so they are marked slow.
"""
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from safetensors import flax as safetensors_flax

import transformer_jax
from transformer_jax.base.errors import UserError
from transformer_jax.pretrained import loading as pretrained

# Subprocess runs end to end (minutes on 2 cores): `python -m pytest -m slow`.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
SMOKE = '--experiment=experiments/copy_task.py:smoke'
# Long enough (lr 1e-2) for outputs that differ from line to line; checkpoints at 100 and 200,
# and eval.average_last=2 recorded in the run, so export and translate both average them.
COPY_RUN = (SMOKE, '--experiment.train.num_steps=200', '--experiment.optim.warmup_steps=20',
            '--experiment.optim.learning_rate=0.01',
            '--experiment.train.checkpoint_every_steps=100',
            '--experiment.train.eval_every_steps=200', '--experiment.train.log_every_steps=100',
            '--experiment.eval.bleu=False', '--experiment.eval.average_last=2')
LINES = ['5 6 7', '9 8', '4 4 5 6 7 8', '12 3 7 7 8 9 10 11', '3 5 3 5 3 5 3 5 3 5 3',
         ' '.join(['7', '9'] * 20)]          # 41 tokens: past data.max_len, a bucket of its own
BEAM = dict(method='beam', beam_size=2)


def launch(*args, timeout=420):
  env = dict(os.environ, PYTHONUNBUFFERED='1')    # keeps conftest's 8 host devices
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def snapshot(folder: pathlib.Path):
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def in_fresh_process(code: str, cwd: pathlib.Path, timeout=300):
  """The JSON that `code` prints, run by a new interpreter outside the checkout (the package
  found through PYTHONPATH, as in a notebook), with this machine's device count."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp('copy') / 'run'
  result = launch(*COPY_RUN, f'--workdir={folder}', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return folder


@pytest.fixture(scope='module')
def exported(trained):
  """<run>/export, written by launch.py with only --workdir (the run's config.json)."""
  result = launch(f'--workdir={trained}', '--mode=export')
  assert result.returncode == 0, result.stderr[-3000:]
  return trained / 'export'


def test_export_is_a_self_contained_folder(trained, exported):
  assert sorted(os.listdir(exported)) == ['README.md', 'model.json', 'params.safetensors',
                                          'run.json']
  model = json.loads((exported / 'model.json').read_text())
  assert model['family'] == 'transformer'
  assert model['config']['model_dim'] == 16 and model['config']['vocab_size'] == 32
  run = json.loads((exported / 'run.json').read_text())
  assert run['tokenizer'] == {'kind': 'identity', 'vocab_size': 32}
  assert run['decode']['method'] == 'greedy'
  assert run['data']['tokens_per_batch'] == 256 and run['data']['max_len'] == 32
  assert run['source']['steps_averaged'] == [100, 200]
  assert run['source']['workdir'] == str(trained)
  params = safetensors_flax.load_file(exported / 'params.safetensors')
  names = list(params)
  assert all(params[name].dtype == np.float32 for name in names)
  assert any(name.startswith('encoder/') and name.endswith('/kernel') for name in names), names
  readme = (exported / 'README.md').read_text()
  assert f"transformer_jax.load_pretrained('{exported}')" in readme
  assert 'model.translate([' in readme and '[100, 200]' in readme
  assert 'pip install transformer-jax' in readme and 'PYTHONPATH' not in readme


def test_a_fresh_process_translates_as_launch_translate(trained, exported, tmp_path):
  lines = tmp_path / 'lines.txt'
  lines.write_text(''.join(line + '\n' for line in LINES))
  expected = {}
  for name, overrides in (('greedy', ()), ('beam', ('--experiment.decode.method=beam',
                                                     '--experiment.decode.beam_size=2'))):
    result = launch(f'--workdir={trained}', '--mode=translate', f'--input={lines}', *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    expected[name] = result.stdout.splitlines()
  got = in_fresh_process(f"""
      import json
      import transformer_jax
      model = transformer_jax.load_pretrained({str(exported)!r})
      lines = {LINES!r}
      print(json.dumps({{'greedy': model.translate(lines),
                         'beam': model.translate(lines, **{BEAM!r})}}))
      """, cwd=tmp_path)
  assert got == expected
  assert len(set(got['greedy'])) == len(LINES) and all(got['greedy']), got   # not trivial


def test_score_is_the_teacher_forced_log_likelihood_of_each_pair(exported):
  model = transformer_jax.load_pretrained(exported)
  sources, targets = ['5 6 7', '9 8', '4 4 5 6 7 8'], ['5 6 7', '9 9 9 9 9', '4 5']
  together = model.score(sources, targets)
  alone = np.concatenate([model.score([s], [t]) for s, t in zip(sources, targets)])
  np.testing.assert_allclose(together, alone, rtol=1e-5)      # padding changes nothing
  for source, target, score in zip(sources, targets, together):
    inputs, outputs = (np.asarray(model.tokenize([text]), np.int32) for text in (source, target))
    logits = model.module.apply({'params': model.params}, inputs, outputs)
    log_probs = np.asarray(jax.nn.log_softmax(logits[0].astype(np.float32)))
    expected = sum(log_probs[i, token] for i, token in enumerate(outputs[0]))
    np.testing.assert_allclose(score, expected, rtol=1e-5)
  assert (together < 0).all()
  encoded = model.encode(sources)
  assert [x.shape for x in encoded] == [(4, 16), (3, 16), (7, 16)]
  assert model.tokenize(['5 6']) == [[5, 6, 1]]


def test_export_never_overwrites_and_says_so_in_one_line(trained, exported, tmp_path):
  before = snapshot(exported)
  result = launch(f'--workdir={trained}', '--mode=export', timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f'error: --export_dir {exported} already holds files'), line
  assert '--export_dir' in line.split(':', 2)[-1] and 'Traceback' not in result.stderr
  assert snapshot(exported) == before
  afile = tmp_path / 'afile'
  afile.write_text('x')
  result = launch(f'--workdir={trained}', '--mode=export', f'--export_dir={afile}', timeout=120)
  assert result.returncode == 2 and 'is a file' in result.stderr.strip().splitlines()[-1]


def test_misuse_is_one_user_error(exported, tmp_path):
  with pytest.raises(UserError, match='is not a transformer_jax export .*--mode=export'):
    transformer_jax.load_pretrained(tmp_path)
  model = transformer_jax.load_pretrained(exported)
  with pytest.raises(UserError, match=r'one string: give a list of strings'):
    model.translate('5 6 7')
  with pytest.raises(UserError, match=r'beam_size=0 is out of range: give beam_size as an integer'):
    model.translate(['5 6 7'], method='beam', beam_size=0)
  with pytest.raises(UserError, match=r"sample needs a language model.*'transformer'.*translate"):
    model.sample(n=2)
  with pytest.raises(UserError, match='2 sources and 1 targets'):
    model.score(['5 6', '7'], ['5 6'])
  assert model.translate([]) == []


def test_a_damaged_params_file_is_refused_naming_the_parameter(exported, tmp_path):
  copy = tmp_path / 'export'
  copy.mkdir()
  for name in os.listdir(exported):
    (copy / name).write_bytes((exported / name).read_bytes())
  flat = safetensors_flax.load_file(copy / 'params.safetensors')
  first = sorted(flat)[0]
  flat[first] = flat[first][..., :1]
  safetensors_flax.save_file(flat, copy / 'params.safetensors')
  with pytest.raises(UserError, match=f'does not fit its model.json \\({first} has shape'):
    pretrained.load_pretrained(copy)


@pytest.mark.slow
def test_a_multi30k_export_carries_its_sentencepiece_model(shared_data, tmp_path):
  run = tmp_path / 'run'
  result = launch('--experiment=experiments/multi30k.py:smoke', f'--workdir={run}', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  result = launch(f'--workdir={run}', '--mode=export', f'--export_dir={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'tokenizer.model' in os.listdir(tmp_path / 'out')
  lines = ['A man rides a bike.', 'Two dogs play in the snow.']
  (tmp_path / 'lines.txt').write_text(''.join(line + '\n' for line in lines))
  expected = launch(f'--workdir={run}', '--mode=translate', f'--input={tmp_path / "lines.txt"}')
  assert expected.returncode == 0, expected.stderr[-3000:]
  model = transformer_jax.load_pretrained(tmp_path / 'out')
  assert model.translate(lines) == expected.stdout.splitlines()


@pytest.mark.slow
def test_an_lm_export_samples(shared_data, tmp_path):
  run = tmp_path / 'run'
  result = launch('--experiment=experiments/multi30k_lm.py:smoke', f'--workdir={run}',
                  timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  result = launch(f'--workdir={run}', '--mode=export', f'--export_dir={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-3000:]
  model = transformer_jax.load_pretrained(tmp_path / 'out')
  samples = model.sample(n=3, seed=1)
  assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
  assert model.sample(n=3, seed=1) == samples                     # a seed repeats
  continued = model.sample(prompts=['A man', 'Two dogs'], method='greedy', max_extra_len=4)
  assert [text.startswith(prompt) for text, prompt in zip(continued, ['A man', 'Two dogs'])] == [
      True, True], continued
  with pytest.raises(UserError, match='translate needs an encoder-decoder'):
    model.translate(['A man'])
