"""Study 6: sparsity of the latent code, and contraction of the encoder.

Sparse autoencoders (l1: MSE + 1e-3 mean|z|; top-k: keep the k=8 largest of d=32 units, Makhzani &
Frey 2014) against the vanilla d=32 model: L0 (units with |z_j| > 1e-6 per image), the fraction of
units above 0.1 in magnitude, and activation histograms over the MNIST test set. The contractive
autoencoder (Rifai et al. 2011, eq. 2: MSE + 1e-3 ||J_f(x)||_F^2) against a vanilla model trained on
the same (short, for CPU) schedule: the mean squared Frobenius norm of the encoder Jacobian on test
images, computed exactly with `jaxae.losses.contractive_penalty` (jax.jacrev).

  python -m experiments.sparse_contractive --out=out/sparse_contractive [--runs=out/bottleneck/runs]
      [--smoke] [--contractive_epochs=3] [--contractive_seeds=2]
"""

from __future__ import annotations

import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxae  # noqa: E402
from experiments import bottleneck, common  # noqa: E402
from jaxae import analysis, evaluate, losses  # noqa: E402
from jaxae import data as data_lib  # noqa: E402

L0_EPS = 1e-6
ACTIVE = 0.1
JACOBIAN_IMAGES = 1000


def sparsity_stats(z: np.ndarray) -> dict:
  """L0 per image (mean), fraction of units with |z| > 0.1, and units never above 0.1 ("dead")."""
  return {"l0": evaluate.code_statistics(z, eps=L0_EPS)["l0"],
          "frac_above_0.1": float(np.mean(np.abs(z) > ACTIVE)),
          "dead_units": int(np.sum(np.all(np.abs(z) <= ACTIVE, axis=0))),
          "mean_abs": float(np.mean(np.abs(z)))}


def jacobian_sq_norm(run, images, batch_size: int = 250) -> float:
  """Mean over images of ||J_f(x)||_F^2 via losses.contractive_penalty, in batches."""
  encode = lambda v: run.model.encode(run.params, v)
  x = data_lib.to_float(images)
  vals = [float(losses.contractive_penalty(encode, x[i:i + batch_size])) * len(x[i:i + batch_size])
          for i in range(0, len(x), batch_size)]
  return float(np.sum(vals) / len(x))


