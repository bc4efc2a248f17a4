"""Study 7: a linear autoencoder recovers the principal subspace (Baldi & Hornik 1989; Bourlard & Kamp 1988).

A linear encoder and decoder with biases (`model.backbone='linear'`, identity output, MSE) trained on
the 5,000 embedded images. Its minima span the top-h principal subspace of the centred data, but its
weights need not be the principal directions, so the spans are compared: principal angles (Bjorck &
Golub 1973) between the decoder's column space {decode(e_i) - decode(0)} and the top-h right singular
vectors of the centred training matrix, computed two ways (scipy.linalg.subspace_angles; QR + SVD of
Q_ae^T Q_pca). Also its held-out MSE against PCA's (the optimum for any rank-h linear map).

  python -m experiments.pca --out=out/pca [--smoke] [--latent=10] [--epochs=200] [--lr=3e-3]
"""

from __future__ import annotations

import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import jaxae  # noqa: E402
from experiments import common  # noqa: E402
from jaxae import analysis  # noqa: E402
from jaxae import data as data_lib  # noqa: E402


def pca_basis(x: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean (D,), top-h principal directions (D, h) orthonormal, all singular values) of rows x (N, D)."""
  mean = x.mean(axis=0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:h].T, s


def decoder_span(run) -> np.ndarray:
  """(D, h): decode(e_i) - decode(0) for each latent unit i, the columns of the decoder's linear map."""
  h = run.config.model.latent_dim
  z = np.concatenate([np.zeros((1, h)), np.eye(h)]).astype(np.float32)
  out = analysis.decode(run.model, run.params, z, run.config).reshape(h + 1, -1).astype(np.float64)
  return (out[1:] - out[0]).T


def angles_qr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Principal angles (radians, ascending) between span(a) and span(b): arccos of the singular values of Qa^T Qb."""
  qa, _ = np.linalg.qr(a)
  qb, _ = np.linalg.qr(b)
  cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
  return np.sort(np.arccos(np.clip(cos, -1.0, 1.0)))


def angles_scipy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Principal angles (radians, ascending) by scipy.linalg.subspace_angles (sine-based for small angles)."""
  return np.sort(scipy.linalg.subspace_angles(a, b))


def pca_mse(x_train, x_test, h: int) -> float:
  """Per-pixel MSE on x_test (N, D) of the projection onto the top-h principal subspace of x_train."""
  mean, v, _ = pca_basis(x_train, h)
  recon = (x_test - mean) @ v @ v.T + mean
  return float(np.mean(np.square(recon - x_test)))


def main(argv=None):
  def flags(p):
    p.add_argument("--latent", type=common.count, default=10)
    p.add_argument("--epochs", type=common.count, default=200)
    p.add_argument("--lr", type=float, default=3e-3)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  config = common.protocol(common.load_config("vanilla"), args, epochs=args.epochs, eval_every=max(1, args.epochs // 10))
  config.model.backbone = "linear"
  config.model.output = "identity"
  config.model.latent_dim = args.latent
  config.optimizer.learning_rate = args.lr
  config.optimizer.schedule = "cosine"  # a decaying step lets Adam settle into the subspace
  if args.smoke:
    config.train.epochs = 5
  pairs = common.train_seeds(config, os.path.join(args.out, "runs", "linear"))
  train = common.train_split(config)
  test = common.test_split(args)
  x_tr = data_lib.to_float(train.x).reshape(len(train), -1).astype(np.float64)
  x_te = data_lib.to_float(test.x).reshape(len(test), -1).astype(np.float64)
  h = args.latent
  _, v_pca, s = pca_basis(x_tr, h)
  pca_test = pca_mse(x_tr, x_te, h)
  per_seed = []
  for workdir, seed in pairs:
    run = jaxae.load_run(workdir, seed=seed)
    span = decoder_span(run)
    a_qr, a_sp = angles_qr(span, v_pca), angles_scipy(span, v_pca)
    recon = analysis.reconstruct(run.model, run.params, test.x, run.config).reshape(len(test), -1)
    per_seed.append({"seed": seed, "angles_deg_qr": np.degrees(a_qr), "angles_deg_scipy": np.degrees(a_sp),
                     "max_angle_deg": float(np.degrees(a_sp[-1])), "mean_angle_deg": float(np.degrees(a_sp).mean()),
                     "ae_test_mse": float(np.mean(np.square(recon - x_te))),
                     "ae_test_mse_program": common.member_values([(workdir, seed)], "eval", "recon_mse")[0]})
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for r in per_seed:
    ax.plot(np.arange(1, h + 1), r["angles_deg_scipy"], marker="o", label=f"seed {r['seed']}")
  ax.set_xlabel("principal angle index")
  ax.set_ylabel("angle (degrees)")
  ax.set_title(f"linear AE (h={h}) decoder span vs top-{h} PCA subspace", fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.savefig(os.path.join(args.out, "principal_angles.png"), dpi=150, bbox_inches="tight")
  plt.close(fig)
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves.png"), f"linear AE h={h}: train and held-out MSE")
  stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("max_angle_deg", "mean_angle_deg", "ae_test_mse")}
  rows = [[r["seed"], f"{r['mean_angle_deg']:.2f}", f"{r['max_angle_deg']:.2f}", f"{r['ae_test_mse']:.5f}", f"{pca_test:.5f}"]
          for r in per_seed]
  rows.append(["mean ± std", common.fmt(*stats["mean_angle_deg"], 2), common.fmt(*stats["max_angle_deg"], 2),
               common.fmt(*stats["ae_test_mse"], 5), f"{pca_test:.5f}"])
  gap = float(s[h - 1] / s[h])
  text = (f"h={h}, {config.train.epochs} epochs, Adam lr {args.lr} with cosine decay, batch {config.train.batch_size}; "
          f"{len(train)} training / {len(test)} test images. Singular-value ratio s_h/s_(h+1) = {gap:.3f} (a small gap "
          f"makes the last direction slow to learn).\n\n"
          + common.markdown_table(["seed", "mean principal angle (°)", "largest principal angle (°)",
                                   "AE held-out MSE", "PCA held-out MSE"], rows))
  common.write_csv(os.path.join(args.out, "results.csv"), ["seed"] + [f"angle_{i + 1}_deg" for i in range(h)] + ["ae_test_mse", "pca_test_mse"],
                   [[r["seed"], *r["angles_deg_scipy"], r["ae_test_mse"], pca_test] for r in per_seed])
  common.write_results(args.out, "Study 7: linear autoencoder vs PCA", [text],
                       {"latent": h, "pca_test_mse": pca_test, "singular_value_gap": gap, "per_seed": per_seed,
                        **{f"{k}_mean": v[0] for k, v in stats.items()}, **{f"{k}_std": v[1] for k, v in stats.items()}},
                       started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
