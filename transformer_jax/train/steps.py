"""Train state, training step (one, or K in one `lax.scan`) and evaluation step (pure functions).

The steps take data first and static settings as keyword-only arguments, which
parallel.py binds with `functools.partial` and compiles with `jax.pmap`
(`axis_name=BATCH_AXIS`: each call sees one device's shard and collectives add up
the shards) or `jax.jit` (`axis_name=None`: the call sees the global batch and XLA
partitions it). Both give the same update: the loss is the mean over the real
tokens of the *global* batch.

Metrics leave the steps as float32 sums plus `weight` (the real-token count); the
host adds them over steps and divides, e.g. loss = sum(loss) / sum(weight).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

from transformer_jax.nn import objectives
from transformer_jax.nn import projected_loss


class TrainState(train_state.TrainState):
  """flax TrainState plus the base PRNG key for dropout.

  `rng` is a raw uint32 key (`jax.random.PRNGKey`), so it is checkpointed with the
  state like any other array and a resumed run draws the same dropout masks.
  """
  rng: jax.Array


def _example_structs(example_batch):
  """Shapes/dtypes of a batch given as arrays or `jax.ShapeDtypeStruct`s."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), example_batch)


def init_train_state(model, rng, example_batch, tx):
  """Initialises parameters and optimizer state in one compiled call.

  Running `model.init` under `jax.jit` means large models are initialised by one
  XLA program instead of op by op, and nothing but the final arrays is kept.

  Args:
    model: flax module called as `model.apply(variables, **batch, deterministic=...)`.
    rng: PRNG key; split into the parameter key and the state's dropout key.
    example_batch: dict of arrays or `jax.ShapeDtypeStruct`s, e.g. `inputs` and
      `targets` `[batch, length]` int32; only shapes and dtypes are used.
    tx: optax gradient transformation.

  Returns:
    TrainState with `step == 0`, float32 params on the default device.
  """
  structs = _example_structs(example_batch)
  params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)

  def init():
    # Ones, not zeros: zeros are padding and would mask every position.
    batch = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), structs)
    variables = model.init({'params': params_rng, 'dropout': dropout_rng},
                           **batch, deterministic=True)
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             tx=tx, rng=state_rng)

  return jax.jit(init)()


def psum(tree, axis_name):
  """`lax.psum` over `axis_name`; the identity when `axis_name` is None (jit path)."""
  if axis_name is None:
    return tree
  return jax.lax.psum(tree, axis_name)


