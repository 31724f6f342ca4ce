"""Learning-rate schedules and the optimizer (Vaswani et al., 2017, §5.3).

The paper trains with Adam (b1=0.9, b2=0.98, eps=1e-9) and

  lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5),

written here as `peak * min(step / warmup, sqrt(warmup / step))` with
`peak = d_model^-0.5 * warmup^-0.5` (the value at `step == warmup`), so an explicit
`optim.learning_rate` can replace the peak without changing the shape.

`optim.optimizer` picks the update rule: 'adam' (the paper's; AdamW with weight decay),
'sgd' (plain, no momentum: word2vec's rule, whose sparse rows Adam's momentum would keep
moving) or 'adagrad'; weight decay for the last two is `-lr * weight_decay * p` on matrices.

Units. `train.num_steps` counts micro-steps (train_step calls, one batch each). With
`grad_accum_steps = K` every K micro-steps make one optimizer update, so a run makes
`num_updates = num_steps // K` updates (num_steps must be a multiple of K). The schedule
runs over updates: `warmup_steps` counts updates (the paper's "step" is an update, as in
fairseq's warmup_updates), and 'cosine'/'linear' reach 0 at the last update.

Fields read from `optim_config` (an ml_collections.ConfigDict or any object with
these attributes): optimizer (absent = 'adam'), schedule, learning_rate, warmup_steps,
b1, b2, eps, weight_decay, grad_clip_norm, grad_accum_steps.
"""
import jax
import jax.numpy as jnp
import optax

from transformer_jax.base.errors import UserError


def _peak_learning_rate(optim_config, model_dim):
  """`optim.learning_rate`, or the paper's implied peak when it is None/0."""
  if optim_config.learning_rate:
    return float(optim_config.learning_rate)
  if optim_config.schedule != 'rsqrt':
    raise UserError(f'optim.learning_rate is {optim_config.learning_rate!r} but '
                    f'schedule {optim_config.schedule!r} needs a peak value: '
                    'set --experiment.optim.learning_rate (e.g. 1e-3)')
  return model_dim**-0.5 * optim_config.warmup_steps**-0.5


def _warmup_factor(step, warmup_steps):
  """Linear ramp 0 -> 1 over `warmup_steps`; 1 when there is no warmup."""
  if warmup_steps <= 0:
    return jnp.ones_like(step)
  return jnp.minimum(1.0, step / warmup_steps)


def _rsqrt(peak, warmup_steps):
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    # max(step, 1) only keeps sqrt finite at step 0, where the ramp gives 0 anyway.
    decay = jnp.sqrt(warmup_steps / jnp.maximum(step, 1.0))
    return peak * jnp.minimum(step / warmup_steps, decay)
  return schedule


def _constant(peak, warmup_steps):
  def schedule(step):
    return peak * _warmup_factor(jnp.asarray(step, jnp.float32), warmup_steps)
  return schedule


