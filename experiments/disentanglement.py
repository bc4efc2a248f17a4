"""Study 18: disentanglement on the dSprites-like data, five models x seeds, and the spread over seeds.

Locatello et al. 2019 ("Challenging common assumptions in the unsupervised learning of disentangled
representations", sec. 5.2 and fig. 7) found that the random seed moves the disentanglement scores more than
the choice of model or of its weight. This study measures that spread with jaxae's own code, on
`data.source=dsprites` (the procedurally drawn dSprites-like set with its five factors: shape, scale,
orientation, posX, posY; 64x64 binary images, see `jaxae/sources/dsprites.py` for how it differs from
DeepMind's file):

  vae                 beta = 1 (Kingma & Welling 2014)
  beta_vae            beta = 4 (Higgins et al. 2017, their dSprites value)
  beta_vae_capacity   gamma |KL - C(t)|, C raised to 25 nats over 2/3 of the run (Burgess et al. 2018)
  beta_tcvae          beta = 6 on the total correlation, minibatch-stratified sampling (Chen et al. 2018)
  factor_vae          gamma = 10, a discriminator on permuted codes (Kim & Mnih 2018)

Every model has the same Gaussian encoder and Bernoulli decoder, an MLP 4096-`hidden`-10 (ReLU), 10 latent
units, Adam 1e-3 (the discriminator of factor_vae 1e-4), batch 64, `--epochs` epochs over `--max_train`
images drawn at random from the 90% training part of the 737,280; all `--seeds` seeds of a model in one
program. The scores come from `python -m jaxae.evaluate`'s `jaxae.disentanglement` on held-out images
(`--examples` codes scored, predictors fitted on as many training codes):

  mig                  mutual information gap (Chen et al. 2018, eq. 6; codes discretized into 20 bins)
  dci_*                disentanglement and completeness of the impurity importances of a random forest per
                       factor (10 trees, every unit at every split; jaxae's default, where disentanglement_lib
                       uses gradient-boosted trees), informativeness its held-out accuracy (Eastwood &
                       Williams 2018)
  sap                  separated attribute predictability (Kumar et al. 2018)
  factorvae_score      majority-vote accuracy of the lowest-variance unit (Kim & Mnih 2018, sec. 4)

The table gives mean ± std and [min, max] over seeds; the figure shows every seed's score, so the overlap of
the models' ranges (Locatello et al.'s point) can be seen. Far smaller than the papers' budget (300,000 steps
of a conv net on all images): read the numbers as a comparison at equal, small budget.

  python -m experiments.disentanglement --out=out/disentanglement [--smoke] [--seeds=5] [--epochs=10]
      [--max_train=60000] [--models=vae,beta_tcvae]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import jaxae
from experiments import common
from jaxae import configs, disentanglement, evaluate

# name: (built-in config, {dotted key: value} beyond the shared protocol)
MODELS = {
    "vae": ("vae", {"loss.beta": 1.0}),
    "beta_vae": ("vae", {"loss.beta": 4.0}),
    "beta_vae_capacity": ("beta_vae_capacity", {}),
    "beta_tcvae": ("beta_tcvae", {}),
    "factor_vae": ("factor_vae", {}),
}
TITLES = {"mig": "MIG", "dci_disentanglement": "DCI disent.", "dci_completeness": "DCI compl.",
          "dci_informativeness": "DCI inform.", "sap": "SAP", "factorvae_score": "FactorVAE score"}


def model_config(name: str, args):
  """The config of one model at this study's protocol."""
  base, overrides = MODELS[name]
  config = common.load_config(base)
  config.data.source = "dsprites"
  config.data.max_train = 512 if args.smoke else args.max_train
  config.data.max_eval = 400 if args.smoke else args.examples
  config.loss.reconstruction = "bce"
  config.model.backbone = "mlp"
  config.model.hidden = (32, 16) if args.smoke else tuple(args.hidden)
  config.model.latent_dim = 10
  config.optimizer.learning_rate = 1e-3
  config.train.batch_size = 64
  config.train.epochs = 1 if args.smoke else args.epochs
  config.train.eval_every = config.train.epochs
  config.train.progress = False
  config.train.figures = False
  config.num_seeds = args.seeds
  if base == "beta_vae_capacity":  # C reaches its maximum two thirds into the run, as in Burgess et al.
    steps = config.train.epochs * (config.data.max_train // config.train.batch_size)
    config.loss.capacity_steps = max(1, 2 * steps // 3)
  return configs.with_values(config, overrides)


def spread_figure(results: dict, path: str) -> str:
  """One panel per score: every seed of every model as a dot, the mean as a bar."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = list(disentanglement.KEYS)
  fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.4), sharey=False)
  names = list(results)
  rng = np.random.default_rng(0)
  for ax, key in zip(axes, keys):
    for i, name in enumerate(names):
      v = np.asarray(results[name]["per_seed"][key], float)
      ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=14, color=f"C{i}", zorder=3)
      ax.hlines(np.nanmean(v), i - 0.3, i + 0.3, color="black", lw=1.2)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_title(TITLES[key], fontsize=10)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle("Disentanglement scores of every seed (bar: mean) on the dSprites-like data", fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=10)
    p.add_argument("--max_train", type=common.count, default=60000, help="training images drawn from the 663,552")
    p.add_argument("--examples", type=common.count, default=10000, help="held-out codes scored (and training codes fitted)")
    p.add_argument("--hidden", type=common.count, nargs="+", default=[512, 256], help="the MLP's hidden widths")
    p.add_argument("--models", default="", help="comma-separated subset of: " + ",".join(MODELS))

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  names = common.chosen(args.models, MODELS)
  results = {}
  for name in names:
    config = model_config(name, args)
    workdir = os.path.join(args.out, "runs", name)
    common.ensure_trained(config, workdir)
    with open(os.path.join(workdir, "train_seconds.json")) as f:
      train_seconds = json.load(f)["seconds"]
    t = time.perf_counter()
    options = evaluate.Options(num_samples=0, figures=False, probes=False, generation_samples=0, gmm_components=0,
                               disentanglement_examples=400 if args.smoke else args.examples)
    ev = evaluate.evaluate_run(jaxae.load_run(workdir), options, quiet=True)
    entry = ev["settings"][0]
    per_seed = {k: [float(v) for v in entry["eval"][k]["per_seed"]] for k in disentanglement.KEYS}
    per_seed["heldout_loss"] = [float(v) for v in entry["eval"]["loss"]["per_seed"]] if "loss" in entry["eval"] else []
    results[name] = {"per_seed": per_seed, "seeds": entry["seeds"], "train_seconds": train_seconds,
                     "eval_seconds": time.perf_counter() - t, "config": dict(MODELS[name][1], base=MODELS[name][0])}
    print(f"{name}: trained in {train_seconds:.0f} s, scored in {results[name]['eval_seconds']:.0f} s: "
          + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in per_seed.items() if v), flush=True)

  header = ["model"] + [TITLES[k] for k in disentanglement.KEYS] + ["train s (all seeds)", "score s"]
  rows, csv_rows = [], []
  for name, r in results.items():
    row = [name]
    for key in disentanglement.KEYS:
      v = np.asarray(r["per_seed"][key], float)
      row.append(f"{common.fmt(*common.mean_std(v), 3)} [{np.nanmin(v):.2f}, {np.nanmax(v):.2f}]")
    rows.append(row + [f"{r['train_seconds']:.0f}", f"{r['eval_seconds']:.0f}"])
    for j, seed in enumerate(r["seeds"]):
      csv_rows.append([name, seed] + [r["per_seed"][k][j] for k in disentanglement.KEYS])
  # Locatello et al.'s question: does the model or the seed explain more of each score's variance?
  spread = []
  for key in disentanglement.KEYS:
    groups = [np.asarray(r["per_seed"][key], float) for r in results.values()]
    within = float(np.nanmean([np.nanvar(g, ddof=1) for g in groups if len(g) > 1])) if groups else float("nan")
    between = float(np.nanvar([np.nanmean(g) for g in groups], ddof=1)) if len(groups) > 1 else float("nan")
    spread.append([TITLES[key], f"{np.sqrt(between):.3f}", f"{np.sqrt(within):.3f}"])
  figure = spread_figure(results, os.path.join(args.out, "disentanglement_seeds.png"))
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "seed", *disentanglement.KEYS], csv_rows)
  some = next(iter(results.values()))
  text = (f"{len(some['seeds'])} seeds per model, {config.train.epochs} epochs on {config.data.max_train:,} dSprites-like "
          f"images, MLP 4096-{'-'.join(map(str, config.model.hidden))}-10, batch 64; scores on "
          f"{config.data.max_eval:,} held-out images. Mean ± std [min, max] over seeds.\n\n"
          + common.markdown_table(header, rows)
          + "\n\nSpread of each score: the standard deviation of the models' means (between models) against the "
            "mean within-model standard deviation over seeds:\n\n"
          + common.markdown_table(["score", "between models", "within a model (seeds)"], spread)
          + f"\n\nFigure: {os.path.basename(figure)}")
  common.write_results(args.out, "Study 18: disentanglement on the dSprites-like data", [text],
                       {"models": results, "spread": spread}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
