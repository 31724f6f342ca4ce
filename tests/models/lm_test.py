"""The decoder-only LM: shapes, causality, padding/packing, cached decoding, learning, and
generation through decode.py (sampling, greedy, beam, prompts)."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.decoding import beam_checks
from transformer_jax.base.errors import UserError
from transformer_jax.data.tokenizer import IdentityTokenizer
from transformer_jax.decoding import decode
from transformer_jax.decoding import generate
from transformer_jax.decoding.predict import SearchSettings
from transformer_jax.experiments import multi30k_lm
from transformer_jax.models.lm import DecoderOnlyLM
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn import losses
from transformer_jax.run import defaults as base
from transformer_jax.run import modes

SMALL = dict(vocab_size=40, model_dim=16, num_heads=2, mlp_dim=32, num_layers=2, max_len=24,
             dropout_rate=0.0)
EOS = 1


def tokens(seed, shape, lengths):
  """Random ids in [3, 40), each row ending in EOS at lengths[r] - 1, then padding."""
  ids = np.random.default_rng(seed).integers(3, 40, shape)
  for row, length in enumerate(lengths):
    ids[row, length - 1] = EOS
    ids[row, length:] = 0
  return jnp.asarray(ids, jnp.int32)


def setup_model(**changes):
  model = DecoderOnlyLM(TransformerConfig(**{**SMALL, **changes}))
  targets = tokens(1, (2, 8), [8, 5])
  params = model.init(jax.random.key(0), targets)['params']
  return model, params, targets


def test_eval_shape_of_logits_and_params():
  model = DecoderOnlyLM(TransformerConfig(**SMALL))
  targets = jax.ShapeDtypeStruct((3, 11), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((3, 11), jnp.int32)))
  assert set(variables['params']) == {'embedding', 'decoder'}
  assert 'logits' not in variables['params']['decoder']           # tied output
  assert 'cross_attention' not in variables['params']['decoder']['layer_0']
  logits = jax.eval_shape(lambda p, t: model.apply({'params': p}, t), variables['params'], targets)
  assert logits.shape == (3, 11, 40) and logits.dtype == jnp.float32


def test_untied_output_has_its_own_projection():
  model, params, _ = setup_model(tie_output=False, norm_order='pre')
  assert params['decoder']['logits']['kernel'].shape == (16, 40)
  assert 'final_norm' in params['decoder']


def embedding_jacobian(model, params, targets):
  """[t, batch, j]: |d logits[:, t] / d embedded[:, j]| summed over features."""
  def outputs(perturbation):                        # [length]: one weighted logit sum per t
    logits = model.apply({'params': params,
                          'perturbations': {'decoder': {'embedded': perturbation}}}, targets)
    return jnp.sum(logits * jnp.linspace(0.5, 1.5, logits.shape[-1]), axis=(0, 2))
  jacobian = jax.jit(jax.jacrev(outputs))(jnp.zeros(targets.shape + (model.config.model_dim,)))
  return np.abs(np.asarray(jacobian)).sum(-1)


@pytest.mark.parametrize('norm_order,positional', [('post', 'sinusoidal'), ('pre', 'rotary')])
def test_logit_t_depends_on_inputs_up_to_t_only(norm_order, positional):
  model, params, _ = setup_model(norm_order=norm_order, positional=positional)
  targets = tokens(2, (2, 8), [8, 8])
  jacobian = embedding_jacobian(model, params, targets)
  for t in range(8):
    grad = jacobian[t]
    # Input j holds target j-1 (BOS at 0): logit t may see inputs 0..t only.
    assert np.all(grad[:, t + 1:] == 0.0), f'position {t} sees the future'
    assert np.all(grad[:, :t + 1] > 0.0), f'position {t} is cut off from its past'


def test_padding_does_not_change_real_positions():
  model, params, targets = setup_model()
  logits = model.apply({'params': params}, targets)
  longer = jnp.pad(targets, ((0, 0), (0, 5)))
  np.testing.assert_allclose(model.apply({'params': params}, longer)[:, :8], logits,
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('positional', ['sinusoidal', 'learned', 'rotary'])
def test_packed_row_equals_the_separate_sentences(positional):
  model, params, _ = setup_model(positional=positional)
  a, b = np.asarray(tokens(3, (1, 5), [5]))[0], np.asarray(tokens(4, (1, 4), [4]))[0]
  packed = jnp.asarray(np.concatenate([a, b, [0, 0, 0]])[None], jnp.int32)
  segmentation = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3], jnp.int32)
  position = jnp.asarray([list(range(5)) + list(range(4)) + [0] * 3], jnp.int32)
  out = model.apply({'params': params}, packed, targets_position=position,
                    targets_segmentation=segmentation)
  for seq, start in ((a, 0), (b, 5)):
    alone = model.apply({'params': params}, jnp.asarray(seq[None], jnp.int32))
    np.testing.assert_allclose(out[0, start:start + len(seq)], alone[0], atol=1e-5, rtol=1e-5)


def cached_logits(model, params, targets):
  """Logits of feeding shift_right(targets) one token per call through the cache."""
  state = generate.init_state(model, params, jnp.zeros((targets.shape[0], 1), jnp.int32),
                              jnp.zeros((targets.shape[0],), jnp.int32), targets.shape[1])
  lm = model.clone(decoding=True)
  step = jax.jit(lambda cache, ids: lm.apply({'params': params, 'cache': cache}, ids,
                                             mutable=['cache']))
  cache, inputs, out = state['model'], jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1], []
  for t in range(targets.shape[1]):
    logits, variables = step(cache, inputs[:, t:t + 1])
    cache = variables['cache']
    out.append(logits[:, 0])
  return jnp.stack(out, axis=1)


@pytest.mark.parametrize('norm_order,positional', [
    ('post', 'sinusoidal'), ('pre', 'sinusoidal'), ('post', 'rotary'), ('pre', 'learned')])
def test_cached_decoding_equals_the_full_pass(norm_order, positional):
  model, params, _ = setup_model(norm_order=norm_order, positional=positional)
  targets = tokens(5, (2, 8), [8, 8])
  np.testing.assert_allclose(cached_logits(model, params, targets),
                             model.apply({'params': params}, targets), atol=1e-5, rtol=1e-5)


# A tiny deterministic language: sentence k is (3 + k, 4 + k, ..., 3 + k + len - 1, EOS).
def counting_language(num, length=6):
  rows = [[3 + (k + j) % 30 for j in range(length - 1)] + [EOS] for k in range(num)]
  return jnp.asarray(rows, jnp.int32)


@pytest.fixture(scope='module')
def trained_lm():
  """A 1-layer LM fitted to the counting language (a few seconds)."""
  model = DecoderOnlyLM(TransformerConfig(**{**SMALL, 'num_layers': 1, 'model_dim': 32,
                                             'mlp_dim': 64, 'norm_order': 'pre'}))
  targets = counting_language(30)
  params = model.init(jax.random.key(0), targets)['params']
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      total, weight = losses.cross_entropy(model.apply({'params': p}, targets), targets, 0.0)
      return total / weight
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss
  for _ in range(300):
    params, opt_state, loss = step(params, opt_state)
  return model, params, float(loss)


def test_learns_a_tiny_deterministic_language(trained_lm):
  _, _, loss = trained_lm
  # Only the first token is uncertain (uniform over 30 starts): log(30)/6 = 0.57 nats a token.
  assert loss < np.log(30) / 6 + 0.05


@functools.lru_cache(maxsize=None)
def _compiled(model, settings):
  return jax.jit(functools.partial(generate.sample_step, model=model, settings=settings,
                                   eos_id=EOS))


def run_generate(model, params, prompts, **settings):
  settings = SearchSettings(**{'max_extra_len': 6, **settings})
  return np.asarray(_compiled(model, settings)(params, {'prompts': jnp.asarray(prompts,
                                                                                jnp.int32)}))


def test_greedy_continues_the_counting_language(trained_lm):
  model, params, _ = trained_lm
  prompts = [[10, 11, 0], [20, 21, 22]]
  out = run_generate(model, params, prompts, method='greedy')
  np.testing.assert_array_equal(out[0, :6], [10, 11, 12, 13, 14, EOS])
  np.testing.assert_array_equal(out[1, :6], [20, 21, 22, 23, 24, EOS])
  assert np.all(out[:, 6:] == 0)


@pytest.mark.parametrize('method', ['greedy', 'sample', 'beam'])
def test_prompt_continuation_keeps_the_prompt(method):
  model, params, _ = setup_model()
  prompts = np.asarray([[5, 6, 7, 8], [9, 10, 0, 0], [0, 0, 0, 0]])
  out = run_generate(model, params, prompts, method=method, beam_size=3)
  for row, prompt in zip(out, prompts):
    n = int((prompt != 0).sum())
    np.testing.assert_array_equal(row[:n], prompt[:n])
    assert 0 not in row[:min(n + 1, row.shape[0])]     # something real follows the prompt


def test_prompt_is_fed_like_teacher_forcing(trained_lm):
  """Greedy from a prompt equals the argmax of the full pass on the prompt's own prefix."""
  model, params, _ = trained_lm
  prompt = np.asarray([[7, 8, 9]])
  out = run_generate(model, params, prompt, method='greedy', max_extra_len=1)
  logits = model.apply({'params': params}, jnp.asarray([[7, 8, 9, 0]], jnp.int32))
  assert out[0, 3] == int(jnp.argmax(logits[0, 3].at[0].set(-1e9)))


