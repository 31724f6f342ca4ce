"""SST-2 sentiment (GLUE) with an encoder-only Transformer trained from scratch.

A small encoder (2 layers, d_model 128, 4 heads, FFN 256, dropout 0.3) over a BPE 8k
vocabulary of the train sentences; mean pooling over the real tokens (`:cls`: a
learned class token instead), dropout, a linear layer to the 2 classes. AdamW at 1e-3
(weight decay 0.01, gradients clipped at norm 1) with 300 warmup steps and cosine decay
over 1500 steps (~2.7 epochs), batches of 2048 token slots bucketed by length (~125
phrases). Trained on the 67,349 train phrases; accuracy on the 872 dev sentences (the
GLUE test labels are not public) every 250 steps.

  python launch.py --experiment=experiments/sst2_classifier.py --workdir=runs/sst2
  python launch.py --experiment=experiments/sst2_classifier.py:cls --workdir=runs/sst2_cls
  python launch.py --experiment=experiments/sst2_classifier.py --workdir=runs/sst2 --mode=eval

Raw data: GLUE SST-2 as `train.tsv.gz` / `dev.tsv.gz` (header `text<TAB>label`) in
`data.raw_dir` (default ../shared/data/sst2).

Measured on a 2-core AMD EPYC CPU (no GPU) shared with other jobs (load average ~12),
dev accuracy at steps 250 / 500 / ... / 1500:
  mean pooling (the command above): 71.0 / 78.8 / 79.5 / 79.5 / 80.4 / 79.9%: best
    80.39% (step 1250), final 79.93%; 17 min wall (14.3 min of it training), run
    beside another training.
  mean pooling, --experiment.model.dropout_rate=0.2: 75.8 / 79.5 / 79.7 / 78.9 / 78.9 /
    79.6%: best 79.70% (step 750), final 79.59%; 8.4 min wall.
  :cls (its command above): 70.0 / 79.8 / 80.7 / 80.1 / 79.7 / 80.2%: best 80.73%
    (step 750), final 80.16%; 6.5 min wall (load average ~5).
  :cls, --experiment.model.dropout_rate=0.2: 74.5 / 80.7 / 79.2 / 79.4 / 79.2 / 79.5%:
    best 80.73% (step 500), final 79.47%; 17.5 min wall, beside another training.
Dev loss is lowest at step 500 and rises after: the model fits the train phrases within
about one epoch, so more steps do not help without more regularisation.
"""
from transformer_jax.nn.config import ClassifierConfig
from transformer_jax.run import defaults


def get_config(arg=None):
  config = defaults.get_base_config()
  pooling = 'cls' if arg == 'cls' else 'mean'
  config.model = defaults.dataclass_config(
      ClassifierConfig(num_layers=2, model_dim=128, num_heads=4, mlp_dim=256, dropout_rate=0.3,
                       max_len=256, num_classes=2, pooling=pooling), 'classifier')
  config.data.update(dataset='sst2', raw_dir='../shared/data/sst2', vocab_size=8000,
                     tokenizer_type='bpe', max_len=64, tokens_per_batch=2048,
                     eval_rows_per_batch=128)
  config.optim.update(schedule='cosine', learning_rate=1e-3, warmup_steps=300, b2=0.98,
                      eps=1e-8, weight_decay=0.01, grad_clip_norm=1.0)
  config.train.update(num_steps=1500, label_smoothing=0.0, log_every_steps=50,
                      eval_every_steps=250, checkpoint_every_steps=500, keep_checkpoints=2)
  config.eval.update(split='validation', bleu=False)
  if arg == 'smoke':                 # seconds on CPU; tests/run/experiments_test.py uses it
    config.model.update(num_layers=1, model_dim=16, num_heads=2, mlp_dim=32)
    config.data.update(vocab_size=300, tokens_per_batch=1024, eval_rows_per_batch=0)
    config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                        checkpoint_every_steps=2, keep_checkpoints=2)
    config.eval.update(max_batches=1)
  elif arg not in (None, 'cls'):
    raise ValueError(f'unknown variant {arg!r} of sst2_classifier: use cls or smoke')
  return config