def _decaying(peak, warmup_steps, num_updates, decay):
  """Warmup, then `peak * decay(progress)`, progress going 0 -> 1 from warmup to num_updates."""
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    span = max(num_updates - warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
    return peak * _warmup_factor(step, warmup_steps) * decay(progress)
  return schedule


def _cosine(peak, warmup_steps, num_updates):
  return _decaying(peak, warmup_steps, num_updates, lambda p: 0.5 * (1.0 + jnp.cos(jnp.pi * p)))


def _linear(peak, warmup_steps, num_updates):
  return _decaying(peak, warmup_steps, num_updates, lambda p: 1.0 - p)


def learning_rate_schedule(optim_config, model_dim, num_updates):
  """The learning rate as a function of the optimizer's update count.

  Args:
    optim_config: reads `schedule` ('rsqrt' | 'constant' | 'cosine' | 'linear'),
      `learning_rate` (peak; for 'rsqrt' None/0 means the paper's
      `model_dim^-0.5 * warmup_steps^-0.5`) and `warmup_steps` (in updates).
    model_dim: d_model, only used for the paper's default peak.
    num_updates: total number of optimizer updates; 'cosine' and 'linear' (the
      word2vec tool's decay) reach 0 there.

  Returns:
    `schedule(step) -> float32 scalar`, usable under jit/pmap. `step` counts
    optimizer updates from 0 (optax's count), so the first update gets
    `schedule(0)`, which is 0 for every schedule with warmup, as in the paper's
    formula and flax's schedules.
  """
  name = optim_config.schedule
  warmup_steps = int(optim_config.warmup_steps or 0)
  if name not in _SCHEDULES:
    raise UserError(f'unknown optim.schedule {name!r}: '
                    f'choose one of {sorted(_SCHEDULES)}')
  if name == 'rsqrt' and warmup_steps <= 0:
    raise UserError(f'optim.schedule=rsqrt needs warmup_steps > 0, got '
                    f'{warmup_steps}: set --experiment.optim.warmup_steps=4000')
  peak = _peak_learning_rate(optim_config, model_dim)
  if name in ('cosine', 'linear'):
    return _SCHEDULES[name](peak, warmup_steps, num_updates)
  return _SCHEDULES[name](peak, warmup_steps)


_SCHEDULES = {'rsqrt': _rsqrt, 'constant': _constant, 'cosine': _cosine, 'linear': _linear}


def _decay_mask(params):
  """Decay matrices only: biases, LayerNorm scales (ndim < 2) are left alone."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _adam(optim_config, schedule):
  """Adam, or AdamW (decoupled decay, scaled by the learning rate) when weight_decay > 0."""
  kwargs = dict(b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps)
  if optim_config.weight_decay:
    return optax.adamw(schedule, weight_decay=optim_config.weight_decay,
                       mask=_decay_mask, **kwargs)
  return optax.adam(schedule, **kwargs)


def _with_decay(optim_config, rule):
  """`rule` after adding `weight_decay * p` to the matrices' gradients (if > 0)."""
  if not optim_config.weight_decay:
    return rule
  return optax.chain(optax.add_decayed_weights(optim_config.weight_decay, _decay_mask), rule)


_OPTIMIZERS = {
    'adam': _adam,
    'sgd': lambda optim_config, schedule: _with_decay(optim_config, optax.sgd(schedule)),
    'adagrad': lambda optim_config, schedule: _with_decay(optim_config, optax.adagrad(schedule)),
}


def _update_rule(optim_config, schedule):
  name = getattr(optim_config, 'optimizer', 'adam')
  if name not in _OPTIMIZERS:
    raise UserError(f'unknown optim.optimizer {name!r}: choose one of {sorted(_OPTIMIZERS)}')
  return _OPTIMIZERS[name](optim_config, schedule)


def make_optimizer(optim_config, model_dim, num_steps):
  """Gradient clipping -> Adam(W), SGD or Adagrad with the schedule, optionally accumulated.

  Gradient accumulation uses `optax.MultiSteps`: every call of `tx.update` is one
  micro-step; the gradients of `grad_accum_steps` micro-steps are *averaged* and
  applied as one update on the last of them (the others return zero updates).
  Each micro-step's loss is normalised by its own real-token count, so the update
  follows the mean of the micro-batch token means; it equals the token mean of
  the combined batch exactly only when the micro-batches hold equally many real
  tokens (e.g. packed batches). Clipping applies to the averaged gradient.

  Args:
    optim_config: see the module docstring; `b1, b2, eps` are 0.9, 0.98, 1e-9 in
      the paper, `grad_clip_norm <= 0` and `grad_accum_steps <= 1` switch those off.
    model_dim: d_model (for the paper's default peak learning rate).
    num_steps: `train.num_steps`, in micro-steps (train_step calls); a multiple of
      `grad_accum_steps`. The schedule runs over `num_steps // grad_accum_steps` updates.

  Returns:
    (tx, learning_rate_fn): the optax transformation, and the learning rate as a
    function of `TrainState.step` (micro-steps): `learning_rate_fn(step)` is the
    rate of the update that micro-step `step` contributes to, i.e. the paper's
    formula at step_num = update index + 1.
  """
  accum_steps = int(optim_config.grad_accum_steps or 1)
  if accum_steps < 1:
    raise UserError(f'optim.grad_accum_steps={accum_steps} must be >= 1: '
                    'set it to 1 to switch accumulation off')
  if num_steps % accum_steps:
    raise UserError(f'train.num_steps={num_steps} is not a multiple of optim.grad_accum_steps='
                    f'{accum_steps}, so the last {num_steps % accum_steps} micro-steps would make '
                    f'no update: set --experiment.train.num_steps to a multiple, e.g. '
                    f'{-(-num_steps // accum_steps) * accum_steps}')
  paper_schedule = learning_rate_schedule(optim_config, model_dim, num_steps // accum_steps)
  # optax counts updates from 0; the paper's step_num starts at 1, so the first update
  # already gets the (small, non-zero) warmup rate of step 1.
  schedule = lambda count: paper_schedule(jnp.asarray(count) + 1)
  parts = []
  if optim_config.grad_clip_norm and optim_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  parts.append(_update_rule(optim_config, schedule))
  tx = optax.chain(*parts)
  if accum_steps == 1:
    return tx, schedule
  tx = optax.MultiSteps(tx, every_k_schedule=accum_steps).gradient_transformation()
  return tx, lambda step: schedule(jnp.asarray(step) // accum_steps)