def step_rng(rng, step, axis_name):
  """Dropout key for this step and, under pmap, this device.

  Args:
    rng: the state's base key.
    step: the state's step counter.
    axis_name: mapped axis name, or None when the whole global batch is one call
      (then one key serves it all; XLA splits the random bits by shard).

  Returns:
    fold_in(fold_in(rng, step), device index), or fold_in(rng, step) without axis.
  """
  rng = jax.random.fold_in(rng, step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  return rng


def _global_norm(tree):
  """sqrt of the sum of squares of every leaf, the per-leaf sums added by one reduce behind
  a barrier: left as a chain of scalar adds, XLA:CPU associated them differently inside
  `train_steps`' scan than in a single step (param_norm then differed in the last bit between
  K steps per call and one; seen on an AVX-512 machine)."""
  leaves = jax.tree_util.tree_leaves(tree)
  per_leaf = jnp.stack([jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves])
  return jnp.sqrt(jnp.sum(jax.lax.optimization_barrier(per_leaf)))


def train_step(state, batch, *, model, label_smoothing, learning_rate_fn=None,
               axis_name=None, loss_chunk=projected_loss.DEFAULT_CHUNK):
  """One update from `batch`; the loss is the token mean over all devices.

  Args:
    state: TrainState (replicated under pmap).
    batch: dict of int32 `[rows, length]` arrays: this device's shard under pmap,
      the global batch under jit.
    model: flax module.
    label_smoothing: float in [0, 1), see `losses.cross_entropy`.
    learning_rate_fn: optional `fn(state.step) -> lr` (from
      `optim.make_optimizer`), only reported as the `learning_rate` metric.
    axis_name: the pmap axis (`parallel.BATCH_AXIS`), or None under jit.
    loss_chunk: tokens per chunk of the tied projection and loss (`projected_loss`; models
      that `defers_projection`); 0 forms the logits whole.

  Returns:
    (new_state, metrics). Metrics are float32 scalars, equal on all devices:
    sums over the global batch `loss` (smoothed), `nll`, `accuracy`, `weight`
    (real tokens); and per-step values `grad_norm` (of the global-batch gradient,
    before clipping), `param_norm` (after the update) and `learning_rate`.
  """
  objective = objectives.objective_of(model)
  weights = objectives.weights(objective, batch)
  total_weight = psum(jnp.sum(weights), axis_name)
  # An all-padding batch would divide 0 by 0; its gradient is 0 either way.
  denominator = jnp.where(total_weight > 0, total_weight, 1.0)
  rng = step_rng(state.rng, state.step, axis_name)

  def loss_fn(params):
    outputs = objectives.model_outputs(model, params, batch, deterministic=False, rng=rng,
                                       loss_chunk=loss_chunk)
    sums = objectives.metric_sums(objective, outputs, batch, label_smoothing=label_smoothing,
                                  weight=weights, loss_chunk=loss_chunk)
    # Each device divides by the *global* count, so the psum of the per-device
    # gradients is the gradient of the global token mean.
    return sums['loss'] / denominator, sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = psum(grads, axis_name)
  new_state = state.apply_gradients(grads=grads)
  metrics = psum(sums, axis_name)
  metrics['grad_norm'] = _global_norm(grads)
  metrics['param_norm'] = _global_norm(new_state.params)
  if learning_rate_fn is not None:
    metrics['learning_rate'] = learning_rate_fn(state.step)
  metrics = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), metrics)
  return new_state, metrics


def train_steps(state, batches, *, model, label_smoothing, learning_rate_fn=None,
                axis_name=None, loss_chunk=projected_loss.DEFAULT_CHUNK):
  """`train_step` on each of K stacked batches in turn, as one program (`lax.scan`).

  The scan body is `train_step` itself, so K steps here give the state and metrics of
  K calls of `train_step` (bit for bit on the backends tested: CPU); the host then
  dispatches one call per K steps (`train.steps_per_loop`).

  Args:
    state: TrainState (replicated under pmap).
    batches: dict of int32 `[K, rows, length]` arrays: K batches of one shape, in
      the order they are trained on (this device's shard of each under pmap).
    model, label_smoothing, learning_rate_fn, axis_name, loss_chunk: as in `train_step`.

  Returns:
    (state after the K steps, metrics of every step: float32 `[K]` per key).
  """
  def one_step(state, batch):
    return train_step(state, batch, model=model, label_smoothing=label_smoothing,
                      learning_rate_fn=learning_rate_fn, axis_name=axis_name,
                      loss_chunk=loss_chunk)

  return jax.lax.scan(one_step, state, batches)


def eval_step(params, batch, *, model, label_smoothing, axis_name=None,
              loss_chunk=projected_loss.DEFAULT_CHUNK):
  """Metric sums on `batch` without dropout.

  Args:
    params: model parameters (replicated under pmap).
    batch: as in `train_step`.
    model: flax module.
    label_smoothing: float in [0, 1).
    axis_name: the pmap axis, or None under jit.
    loss_chunk: as in `train_step`.

  Returns:
    dict of float32 sums over the global batch: `loss`, `nll`, `accuracy`, `weight`.
  """
  outputs = objectives.model_outputs(model, params, batch, deterministic=True,
                                     loss_chunk=loss_chunk)
  sums = objectives.metric_sums(objectives.objective_of(model), outputs, batch,
                                label_smoothing=label_smoothing, loss_chunk=loss_chunk)
  return psum(sums, axis_name)