def test_sampling_near_zero_temperature_equals_greedy():
  model, params, _ = setup_model()
  prompts = np.zeros((4, 1), np.int32)
  greedy = run_generate(model, params, prompts, method='greedy')
  for temperature in (0.0, 1e-4):
    np.testing.assert_array_equal(
        run_generate(model, params, prompts, method='sample', temperature=temperature), greedy)


def test_sampling_draws_different_rows_and_follows_the_seed():
  model, params, _ = setup_model()
  prompts = np.zeros((8, 1), np.int32)
  a = run_generate(model, params, prompts, method='sample', seed=0)
  assert len({tuple(r) for r in a}) > 1
  np.testing.assert_array_equal(a, run_generate(model, params, prompts, method='sample', seed=0))
  assert not np.array_equal(a, run_generate(model, params, prompts, method='sample', seed=1))


def test_beam_of_one_equals_greedy():
  model, params, _ = setup_model()
  prompts = np.asarray([[5, 6, 0], [0, 0, 0]])
  beam_checks.assert_beam_of_one_is_greedy(
      run_generate(model, params, prompts, method='beam', beam_size=1, alpha=0.0),
      run_generate(model, params, prompts, method='greedy'), EOS)


def test_pad_is_never_generated():
  model, params, _ = setup_model()
  out = run_generate(model, params, np.zeros((6, 1), np.int32), method='sample', max_extra_len=10)
  for row in out[:, :10]:                  # no prompt: at most max_extra_len tokens
    ended = np.flatnonzero(row == EOS)
    real = row[:ended[0]] if ended.size else row
    assert np.all(real != 0)


