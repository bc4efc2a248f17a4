"""Study 4: the same ten test digits (one per class) reconstructed by every study-1 model, side by side.

  python -m experiments.reconstructions --out=out/reconstructions [--runs=out/bottleneck/runs] [--smoke]
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxae
from experiments import bottleneck, common
from jaxae import analysis, plots
from jaxae import data as data_lib


def main(argv=None):
  args = common.parse_args(__doc__.splitlines()[0], argv, runs=True)
  started = time.perf_counter()
  test = common.test_split(args)
  idx = np.asarray([np.flatnonzero(test.labels == c)[0] for c in range(10) if (test.labels == c).any()])
  digits = data_lib.to_float(test.x[idx])
  root = getattr(args, "runs", "") or os.path.join(args.out, "runs")
  numbers, table = {}, []
  for init in bottleneck.INITS:
    rows, labels = [digits], ["input"]
    for key in [k for i, k in bottleneck.models(args) if i == init]:
      if args.runs and not os.path.isdir(os.path.join(root, init, key)):
        continue  # e.g. the conv model trained with the flax init only
      workdir, seed = bottleneck.runs(args, key, init)[0]
      run = jaxae.load_run(workdir, seed=seed)
      recon = analysis.reconstruct(run.model, run.params, digits, run.config)
      err = np.mean(np.square(recon - digits), axis=(1, 2, 3))
      numbers[f"{init}/{key}"] = {"seed": seed, "mse_per_digit": err, "mse_mean": float(err.mean())}
      table.append([init, key, seed] + [f"{e:.4f}" for e in err] + [f"{err.mean():.4f}"])
      rows.append(recon)
      labels.append(key)
    if len(rows) < 2:
      continue
    plots.image_rows(rows, labels, os.path.join(args.out, f"reconstructions_{init}.png"),
                     title=f"MNIST test digits reconstructed by each model ({init} init, first seed)")
  header = ["init", "model", "seed"] + [f"digit {int(c)}" for c in test.labels[idx]] + ["mean"]
  common.write_csv(os.path.join(args.out, "results.csv"), header, table)
  text = "Per-image MSE of the ten digits shown in reconstructions_<init>.png.\n\n" + common.markdown_table(header, table)
  common.write_results(args.out, "Study 4: reconstructions of every model", [text],
                       {"test_index": idx, "models": numbers}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
