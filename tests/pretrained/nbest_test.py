"""n-best translation with scores from `Pretrained.translate` (what fairseq-generate --nbest and
Hugging Face's num_return_sequences give), on a tiny untrained export (tiny_export.py), checked
against the 1-best beam search and an independent teacher-forced rescoring; and the range of
the `decode.nbest` setting. --mode=translate's n-best lines: run_export_test.py."""
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transformer_jax
from tests.pretrained import tiny_export
from transformer_jax.base.errors import UserError
from transformer_jax.run import defaults
from transformer_jax.train import validation

BEAM = dict(method='beam', beam_size=4, alpha=0.6)
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def model(tmp_path_factory):
  return transformer_jax.load_pretrained(tiny_export.write(tmp_path_factory.mktemp('nbest') / 'x'))


def rescored(model, source: str, hypothesis: str, alpha: float) -> float:
  """log p(hypothesis | source) / lp(|hypothesis|) by one teacher-forced pass of the module:
  the hypothesis' ids with its EOS, PAD left out of the distribution (the search never picks
  it), lp = ((5 + |Y|) / 6) ** alpha."""
  inputs = np.asarray([[int(t) for t in source.split()] + [1]], np.int32)
  targets = np.asarray([[int(t) for t in hypothesis.split()] + [1]], np.int32)
  logits = model.module.apply({'params': model.params}, inputs, targets)[0]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32).at[:, 0].set(-jnp.inf))
  total = float(sum(log_probs[i, token] for i, token in enumerate(targets[0])))
  return total / ((5 + targets.shape[1]) / 6) ** alpha


# slow: ~32 s; tests/decoding/predict_test.py checks the same ranking in the default suite.
@pytest.mark.slow
def test_nbest_lists_are_the_beam_ranked_by_the_teacher_forced_score(model):
  best = model.translate(tiny_export.LINES, **BEAM)
  ranked = model.translate(tiny_export.LINES, nbest=3, return_scores=True, **BEAM)
  assert len(ranked) == len(tiny_export.LINES)
  for line, one, hypotheses in zip(tiny_export.LINES, best, ranked):
    assert len(hypotheses) == 3 and all(isinstance(score, float) for _, score in hypotheses)
    assert hypotheses[0][0] == one                               # the 1-best beam output
    scores = [score for _, score in hypotheses]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
    assert len({text for text, _ in hypotheses}) == 3
    for text, score in hypotheses:
      np.testing.assert_allclose(score, rescored(model, line, text, 0.6), rtol=1e-4)


def test_nbest_without_scores_and_the_unchanged_one_best(model):
  ranked = model.translate(tiny_export.LINES, nbest=3, return_scores=True, **BEAM)
  assert model.translate(tiny_export.LINES, nbest=3, **BEAM) == [
      [text for text, _ in hypotheses] for hypotheses in ranked]
  one = model.translate(tiny_export.LINES, nbest=1, return_scores=True, **BEAM)
  assert [hypotheses[0] for hypotheses in ranked] == [only for only, in one]
  plain = model.translate(tiny_export.LINES, nbest=1, return_scores=False, **BEAM)
  assert plain == model.translate(tiny_export.LINES, **BEAM)
  assert isinstance(plain, list) and all(isinstance(text, str) for text in plain)
  assert model.translate([], nbest=3, return_scores=True, **BEAM) == []


@pytest.mark.parametrize('given, match', [
    (dict(nbest=2), r"nbest=2 or return_scores ranks the hypotheses of a beam search, and the "
                    r"method here is 'greedy': give method='beam'"),
    (dict(return_scores=True), r"method here is 'greedy': give method='beam'"),
    (dict(nbest=5, **BEAM), r'decode\.nbest=5 is more than the 4 hypotheses the beam keeps '
                            r'\(decode\.beam_size\): give nbest as 4 or less, or beam_size to 5'),
    (dict(nbest=0, **BEAM), r'decode\.nbest=0 is out of range: give nbest as an integer >= 1'),
])
def test_a_bad_nbest_is_one_user_error(model, given, match):
  with pytest.raises(UserError, match=match) as info:
    model.translate(tiny_export.LINES, **given)
  assert '\n' not in str(info.value)


def test_decode_nbest_is_checked_with_its_beam():
  config = defaults.get_base_config()
  assert config.decode.nbest == 1
  config.decode.update(method='beam', beam_size=4, nbest=4)
  validation.check_config(config, training=False)
  for changes, match in (
      (dict(nbest=0), r'^decode\.nbest=0 is out of range: set --experiment\.decode\.nbest to an '
                      r'integer >= 1'),
      (dict(nbest=5), r'^decode\.nbest=5 is more than the 4 hypotheses the beam keeps '
                      r'\(decode\.beam_size\): set --experiment\.decode\.nbest to 4 or less, or '
                      r'--experiment\.decode\.beam_size to 5 or more$'),
      (dict(nbest=2, method='greedy'),
       r"^decode\.nbest=2 ranks the hypotheses of a beam search, and decode\.method='greedy' "
       r'gives one: set --experiment\.decode\.method=beam .*or --experiment\.decode\.nbest=1$')):
    bad = defaults.get_base_config()
    bad.decode.update(method='beam', beam_size=4)
    bad.decode.update(**changes)
    with pytest.raises(UserError, match=match):
      validation.check_config(bad, training=False)


def test_launch_refuses_an_nbest_beyond_the_beam_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, 'launch.py', '--experiment=experiments/copy_task.py:smoke',
       '--experiment.decode.method=beam', '--experiment.decode.beam_size=3',
       '--experiment.decode.nbest=4', '--mode=translate', f'--workdir={tmp_path / "run"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'error: decode.nbest=4 is more than the 3 hypotheses the beam keeps (decode.beam_size): '
      'set --experiment.decode.nbest to 3 or less, or --experiment.decode.beam_size to 4 or more')
