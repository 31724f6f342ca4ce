"""Heatmap figures: attention weights with tokens on the axes, and tables of positions.

Shared by `--mode=visualize` (transformer_jax/analysis/visualize.py) and the RNN attention map
(benchmarks/rnn_attention_map.py). matplotlib is imported inside the functions: it is slow
to import and only plotting needs it; the Figure/Agg API draws without pyplot's global
state or a display.
"""
import textwrap
from typing import Dict, List, Sequence

import numpy as np

# Inches per token on an attention map's axes, and room for the tick labels and titles.
INCHES_PER_TOKEN = 0.16    # 7-point tick labels need ~0.1
LABEL_INCHES = 1.1
TICK_FONTSIZE = 7


def new_figure(width: float, height: float):
  """A matplotlib Figure of `width` x `height` inches on the Agg canvas (constrained layout)."""
  from matplotlib import figure
  from matplotlib.backends import backend_agg
  fig = figure.Figure(figsize=(width, height), layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  return fig


def draw_attention(ax, weights: np.ndarray, keys: Sequence[str], queries: Sequence[str], *,
                   xlabel: str = '', ylabel: str = '', title: str = '',
                   query_ticks: bool = True) -> None:
  """One attention map on `ax`: queries down, keys across, 0 white to 1 black.

  Args:
    ax: a matplotlib Axes.
    weights: [queries, keys] attention weights.
    keys: a label (token) per key position.
    queries: a label per query position.
    xlabel, ylabel, title: axis and panel texts.
    query_ticks: label the query positions (off for panels that share a row's labels).
  """
  ax.imshow(weights, cmap='Greys', vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=TICK_FONTSIZE)
  ax.set_yticks(range(len(queries)), queries if query_ticks else [], fontsize=TICK_FONTSIZE)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.set_title(title, fontsize=8)


def attention_grid(rows: List[Dict], path: str, title: str) -> str:
  """A grid of attention maps, one row per entry of `rows`, one column per head.

  Args:
    rows: dicts with `weights` [heads, queries, keys], `keys` and `queries` (token labels),
      `name` (the row's title, e.g. 'cross-attention, layer 0'), `xlabel` and `ylabel`.
    path: where to write the PNG.
    title: the figure's title.

  Returns:
    path.
  """
  heads = max(len(row['weights']) for row in rows)
  # Each row as tall as its queries need, each column as wide as the most keys need, so a
  # long output does not blow up the source-only rows.
  width = INCHES_PER_TOKEN * max(len(row['keys']) for row in rows) + LABEL_INCHES
  heights = [INCHES_PER_TOKEN * len(row['queries']) + LABEL_INCHES for row in rows]
  fig = new_figure(max(heads * width, 6.0), sum(heights) + 0.6)
  axes = fig.subplots(len(rows), heads, squeeze=False, gridspec_kw={'height_ratios': heights})
  for r, row in enumerate(rows):
    for h in range(heads):
      if h >= len(row['weights']):
        axes[r, h].set_axis_off()
        continue
      draw_attention(axes[r, h], row['weights'][h], row['keys'], row['queries'],
                     xlabel=row['xlabel'], ylabel=row['ylabel'] if h == 0 else '',
                     title=f"{row['name']}, head {h}", query_ticks=h == 0)
  fig.suptitle(_wrap(title, fig.get_figwidth()), fontsize=10)
  fig.savefig(path, dpi=100)
  return path


def _wrap(title: str, width_inches: float) -> str:
  """`title` broken into lines that fit the figure (a 10-point character is ~0.08 inch)."""
  return '\n'.join(textwrap.fill(line, max(int(width_inches * 12), 20))
                   for line in title.splitlines())


def position_tables(tables: Dict[str, np.ndarray], path: str, title: str) -> str:
  """Each [positions, dims] table as a heatmap (position down, dimension across).

  Args:
    tables: {panel title: float [max_len, model_dim] table}.
    path: where to write the PNG.
    title: the figure's title.

  Returns:
    path.
  """
  fig = new_figure(6.0 * len(tables), 6.0)
  axes = fig.subplots(1, len(tables), squeeze=False)[0]
  for ax, (name, table) in zip(axes, tables.items()):
    limit = float(np.max(np.abs(table))) or 1.0
    image = ax.imshow(table, cmap='RdBu_r', vmin=-limit, vmax=limit, aspect='auto',
                      interpolation='nearest')
    ax.set_xlabel('dimension')
    ax.set_ylabel('position')
    ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
  fig.suptitle(title, fontsize=10)
  fig.savefig(path, dpi=100)
  return path
