"""Study 8: what a 2-D code keeps about the digit class, with and without labels; a t-SNE map of a 20-D code.

Linear-probe accuracy (logistic regression fit on training codes, scored on test codes) of the vanilla
d=2 autoencoder against the supervised d=2 autoencoder (reconstruction + cross-entropy of a linear
classifier on the code, configs/supervised.py). Then a vanilla d=20 autoencoder's test codes embedded
in 2-D by sklearn's t-SNE (van der Maaten & Hinton 2008).

  python -m experiments.supervised --out=out/supervised [--runs=out/bottleneck/runs] [--smoke] [--tsne_points=5000]
"""

from __future__ import annotations

import os
import time

import numpy as np

import jaxae
from experiments import bottleneck, common
from jaxae import analysis, evaluate, plots


def main(argv=None):
  def flags(p):
    p.add_argument("--tsne_points", type=common.count, default=5000, help="test images embedded by t-SNE")
    p.add_argument("--ae20_seeds", type=common.count0, default=0, help="seeds of the d=20 model (default --seeds)")

  args = common.parse_args(__doc__.splitlines()[0], argv, runs=True, extra=flags)
  started = time.perf_counter()
  test = common.test_split(args)
  root = os.path.join(args.out, "runs")
  sup = common.protocol(common.load_config("supervised"), args)
  sup.model.latent_dim = 2
  if args.smoke:
    sup.train.epochs = 3  # enough steps for the classifier head to beat chance
  models = {"vanilla_d2": bottleneck.runs(args, "vanilla_d2", "flax"),
            "supervised_d2": common.train_seeds(sup, os.path.join(root, "supervised_d2"))}
  train = common.train_split(sup)
  results, rows = {}, []
  for name, pairs in models.items():
    per_seed = []
    for i, (workdir, seed) in enumerate(pairs):
      held_out = {"test_mse": "recon_mse", **({"head_accuracy": "accuracy"} if name.startswith("supervised") else {})}
      r, z_te = common.code_scores(workdir, seed, train, test, held_out)
      per_seed.append(r)
      if i == 0:
        plots.latent_scatter(z_te, test.labels, os.path.join(args.out, f"latent_scatter_{name}.png"),
                             f"{name}: codes of {len(z_te)} MNIST test images (seed {seed})")
    results[name] = per_seed
    common.loss_curves(pairs, os.path.join(args.out, "loss_curves", f"{name}.png"), f"{name}: train and held-out loss")
    stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("probe", "knn", "test_mse")}
    head = common.fmt(*common.mean_std([r["head_accuracy"] for r in per_seed])) if name.startswith("supervised") else "—"
    rows.append([name, len(per_seed), common.fmt(*stats["probe"]), common.fmt(*stats["knn"]), head,
                 common.fmt(*stats["test_mse"])])

  ae20 = common.protocol(common.load_config("vanilla"), args)
  ae20.model.latent_dim = 20
  ae20.num_seeds = args.ae20_seeds or (1 if args.smoke else args.seeds)
  pairs = common.train_seeds(ae20, os.path.join(root, "vanilla_d20"))
  run = jaxae.load_run(pairs[0][0], seed=pairs[0][1])
  n = min(args.tsne_points, len(test))
  z20 = analysis.encode(run.model, run.params, test.x[:n], run.config)
  emb, _ = evaluate.embed_2d(z20, "tsne")
  plots.latent_scatter(emb, test.labels[:n], os.path.join(args.out, "tsne_d20.png"),
                       f"t-SNE of the d=20 vanilla AE codes of {n} MNIST test images (seed {pairs[0][1]})")
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves", "vanilla_d20.png"), "vanilla d=20: train and held-out loss")
  np.savez_compressed(os.path.join(args.out, "tsne_d20.npz"), embedding=emb, labels=test.labels[:n])
  summary = {name: {k: common.mean_std([r[k] for r in v]) for k in ("probe", "knn")} for name, v in results.items()}
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "seed", "linear_probe", "knn5", "test_mse"],
                   [[n_, r["seed"], r["probe"], r["knn"], r["test_mse"]] for n_, v in results.items() for r in v])
  text = (f"Codes of {len(train)} training images fit the probes; accuracy on {len(test)} MNIST test images. "
          f"Mean ± std over seeds.\n\n"
          + common.markdown_table(["model", "seeds", "linear-probe accuracy", "5-NN accuracy",
                                   "classifier-head accuracy", "held-out MSE"], rows))
  common.write_results(args.out, "Study 8: unsupervised vs supervised 2-D codes; t-SNE of a 20-D code", [text],
                       {"per_seed": results, "summary": summary, "tsne_points": n}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