def main(argv=None):
  def flags(p):
    p.add_argument("--contractive_epochs", type=common.count, default=30, help="the exact Jacobian costs ~25x a vanilla step")
    p.add_argument("--contractive_seeds", type=common.count0, default=0, help="default --seeds")

  args = common.parse_args(__doc__.splitlines()[0], argv, runs=True, extra=flags)
  started = time.perf_counter()
  test = common.test_split(args)
  root = os.path.join(args.out, "runs")
  topk = common.protocol(common.load_config("sparse"), args)
  topk.loss.sparsity = "topk"
  topk.loss.topk = 8
  models = {"vanilla_d32": bottleneck.runs(args, "vanilla_d32", "flax"),
            "sparse_l1_d32": bottleneck.runs(args, "sparse_d32", "flax"),
            "sparse_topk8_d32": common.train_seeds(topk, os.path.join(root, "sparse_topk8_d32"))}
  stats, codes = {}, {}
  for name, pairs in models.items():
    per_seed = []
    for workdir, seed in pairs:
      run = jaxae.load_run(workdir, seed=seed)
      z = analysis.encode(run.model, run.params, test.x, run.config)
      per_seed.append(dict(sparsity_stats(z), seed=seed))
      codes.setdefault(name, z)
    stats[name] = per_seed
    common.loss_curves(pairs, os.path.join(args.out, "loss_curves", f"{name}.png"), f"{name}: train and held-out loss")

  fig, ax = plt.subplots(figsize=(6, 4))
  lim = max(float(np.percentile(np.abs(z), 99.9)) for z in codes.values())
  bins = np.linspace(-lim, lim, 121)
  for name, z in codes.items():
    ax.hist(z.ravel(), bins=bins, histtype="step", label=name, density=True)
  ax.set_yscale("log")
  ax.set_xlabel("latent activation z_j (all units, all test images)")
  ax.set_ylabel("density")
  ax.set_title("latent activations, first seed", fontsize=9)
  ax.legend(fontsize=7)
  fig.savefig(os.path.join(args.out, "activation_histograms.png"), dpi=150, bbox_inches="tight")
  plt.close(fig)

  # Contractive vs vanilla on the same schedule: the Jacobian norm grows with training, so compare like with like.
  n_jac = min(JACOBIAN_IMAGES, len(test))
  jac = {}
  c_seeds = args.contractive_seeds or args.seeds
  for name in ("contractive", "vanilla"):
    config = common.protocol(common.load_config(name), args, epochs=args.contractive_epochs,
                             eval_every=max(1, args.contractive_epochs // 3))
    config.num_seeds = c_seeds
    same = bottleneck.variant_config("vanilla_d32", "flax", args)
    if name == "vanilla" and common.configs.flatten(config) == common.configs.flatten(same):
      pairs = bottleneck.runs(args, "vanilla_d32", "flax")  # the same schedule as study 1: reuse it
    else:
      pairs = common.train_seeds(config, os.path.join(root, f"{name}_d32_{config.train.epochs}ep"))
    per_seed = []
    for workdir, seed in pairs:
      run = jaxae.load_run(workdir, seed=seed)
      per_image = analysis.encoder_jacobian_sq_norm(run.model, run.params, test.x[:4])
      per_seed.append({"seed": seed, "jacobian_sq_norm": jacobian_sq_norm(run, test.x[:n_jac]),
                       "first4_per_image": per_image,
                       "test_mse": common.member_values([(workdir, seed)], "eval", "recon_mse")[0]})
    jac[name] = per_seed
    common.loss_curves(pairs, os.path.join(args.out, "loss_curves", f"{name}_d32_{config.train.epochs}ep.png"),
                       f"{name} d=32 ({config.train.epochs} epochs): train and held-out loss")

  rows = []
  for name, per_seed in stats.items():
    cells = [common.fmt(*common.mean_std([r[k] for r in per_seed]), 3) for k in ("l0", "frac_above_0.1", "dead_units", "mean_abs")]
    rows.append([name, len(per_seed)] + cells)
  jrows = []
  for name, per_seed in jac.items():
    jrows.append([name, len(per_seed), args.contractive_epochs if not args.smoke else 1,
                  common.fmt(*common.mean_std([r["jacobian_sq_norm"] for r in per_seed]), 3),
                  common.fmt(*common.mean_std([r["test_mse"] for r in per_seed]), 4)])
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "seed", "l0", "frac_above_0.1", "dead_units", "mean_abs"],
                   [[n, r["seed"], r["l0"], r["frac_above_0.1"], r["dead_units"], r["mean_abs"]] for n, v in stats.items() for r in v])
  text = [f"Sparsity of the d=32 codes of {len(test)} MNIST test images (mean ± std over seeds). L0 counts units with "
          f"|z| > {L0_EPS:g}; the l1 model's latents are linear (no ReLU), so its L0 stays 32 and sparsity shows in the "
          f"magnitudes.\n",
          common.markdown_table(["model", "seeds", "L0 (units/image)", "fraction \\|z\\|>0.1", "units never >0.1", "mean \\|z\\|"], rows),
          f"\nMean squared Frobenius norm of the encoder Jacobian over {n_jac} test images (exact, jax.jacrev).\n",
          common.markdown_table(["model", "seeds", "epochs", "mean ‖J_f(x)‖²_F", "held-out MSE"], jrows)]
  common.write_results(args.out, "Study 6: sparse and contractive autoencoders", text,
                       {"sparsity": stats, "jacobian": jac, "jacobian_images": n_jac}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
