"""A decoder-only causal Transformer LM on the English side of Multi30k (29,000 captions).

Pre-LN (with a final LayerNorm), tied input/output embeddings, 4 layers, d_model 128,
4 heads, FFN 512, dropout 0.1, sinusoidal positions (1.3 M parameters); BPE 4000 trained
on the English train sentences only; packed rows of 128 (4096 token slots per step); Adam
with a cosine schedule (peak 3e-3, 60 warmup steps) for 600 steps (~5.5 epochs); no label
smoothing (so the loss is the NLL the perplexity comes from). Variants: `:post_ln` (the
paper's post-LN order, no final LayerNorm), `:smoke` (two steps, seconds).

  python launch.py --experiment=experiments/multi30k_lm.py --workdir=runs/m30k_lm
  python launch.py --experiment=experiments/multi30k_lm.py --workdir=runs/m30k_lm --mode=eval
  python launch.py --experiment=experiments/multi30k_lm.py --workdir=runs/m30k_lm --mode=sample
  echo "A man in a red" | python launch.py --experiment=experiments/multi30k_lm.py \\
      --workdir=runs/m30k_lm --mode=sample --input=-

`--mode=sample` prints `decode.num_samples` samples (temperature, top_k, top_p, seed
from the `decode` section; `--experiment.decode.method=greedy|beam` searches instead),
or with `--input` continues each line (the output starts with the prompt).
Perplexity is per sentencepiece token of this BPE-4000 vocabulary, the EOS of every
sentence counted; it is not comparable across tokenizers or with word-level figures.

Measured on a 2-core AMD EPYC CPU (no GPU) shared with three other training jobs, so
about 0.3-0.6 steps/s instead of the machine's full speed:
  python launch.py --experiment=experiments/multi30k_lm.py --workdir=runs/m30k_lm
  600 steps in 23.5 min wall (evaluations included). Validation (1,014 sentences)
  perplexity per BPE-4000 token, EOS counted: 42.56 / 31.61 / 29.80 at steps
  200 / 400 / 600 (next-token accuracy 37.7%); test_2016_flickr at step 600
  (`--mode=eval --experiment.eval.split=test`): perplexity 28.8, accuracy 37.1%.
  Samples (`--mode=sample`, top_p 0.9, temperature 1, seed 0), four of the eight:
    A boy is wearing a red-shirt on a swing.
    This young blond girl sits on a cellphone is wearing a pink shirt and a plaid shirt.
    A girl in a blue jacket is writing in a lot of concrete watching the waterfall.
    A brown dog catches a puddle on a gray towel.
  Prompt continuations (`--input=prompts.txt`, same settings):
    A man in a red--shirt wearing a blue jacket is working with a bike.
    Two dogs play in a soccer competition.
    A little girl is playing with toys in the water.
  Greedy (`--experiment.decode.method=greedy`) from "Two dogs":
    Two dogs are running through the grass.
The `:post_ln` variant has not been trained here.
"""
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.run import defaults


def get_config(arg=None):
  config = defaults.get_base_config()
  config.model = defaults.dataclass_config(
      TransformerConfig(num_layers=4, model_dim=128, num_heads=4, mlp_dim=512,
                        dropout_rate=0.1, norm_order='pre', tie_output=True,
                        positional='sinusoidal', max_len=128), 'lm')
  config.data.update(dataset='multi30k_mono', source_lang='de', target_lang='en',
                     vocab_size=4000, tokenizer_type='bpe', tokens_per_batch=4096, max_len=128,
                     pack=True)
  config.optim.update(schedule='cosine', learning_rate=3e-3, warmup_steps=60)
  config.train.update(num_steps=600, label_smoothing=0.0, log_every_steps=50,
                      eval_every_steps=200, checkpoint_every_steps=200, keep_checkpoints=3)
  config.eval.update(bleu=False)
  config.decode.update(method='sample', temperature=1.0, top_k=0, top_p=0.9, max_extra_len=40,
                       num_samples=8, seed=0)
  if arg == 'post_ln':               # the paper's order: LayerNorm after each residual
    config.model.norm_order = 'post'
  elif arg == 'smoke':               # seconds on CPU; tests/run/experiments_test.py uses it
    config.model.update(num_layers=1, model_dim=16, num_heads=2, mlp_dim=32)
    config.data.update(vocab_size=300, tokens_per_batch=1024)
    config.train.update(num_steps=2, log_every_steps=1, eval_every_steps=2,
                        checkpoint_every_steps=2, keep_checkpoints=2)
    config.eval.update(max_batches=1)
    config.decode.update(num_samples=2, max_extra_len=8)
  elif arg is not None:
    raise ValueError(f'unknown variant {arg!r} of multi30k_lm: use post_ln or smoke')
  return config
