"""A sweep report's line figures (spec.Curves): chosen rows as lines against a numeric setting,
mean +- standard error over seeds, one panel per group of metrics.

Draws from the rows `report.summarize` returns, so a figure and the report's table always show
the same numbers. Points whose row has no result yet are left out (a partial sweep draws what
it has); a panel with no point at all says so instead of drawing empty axes.
"""
from typing import Any, Dict, List, Sequence

from transformer_jax.sweep import spec

_STYLES = ('-', '--', ':', '-.')
_MARKERS = ('o', 's', '^', 'D', 'v', 'P')


def points(curves: spec.Curves, rows: Sequence[Dict[str, Any]], metric: str):
  """{series label: [(x, mean, standard error or 0)]} of `metric`, sorted by x, rows with a
  result only."""
  by_name = {line['row']: line for line in rows}
  out = {}
  for label, members in curves.series.items():
    drawn = []
    for x, name in members:
      line = by_name.get(name)
      if line is None or line.get(metric) is None:
        continue
      drawn.append((float(x), line[metric], line.get(metric + '_se') or 0.0))
    out[label] = sorted(drawn)
  return out


def plot(curves: spec.Curves, rows: Sequence[Dict[str, Any]], path: str, title: str) -> List[str]:
  """Writes the figure to `path`; returns the metrics that had at least one point."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  panels = list(curves.panels)
  ticks = sorted({float(x) for members in curves.series.values() for x, _ in members})
  columns = min(len(panels), 4)
  grid_rows = -(-len(panels) // columns)
  fig, axes = plt.subplots(grid_rows, columns, figsize=(3.6 * columns, 3.1 * grid_rows + 0.5),
                           squeeze=False)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  drawn_metrics = []
  for ax, panel in zip(axes.flat, panels):
    anything = False
    for number, metric in enumerate(panel):     # a metric: a line style; a series: a colour
      for index, (label, series) in enumerate(points(curves, rows, metric).items()):
        if not series:
          continue
        xs, means, errors = zip(*series)
        ax.errorbar(xs, means, yerr=errors, linestyle=_STYLES[number % len(_STYLES)],
                    marker=_MARKERS[index % len(_MARKERS)], color=colors[index % len(colors)],
                    capsize=3, label=f'{label}: {metric}' if len(panel) > 1 else label)
        anything = True
        if metric not in drawn_metrics:
          drawn_metrics.append(metric)
    if curves.log_x:
      ax.set_xscale('log', base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f'{x:g}' for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel(curves.x_label)
    ax.set_title(' and '.join(panel), fontsize=8)
    if anything:
      ax.legend(fontsize=6, loc='best')
    else:
      ax.text(0.5, 0.5, 'no finished member yet', ha='center', va='center',
              transform=ax.transAxes)
  for ax in list(axes.flat)[len(panels):]:
    ax.set_visible(False)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return drawn_metrics
