"""Every command and code block that README.md and docs/*.md mark runnable still parses.

What is checked (the convention, also at the top of docs/api.md):

- A fenced block whose info string is `bash` or `python` is checked; any other info string
  (`text`, `toml`, ...) is not, and neither is a `bash`/`python` block whose fence follows a
  line `<!-- not-checked -->`. Every fence must name its language (`text` for output or a
  synopsis), so nothing is left unchecked by accident.
- Inline code that starts as a command (`python launch.py`, `transformer-jax `,
  `python -m transformer_jax`, `python -m benchmarks.`, `python benchmarks/`) is checked
  as a shell command too, e.g. the command column of a results table.
- Placeholders: `<...>` (no space after `<` or before `>`), `...` and shell variables
  (`$NAME`) stand for what the reader or the shell fills in. `--flag=<value>` checks the
  flag, not the value; an `--experiment.<section>.<field>` with a placeholder, or overrides
  of an `--experiment=<placeholder>`, are not checked. `[--flag]` (optional) is read as
  `--flag`.

Shell commands (lines joined at a trailing backslash, split at `|`, `&&`, `;`; anything before
`python`/`transformer-jax` on a line, such as `srun` or `VAR=value`, is skipped):
`python launch.py`, `transformer-jax <mode>` and `python -m transformer_jax <mode>`: the mode
word and every `--flag` must be defined by the command line (transformer_jax.cli) and its value
must parse (`--mode=` among the modes); flags must go together (run/preflight.py: a flag the
mode does not use, sweep flags without --sweep);
`--experiment=` must resolve (paths.resolve_experiment) and load, variant included;
`--sweep=` must load with the overrides (sweep.loading.load); every `--experiment.<s>.<f>=<v>`
must be a field of that experiment's config (of the default experiment without
--experiment; of the run's defaults for eval/translate/...) and its value must parse
(run/overrides.apply_overrides, the command line's own code). `python -m benchmarks.X` and
`python benchmarks/X.py` must exist. A quoted argument holding such a command (`gcloud ...
--command="... python launch.py ..."`) is checked as one.

Python blocks are compiled, and every import is resolved (importlib.import_module, then
getattr for each imported name, a DeprecationWarning of ours counting as a failure), as is
every attribute read from an imported name that the block never rebinds
(`transformer_jax.load_pretrained`, `modes.train`); nothing else is executed.

Each failure names `file:line`. Fast: no training, no jax computation (importing the modules
the blocks import is most of its time). The checker is doc_snippets.py (pages, Python blocks)
and doc_commands.py (shell commands); the last two tests show it catching mistakes.
"""
import re
import textwrap

import pytest

from tests.docs.doc_snippets import REPO_ROOT, check_page, doc_files, snippets


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  """The pages' commands run in the checkout's root, where experiments/... resolve."""
  monkeypatch.chdir(REPO_ROOT)


