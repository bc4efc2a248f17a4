"""Study 5: the variational autoencoder (Kingma & Welling 2014) and the beta-VAE trade-off (Higgins et al. 2017).

configs/vae.py (MLP, d=32, Bernoulli decoder) trained for beta in {0.1, 0.5, 1, 2, 4, 8} x seeds in one
program (`config.sweep`). Reported on the MNIST test set, in nats per image:
  - the negative ELBO E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)) (Kingma & Welling 2014, eq. 10; one
    sample z per image), recomputed here from the loaded params and checked against the training
    program's own evaluation;
  - the reconstruction term and the KL for every beta (large beta: posterior collapse);
  - active units (Burda et al. 2016, sec. 5.2): unit j is active when Var_x(E_q[z_j | x]) > 0.01 over
    the whole test set.
Figures: the rate-distortion curve over beta, samples decoded from the prior, an interpolation.

  python -m experiments.vae --out=out/vae [--smoke] [--seeds=N] [--epochs=30]
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

import jaxae
from experiments import common
from jaxae import analysis, losses, plots
from jaxae import data as data_lib

BETAS = (0.1, 0.5, 1, 2, 4, 8)
SMOKE_BETAS = (0.5, 1, 8)
ACTIVE_THRESHOLD = 0.01


def negative_elbo(model, params, images, key, batch_size: int = 1000) -> dict:
  """Test-set means of -ELBO, reconstruction NLL and KL in nats per image (one z ~ q(z|x) per image)."""
  mean, log_var = analysis.posterior(model, params, images)
  z = np.asarray(losses.reparameterize(key, mean, log_var))
  logits = analysis.decode_logits(model, params, z)
  x = data_lib.to_float(images)
  nll = np.concatenate([[float(losses.bce_with_logits(logits[i:i + batch_size], x[i:i + batch_size]))]
                        * len(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).mean()
  kl = float(np.asarray(losses.kl_per_unit(mean, log_var)).sum(-1).mean())
  return {"neg_elbo": float(nll + kl), "recon_nll": float(nll), "kl": kl}


def active_units(mean: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
  """Number of units j with Var_x(E_q[z_j | x]) > threshold over the given images (Burda et al. 2016)."""
  return int(np.sum(np.var(mean, axis=0) > threshold))


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=int, default=30)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  config = common.protocol(common.load_config("vae"), args, epochs=args.epochs)
  betas = SMOKE_BETAS if args.smoke else BETAS
  config.sweep = json.dumps({"loss.beta": list(betas)})
  workdir = os.path.join(args.out, "runs", "vae_beta")
  common.ensure_trained(config, workdir)
  with open(os.path.join(workdir, "members.json")) as f:
    members = json.load(f)
  test = common.test_split(args)
  summary = common.read_summary(workdir)
  results, rows, csv_rows = [], [], []
  for g, beta in enumerate(betas):
    seeds = [m["seed"] for m in members if m["setting_index"] == g]
    per_seed = []
    for seed in seeds:
      run = jaxae.load_run(workdir, seed=seed, setting=g)
      assert run.members[0]["setting"]["loss.beta"] == beta
      ours = negative_elbo(run.model, run.params, test.x, jax.random.key(1000 + seed))
      mean, _ = analysis.posterior(run.model, run.params, test.x)
      ours["active_units"] = active_units(mean)
      per_seed.append(dict(ours, seed=seed))
      if beta == 1 and seed == seeds[0]:
        rng = np.random.default_rng(0)
        prior = analysis.decode(run.model, run.params, rng.standard_normal((64, mean.shape[1])).astype(np.float32), run.config)
        plots.image_grid(prior.reshape(8, 8, *prior.shape[1:]), os.path.join(args.out, "prior_samples.png"),
                         title="VAE (beta=1): decoded means of z ~ N(0, I)")
        a, b = (int(np.flatnonzero(test.labels == c)[0]) for c in (2, 9))
        t = np.linspace(0, 1, 10)[:, None]
        line = analysis.decode(run.model, run.params, ((1 - t) * mean[a] + t * mean[b]).astype(np.float32), run.config)
        plots.image_rows([data_lib.to_float(test.x[[a, b]]), line], ["test digits", "posterior-mean line"],
                         os.path.join(args.out, "vae_interpolation.png"), title="VAE (beta=1): interpolation of E_q[z|x]")
    entry = summary["settings"][g]
    program = {k: entry["eval"][k]["per_seed"] for k in ("neg_elbo", "recon_nll", "kl")}
    stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("neg_elbo", "recon_nll", "kl", "active_units")}
    results.append({"beta": beta, "per_seed": per_seed, "program_eval": program,
                    **{f"{k}_mean": v[0] for k, v in stats.items()}, **{f"{k}_std": v[1] for k, v in stats.items()}})
    rows.append([beta, len(seeds)] + [common.fmt(*stats[k], 2) for k in ("neg_elbo", "recon_nll", "kl")]
                + [common.fmt(*stats["active_units"], 1)])
    csv_rows += [[beta, r["seed"], r["neg_elbo"], r["recon_nll"], r["kl"], r["active_units"]] for r in per_seed]
  plots.rate_distortion([r["kl_mean"] for r in results], [r["recon_nll_mean"] for r in results],
                        [f"β={r['beta']}" for r in results], os.path.join(args.out, "beta_tradeoff.png"),
                        rate_err=[r["kl_std"] for r in results], distortion_err=[r["recon_nll_std"] for r in results],
                        title="β-VAE on MNIST test: reconstruction vs KL (mean ± std over seeds)")
  plots.metric_vs_value(betas, [r["active_units_mean"] for r in results], [r["active_units_std"] for r in results],
                        os.path.join(args.out, "active_units.png"), "β", "active units (of 32)")
  records = common.merged_records([(workdir, None)])
  plots.loss_curves(*records, os.path.join(args.out, "loss_curves.png"), metric="neg_elbo",
                    title="VAE: train and held-out -ELBO (nats), mean ± std over seeds, per β")
  common.write_csv(os.path.join(args.out, "results.csv"), ["beta", "seed", "neg_elbo", "recon_nll", "kl", "active_units"],
                   csv_rows)
  text = (f"MNIST test set ({len(test)} images), nats per image, one posterior sample per image; the -ELBO is the "
          f"beta=1 bound (reconstruction + KL) whatever beta trained the model. Active units: Var_x(E_q[z_j|x]) > "
          f"{ACTIVE_THRESHOLD} over the whole test set (Burda et al. 2016).\n\n"
          + common.markdown_table(["β", "seeds", "-ELBO", "E_q[-log p(x\\|z)]", "KL", "active units (of 32)"], rows))
  common.write_results(args.out, "Study 5: VAE and the β trade-off", [text], {"betas": results}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