def test_sample_step_under_pmap_equals_jit():
  model, params, _ = setup_model()
  settings = SearchSettings(method='greedy', max_extra_len=5)
  fn = functools.partial(generate.sample_step, model=model, settings=settings, eos_id=EOS)
  n = jax.local_device_count()
  prompts = jnp.asarray(np.random.default_rng(0).integers(3, 40, (n * 2, 3)), jnp.int32)
  expected = np.asarray(jax.jit(fn)(params, {'prompts': prompts}))
  replicated = jax.tree_util.tree_map(lambda x: jnp.stack([x] * n), params)
  out = jax.pmap(fn)(replicated, {'prompts': prompts.reshape(n, 2, 3)})
  np.testing.assert_array_equal(np.asarray(out).reshape(n * 2, -1), expected)


def test_one_hot_forcing_survives_filtering():
  """Forced prompt logits stay a single choice under temperature, top-k and top-p."""
  logits = jnp.where(jnp.arange(10) == 4, 0.0, decode.NEG_INF)[None]
  filtered = decode.filter_logits(logits, temperature=0.5, top_k=3, top_p=0.5)
  assert int(jnp.argmax(filtered)) == 4
  assert float(jax.nn.softmax(filtered)[0, 4]) == 1.0


def test_prompt_batches_pad_rows_and_length():
  tokenizer = IdentityTokenizer(40)
  lines = ['5 6 7', '', '9'] + ['8'] * 70
  batches = list(generate.prompt_batches(tokenizer, lines, batch_multiple=4, max_len=24))
  assert [b['prompts'].shape for b in batches] == [(64, 8), (64, 8)]
  np.testing.assert_array_equal(batches[0]['prompts'][:3, :3], [[5, 6, 7], [0, 0, 0], [9, 0, 0]])
  np.testing.assert_array_equal(batches[1]['seeds'][:2], [64, 65])
  assert not batches[1]['prompts'][9:].any()               # 73 lines: 9 real rows, then pad