@pytest.mark.parametrize('page', doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_page_commands_and_code_parse(page):
  relative = str(page.relative_to(REPO_ROOT))
  problems = check_page(relative, page.read_text())
  assert not problems, '\n'.join(['', *problems])


def test_pages_have_checked_snippets():
  """The convention is in use: a page set that checks nothing would pass trivially."""
  readme = list(snippets('README.md', (REPO_ROOT / 'README.md').read_text()))
  assert sum(s.kind == 'bash' for s in readme) >= 5
  assert sum(s.kind == 'python' for s in readme) >= 2


_LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def _anchor(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
  text = re.sub(r'[`*_]', '', heading.strip().lower())
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


@pytest.mark.parametrize('page', doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(page):
  """Every relative link and image of a page points at a file (and heading) that exists."""
  problems = []
  for number, line in enumerate(page.read_text().splitlines(), start=1):
    for target in (a or b for a, b in _LINK.findall(line)):
      if re.match(r'[a-z]+:', target):
        continue
      file, _, anchor = target.partition('#')
      where = (page.parent / file) if file else page
      if not where.exists():
        problems.append(f'{page.relative_to(REPO_ROOT)}:{number}: {target}: no such file')
      elif anchor and where.suffix == '.md':
        anchors = {_anchor(h) for h in re.findall(r'^#+\s+(.*)$', where.read_text(), re.M)}
        if anchor not in anchors:
          problems.append(f'{page.relative_to(REPO_ROOT)}:{number}: {target}: no such heading')
  assert not problems, '\n'.join(['', *problems])


BAD_PAGE = textwrap.dedent('''\
    # A page with mistakes

    ```bash
    pip install -e .
    python launch.py --experiment=experiments/copy_task.py --wrokdir=runs/x \\
        --experiment.train.num_stepz=3
    transformer-jax trian --workdir=runs/x
    python launch.py --mode=evaluate --experiment=experiments/nope.py
    python launch.py --experiment=experiments/multi30k.py:no_such_variant
    python launch.py --experiment=experiments/copy_task.py --experiment.train.num_steps=many
    python launch.py --step=3
    python -m benchmarks.no_such_benchmark
    ```

    Inline: `python launch.py --sweep_paralel=2`.

    ```python
    from transformer_jax import NoSuchThing
    import transformer_jax.no_such_module
    from transformer_jax import validation
    import transformer_jax
    transformer_jax.no_such_function()
    ```

    ```
    a fence without a language
    ```

    ```python
    def broken(:
    ```
    ''')

GOOD_PAGE = textwrap.dedent('''\
    ```bash
    pip install -q -r requirements.txt -e . && python launch.py
    echo "A dog runs." | python launch.py --workdir=runs/m30k --mode=translate \\
        --experiment.decode.beam_size=5
    transformer-jax train --experiment=experiments/<name>.py --experiment.<section>.<field>=<value>
    srun python launch.py --multihost --experiment=experiments/wmt14.py:base --workdir=/x/y
    python -m benchmarks.loop_speed --steps=300
    ```

    `python launch.py --experiment=experiments/multi30k.py:preln --experiment.model.norm_order=pre`

    <!-- not-checked -->
    ```bash
    python launch.py --not_a_flag
    ```

    ```text
    python launch.py --not_a_flag_either
    ```

    ```python
    from transformer_jax.train import validation
    from transformer_jax import Transformer, TransformerConfig
    config = TransformerConfig.named('tiny', vocab_size=100)
    model = Transformer(config)
    model.anything_goes_on_an_instance
    ```
    ''')


def test_checker_catches_mistakes_with_their_lines():
  problems = check_page('bad.md', BAD_PAGE)
  text = '\n'.join(problems)
  expected = {
      'bad.md:5: unknown flag --wrokdir (did you mean --workdir?)': 'misspelled flag',
      'bad.md:5: --experiment.train.num_stepz=3': 'unknown config field',
      "bad.md:7: unknown command 'trian'": 'unknown mode word',
      'bad.md:8: --mode=evaluate': 'invalid --mode value',
      'bad.md:8: --experiment=experiments/nope.py: no such experiment file': 'missing file',
      'bad.md:9: --experiment=experiments/multi30k.py:no_such_variant': 'unknown variant',
      'bad.md:10: --experiment.train.num_steps=many': 'value of the wrong type',
      'bad.md:11: --step does not apply to --mode=train: it is for': 'flag of another mode',
      'bad.md:12: python -m benchmarks.no_such_benchmark': 'missing benchmark',
      'bad.md:15: unknown flag --sweep_paralel': 'inline command',
      'bad.md:18: transformer_jax has no NoSuchThing': 'bad imported name',
      'bad.md:19: import transformer_jax.no_such_module': 'bad module',
      'bad.md:20: deprecated: transformer_jax.validation moved': 'old import path',
      'bad.md:22: transformer_jax has no no_such_function': 'bad attribute',
      'bad.md:25: a fence without a language': 'unmarked fence',
      'bad.md:30: syntax error': 'syntax error',
  }
  missed = [f'{what}: {line}' for line, what in expected.items() if line not in text]
  assert not missed, '\n'.join(['not caught:', *missed, 'reported:', *problems])
  assert len(problems) == len(expected), '\n'.join(problems)


def test_checker_passes_good_snippets_and_skips_unchecked_blocks():
  assert check_page('good.md', GOOD_PAGE) == []
  kinds = [(s.line, s.kind) for s in snippets('good.md', GOOD_PAGE)]
  assert kinds == [(2, 'bash'), (10, 'bash'), (22, 'python')]
