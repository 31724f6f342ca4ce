"""Speed and ETA count training alone: compiling calls, evaluations and saves are timed apart
(metrics_writer.Throughput), measured here on a fake clock, never with timed assertions."""
import logging

import pytest
from tensorboard.backend.event_processing import event_accumulator

from transformer_jax.checkpoints import checkpoint
from transformer_jax.evaluation import evaluators
from transformer_jax.experiments import copy_task
from transformer_jax.train import components
from transformer_jax.train import metrics_writer
from transformer_jax.train import trainer


class FakeClock:
  """Seconds that pass only when a test says so."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now

  def advance(self, seconds):
    self.now += seconds


def test_compiling_calls_evaluations_and_saves_stay_out_of_the_speed():
  clock = FakeClock()
  meter = metrics_writer.Throughput(num_steps=100, eval_every_steps=50,
                                    checkpoint_every_steps=50, clock=clock)
  clock.advance(7.0)                    # set-up and the first batch: not training
  with meter.paused('compile'):
    clock.advance(40.0)
  meter.trained(1, timed=False)
  for _ in range(9):                    # steps 2..10 at 0.25 s
    clock.advance(0.25)
    meter.trained(1)
  speed = meter.report(10)
  assert speed.steps_per_sec == pytest.approx(4.0)
  # 90 steps at 4/s; the evaluations at 50 and 100 are not timed yet, so named apart.
  assert speed.eta_seconds == pytest.approx(22.5)
  assert speed.untimed_evals == 2
  for _ in range(40):                   # steps 11..50
    clock.advance(0.25)
    meter.trained(1)
  with meter.paused('eval'):
    clock.advance(12.0)
  with meter.paused('checkpoint'):
    clock.advance(3.0)
  for _ in range(10):                   # steps 51..60, faster now
    clock.advance(0.2)
    meter.trained(1)
  speed = meter.report(60)
  assert speed.steps_per_sec == pytest.approx(50 / 12.0)    # this interval: 50 steps in 12 s
  overall = 59 / (49 * 0.25 + 10 * 0.2)
  assert speed.eta_seconds == pytest.approx(40 / overall + 12.0 + 3.0)   # one eval, one save left
  assert speed.untimed_evals == 0


def test_only_compiling_calls_so_far_give_no_speed():
  clock = FakeClock()
  meter = metrics_writer.Throughput(num_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
                                    clock=clock)
  with meter.paused('compile'):
    clock.advance(30.0)
  meter.trained(1, timed=False)
  assert meter.report(1) == metrics_writer.Speed(None, None)


@pytest.mark.parametrize('step, num_steps, every, left', [
    (50, 1500, 500, 3), (500, 1500, 500, 3), (501, 1500, 500, 2), (1500, 1500, 500, 1),
    (1, 6, 100, 1), (6, 6, 100, 1), (3, 10, 4, 3)])
def test_events_left_count_the_periodic_ones_and_the_last_step(step, num_steps, every, left):
  assert metrics_writer.events_left(step, num_steps, every) == left


def test_the_loop_reports_training_speed_and_an_eta_with_the_evaluations_left(tmp_path,
                                                                            monkeypatch, caplog):
  """Step 1 compiles (60 s), every other step takes 0.5 s, an evaluation 30 s, a save 2 s: the
  log says 2 steps/s throughout, and the ETA adds the evaluations and saves still to come."""
  clock = FakeClock()
  real_build, real_evaluate, real_save = (components.build, evaluators.Evaluator.evaluate,
                                          checkpoint.Checkpointer.save)

  def build(*args):
    parts = real_build(*args)
    step_fn, calls = parts.runner.train_step, []

    def train_step(state, batch):
      calls.append(None)
      clock.advance(60.0 if len(calls) == 1 else 0.5)
      return step_fn(state, batch)

    parts.runner.train_step = train_step
    return parts

  def evaluate(self, *args, **kwargs):
    clock.advance(30.0)
    return real_evaluate(self, *args, **kwargs)

  def save(self, *args, **kwargs):
    clock.advance(2.0)
    return real_save(self, *args, **kwargs)

  monkeypatch.setattr(components, 'build', build)
  monkeypatch.setattr(evaluators.Evaluator, 'evaluate', evaluate)
  monkeypatch.setattr(checkpoint.Checkpointer, 'save', save)
  config = copy_task.get_config('smoke')
  config.data.bucket_lengths = (config.data.max_len,)       # one batch shape: one compile
  config.eval.update(bleu=False, tensorboard_examples=2)    # decoded for TensorBoard alone
  config.train.update(num_steps=8, log_every_steps=2, eval_every_steps=4,
                      checkpoint_every_steps=4)
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(config, str(tmp_path), clock=clock)
  records = {r['step']: r for r in metrics_writer.read_records(str(tmp_path / 'metrics.jsonl'))
             if r['split'] == 'train'}
  assert sorted(records) == [2, 4, 6, 8]
  assert all(records[s]['steps_per_sec'] == pytest.approx(2.0) for s in records)
  assert records[6]['tokens_per_sec'] == pytest.approx(records[6]['tokens'])   # 2 steps a second
  # Steps left at 2/s, plus (from step 6, once one of each is timed) 30 s per evaluation and
  # 2 s per save left; before that the evaluations are named apart in the log line.
  eta = {s: records[s]['eta_minutes'] * 60 for s in records}
  assert eta == pytest.approx({2: 3.0, 4: 2.0, 6: 1.0 + 30 + 2, 8: 30 + 2})
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
  assert lines[0].endswith('2.00 steps/s  {:.0f} tok/s  ETA 0:00:03 (+ 2 evaluations)'.format(
      records[2]['tokens_per_sec'])), lines[0]
  assert lines[2].endswith('ETA 0:00:33'), lines[2]
  accumulator = event_accumulator.EventAccumulator(
      str(tmp_path / 'tensorboard'), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  examples = {e.step: e.tensor_proto.string_val[0].decode()
              for e in accumulator.Tensors('validation/examples/text_summary')}
  assert sorted(examples) == [4, 8] and all(len(t.splitlines()) == 2 + 2 for t in examples.values())
