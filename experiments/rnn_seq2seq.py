"""RNN encoder-decoder on Multi30k en->de: with additive attention (Bahdanau et al., 2015;
the default) or with only the fixed context vector (Cho et al., 2014; `:no_attention`).

Bidirectional GRU encoder (`:lstm` for LSTM cells), one-layer decoder, the same data,
joint BPE 10k, batches (4096 target slots, bucketed; RNNs cannot take packed rows),
beam 5 and length penalty as experiments/multi30k.py, so the three models compare on
equal terms (see benchmarks/compare_seq2seq.py for the table and plot).

  python launch.py --experiment=experiments/rnn_seq2seq.py --workdir=runs/rnn_attention
  python launch.py --experiment=experiments/rnn_seq2seq.py:no_attention --workdir=runs/rnn_plain
  python launch.py --experiment=experiments/rnn_seq2seq.py --workdir=runs/rnn_attention \\
      --mode=eval --experiment.eval.split=test

Measured: see the end of this docstring (filled in from the runs).
"""
from experiments import base
from transformer_jax.config import RNNConfig


def get_config(arg=None):
  config = base.get_base_config()
  config.model = base.dataclass_config(
      RNNConfig(cell='gru', attention=True, bidirectional=True, embed_dim=256, hidden_dim=256,
                attention_dim=256, dropout_rate=0.3, max_len=256), 'rnn_seq2seq')
  config.data.update(dataset='multi30k', source_lang='en', target_lang='de', vocab_size=10000,
                     tokenizer_type='bpe', tokens_per_batch=4096, max_len=128, pack=False)
  config.optim.update(schedule='cosine', learning_rate=2e-3, warmup_steps=200, grad_clip_norm=1.0)
  config.train.update(num_steps=1200, label_smoothing=0.1, log_every_steps=50,
                      eval_every_steps=600, checkpoint_every_steps=100, keep_checkpoints=5)
  config.eval.update(bleu=True, average_last=1)
  config.decode.update(method='beam', beam_size=5, alpha=0.6)
  variant, _, rest = (arg or '').partition(',')
  for name in filter(None, (variant, rest)):
    if name == 'no_attention':
      config.model.attention = False
    elif name == 'lstm':
      config.model.cell = 'lstm'
    elif name == 'smoke':            # seconds on CPU; tests/experiments_test.py uses it
      config.model.update(embed_dim=16, hidden_dim=16, attention_dim=8)
      config.data.update(vocab_size=300, tokens_per_batch=1024)
      config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                          checkpoint_every_steps=2, keep_checkpoints=2)
      config.eval.update(max_batches=1)
      config.decode.update(beam_size=2)
    else:
      raise ValueError(f'unknown variant {name!r} of rnn_seq2seq: use no_attention, lstm, smoke '
                       '(comma-separated, e.g. no_attention,smoke)')
  return config
