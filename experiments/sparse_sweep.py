"""Sparse autoencoder L1 weight sweep: the L0 versus reconstruction-error frontier, in one compiled program.

configs/sparse.py (MSE + lambda * mean|z|, d=32) trained for every lambda x seed at once through
`config.sweep` (lambda is a per-member hyperparameter, so the whole grid is one program and one
compilation). On the MNIST test set, per seed: reconstruction MSE, exact L0 (units with z != 0) and
L0 at a threshold (units with |z| > 0.1: with a linear latent and Adam, an L1 penalty shrinks codes
towards zero without making them exactly zero), and mean |z|.

  python -m experiments.sparse_sweep --out=out/sparse_sweep [--seeds=3] [--epochs=30]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import jaxae
from experiments import common
from jaxae import analysis, evaluate, plots
from jaxae import data as data_lib

WEIGHTS = (0.0, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)
SMOKE_WEIGHTS = (0.0, 0.1)
THRESHOLD = 0.1


def code_stats(z: np.ndarray) -> dict:
  """z (N, d) -> exact L0, L0 at |z| > THRESHOLD (units per image), and mean |z|."""
  return {"l0": evaluate.code_statistics(z, eps=0.0)["l0"], "l0_thr": evaluate.code_statistics(z, eps=THRESHOLD)["l0"],
          "mean_abs": float(np.abs(z).mean())}


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=30)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  config = common.protocol(common.load_config("sparse"), args, epochs=args.epochs)
  weights = SMOKE_WEIGHTS if args.smoke else WEIGHTS
  config.sweep = json.dumps({"loss.sparsity_weight": list(weights)})
  workdir = os.path.join(args.out, "runs", "sparse_l1_sweep")
  common.ensure_trained(config, workdir)
  test = common.test_split(args)
  x = data_lib.to_float(test.x)
  results, rows = [], []
  for g, weight in enumerate(weights):
    per_seed = []
    for seed in [config.seed + i for i in range(config.num_seeds)]:
      run = jaxae.load_run(workdir, seed=seed, setting=g)
      z = analysis.encode(run.model, run.params, test.x, run.config)
      recon = analysis.decode(run.model, run.params, z, run.config)
      per_seed.append(dict(code_stats(z), seed=seed, recon_mse=float(np.mean(np.square(recon - x)))))
    stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("recon_mse", "l0", "l0_thr", "mean_abs")}
    results.append({"weight": weight, "per_seed": per_seed, **{f"{k}_mean": v[0] for k, v in stats.items()},
                    **{f"{k}_std": v[1] for k, v in stats.items()}})
    rows.append([weight, len(per_seed), common.fmt(*stats["recon_mse"]), common.fmt(*stats["l0"], 1),
                 common.fmt(*stats["l0_thr"], 1), common.fmt(*stats["mean_abs"], 3)])
  plots.rate_distortion([r["l0_thr_mean"] for r in results], [r["recon_mse_mean"] for r in results],
                        [f"λ={r['weight']:g}" for r in results], os.path.join(args.out, "l0_frontier.png"),
                        rate_err=[r["l0_thr_std"] for r in results], distortion_err=[r["recon_mse_std"] for r in results],
                        xlabel=f"L0: latent units per image with |z| > {THRESHOLD}", ylabel="test MSE per pixel",
                        title=f"Sparse AE (L1): test MSE vs L0 (|z| > {THRESHOLD}), mean ± std over seeds")
  common.loss_curves([(workdir, s) for s in range(config.num_seeds)], os.path.join(args.out, "loss_curves.png"),
                     "Sparse AE: train and held-out loss per λ, mean ± std over seeds")
  common.write_csv(os.path.join(args.out, "results.csv"), ["weight", "seed", "recon_mse", "l0", "l0_thr", "mean_abs"],
                   [[r["weight"], s["seed"], s["recon_mse"], s["l0"], s["l0_thr"], s["mean_abs"]]
                    for r in results for s in r["per_seed"]])
  text = (f"MNIST test set ({len(test)} images), d=32, one program for {len(weights)} weights x {config.num_seeds} "
          f"seeds. L0: nonzero units per image; L0(|z|>{THRESHOLD}): units above the threshold.\n\n"
          + common.markdown_table(["λ (L1 weight)", "seeds", "test MSE", "L0", f"L0 (|z|>{THRESHOLD})", "mean |z|"], rows))
  common.write_results(args.out, "Sparse autoencoder: L1 weight sweep", [text], {"weights": results}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
