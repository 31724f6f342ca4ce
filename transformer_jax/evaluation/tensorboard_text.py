"""What a run writes to TensorBoard besides scalars: its config as text, its hyper-parameters for
the HParams tab, and a few validation translations at each evaluation.

Everything here is plain data (strings, dicts of numbers and strings); metrics_writer.py writes
it with tensorboardX. TensorBoard's text tab renders Markdown, so texts are Markdown: the config
as an indented (code) block, the translations as a table.
"""
import json
from typing import Any, Dict, List, Sequence

from transformer_jax.base import workdir as workdir_lib

CONFIG_TAG = 'config'           # the text tab's entry for the run's config
EXAMPLES_TAG = 'examples'       # '<split>/examples': the translations of an evaluation


def config_markdown(config) -> str:
  """The config (a ConfigDict or nested dict) as sorted JSON in a Markdown code block."""
  text = json.dumps(workdir_lib.as_json(config), indent=2, sort_keys=True)
  return '\n'.join('    ' + line for line in text.splitlines())


def hparams(config) -> Dict[str, Any]:
  """{'section.field': value} for the HParams tab: every field of the config, numbers, strings
  and booleans as they are, lists as their JSON text; None (an unset optional field) left out,
  as TensorBoard has no value for it."""
  flat = {}
  for section, fields in sorted(workdir_lib.as_json(config).items()):
    items = fields.items() if isinstance(fields, dict) else [('', fields)]
    for name, value in sorted(items):
      key = f'{section}.{name}' if name else section
      if value is None:
        continue
      flat[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
  return flat


def _cell(text: str) -> str:
  """One Markdown table cell: pipes escaped, line breaks as spaces, empty shown as such."""
  text = ' '.join(str(text).split()).replace('|', '\\|')
  return text or '*(empty)*'


def examples_markdown(sources: Sequence[str], references: Sequence[str],
                      hypotheses: Sequence[str]) -> str:
  """A Markdown table of aligned examples: one row per example, source / reference / hypothesis."""
  rows: List[str] = ['| # | source | reference | hypothesis |', '|---|---|---|---|']
  for i, (source, reference, hypothesis) in enumerate(zip(sources, references, hypotheses), 1):
    rows.append(f'| {i} | {_cell(source)} | {_cell(reference)} | {_cell(hypothesis)} |')
  return '\n'.join(rows)
