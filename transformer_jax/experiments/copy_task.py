"""Copy task: a small Transformer learns to output its input sequence (synthetic, no data files).

  python launch.py                                    # this experiment, into runs/copy_task
  python launch.py --experiment=experiments/copy_task.py --workdir=runs/copy
  python launch.py --experiment=experiments/copy_task.py:reverse --workdir=runs/reverse

Expect: held-out token accuracy (teacher-forced) >= 99% within ~600 steps, in a few
minutes on a 2-core CPU (measured numbers in README.md).
"""
from transformer_jax.run import defaults


def get_config(arg=None):
  config = defaults.get_base_config()
  config.model.update(num_layers=2, model_dim=64, num_heads=4, mlp_dim=128, dropout_rate=0.0,
                      max_len=64)
  config.data.update(dataset='copy', tokens_per_batch=1024, max_len=32)
  config.optim.update(schedule='rsqrt', learning_rate=2e-3, warmup_steps=200, grad_clip_norm=1.0)
  config.train.update(num_steps=1500, label_smoothing=0.0, log_every_steps=50,
                      eval_every_steps=500, checkpoint_every_steps=500)
  config.eval.bleu = True             # greedy-decode held-out sequences: exact match
  config.decode.update(method='greedy')
  if arg == 'reverse':
    config.data.dataset = 'reverse'
  elif arg == 'smoke':               # seconds on CPU; tests/run/experiments_test.py uses it
    config.model.update(num_layers=1, model_dim=16, num_heads=2, mlp_dim=32)
    config.data.update(copy_num_train=200, copy_num_eval=16, tokens_per_batch=256)
    config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                        checkpoint_every_steps=2)
    config.eval.max_batches = 1
  elif arg is not None:
    raise ValueError(f'unknown variant {arg!r} of copy_task: use reverse or smoke')
  return config
