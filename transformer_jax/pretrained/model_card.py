"""The model card (README.md) of an export folder: what the model is, how the run measured it,
the lines that load and use it, where it came from and the software that wrote it."""
from typing import Any, Dict, List

from transformer_jax.models import families
from transformer_jax.pretrained import layout

# Model card columns: (metric key, heading), in this order when a split has them.
_COLUMNS = (('loss', 'loss'), ('perplexity', 'perplexity'), ('accuracy', 'accuracy'),
            ('sacrebleu', 'sacreBLEU'), ('bleu_tok_lc', 'BLEU (tok, lc)'),
            ('exact_match', 'exact match'))


def readme(path: str, model: Dict[str, Any], run: Dict[str, Any]) -> str:
  """The export's README.md, for the folder `path` holding `model` (model.json) and `run`."""
  family, config, source = model['family'], model['config'], run['source']
  use, also, what = _usage(family, run)
  steps = source.get('steps_averaged', [])
  sizes = ', '.join(f'{k}={config[k]}' for k in ('num_layers', 'model_dim', 'num_heads',
                                                  'mlp_dim', 'hidden_dim', 'vocab_size')
                    if config.get(k) is not None)
  versions = model.get('versions', {})
  written_with = ', '.join(f'{name} {version}' for name, version in versions.items())
  return f"""# Exported transformer_jax model

{what}, family `{family}` ({sizes}).

```python
import transformer_jax
model = transformer_jax.load_pretrained({path!r})
{use}
```

Needs the `transformer_jax` package installed (`pip install transformer-jax`, or `pip install .`
in a checkout of the repository); not the run's workdir, checkpoints or flags. Decoding defaults
to the run's `decode` settings (`run.json`). {also}

## Results

{_results(model.get('metrics', {}))}

## Provenance

Source run: `{source.get('workdir')}`, checkpoint steps averaged: {steps}
(eval.average_last={source.get('average_last')}), exported {source.get('exported_at', '')}
with {written_with or 'an unrecorded transformer_jax'}.

Files: `{layout.PARAMS_FILE}` (parameters by '/'-joined path, safetensors), `{layout.MODEL_FILE}`
(family, config, versions and metrics), `{layout.RUN_FILE}` (tokenizer, decode and batching
settings, source, and the checksums that `load_pretrained` verifies), and for sentencepiece runs
`{layout.TOKENIZER_FILE}`. A file changed after the export is refused when loaded: re-export
from the source run rather than editing one.
"""


def _usage(family: str, run: Dict[str, Any]):
  """(the line that uses the model, what else it does, what it is) for the card."""
  if families.get(family).samples:
    use = 'print(model.sample(n=3))'
    also = ('`sample` takes `prompts` (continued, each output starts with its prompt), `n`, '
            '`temperature`, `top_k`, `top_p`, `seed`, `method` and `max_extra_len`, like '
            '`launch.py --mode=sample`.')
    return use, also, f'A decoder-only language model trained on {run["data"].get("dataset")}'
  data = run['data']
  example = ('5 6 7 8 9' if run['tokenizer']['kind'] == 'identity' else
             'A dog runs on the beach.' if data.get('source_lang') == 'en' else
             f'<a sentence in {data.get("source_lang")}>')
  pair = ('' if run['tokenizer']['kind'] == 'identity' else
          f' {data.get("source_lang")}->{data.get("target_lang")}')
  also = ('`translate` takes `beam_size`, `alpha`, `method` and `max_extra_len`, and gives what '
          '`launch.py --mode=translate` gives on the source run with the same settings; with '
          '`nbest=k` (beam search) each sentence\'s k best translations, and with '
          '`return_scores=True` their scores (length-penalised log-probabilities). Also: '
          '`model.score(sources, targets)` (log-likelihood sums), `model.encode(sentences)` '
          '(encoder outputs), `model.tokenize(sentences)`.')
  return (f'print(model.translate([{example!r}]))', also,
          f'An encoder-decoder trained on {data.get("dataset")}{pair}')


def _results(metrics: Dict[str, Dict[str, Any]]) -> str:
  """A table of the recorded metrics by split, with where each row comes from."""
  if not metrics:
    return ('The run had no evaluation of these checkpoints when it was exported '
            '(`launch.py --mode=eval` writes one).')
  columns = [(key, heading) for key, heading in _COLUMNS
             if any(key in split for split in metrics.values())]
  lines = ['| split | checkpoints | ' + ' | '.join(h for _, h in columns) + ' | source |',
           '|' + '---|' * (len(columns) + 3)]
  for name, split in metrics.items():
    cells = [_number(split.get(key)) for key, _ in columns]
    lines.append(f'| {name}{_coverage(split)} | {split.get("checkpoints")} | '
                 + ' | '.join(cells) + f' | `{split.get("source")}` |')
  notes = _notes(metrics)
  return '\n'.join(lines) + ('\n\n' + ' '.join(notes) if notes else '')


def _number(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return '' if value is None else str(value)
  return f'{value:.4g}'


def _coverage(split: Dict[str, Any]) -> str:
  if split.get('partial'):
    return f' ({split.get("sentences_scored")} of {split.get("sentences_in_split")} sentences)'
  return ''


def _notes(metrics: Dict[str, Dict[str, Any]]) -> List[str]:
  """How each split's decoded metrics were decoded, and their sacreBLEU signature."""
  notes = []
  for name, split in metrics.items():
    decoding = split.get('decoding')
    if decoding:
      settings = ', '.join(f'{k}={v}' for k, v in decoding.items())
      signature = split.get('sacrebleu_signature')
      notes.append(f'{name.capitalize()} decoded with {settings}'
                   + (f' (sacreBLEU `{signature}`).' if signature else '.'))
  return notes
