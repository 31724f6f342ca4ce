"""WMT 2014 English->German with the paper's base and big Transformers (Vaswani et al., 2017, Table 3).

  python launch.py --experiment=experiments/wmt14.py:base --workdir=runs/wmt14_base \\
      --experiment.data.raw_dir=/path/to/wmt14
  python launch.py --experiment=experiments/wmt14.py:big --workdir=runs/wmt14_big ...

Data (no TensorFlow): `data.raw_dir` (default ../shared/data/wmt14) holds the raw files of
https://www.statmt.org/wmt14/translation-task.html; unpack these five archives into it:
  training-parallel-europarl-v7.tgz   training/europarl-v7.de-en.{de,en}
  training-parallel-commoncrawl.tgz   commoncrawl.de-en.{de,en}
  training-parallel-nc-v9.tgz         training/news-commentary-v9.de-en.{de,en}
  dev.tgz                             dev/newstest2013.{de,en}          (validation)
  test-full.tgz                       test-full/newstest2014-deen-{src.en,ref.de}.sgm (test)
The first run checks them (seconds) and prepares them once as array_record under
`data.data_dir` (default <workdir>/tfds; transformer_jax/data/sources/wmt14.py says which other
forms are accepted). A TFDS `wmt14_translate/de-en` already prepared as array_record in
`data.data_dir` is read instead, as is.
Paper setup: shared BPE vocabulary of ~37k, batches of ~25k source + 25k target tokens,
Adam (0.9, 0.98, 1e-9) with 4000 warmup steps and the rsqrt schedule, label smoothing 0.1,
100k steps (base) / 300k (big) on 8 P100s, the last 5 (base) / 20 (big) checkpoints
averaged, beam 4, alpha 0.6, output length up to input + 50. Paper: 27.3 (base) and
28.4 (big) BLEU on newstest2014. Not trained here (no WMT data on this machine);
`:smoke` runs the same code path on Multi30k en->de as small stand-in data.
"""
from transformer_jax.run import defaults


def get_config(arg='base'):
  arg = arg or 'base'
  config = defaults.get_base_config()
  config.model = defaults.model_config('big' if arg == 'big' else 'base', max_len=256)
  config.data.update(dataset='wmt14', raw_dir='../shared/data/wmt14', source_lang='en',
                     target_lang='de', vocab_size=37000, tokenizer_type='bpe',
                     tokens_per_batch=25000, max_len=128)
  config.optim.update(schedule='rsqrt', learning_rate=None, warmup_steps=4000)
  config.train.update(num_steps=300_000 if arg == 'big' else 100_000, label_smoothing=0.1,
                      log_every_steps=100, eval_every_steps=5000, checkpoint_every_steps=1000,
                      keep_checkpoints=20)
  config.eval.update(bleu=True, average_last=20 if arg == 'big' else 5, max_batches=0)
  config.decode.update(method='beam', beam_size=4, alpha=0.6, max_extra_len=50)
  if arg == 'smoke':
    config.model.update(num_layers=1, model_dim=16, num_heads=2, mlp_dim=32)
    config.data.update(dataset='multi30k', raw_dir='../shared/data/multi30k', vocab_size=300,
                       tokens_per_batch=1024)
    config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                        checkpoint_every_steps=2, keep_checkpoints=2)
    config.eval.update(max_batches=1, average_last=1)
    config.decode.update(beam_size=2)
  elif arg not in ('base', 'big'):
    raise ValueError(f'unknown variant {arg!r} of wmt14: use base, big or smoke')
  return config
