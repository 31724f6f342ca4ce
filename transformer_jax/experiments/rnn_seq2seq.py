"""RNN encoder-decoder on Multi30k en->de: with additive attention (Bahdanau et al., 2015;
the default) or with only the fixed context vector (Cho et al., 2014; `:no_attention`).

Bidirectional GRU encoder (`:lstm` for LSTM cells), one-layer decoder, the same data,
joint BPE 10k, batches (4096 target slots, bucketed; RNNs cannot take packed rows),
beam 5 and length penalty as experiments/multi30k.py, so the three models compare on
equal terms (see benchmarks/compare_seq2seq.py for the table and plot).

  python launch.py --experiment=experiments/rnn_seq2seq.py --workdir=runs/rnn_attention
  python launch.py --experiment=experiments/rnn_seq2seq.py:no_attention --workdir=runs/rnn_plain
  python launch.py --experiment=experiments/rnn_seq2seq.py --workdir=runs/rnn_attention \\
      --mode=eval --experiment.eval.split=test --experiment.eval.average_last=5

Measured on the 2-core AMD EPYC CPU (no GPU), both runs at once beside other jobs,
1200 steps (~10 epochs), GRU 256 per direction, embeddings 256:
| model | wall | val sacreBLEU (step 600 / 1200) | test sacreBLEU | test bleu_tok_lc |
|---|---|---|---|---|
| RNN + attention (default) | 59 min | 29.2 / 33.0 | 33.44 | 33.74 |
| `:no_attention` (fixed context) | 55 min | 17.8 / 21.2 | 22.60 | 22.78 |
Test is test_2016_flickr, last 5 checkpoints (800-1200) averaged, beam 5. By source length
(docs/seq2seq_by_length.md) the fixed context keeps 36% of its short-sentence BLEU at 20-24
words (25.3 -> 9.2), attention 53% (35.7 -> 18.8). The attention weights of two sentences:
docs/rnn_attention_map.png (`python benchmarks/rnn_attention_map.py`).
"""
from transformer_jax.nn.config import RNNConfig
from transformer_jax.run import defaults


def get_config(arg=None):
  config = defaults.get_base_config()
  config.model = defaults.dataclass_config(
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
    elif name == 'smoke':            # seconds on CPU; tests/run/experiments_test.py uses it
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
