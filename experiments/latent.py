"""Study 2: the 2-D latent space of the vanilla d=2 autoencoder.

Scatter of the test images' codes coloured by digit, a grid decoded over the latent plane, a straight
line between two test digits, and how linearly / locally separable the classes are: a multinomial
logistic-regression probe and a 5-nearest-neighbour classifier fit on the training codes and scored on
the test codes (one score per seed; `jaxae.evaluate.probe_accuracy` and `knn_accuracy`).

  python -m experiments.latent --out=out/latent [--runs=out/bottleneck/runs] [--smoke]
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxae
from experiments import bottleneck, common
from jaxae import analysis, evaluate, plots
from jaxae import data as data_lib
from jaxae.evaluate import knn_accuracy, probe_accuracy  # noqa: F401  (the probes of jaxae.evaluate)


def interpolate(model, params, config, a, b, steps: int = 10) -> np.ndarray:
  """Decoded images along the straight line from encode(a) to encode(b): (steps, H, W, C)."""
  za, zb = analysis.encode(model, params, np.stack([a, b]), config)
  return analysis.decode(model, params, evaluate.lerp(za, zb, steps), config)


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv, runs=True)
  started = time.perf_counter()
  pairs = bottleneck.runs(args, "vanilla_d2", "flax")
  test = common.test_split(args)
  train = common.train_split(bottleneck.variant_config("vanilla_d2", "flax", args))
  per_seed = []
  for i, (workdir, seed) in enumerate(pairs):
    run = jaxae.load_run(workdir, seed=seed)
    z_tr = analysis.encode(run.model, run.params, train.x, run.config)
    z_te = analysis.encode(run.model, run.params, test.x, run.config)
    per_seed.append({"seed": seed, "probe": probe_accuracy(z_tr, train.labels, z_te, test.labels),
                     "knn": knn_accuracy(z_tr, train.labels, z_te, test.labels)})
    if i:
      continue
    np.savez_compressed(os.path.join(args.out, "latents_seed0.npz"), z_train=z_tr, y_train=train.labels,
                        z_test=z_te, y_test=test.labels)
    plots.latent_scatter(z_te, test.labels, os.path.join(args.out, "latent_scatter.png"),
                         f"vanilla AE d=2: codes of {len(z_te)} MNIST test images (seed {seed})")
    lo, hi = np.percentile(z_te, 1, axis=0), np.percentile(z_te, 99, axis=0)
    n = 15
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(hi[1], lo[1], n)  # top row = largest z2
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    images = analysis.decode(run.model, run.params, grid, run.config).reshape(n, n, *test.x.shape[1:])
    plots.image_grid(images, os.path.join(args.out, "latent_grid.png"), extent=(lo[0], hi[0], lo[1], hi[1]),
                     title="decoded over the latent plane (1st-99th percentile of test codes)")
    a, b = (int(np.flatnonzero(test.labels == c)[0]) for c in (4, 7) if (test.labels == c).any())
    line = interpolate(run.model, run.params, run.config, test.x[a], test.x[b])
    ends = data_lib.to_float(test.x[[a, b]])
    plots.image_rows([ends, line], ["test digits", "z-line"], os.path.join(args.out, "latent_interpolation.png"),
                     title="straight line in latent space between two test digits")
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves.png"), "vanilla d=2: train and held-out loss")
  pm, ps = common.mean_std([r["probe"] for r in per_seed])
  km, ks = common.mean_std([r["knn"] for r in per_seed])
  rows = [[r["seed"], f"{r['probe']:.4f}", f"{r['knn']:.4f}"] for r in per_seed]
  rows.append(["mean ± std", common.fmt(pm, ps), common.fmt(km, ks)])
  common.write_csv(os.path.join(args.out, "results.csv"), ["seed", "linear_probe", "knn5"],
                   [[r["seed"], r["probe"], r["knn"]] for r in per_seed])
  text = (f"Fit on the codes of {len(train)} training images, scored on {len(test)} MNIST test images.\n\n"
          + common.markdown_table(["seed", "linear probe accuracy", "5-NN accuracy"], rows))
  common.write_results(args.out, "Study 2: the 2-D latent space (vanilla AE, d=2)", [text],
                       {"per_seed": per_seed, "probe_mean": pm, "probe_std": ps, "knn_mean": km, "knn_std": ks}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
