"""predict_step through the Transformer's cache agrees with the teacher-forced model."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding import beam_checks
from transformer_jax.decoding import cache_stages
from transformer_jax.decoding import beam
from transformer_jax.decoding import predict
from transformer_jax.models.rnn_seq2seq import RNNSeq2Seq
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn import attention
from transformer_jax.nn.config import RNNConfig
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.train import parallel

EOS = 1


def trained_like_model():
  config = TransformerConfig(vocab_size=20, model_dim=16, num_heads=2, mlp_dim=32, num_layers=2,
                             dropout_rate=0.0, max_len=32)
  model = Transformer(config)
  inputs = np.random.default_rng(0).integers(3, 20, (8, 6)).astype(np.int32)
  inputs[:, 4:] = 0
  inputs[:, 3] = EOS
  params = model.init(jax.random.key(1), inputs, inputs)['params']
  return model, params, inputs


def test_greedy_output_is_the_argmax_of_the_full_pass_on_itself():
  model, params, inputs = trained_like_model()
  settings = predict.SearchSettings(method='greedy', max_extra_len=5)
  out = np.asarray(predict.predict_step(params, {'inputs': inputs}, model=model,
                                        settings=settings, eos_id=EOS))
  assert out.shape == (8, 6 + 5)
  logits = model.apply({'params': params}, inputs, jnp.asarray(out))
  argmax = np.asarray(jnp.argmax(logits.at[..., 0].set(-jnp.inf), -1))   # PAD is never decoded
  for row in range(8):
    ended = np.flatnonzero(out[row] == EOS)
    limit = 3 + 1 + 5                 # source length (with EOS) + max_extra_len
    stop = min(ended[0] + 1 if len(ended) else limit, limit)
    np.testing.assert_array_equal(out[row, :stop], argmax[row, :stop])
    assert np.all(out[row, stop:] == 0)


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_beam_of_one_equals_greedy_and_beam_scores_its_best():
  model, params, inputs = trained_like_model()
  run = lambda **kw: np.asarray(predict.predict_step(
      params, {'inputs': inputs}, model=model, settings=predict.SearchSettings(max_extra_len=5, **kw),
      eos_id=EOS))
  beam_checks.assert_beam_of_one_is_greedy(run(method='beam', beam_size=1), run(method='greedy'), EOS)
  assert run(method='beam', beam_size=4).shape == (8, 11)


def teacher_forced_scores(model, params, sources, hypotheses, alpha):
  """log p(hypothesis | source) / lp(|hypothesis|) of each row, recomputed by one teacher-forced
  pass over the hypotheses cut after their EOS (PAD after it: the decoder is causal), with PAD
  excluded from the distribution (it is never decoded)."""
  ended = hypotheses == EOS
  lengths = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, (hypotheses > 0).sum(axis=1))
  tokens = np.where(np.arange(hypotheses.shape[1]) < lengths[:, None], hypotheses, 0)
  logits = model.apply({'params': params}, sources, tokens.astype(np.int32))
  log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32).at[..., 0].set(-jnp.inf)))
  picked = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  totals = np.where(tokens > 0, picked, 0.0).sum(axis=1)
  return totals / ((5 + lengths) / 6) ** alpha


def test_an_nbest_list_is_ranked_by_the_teacher_forced_length_penalised_log_prob():
  model, params, inputs = trained_like_model()
  settings = predict.SearchSettings(method='beam', beam_size=4, alpha=0.6, max_extra_len=5)
  ids, scores = map(np.asarray, jax.jit(functools.partial(
      predict.nbest_step, model=model, settings=settings, eos_id=EOS, nbest=3))(
          params, {'inputs': inputs}))
  best = np.asarray(jax.jit(functools.partial(
      predict.predict_step, model=model, settings=settings, eos_id=EOS))(
          params, {'inputs': inputs}))
  assert ids.shape == (8, 3, 11) and scores.shape == (8, 3)
  np.testing.assert_array_equal(ids[:, 0], best)              # the 1-best beam output
  assert np.all(np.diff(scores, axis=1) < 0)                  # distinct, best first
  assert all(len({tuple(hypothesis) for hypothesis in row}) == 3 for row in ids)
  recomputed = teacher_forced_scores(model, params, np.repeat(inputs, 3, axis=0),
                                     ids.reshape(24, 11), 0.6)
  np.testing.assert_allclose(scores.reshape(24), recomputed, rtol=1e-4)


def test_predict_under_pmap_equals_direct_call():
  model, params, inputs = trained_like_model()
  fn = functools.partial(predict.predict_step, model=model,
                         settings=predict.SearchSettings(method='beam', beam_size=3, max_extra_len=4),
                         eos_id=EOS)
  runner = parallel.make_runner('pmap', model=model, label_smoothing=0.0)
  sharded = runner.run_replicated(fn, runner.put_state(params), runner.put_batch({'inputs': inputs}))
  np.testing.assert_array_equal(sharded, np.asarray(jax.jit(fn)(params, {'inputs': inputs})))


def test_beams_sharing_one_source_copy_search_as_beams_with_tiled_sources():
  """The Transformer's beams read one untiled copy of their source (predict.for_beams):
  the search must be the one over a source tiled per beam (the RNN models' way)."""
  model, params, inputs = trained_like_model()
  beams, max_len = 3, 9
  encoded = model.apply({'params': params}, inputs, method='encode')

  def search(encoded, inputs):
    cache = predict.init_cache(model, params, encoded, inputs, max_len, rows=8 * beams)
    fn = predict.make_tokens_to_logits(model, params, encoded, inputs)
    return cache, beam.beam_search(cache, fn, batch_size=8, beam_size=beams, alpha=0.6,
                                   max_decode_len=max_len, eos_id=EOS)

  shared_cache, (shared_seqs, shared_scores) = search(*predict.for_beams(model, encoded, inputs, beams))
  tiled_cache, (tiled_seqs, tiled_scores) = search(*beam.expand_to_beams((encoded, inputs), beams))
  rows = lambda cache, name: {x.shape[0] for path, x in jax.tree_util.tree_leaves_with_path(cache)
                              if name in jax.tree_util.keystr(path)}
  assert rows(shared_cache, 'cross_key') == {8} and rows(tiled_cache, 'cross_key') == {8 * beams}
  assert rows(shared_cache, 'cached_key') == {8 * beams}
  np.testing.assert_array_equal(shared_seqs, tiled_seqs)
  np.testing.assert_allclose(shared_scores, tiled_scores, rtol=1e-5)
  assert np.all(np.asarray(shared_scores)[:, 0] > beam.NEG_INF / 2)   # real hypotheses


@pytest.mark.parametrize('method', ['greedy', 'beam', 'sample'])
def test_a_cache_grown_in_stages_decodes_what_one_fixed_cache_does(method):
  model, params, inputs = trained_like_model()
  run = lambda stages: np.asarray(predict.predict_step(
      params, {'inputs': inputs}, model=model, eos_id=EOS, settings=predict.SearchSettings(
          method=method, beam_size=3, max_extra_len=20, cache_stages=stages)))
  fixed = run(1)
  assert fixed.shape == (8, 26) and np.any(fixed[:, 8:] != 0)   # decoded past the first stage
  for stages in (2, 4):                 # cache lengths (16, 26) and (8, 16, 24, 26)
    np.testing.assert_array_equal(run(stages), fixed)


def test_beam_search_over_many_cache_stages_scores_as_over_one_cache():
  """Stage ends at 2, 3 and 7 of 11 positions; a grow that misplaces the filled positions
  (padding in front) must change the search, so the comparison can see a wrong grow."""
  model, params, inputs = trained_like_model()
  beams, max_len = 3, 11
  encoded, inputs = predict.for_beams(
      model, model.apply({'params': params}, inputs, method='encode'), inputs, beams)
  fn = predict.make_tokens_to_logits(model, params, encoded, inputs)

  def search(lengths, grow_fn=attention.grow_cache):
    cache = predict.init_cache(model, params, encoded, inputs, lengths[0], rows=8 * beams)
    return beam.beam_search(cache, fn, batch_size=8, beam_size=beams, alpha=0.6,
                            max_decode_len=max_len, eos_id=EOS,
                            cache_stages=cache_stages.CacheStages(lengths, grow_fn))

  fixed_seqs, fixed_scores = search((max_len,))
  staged_seqs, staged_scores = search((2, 3, 7, max_len))
  np.testing.assert_array_equal(staged_seqs, fixed_seqs)
  np.testing.assert_allclose(staged_scores, fixed_scores, rtol=1e-6)

  def pad_in_front(cache, length):
    grown = attention.grow_cache(cache, length)
    return jax.tree_util.tree_map(
        lambda old, new: jnp.roll(new, length - old.shape[2], axis=2)
        if old.shape != new.shape else new, cache, grown)
  wrong_seqs, wrong_scores = search((2, 3, 7, max_len), pad_in_front)
  assert not np.allclose(wrong_scores, fixed_scores, rtol=1e-3)


def test_the_rnn_cache_has_nothing_to_grow_and_runs_in_one_stage():
  config = RNNConfig(vocab_size=20, embed_dim=8, hidden_dim=8, attention=True)
  model = RNNSeq2Seq(config)
  inputs = np.random.default_rng(0).integers(3, 20, (2, 5)).astype(np.int32)
  params = model.init(jax.random.key(0), inputs, inputs)['params']
  encoded = model.apply({'params': params}, inputs, method='encode')
  lengths = []
  make = lambda length: lengths.append(length) or predict.init_cache(model, params, encoded,
                                                                     inputs, length)
  cache, stages = predict.staged_cache(make, 30, 4)
  assert stages.lengths == (30,) and lengths[-1] == 30
  assert not attention.holds_self_cache(cache)
