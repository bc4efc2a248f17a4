"""Figures from the files a run writes (metrics.jsonl, summary.json) and from loaded params.

Every function takes plain numpy data and a path, draws with matplotlib's non-interactive Agg backend,
saves a PNG (150 dpi) and returns the path. Means are drawn as lines, the spread over seeds as a band
of ± one standard deviation (sample std, ddof=1).
"""

from __future__ import annotations

import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxae import files, report  # noqa: E402


def _save(fig, path: str) -> str:
  """Saves atomically (files.replace_with: never through a symlink, never half a file)."""
  files.make_dirs(os.path.dirname(path) or ".")  # in a workdir: recorded, never through a symlink
  try:
    files.replace_with(path, lambda tmp: fig.savefig(tmp, dpi=150, bbox_inches="tight", format=os.path.splitext(path)[1].lstrip(".") or "png"))
  finally:
    plt.close(fig)
  return path


def _log_scale_if_positive(ax) -> None:
  """A log y axis when every finite value drawn is positive (NaN-only or signed data stay linear)."""
  ys = np.concatenate([np.ravel(np.asarray(line.get_ydata(), dtype=np.float64)) for line in ax.get_lines()] or [[]])
  ys = ys[np.isfinite(ys)]
  if ys.size and (ys > 0).all():
    ax.set_yscale("log")


def band(ax, x, values, label: str, color=None):
  """Mean line and ± std band of `values` (runs, len(x)) over runs, ignoring non-finite runs."""
  values = np.asarray(values, dtype=np.float64)
  ok = np.all(np.isfinite(values), axis=1)
  values = values[ok] if ok.any() else values
  with warnings.catch_warnings():  # every member diverged: all-NaN columns draw nothing, silently
    warnings.simplefilter("ignore", RuntimeWarning)
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
  line, = ax.plot(x, mean, label=f"{label} (n={len(values)})", color=color)
  ax.fill_between(x, mean - std, mean + std, alpha=0.25, color=line.get_color(), linewidth=0)
  return line


