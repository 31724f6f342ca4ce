"""Plot the additive-attention weights of a trained RNN seq2seq model on some sentences.

  python benchmarks/rnn_attention_map.py --workdir=runs/rnn_attention \\
      --sentence="A little girl climbs into a wooden playhouse." --out=docs/rnn_attention_map.png

Translates each sentence (beam search as configured in the run), then runs the decoder
teacher-forced on its own output and reads the weights the model `sow`s
('intermediates'/'attention_weights'). Draws one heatmap per sentence (target pieces down,
source pieces across) and prints the translations and each target piece's most-attended
source piece as JSON.
"""
import argparse
import json

import jax.numpy as jnp
import ml_collections
import numpy as np

from transformer_jax.analysis import heatmaps
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.decoding import predict
from transformer_jax.pretrained import restored
from transformer_jax.train import components

DEFAULT = ('A little girl climbs into a wooden playhouse.',
           'Two young men are playing soccer on a green field while people watch.')


def attention_maps(config, workdir, sentences):
  """[(source pieces, target pieces, weights [target, source])] for each sentence."""
  parts = components.build(config, workdir)
  if parts.family.name != 'rnn_seq2seq' or not parts.model_config.attention:
    raise SystemExit(f'error: {workdir} is not an RNN seq2seq run with attention')
  params, _, _ = restored.restore_params(config, workdir, parts, None)
  settings = predict.SearchSettings.from_config(config.decode)
  maps = []
  for sentence in sentences:
    inputs = jnp.asarray([parts.tokenizer.encode([sentence])[0]], jnp.int32)
    output = predict.predict_step(params, {'inputs': inputs}, model=parts.model,
                                  settings=settings, eos_id=parts.tokenizer.eos_id)
    output = np.asarray(output)[0]
    output = output[:int(np.argmax(output == parts.tokenizer.eos_id)) + 1]
    _, state = parts.model.apply({'params': params}, inputs, jnp.asarray([output]),
                                 mutable=['intermediates'])
    weights = np.asarray(state['intermediates']['attention_weights'][0][0])
    maps.append((parts.tokenizer.pieces(inputs[0]), parts.tokenizer.pieces(output), weights,
                 parts.tokenizer.decode(output)))
  return maps


def plot(maps, path):
  fig = heatmaps.new_figure(7 * len(maps), 7)
  for k, (source, target, weights, _) in enumerate(maps):
    heatmaps.draw_attention(fig.add_subplot(1, len(maps), k + 1), weights, source, target,
                            xlabel='source (en)', ylabel='output (de)')
  fig.suptitle('RNN seq2seq: additive attention weights (Bahdanau et al., 2015)')
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--sentence', action='append', help='source sentence (repeatable)')
  parser.add_argument('--out', default='rnn_attention_map.png')
  args = parser.parse_args()
  config = ml_collections.ConfigDict(workdir_lib.load_config(args.workdir))
  maps = attention_maps(config, args.workdir, args.sentence or DEFAULT)
  plot(maps, args.out)
  print(json.dumps([{'translation': text,
                     'alignment': [(t, source[int(np.argmax(row))])
                                   for t, row in zip(target, weights)]}
                    for source, target, weights, text in maps], ensure_ascii=False, indent=1))


if __name__ == '__main__':
  main()
