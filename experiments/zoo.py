"""Study 16: the generative-autoencoder zoo, every model on the same data, network and budget.

Each model trains with its built-in config (`configs/<name>.py`: its objective and weights) on one network,
the reference protocol's MLP 784-512-256-32 (ReLU, sigmoid outputs), Adam 1e-3, batch 128, `--epochs`
epochs on the 5,000 embedded MNIST training images (`--train_set=mnist`: the official 60,000, the published
tables' protocol), all `--seeds` seeds in one program per model. Every
number is on the official MNIST test set, from `jaxae.evaluate` (the same code a user runs):

  recon_mse      per-pixel MSE of the reconstruction of the code (the posterior mean for Gaussian encoders)
  -log p(x)      importance-sampled with K samples of q(z|x) (Burda et al. 2016, eq. 8; the flow's density for
                 vae_flow), in nats per image, for the models with a latent model; the gray-level test images
                 under each decoder's likelihood (Bernoulli: a cross-entropy, not a density of binarized data)
  -ELBO          from the same K samples
  Fréchet dist., precision, recall   of 2,000 samples against 2,000 test images in the feature space of jaxae's
                 reference MNIST classifier (jaxae.generation: Heusel et al. 2017 eq. 6; Kynkaenniemi et al. 2019,
                 k=3), not Inception FID and not comparable with Inception-based numbers
  probe          logistic regression on standardized codes (fit on the training codes)
  active units   Var_x(E[z_j|x]) > 0.01 (Burda et al. 2016, sec. 5.2)
  train s        wall time of the training program, all seeds together (this machine, 2 CPU cores)

A value in bold differs from the VAE's over seeds (Welch's t-test, p < 0.05). Samples of every model (its
prior, its code prior, or a 10-component GMM fitted to training codes, Ghosh et al. 2020) are drawn in
one figure.

  python -m experiments.zoo --out=out/zoo [--smoke] [--seeds=5] [--epochs=30] [--num_samples=100] [--models=vae,iwae]
      [--train_set=mnist]   # the official 60,000 training images in --mnist_dir instead of the embedded 5,000
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from scipy import stats

import jaxae
from experiments import common
from jaxae import analysis, configs, evaluate, plots

# name: {dotted config key: value} overrides beyond the shared network
MODELS = {
    "vanilla": {},
    "vae": {},
    "iwae": {},
    "beta_vae_capacity": {},
    "beta_tcvae": {},
    "factor_vae": {},
    "infovae": {},
    "vamp": {},
    "vae_flow": {},
    "wae": {},
    "rae": {},
    "aae": {},
    "vqvae": {},
}
COLUMNS = (("recon_mse", "test MSE", 4), ("nll", "-log p(x)", 1), ("neg_elbo", "-ELBO", 1),
           ("frechet_distance", "Fréchet dist.", 1), ("precision", "precision", 2), ("recall", "recall", 2),
           ("probe_accuracy", "probe", 3), ("active_units", "active units", 1))
REFERENCE = "vae"


def network(config, args) -> None:
  """The shared network: MLP 784-512-256-32 (the smoke run's 784-64-32-8)."""
  config.model.backbone = "mlp"
  config.model.hidden = (64, 32) if args.smoke else (512, 256)
  config.model.latent_dim = 8 if args.smoke else 32


def welch(a, b) -> float:
  """Two-sided p-value of Welch's t-test (unequal variances) between two sets of per-seed values."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if len(a) < 2 or len(b) < 2:
    return float("nan")
  return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=30)
    p.add_argument("--num_samples", type=common.count, default=100, help="K of the importance-sampled log-likelihood")
    p.add_argument("--max_examples", type=common.count0, default=0, help="test images evaluated (0: all 10,000)")
    p.add_argument("--models", default="", help="comma-separated subset of: " + ",".join(MODELS))
    p.add_argument("--train_set", choices=("embedded", "mnist"), default="embedded",
                   help="training images: the 5,000 embedded ones (study 16) or the official 60,000 in --mnist_dir "
                        "(study 19: the published tables' zoo on full MNIST)")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  names = common.chosen(args.models, MODELS)
  k = 16 if args.smoke else args.num_samples
  results, sample_rows, sample_labels = {}, [], []
  for name in names:
    config = common.protocol(common.load_config(name), args, epochs=args.epochs)
    network(config, args)
    if args.train_set == "mnist":
      config.data.source, config.data.split = f"idx:{args.mnist_dir}", "train"
    config = configs.with_values(config, MODELS[name])
    workdir = os.path.join(args.out, "runs", name)
    common.ensure_trained(config, workdir)
    with open(os.path.join(workdir, "train_seconds.json")) as f:
      train_seconds = json.load(f)["seconds"]
    run = jaxae.load_run(workdir)
    t = time.perf_counter()
    options = evaluate.Options(num_samples=k, figures=False, max_examples=500 if args.smoke else args.max_examples,
                               gmm_components=10)
    ev = evaluate.evaluate_run(run, options, quiet=True)
    eval_seconds = time.perf_counter() - t
    entry = ev["settings"][0]
    per_seed = {key: entry["eval"][key]["per_seed"] for key, _, _ in COLUMNS if key in entry["eval"]}
    results[name] = {"per_seed": per_seed, "seeds": entry["seeds"], "train_seconds": train_seconds,
                     "eval_seconds": eval_seconds, "variant": run.variant.name,
                     "reconstruction": run.config.loss.reconstruction}
    # Ten samples of the first seed: its prior, its code prior, or a GMM on its training codes.
    params = analysis.member_params(run.params, 0)
    model = run.variant.latent_model(run.config, run.model) if run.variant.latent_model else None
    codes = None
    if model is None and run.variant.code_prior is None:
      train = common.train_split(run.config)
      codes = evaluate.codes_and_errors(run.model, run.config, jax.tree.map(lambda a: a[:1], run.params),
                                        evaluate._prepared(run.model, train.x[:2000]))[0][0]
    drawn = evaluate.sample_codes(run.variant, run.config, model.bound(params) if model else None, 10,
                                  entry["seeds"][0], ev["_arrays"]["codes"].shape[2:], codes)
    if drawn is not None:
      sample_rows.append(evaluate.decode(run.model, params, drawn[0]))
      sample_labels.append(name)
    print(f"{name}: trained in {train_seconds:.0f} s, evaluated in {eval_seconds:.0f} s", flush=True)

  reference = results.get(REFERENCE)
  header = ["model", "likelihood"] + [title for _, title, _ in COLUMNS] + ["train s (all seeds)"]
  rows, csv_rows = [], []
  for name, r in results.items():
    row = [name, r["reconstruction"]]
    for key, _, digits in COLUMNS:
      values = r["per_seed"].get(key)
      if values is None:
        row.append("n/a")
        continue
      cell = common.fmt(*common.mean_std(values), digits)
      ref = reference["per_seed"].get(key) if reference is not None and name != REFERENCE else None
      r.setdefault("welch_p", {})[key] = welch(values, ref) if ref is not None else None
      if ref is not None and welch(values, ref) < 0.05:
        cell = f"**{cell}**"
      row.append(cell)
    row.append(f"{r['train_seconds']:.0f}")
    rows.append(row)
    for j, seed in enumerate(r["seeds"]):
      csv_rows.append([name, seed] + [r["per_seed"][key][j] if key in r["per_seed"] else "" for key, _, _ in COLUMNS])
  if sample_rows:
    plots.image_rows(sample_rows, sample_labels, os.path.join(args.out, "zoo_samples.png"),
                     "Samples of each model (seed 0): its prior, its code prior, or a GMM on its training codes")
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "seed", *(key for key, _, _ in COLUMNS)], csv_rows)
  n_test = 500 if args.smoke else (args.max_examples or 10000)
  trained_on = ("the official 60,000 MNIST training images" if args.train_set == "mnist" else
                "the embedded 5,000 MNIST images") + (" (256 of them)" if args.smoke else "")
  text = (f"{len(next(iter(results.values()))['seeds'])} seeds per model, {config.train.epochs} epochs on "
          f"{trained_on}, MLP 784-{'-'.join(map(str, config.model.hidden))}-{config.model.latent_dim}; "
          f"{n_test} MNIST test images; -log p(x) with K={k} importance samples, in nats. Mean ± std over seeds; "
          f"**bold**: differs from the VAE (Welch's t-test, p < 0.05).\n\n" + common.markdown_table(header, rows))
  title = "the generative-autoencoder zoo" + (" on full MNIST" if args.train_set == "mnist" else "")
  common.write_results(args.out, f"Study {19 if args.train_set == 'mnist' else 16}: {title}", [text], {"models": results}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