def loss_curves(records: list[dict], members: list[dict], path: str, metric: str = "loss",
                eval_metric: str | None = None, title: str = "") -> str:
  """Train `metric` and held-out `eval_metric` per epoch, one mean line + band per setting."""
  fig, ax = plt.subplots(figsize=(6, 4))
  eval_metric = eval_metric or metric
  settings = sorted({m["setting_index"] for m in members})
  for g in settings:
    idx = [i for i, m in enumerate(members) if m["setting_index"] == g]
    name = ", ".join(f"{k}={v}" for k, v in members[idx[0]]["setting"].items())
    tr = [r for r in records if "train" in r and metric in r["train"]]
    if tr:
      vals = np.stack([report.as_array(r["train"][metric])[idx] for r in tr], axis=1)
      line = band(ax, [r["epoch"] for r in tr], vals, f"train {name}".strip())
    ev = [r for r in records if "eval" in r and eval_metric in r["eval"]]
    if ev:
      vals = np.stack([report.as_array(r["eval"][eval_metric])[idx] for r in ev], axis=1)
      band(ax, [r["epoch"] for r in ev], vals, f"held-out {name}".strip(),
           color=line.get_color() if tr else None).set_linestyle("--")
  ax.set_xlabel("epoch")
  ax.set_ylabel(metric if metric == eval_metric else f"{metric} / {eval_metric}")
  _log_scale_if_positive(ax)
  ax.set_title(title or f"{metric}: mean ± std over seeds")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def image_rows(rows: list[np.ndarray], labels: list[str], path: str, title: str = "") -> str:
  """A grid: each row a list of images (n, H, W[, 1 or 3]) in [0, 1], labelled on the left.

  Each row is one image strip (the images side by side, white gaps between them) on one axes: a matplotlib
  axes costs ~10 ms to make and lay out, so one axes per image made this figure 0.3 s of every run.
  """
  n = max(len(r) for r in rows)
  fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.9, len(rows) * 0.95), squeeze=False)
  for i, (row, label) in enumerate(zip(rows, labels)):
    ax = axes[i, 0]
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
      s.set_visible(False)
    ax.imshow(_strip(row, n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def _strip(row, n: int) -> np.ndarray:
  """n images (H, W[, C]) side by side with white gaps of W // 5 pixels (missing images: white)."""
  images = [np.clip(np.asarray(im, np.float32), 0, 1) for im in row]
  images = [im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im for im in images]
  h, w = images[0].shape[:2]
  channels = images[0].shape[2:]
  gap = max(1, w // 5)
  strip = np.ones((h, n * w + (n - 1) * gap, *channels), np.float32)
  for j, im in enumerate(images[:n]):
    strip[:, j * (w + gap):j * (w + gap) + w] = im
  return strip


def metric_vs_value(values, means, stds, path: str, xlabel: str, ylabel: str, title: str = "") -> str:
  """Error-bar plot of a metric against a swept value (log x axis when values span > 1 decade)."""
  labels = None
  if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
    labels, values = [str(v) for v in values], np.arange(len(values))  # categories (e.g. a swept activation)
  values, means, stds = (np.asarray(a, dtype=np.float64) for a in (values, means, stds))
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.errorbar(values, means, yerr=stds, marker="o", capsize=3)
  pos = values[values > 0]
  if labels is not None:
    ax.set_xticks(values, labels)
  elif pos.size and pos.max() / pos.min() > 10 and (values > 0).all():
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title or f"{ylabel} vs {xlabel} (mean ± std over seeds)", fontsize=9)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def metric_curves(curves: dict, references: dict, path: str, xlabel: str, ylabel: str, title: str = "") -> str:
  """One line per name of `curves` {name: (xs, ys)} with its reference value {name: y} as a dashed line of
  the same colour (a paper's number); log x axis when xs span > 1 decade."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  xs_all = []
  for name, (xs, ys) in curves.items():
    line = ax.plot(xs, ys, marker="o", label=name)[0]
    if name in references:
      ax.axhline(references[name], color=line.get_color(), linestyle="--", linewidth=1)
    xs_all += list(xs)
  if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 10:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def sweep_figures(points: list[tuple[dict, dict]], keys: list[str], figdir: str) -> list[str]:
  """Each metric against the swept value(s): error bars for one key, a heatmap of means for two.

  points: sweep.points(...) output; keys: the swept config keys. More than two keys: one error-bar
  figure per key with the other keys at their first value. Sweeps that report both metrics of a pair
  in FRONTIERS (L0 and FVU: sparse autoencoders) also get `frontier_<x>_<y>.png` (`frontier`).
  Returns the written paths.
  """
  paths = []
  metrics = sorted({m for _, ms in points for m in ms})
  for x_metric, y_metric in FRONTIERS:
    if x_metric in metrics and y_metric in metrics:
      paths.append(frontier(points, keys, os.path.join(figdir, f"frontier_{x_metric}_{y_metric}.png"), x_metric, y_metric))
  nan = float("nan")
  val = lambda x: nan if x is None else x
  for metric in metrics:
    name = metric.replace("/", "_")
    if len(keys) == 2:
      xs = sorted({p[keys[1]] for p, _ in points})
      ys = sorted({p[keys[0]] for p, _ in points})
      grid = np.full((len(ys), len(xs)), np.nan)
      for p, ms in points:
        grid[ys.index(p[keys[0]]), xs.index(p[keys[1]])] = val(ms.get(metric, (nan, nan))[0])
      paths.append(heatmap(xs, ys, grid, os.path.join(figdir, f"sweep_{name}.png"), keys[1], keys[0],
                           f"held-out {metric} (mean over seeds)"))
      continue
    for key in keys:
      others = {k: points[0][0][k] for k in keys if k != key}
      sel = sorted(((p[key], ms.get(metric, (nan, nan))) for p, ms in points
                    if all(p[k] == v for k, v in others.items())), key=lambda t: t[0])
      if not sel:
        continue
      suffix = f"_{key.split('.')[-1]}" if len(keys) > 1 else ""
      paths.append(metric_vs_value([v for v, _ in sel], [val(m[0]) for _, m in sel], [val(m[1]) for _, m in sel],
                                   os.path.join(figdir, f"sweep_{name}{suffix}.png"), key, f"held-out {metric}"))
  return paths


FRONTIERS = (("l0", "fvu"),)  # (x metric, y metric) pairs drawn by sweep_figures when a sweep reports both


def frontier(points: list[tuple[dict, dict]], keys: list[str], path: str, x_metric: str = "l0",
             y_metric: str = "fvu", title: str = "", names: dict | None = None) -> str:
  """A sparsity-fidelity frontier: each setting's held-out `y_metric` against its `x_metric`, both mean ±
  std over seeds (error bars in both directions). The first swept key traces each line (its values label
  the points); every combination of the other keys is its own line. points: sweep.points(...) output;
  names: display names of keys (default: the last part of the dotted key; '' shows the value alone).
  The x axis is logarithmic when the x values span more than a decade.
  """
  names = names or {}
  name = lambda k: names.get(k, k.split(".")[-1])
  show = lambda k, v: f"{name(k)}={v}" if name(k) else str(v)
  nan = float("nan")
  val = lambda ms, m: tuple(nan if v is None else v for v in ms.get(m, (nan, nan)))
  lines: dict[tuple, list] = {}
  for setting, ms in points:
    rest = tuple((k, setting.get(k)) for k in keys[1:])
    lines.setdefault(rest, []).append((setting.get(keys[0]), val(ms, x_metric), val(ms, y_metric)))
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for rest, pts in lines.items():
    pts.sort(key=lambda t: t[1][0])
    label = ", ".join(show(k, v) for k, v in rest) or None
    ax.errorbar([p[1][0] for p in pts], [p[2][0] for p in pts], xerr=[p[1][1] for p in pts],
                yerr=[p[2][1] for p in pts], marker="o", capsize=3, label=label)
    for value, (x, _), (y, _) in pts:
      ax.annotate(show(keys[0], value), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
  xs = np.asarray([p[1][0] for pts in lines.values() for p in pts], np.float64)
  xs = xs[np.isfinite(xs) & (xs > 0)]
  if xs.size and xs.max() / xs.min() > 10:
    ax.set_xscale("log")
  ax.set_xlabel(f"held-out {x_metric}")
  ax.set_ylabel(f"held-out {y_metric}")
  ax.set_title(title or f"{y_metric} vs {x_metric} (mean ± std over seeds)", fontsize=9)
  if any(ax.get_legend_handles_labels()[1]):
    ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def heatmap(xs, ys, grid, path: str, xlabel: str, ylabel: str, title: str) -> str:
  """Mean metric over a 2-D sweep: grid[i, j] for ys[i], xs[j], annotated with the values."""
  grid = np.asarray(grid, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(1.1 * len(xs) + 2, 0.8 * len(ys) + 1.5))
  im = ax.imshow(grid, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(xs)), [str(x) for x in xs])
  ax.set_yticks(range(len(ys)), [str(y) for y in ys])
  for i in range(len(ys)):
    for j in range(len(xs)):
      ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=7, color="w")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax)
  return _save(fig, path)


def latent_scatter(z, labels, path: str, title: str = "", max_points: int = 10000, axes=("z1", "z2"),
                   legend_title: str = "digit") -> str:
  """2-D points z (N, 2) coloured by integer class label (with a legend), or in one colour when labels is None."""
  z = np.asarray(z)[:max_points]
  fig, ax = plt.subplots(figsize=(6, 5))
  if labels is None:
    ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.5, rasterized=True)
  else:
    labels = np.asarray(labels)[:max_points]
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
      pts = z[labels == c]
      ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=cmap(int(c) % 10), label=str(c), rasterized=True)
    ax.legend(title=legend_title, markerscale=5, fontsize=7, loc="best")
  ax.set_xlabel(axes[0])
  ax.set_ylabel(axes[1])
  ax.set_title(title, fontsize=9)
  return _save(fig, path)


def image_grid(images, path: str, extent=None, title: str = "") -> str:
  """A (rows, cols, H, W[, 1]) array of images in [0, 1] tiled into one picture.

  `extent` = (x0, x1, y0, y1) labels the axes with the latent coordinates the tiles were decoded from
  (row 0 is drawn at the top, so put the largest y first).
  """
  images = np.asarray(images)
  rows, cols, h, w = images.shape[:4]
  tiled = np.clip(images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w), 0, 1)
  fig, ax = plt.subplots(figsize=(6, 6))
  ax.imshow(tiled, cmap="gray", vmin=0, vmax=1, extent=extent, aspect="auto" if extent else None)
  if extent is None:
    ax.set_xticks([])
    ax.set_yticks([])
  ax.set_title(title, fontsize=9)
  return _save(fig, path)


def rate_distortion(rates, distortions, labels, path: str, rate_err=None, distortion_err=None,
                    xlabel: str = "KL(q(z|x) || p(z)) [nats]", ylabel: str = "E_q[-log p(x|z)] [nats]",
                    title: str = "") -> str:
  """Distortion against rate, one point (± std error bars) per labelled setting, e.g. one per beta."""
  fig, ax = plt.subplots(figsize=(5, 4))
  ax.errorbar(rates, distortions, xerr=rate_err, yerr=distortion_err, marker="o", capsize=3, linestyle="-")
  for x, y, label in zip(rates, distortions, labels):
    ax.annotate(str(label), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def feature_errors(errors: dict[str, np.ndarray], path: str, ylabel: str = "held-out squared error",
                   title: str = "") -> str:
  """Reconstruction error per input feature: errors {setting label: (seeds, D)} mean over examples.

  One line per setting (mean over seeds) with a ± std band over seeds; x is the feature index.
  """
  fig, ax = plt.subplots(figsize=(max(5, min(12, 0.12 * next(iter(errors.values())).shape[-1] + 3)), 3.5))
  for label, values in errors.items():
    values = np.asarray(values, np.float64)
    line = band(ax, np.arange(values.shape[-1]), values, label or "all seeds")
    line.set_marker("o" if values.shape[-1] <= 64 else "")
    line.set_markersize(3)
  ax.set_xlabel("feature")
  ax.set_ylabel(ylabel)
  ax.set_title(title or "reconstruction error per feature (mean over held-out examples, ± std over seeds)", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, path)


def example_errors(errors: dict[str, np.ndarray], path: str, xlabel: str = "held-out squared error per example",
                   title: str = "") -> str:
  """Distribution of per-example reconstruction errors: errors {setting label: (seeds, N)}.

  A step histogram per setting, seeds pooled (density, so settings with different numbers of seeds
  compare), the median as a dashed line; log-spaced bins when the errors span more than two decades.
  """
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  shapes = {label: np.shape(v) for label, v in errors.items()}
  pooled = {label: np.ravel(np.asarray(v, np.float64)) for label, v in errors.items()}
  finite = np.concatenate([v[np.isfinite(v)] for v in pooled.values()])
  positive = finite[finite > 0]
  log = positive.size and positive.size == finite.size and positive.max() / positive.min() > 100
  bins = np.geomspace(positive.min(), positive.max(), 50) if log else np.linspace(finite.min(), finite.max(), 50)
  for label, values in pooled.items():
    values = values[np.isfinite(values)]
    seeds, n = shapes[label]
    _, _, patches = ax.hist(values, bins=bins, density=True, histtype="step",
                            label=f"{label + ': ' if label else ''}{n} examples x {seeds} seeds")
    ax.axvline(np.median(values), color=patches[0].get_edgecolor(), linestyle="--", linewidth=1)
  if log:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  ax.set_title(title or "per-example reconstruction error on held-out data (dashed: median)", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, path)
