"""Study 5: the variational autoencoder (Kingma & Welling 2014) and the beta-VAE trade-off (Higgins et al. 2017).

configs/vae.py (MLP, d=32, Bernoulli decoder) trained for beta in {0.1, 0.5, 1, 2, 4, 8} x seeds in one
program (`config.sweep`). Reported on the MNIST test set, in nats per image:
  - the importance-sampled -log p(x) (Burda et al. 2016, eq. 8; `jaxae.evaluate`, --num_samples K);
  - the negative ELBO E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) (Kingma & Welling 2014, eq. 10) from the
    same K samples, recomputed from the loaded params and checked against the training program's own
    evaluation (one sample per image);
  - the reconstruction term and the KL for every beta (large beta: posterior collapse);
  - active units (Burda et al. 2016, sec. 5.2): unit j is active when Var_x(E_q[z_j | x]) > 0.01 over
    the whole test set.
Figures: the rate-distortion curve over beta, samples decoded from the prior, an interpolation.

  python -m experiments.vae --out=out/vae [--smoke] [--seeds=N] [--epochs=30] [--num_samples=100]
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

import jaxae
from experiments import common
from jaxae import analysis, evaluate, plots
from jaxae import data as data_lib

BETAS = (0.1, 0.5, 1, 2, 4, 8)
SMOKE_BETAS = (0.5, 1, 8)
ACTIVE_THRESHOLD = evaluate.ACTIVE_THRESHOLD


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=30)
    p.add_argument("--num_samples", type=common.count, default=100, help="K of the importance-sampled log-likelihood")

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  config = common.protocol(common.load_config("vae"), args, epochs=args.epochs)
  betas = SMOKE_BETAS if args.smoke else BETAS
  config.sweep = json.dumps({"loss.beta": list(betas)})
  workdir = os.path.join(args.out, "runs", "vae_beta")
  common.ensure_trained(config, workdir)
  test = common.test_split(args)
  summary = common.read_summary(workdir)
  # Every member at once (jaxae.evaluate): K-sample ELBO terms and the importance-sampled log-likelihood.
  run = jaxae.load_run(workdir)
  k = 16 if args.smoke else args.num_samples
  ev = evaluate.evaluate_run(run, evaluate.Options(num_samples=k, probes=False), quiet=True)
  assert ev["num_examples"] == len(test)
  results, rows, csv_rows = [], [], []
  keys = ("nll", "neg_elbo", "recon_nll", "kl", "active_units")
  for g, beta in enumerate(betas):
    entry = ev["settings"][g]
    assert entry["setting"]["loss.beta"] == beta
    seeds = entry["seeds"]
    per_seed = [dict({key: entry["eval"][key]["per_seed"][j] for key in keys}, seed=seed) for j, seed in enumerate(seeds)]
    if beta == 1:
      i = next(j for j, m in enumerate(run.members) if m["setting_index"] == g)
      params = analysis.member_params(run.params, i)
      model = run.variant.latent_model(run.config, run.model)
      z = np.asarray(model.sample_prior(jax.random.key(0), (64, run.config.model.latent_dim)))
      prior = evaluate.decode(run.model, params, z)
      plots.image_grid(prior.reshape(8, 8, *prior.shape[1:]), os.path.join(args.out, "prior_samples.png"),
                       title="VAE (beta=1): decoded means of z ~ N(0, I)")
      a, b = (int(np.flatnonzero(test.labels == c)[0]) for c in (2, 9))
      mean = ev["_arrays"]["codes"][i]
      rows_ = [evaluate.decode(run.model, params, path(mean[a], mean[b], 10)) for path in (evaluate.lerp, evaluate.slerp)]
      plots.image_rows([data_lib.to_float(test.x[[a, b]])] + rows_, ["test digits", "straight line", "spherical"],
                       os.path.join(args.out, "vae_interpolation.png"), title="VAE (beta=1): interpolation of E_q[z|x]")
    program = {key: summary["settings"][g]["eval"][key]["per_seed"] for key in ("neg_elbo", "recon_nll", "kl")}
    stats = {key: common.mean_std([r[key] for r in per_seed]) for key in keys}
    results.append({"beta": beta, "per_seed": per_seed, "program_eval": program,
                    **{f"{key}_mean": v[0] for key, v in stats.items()}, **{f"{key}_std": v[1] for key, v in stats.items()}})
    rows.append([beta, len(seeds)] + [common.fmt(*stats[key], 2) for key in ("nll", "neg_elbo", "recon_nll", "kl")]
                + [common.fmt(*stats["active_units"], 1)])
    csv_rows += [[beta, r["seed"]] + [r[key] for key in keys] for r in per_seed]
  plots.rate_distortion([r["kl_mean"] for r in results], [r["recon_nll_mean"] for r in results],
                        [f"β={r['beta']}" for r in results], os.path.join(args.out, "beta_tradeoff.png"),
                        rate_err=[r["kl_std"] for r in results], distortion_err=[r["recon_nll_std"] for r in results],
                        title="β-VAE on MNIST test: reconstruction vs KL (mean ± std over seeds)")
  plots.metric_vs_value(betas, [r["active_units_mean"] for r in results], [r["active_units_std"] for r in results],
                        os.path.join(args.out, "active_units.png"), "β", "active units (of 32)")
  records = common.merged_records([(workdir, None)])
  plots.loss_curves(*records, os.path.join(args.out, "loss_curves.png"), metric="neg_elbo",
                    title="VAE: train and held-out -ELBO (nats), mean ± std over seeds, per β")
  common.write_csv(os.path.join(args.out, "results.csv"), ["beta", "seed", *keys], csv_rows)
  text = (f"MNIST test set ({len(test)} images), nats per image. -log p(x): importance-sampled with K={k} samples of "
          f"q(z|x) (Burda et al. 2016, eq. 8); -ELBO, reconstruction and KL from the same K samples; the -ELBO is the "
          f"beta=1 bound (reconstruction + KL) whatever beta trained the model. Active units: Var_x(E_q[z_j|x]) > "
          f"{ACTIVE_THRESHOLD} over the whole test set (Burda et al. 2016).\n\n"
          + common.markdown_table(["β", "seeds", "-log p(x)", "-ELBO", "E_q[-log p(x\\|z)]", "KL", "active units (of 32)"],
                                  rows))
  common.write_results(args.out, "Study 5: VAE and the β trade-off", [text], {"betas": results}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
