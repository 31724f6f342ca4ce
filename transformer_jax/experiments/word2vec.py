"""word2vec (Mikolov et al., 2013) with negative sampling on Multi30k English + SST-2 text.

  python launch.py --experiment=experiments/word2vec.py --workdir=runs/word2vec
  python launch.py --experiment=experiments/word2vec.py:cbow --workdir=runs/word2vec_cbow

About 0.46 M words: Multi30k train English (29k captions, 345k words) and the SST-2 train
sentences, each read once (6,854 of the 67,349 rows are not inside a longer row: 118k of
their 584k words); 5,656 words with min_count 5. Every eval writes SimLex-999 Spearman and
coverage to metrics.jsonl, the nearest neighbours of `eval.probe_words` to
eval/neighbours_step<N>.txt, and the vectors to vectors.txt (word2vec text format), which
`--experiment.train.init_embeddings=runs/word2vec/vectors.txt` loads into a Transformer.

Training is the tool's plain SGD, decaying linearly to 0, at its per-pair rate times the
rows of a batch (the loss is a row mean): 0.025 x 4096 = 102.4 skip-gram, 0.05 x 4096 =
204.8 CBOW. Measured on the 2-core AMD EPYC CPU (shared with other jobs, no GPU), 2,500
steps of 4,096 rows (skip-gram: ~17 passes over the subsampled text; CBOW: ~60):

| run | wall | held-out loss | SimLex-999 Spearman | coverage |
|---|---|---|---|---|
| skip-gram | 0.8 min (24-90 steps/s) | 2.327 | 0.179 | 49.3% (493 pairs) |
| `:cbow` | 3.9 min (5-16 steps/s) | 2.082 | 0.238 | 49.3% |
| skip-gram, Adam (below) | 1.1 min | 2.317 | 0.202 | 49.3% |
| before: all 67k SST-2 rows, Adam | 9.6 min | 2.069 | -0.032 (0.022 on the 493) | 67.1% |

The last row (all SST-2 phrases, 0.93 M words, 12,960 words, Adam lr 4e-3 cosine, CBOW
-0.008 / 0.057 on the 493 pairs) shows what fixed SimLex: reading each SST-2 sentence once
(its overlapping phrases had shown rare words in the same few contexts many times). The
optimizer hardly matters here: Adam on the new text (`--experiment.optim.optimizer=adam
--experiment.optim.schedule=cosine --experiment.optim.learning_rate=4e-3
--experiment.optim.warmup_steps=100 --experiment.optim.b2=0.999`) gives 0.202. Skip-gram
(CBOW) reaches 0.289 (0.338) on the 200 pairs whose words both occur >= 20 times and 0.457
(0.522) on the 35 with >= 100. CBOW's held-out loss is lowest at step 1000 (2.032, SimLex
0.240), then rises (60 passes overfit). Nearest neighbours (step 2500):
  dog: collar puppy stick spotted bounding shepherd brown poodle
  man: person bearded bald woman khakis reclines gray dreadlocks
  red: blue green yellow purple white khaki striped visor
  good: bad intentions waste great whale simply generation idea
  car (CBOW): van door firetruck driver vintage speeding parked backseat
"""
from transformer_jax.nn.config import Word2VecConfig
from transformer_jax.run import defaults


def get_config(arg=None):
  config = defaults.get_base_config()
  mode = 'cbow' if arg == 'cbow' else 'skipgram'
  config.model = defaults.dataclass_config(Word2VecConfig(embed_dim=100, mode=mode), 'word2vec')
  config.data.update(dataset='word2vec_text', shuffle_seed=0)
  config.data.sst2_dir = '../shared/data/sst2'
  config.data.min_count = 5            # the word2vec tool's default
  config.data.subsample = 1e-4         # t of the frequent-word subsampling
  config.data.window = 5               # largest dynamic window (each side)
  config.data.num_negatives = 5        # K noise words (the paper's 5-20 for small data)
  config.data.pairs_per_batch = 4096   # rows per step (a multiple of the device count)
  # The row layout follows model.mode: one shared field, so overriding either changes both.
  config.data.word2vec_mode = config.model.get_ref('mode')
  # The tool's plain SGD, decaying linearly to 0, at its per-pair rate (0.025 skip-gram, 0.05
  # CBOW) times the rows of a batch, since the loss is the mean over the rows.
  per_pair = 0.05 if mode == 'cbow' else 0.025
  config.optim.update(optimizer='sgd', schedule='linear', warmup_steps=0,
                      learning_rate=per_pair * config.data.pairs_per_batch)
  config.train.update(num_steps=2500, label_smoothing=0.0, log_every_steps=100,
                      eval_every_steps=500, checkpoint_every_steps=500)
  config.eval.simlex_path = '../shared/data/simlex999/SimLex-999.txt'
  config.eval.probe_words = 'dog,man,red,good,water,bad,run,car'
  if arg == 'smoke':                    # seconds on CPU; tests/run/experiments_test.py uses it
    config.model.embed_dim = 16
    config.data.pairs_per_batch = 64
    config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                        checkpoint_every_steps=2)
    config.eval.max_batches = 1
  elif arg not in (None, 'cbow'):
    raise ValueError(f'unknown variant {arg!r} of word2vec: use cbow or smoke')
  return config