def test_prompts_longer_than_the_cache_are_cut_with_one_warning(caplog):
  """The cache holds max_len tokens: a prompt keeps its first max_len - 1, the others stay whole."""
  tokenizer = IdentityTokenizer(40)
  lines = ['5 6 7', ' '.join(['9'] * 23), ' '.join(['8'] * 24), ' '.join(['7'] * 300)]
  with caplog.at_level(logging.WARNING):
    [batch] = list(generate.prompt_batches(tokenizer, lines, batch_multiple=1, max_len=24))
  lengths = (batch['prompts'] != 0).sum(1)
  np.testing.assert_array_equal(lengths, [3, 23, 23, 23])
  np.testing.assert_array_equal(batch['prompts'][3, :23], [7] * 23)
  [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert '2 input line(s)' in warning and 'max_len=24' in warning and 'line(s) 3, 4;' in warning


def test_lm_refuses_a_sequence_longer_than_its_table():
  model, params, _ = setup_model(num_layers=1)
  longer = tokens(2, (2, 25), [25, 10])
  with pytest.raises(ValueError, match='sequence length 25 exceeds max_len=24'):
    jax.jit(model.apply)({'params': params}, longer)


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_sample_and_eval_modes_on_a_smoke_run(shared_data, tmp_path, capsys):
  config = multi30k_lm.get_config('smoke')
  config.data.raw_dir = str(shared_data / 'multi30k')
  workdir = str(tmp_path)
  modes.train(config, workdir)
  capsys.readouterr()
  samples = modes.sample(config, workdir)
  assert len(samples) == config.decode.num_samples == 2
  assert capsys.readouterr().out.splitlines() == samples
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('A man in a red\nTwo dogs\n')
  continued = modes.sample(config, workdir, input_path=str(prompts))
  assert [c[:len(p)] for c, p in zip(continued, ['A man in a red', 'Two dogs'])] == [
      'A man in a red', 'Two dogs']
  metrics = modes.evaluate(config, workdir)
  assert np.isfinite(metrics['perplexity']) and 'sacrebleu' not in metrics
  with pytest.raises(UserError, match='language model'):
    modes.sample(base.get_base_config(), workdir)


@pytest.mark.parametrize('method', ['greedy', 'sample', 'beam'])
def test_a_cache_grown_in_stages_generates_what_one_fixed_cache_does(method):
  """Prompts and continuations cross the stage ends (8 and 16 of 24 positions)."""
  model, params, _ = setup_model()
  prompts = np.random.default_rng(3).integers(3, 40, (4, 8))
  prompts[1, 5:] = 0
  prompts[2, :] = 0
  run = lambda stages: run_generate(model, params, prompts, method=method, beam_size=3,
                                    max_extra_len=16, cache_stages=stages)
  fixed = run(1)
  assert fixed.shape == (4, 24) and np.any(fixed[:, 16:] != 0)   # reached the last stage
  np.testing.assert_array_equal(run(4), fixed)
