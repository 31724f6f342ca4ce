"""--mode=visualize: a Transformer's attention on a few sentences, and its table of positions.

For each source sentence (the lines of --input, or the first DEFAULT_SENTENCES sources of
`eval.split`) the model translates greedily, then runs once more teacher-forced on its own
output, and `<workdir>/visualize/sentence_<k>.png` shows the weights it `sow`s: encoder
self-, decoder self- and cross-attention, one row per layer, one column per head, tokens
(sentencepiece pieces, or ids for a copy task) on the axes. Its own output rather than the
reference: --input lines have no reference, and the maps then show the attention behind the
translation the model actually makes (an undertrained one may ramble on to
`decode.max_extra_len` tokens past the source: lower it for smaller figures). Decoder rows are
labelled with the token each position predicts; decoder self-attention keys with the token
each position reads (the output shifted right, after the start token).

`positional_encoding.png` is the model's table of positions (position down, dimension
across): the fixed sinusoidal table (Vaswani et al., 2017, §3.5) or the encoder's and the
decoder's trained tables. 'rotary' and 'none' have no table, so none is drawn.
"""
import dataclasses
import os
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.analysis import attention_stats
from transformer_jax.analysis import heatmaps
from transformer_jax.base.errors import UserError
from transformer_jax.data import batching
from transformer_jax.data import raw_text
from transformer_jax.decoding import predict
from transformer_jax.evaluation import evaluators as evaluation
from transformer_jax.nn import positional
from transformer_jax.pretrained import restored
from transformer_jax.train import components

OUT_DIR = 'visualize'
DEFAULT_SENTENCES = 2
START_TOKEN = '<s>'       # the decoder's first input (the pad id, see models/transformer.py)

# kind of attention_stats.KINDS -> (row title, key axis, query axis)
PANELS = {
    'encoder_self_attention': ('encoder self-attention', 'source', 'source'),
    'decoder_self_attention': ('decoder self-attention', 'decoder input', 'output'),
    'cross_attention': ('cross-attention', 'source', 'output'),
}


def visualize(config, workdir: str, step: Optional[int] = None,
              input_path: Optional[str] = None) -> List[str]:
  """Writes the PNGs described above and prints their paths; returns them.

  Args:
    config: the run's experiment config (a transformer family run).
    workdir: the run folder; the PNGs go to <workdir>/visualize/.
    step: checkpoint step (None: the newest, averaged as `eval.average_last` says).
    input_path: a file of source sentences, one a line, or - for stdin; None: the first
      DEFAULT_SENTENCES sources of `eval.split`.
  """
  if jax.process_count() > 1:
    raise UserError('--mode=visualize runs in one process: drop --multihost')
  family = components.family_of(config)
  if family.name != 'transformer':
    raise UserError(f'--mode=visualize draws the encoder-decoder Transformer, not '
                    f'model.family={family.name!r}: point --experiment and --workdir at a '
                    'transformer run (benchmarks/rnn_attention_map.py draws rnn_seq2seq)')
  restored.check_run(config, workdir)
  lines = None
  if input_path is not None:
    lines = raw_text.read_input_lines(input_path)
  if lines is not None and not lines:
    raise UserError(f'--input {input_path} has no sentences: give one source sentence a line')
  parts = components.build(config, workdir)
  if lines is None:
    lines = evaluation.Evaluator(config, workdir, parts).eval_data.sources[:DEFAULT_SENTENCES]
  limit = parts.model_config.max_input_len
  # Input the tokenizer refuses (text for a copy task) fails here, before the restore.
  sources, cut = batching.cut_to_length(parts.tokenizer.encode(lines), limit)
  if cut:
    logging.warning(batching.describe_cut_lines(cut, limit))
  params, step, chosen = restored.restore_params(config, workdir, parts, step)
  logging.info('visualizing %d sentences with checkpoint(s) %s', len(sources), chosen)
  out_dir = os.path.join(workdir, OUT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = [_draw_sentence(parts, params, config.decode, np.asarray(source), line,
                          os.path.join(out_dir, f'sentence_{k}.png'), step)
           for k, (source, line) in enumerate(zip(sources, lines), start=1)]
  tables = position_tables(parts.model_config, params)
  if tables:
    paths.append(heatmaps.position_tables(
        tables, os.path.join(out_dir, 'positional_encoding.png'),
        f'positional={parts.model_config.positional!r} (model_dim '
        f'{parts.model_config.model_dim}, max_len {parts.model_config.max_len}), step {step}'))
  else:
    logging.info('positional=%r has no table of positions: no positional_encoding.png',
                 parts.model_config.positional)
  for path in paths:
    print(path, flush=True)
  return paths


# Compiled as a whole: run op by op, each of their few hundred ops compiles on its own.
_predict = jax.jit(predict.predict_step, static_argnames=('model', 'settings', 'eos_id'))
_attention_maps = jax.jit(attention_stats.attention_maps, static_argnums=0)


def greedy_output(parts, params, source: np.ndarray, decode_config) -> np.ndarray:
  """The model's greedy translation of `source` [src_len] ids, up to and with its EOS."""
  settings = dataclasses.replace(predict.SearchSettings.from_config(decode_config),
                                 method='greedy')
  output = _predict(params, {'inputs': jnp.asarray(source[None], jnp.int32)},
                    model=parts.model, settings=settings, eos_id=parts.tokenizer.eos_id)
  output = np.asarray(output)[0]
  ends = np.flatnonzero(output == parts.tokenizer.eos_id)
  return output[:ends[0] + 1] if len(ends) else output[output != parts.tokenizer.pad_id]


def _draw_sentence(parts, params, decode_config, source, line, path, step) -> str:
  """One sentence's grid of attention maps (see the module docstring)."""
  output = greedy_output(parts, params, source, decode_config)
  maps = _attention_maps(
      parts.model, params, {'inputs': jnp.asarray(source[None], jnp.int32),
                            'targets': jnp.asarray(output[None], jnp.int32)})
  pieces = {'source': parts.tokenizer.pieces(source),
            'output': parts.tokenizer.pieces(output)}
  pieces['decoder input'] = [START_TOKEN] + pieces['output'][:-1]
  rows = []
  for kind, layers in maps.items():
    name, key_axis, query_axis = PANELS[kind]
    rows.extend({'weights': np.asarray(weights[0]), 'keys': pieces[key_axis],
                 'queries': pieces[query_axis], 'name': f'{name}, layer {i}',
                 'xlabel': key_axis, 'ylabel': query_axis}
                for i, weights in enumerate(layers))
  title = (f'step {step}   source: {_shorten(line)}\n'
           f'greedy output (teacher-forced): {_shorten(parts.tokenizer.decode(output))}')
  return heatmaps.attention_grid(rows, path, title)


def _shorten(text: str, width: int = 120) -> str:
  return text if len(text) <= width else text[:width - 3] + '...'


def position_tables(model_config, params) -> Dict[str, np.ndarray]:
  """{panel title: [max_len, model_dim] table} of the model's positions ({} for rotary/none)."""
  kind = model_config.positional
  if kind == 'sinusoidal':     # fixed: the same table the model adds (positional.py)
    table = positional.sinusoidal_table(model_config.max_len, model_config.model_dim)
    return {'sinusoidal (encoder and decoder)': table}
  if kind in positional.EMBEDDING_POSITIONS:   # trained: one table per stack
    return {f'{kind}, {stack}': np.asarray(params[stack]['positions']['table'])
            for stack in ('encoder', 'decoder')}
  return {}
