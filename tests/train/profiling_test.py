"""train.profile_steps: parsed and checked before training; a smoke run writes the trace."""
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.experiments import copy_task
from transformer_jax.train import profiling
from transformer_jax.train import validation


@pytest.mark.parametrize('text, parsed', [
    ('', (None, None, None)), ('  ', (None, None, None)), ('5', (5, None, None)),
    ('10:15', (None, 10, 15)), (' 0 : 2 ', (None, 0, 2)),
])
def test_parse(text, parsed):
  assert profiling.parse(text) == parsed


@pytest.mark.parametrize('text, expected', [
    ('0', 'traces no step'), ('5:5', 'empty window'), ('7:3', 'empty window'),
    ('a:b', 'is not a step window'), ('-1', 'is not a step window'), ('1:2:3', 'not a step'),
])
def test_bad_text_is_refused_with_the_fix(text, expected):
  with pytest.raises(UserError, match=expected) as error:
    profiling.parse(text)
  assert 'set --experiment.train.profile_steps to' in str(error.value)


def test_window_counts_from_where_the_run_starts():
  assert profiling.window('', start_step=0, num_steps=10) is None
  assert profiling.window('3', start_step=0, num_steps=10) == (1, 4)
  assert profiling.window('3', start_step=5, num_steps=10) == (6, 9)
  assert profiling.window('2:4', start_step=5, num_steps=10) == (2, 4)
  with pytest.raises(UserError, match=r"traces 3 steps after the first \(to step 11\), past "
                     'train.num_steps=10'):
    profiling.window('3', start_step=7, num_steps=10)


def test_validation_checks_it_before_training():
  config = copy_task.get_config('smoke')           # num_steps 2
  config.train.profile_steps = '1:3'
  validation.check_config(config, training=False)  # evaluation does not trace
  with pytest.raises(UserError, match='past train.num_steps=2'):
    validation.check_config(config, training=True)
  config.train.profile_steps = 'x'
  with pytest.raises(UserError, match='not a step window'):
    validation.check_config(config, training=False)


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_copy_task_smoke_run_writes_a_trace_into_its_tensorboard_folder(tmp_path):
  from transformer_jax.train import trainer
  config = copy_task.get_config('smoke')
  config.train.update(num_steps=3, profile_steps='1:2', eval_every_steps=100,
                      checkpoint_every_steps=100)
  trainer.train_and_evaluate(config, str(tmp_path))
  traces = list((tmp_path / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))


def test_a_resumed_run_past_the_window_trains_on_without_a_trace(tmp_path):
  tracer = profiling.StepTracer((2, 4), str(tmp_path), start_step=4, active=True)
  with tracer:
    for step in range(4, 6):
      tracer.before(step)
      tracer.after(step + 1, None)
  assert not (tmp_path / 'plugins').exists()
