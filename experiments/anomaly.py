"""Study 14: anomaly detection on a real table: an autoencoder trained on benign tumours only, scored by
its per-example reconstruction error on held-out benign and malignant ones, next to IsolationForest and PCA.

Data: the Wisconsin Diagnostic Breast Cancer table bundled with scikit-learn (`load_breast_cancer`:
569 fine-needle aspirates, 30 features of cell nuclei; 357 benign, 212 malignant; Street, Wolberg &
Mangasarian 1993), written as `csv:` sources with a header and a `malignant` column (the label column,
never an input). A random 60% of the benign cases (seed 0) is the training set; the
held-out set is the other 40% of benign cases and every malignant one. Features are standardized with
the training split's statistics (`data.normalize=standardize`); the anomaly score of an example is its
mean squared reconstruction error in those units (Japkowicz et al. 1995; Sakurada & Yairi 2014), and the
score is judged by the ROC-AUC of malignant vs held-out benign (scikit-learn's roc_auc_score). All seeds
train in one pass. On the same split: IsolationForest (Liu, Ting & Zhou 2008; scikit-learn defaults,
one forest per seed, score = -score_samples) and the reconstruction error of PCA with as many
components as the latent (fit on the standardized benign training rows; deterministic).

  python -m experiments.anomaly --out=out/anomaly [--smoke] [--seeds=5] [--epochs=300] [--latent=4]
"""

from __future__ import annotations

import csv
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxae  # noqa: E402
from experiments import common  # noqa: E402
from jaxae import analysis  # noqa: E402
from jaxae import data as data_lib  # noqa: E402

TRAIN_FRACTION = 0.6  # of the benign cases
LABEL = "malignant"


def table() -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(features float64 (569, 30), malignant int32 (569,) 1 = malignant, feature names)."""
  from sklearn.datasets import load_breast_cancer

  d = load_breast_cancer()
  return d.data, (d.target == 0).astype(np.int32), [str(n) for n in d.feature_names]  # sklearn: 0 = malignant


def split_index(malignant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(train, held-out) row indices: 60% of the benign rows (seed 0); the rest of them and every malignant row."""
  benign = np.random.default_rng(0).permutation(np.flatnonzero(malignant == 0))
  n = int(round(TRAIN_FRACTION * len(benign)))
  return np.sort(benign[:n]), np.sort(np.concatenate([benign[n:], np.flatnonzero(malignant == 1)]))


def write_csv(path: str, x: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
  """A header row, then the features (repr of float64: read back exactly) and the label column."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(names + [LABEL])
    w.writerows([[repr(float(v)) for v in row] + [int(label)] for row, label in zip(x, labels)])


def write_sources(root: str) -> tuple[str, str]:
  """root/train.csv (benign) and root/heldout.csv; returns (source, eval_source)."""
  x, malignant, names = table()
  os.makedirs(root, exist_ok=True)
  out = []
  for name, idx in zip(("train", "heldout"), split_index(malignant)):
    path = os.path.join(root, f"{name}.csv")
    write_csv(path, x[idx], malignant[idx], names)
    out.append(f"csv:{path}")
  return out[0], out[1]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  from sklearn.metrics import roc_auc_score

  return float(roc_auc_score(positive, scores))


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Every array scaled with the training rows' mean and std (ddof 0), as data.normalize=standardize."""
  mean, std = train.mean(axis=0), train.std(axis=0)
  return [(a - mean) / std for a in (train, *others)]


def pca_scores(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
  """Per-example mean squared error of the rank-k PCA reconstruction (fit on standardized train) of test."""
  from sklearn.decomposition import PCA

  train_s, test_s = standardize(train, test)
  pca = PCA(n_components=k).fit(train_s)
  return np.mean(np.square(pca.inverse_transform(pca.transform(test_s)) - test_s), axis=1)


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
  """-score_samples of a default IsolationForest (higher = more anomalous), one forest per seed."""
  from sklearn.ensemble import IsolationForest

  return -IsolationForest(random_state=seed).fit(train).score_samples(test)


def config_for(source: tuple[str, str], args):
  config = common.load_config("vanilla")
  config.data.source, config.data.eval_source = source
  config.data.label_column = LABEL
  config.data.normalize = "standardize"
  config.model.output = "identity"  # standardized features are not in [0, 1]
  config.model.hidden = (16, 8)
  config.model.latent_dim = args.latent
  config.num_seeds = args.seeds
  config.train.batch_size = 32
  config.train.epochs = args.epochs
  config.train.eval_every = max(1, args.epochs // 10)
  config.train.progress = False
  config.checkpoint.every_epochs = args.epochs
  if args.smoke:
    config.train.figures = False
  return config


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=300)
    p.add_argument("--latent", type=common.count, default=4)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  if args.smoke:
    args.epochs = 40
  started = time.perf_counter()
  source = write_sources(os.path.join(args.out, "data"))
  config = config_for(source, args)
  workdir = os.path.join(args.out, "runs", "autoencoder")
  pairs = common.train_seeds(config, workdir)
  train = data_lib.load_source(source[0], data_lib.options(config.data, "train"))
  held = data_lib.load_source(source[1], data_lib.options(config.data, "test"))
  positive = held.labels == 1
  per_seed = []
  for _, seed in pairs:
    run = jaxae.load_run(workdir, seed=seed)
    errors = analysis.squared_errors(run.model, run.params, held.x, run.config)  # standardized units
    score = errors.mean(axis=1)
    forest = isolation_forest_scores(train.x, held.x, seed)
    per_seed.append({"seed": seed, "ae_auc": roc_auc(score, positive), "forest_auc": roc_auc(forest, positive),
                     "ae_mse_benign": float(score[~positive].mean()), "ae_mse_malignant": float(score[positive].mean()),
                     "ae_mse_heldout": float(errors.mean()), "scores": score})
  pca = pca_scores(train.x, held.x, args.latent)
  pca_auc = roc_auc(pca, positive)
  program_mse = common.member_values(pairs, "eval", "recon_mse")
  stats = {k: common.mean_std([r[k] for r in per_seed]) for k in ("ae_auc", "forest_auc", "ae_mse_benign", "ae_mse_malignant")}
  _score_figure(per_seed[0]["scores"], pca, positive, os.path.join(args.out, "scores.png"))
  common.loss_curves(pairs, os.path.join(args.out, "loss_curves.png"), "breast cancer AE (benign only): train and held-out MSE")
  rows = [[f"autoencoder 30-16-8-{args.latent} (MSE, standardized)", len(per_seed), common.fmt(*stats["ae_auc"], 3),
           common.fmt(*stats["ae_mse_benign"], 3), common.fmt(*stats["ae_mse_malignant"], 3)],
          ["IsolationForest (100 trees)", len(per_seed), common.fmt(*stats["forest_auc"], 3), "-", "-"],
          [f"PCA reconstruction, {args.latent} components", "- (deterministic)", f"{pca_auc:.3f}",
           f"{pca[~positive].mean():.3f}", f"{pca[positive].mean():.3f}"]]
  text = (f"{len(train)} benign training rows; held out: {int((~positive).sum())} benign, {int(positive.sum())} malignant. "
          f"Autoencoder: {config.train.epochs} epochs, Adam 1e-3, batch {config.train.batch_size}, {len(per_seed)} seeds "
          f"in one program. ROC-AUC of malignant vs held-out benign (mean ± std over seeds); mean per-example squared error "
          f"(standardized units) on each held-out class.\n\n"
          + common.markdown_table(["method", "seeds", "ROC-AUC", "error, benign", "error, malignant"], rows))
  common.write_csv(os.path.join(args.out, "results.csv"), ["seed", "ae_auc", "forest_auc", "pca_auc"],
                   [[r["seed"], r["ae_auc"], r["forest_auc"], pca_auc] for r in per_seed])
  common.write_results(args.out, "Study 14: anomaly detection on the breast-cancer table", [text],
                       {"latent": args.latent, "num_train": len(train), "num_heldout_benign": int((~positive).sum()),
                        "num_malignant": int(positive.sum()), "pca_auc": pca_auc, "pca_scores": pca,
                        "program_eval_recon_mse": program_mse, "per_seed": per_seed,
                        **{f"{k}_mean": v[0] for k, v in stats.items()}, **{f"{k}_std": v[1] for k, v in stats.items()}},
                       started)
  print(open(os.path.join(args.out, "results.md")).read())


def _score_figure(ae, pca, positive, path) -> None:
  """Histograms of the anomaly scores of held-out benign and malignant cases (log x), AE seed 0 and PCA."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  for ax, scores, name in zip(axes, (ae, pca), ("autoencoder (first seed)", "PCA")):
    bins = np.geomspace(max(scores.min(), 1e-4), scores.max(), 40)
    ax.hist(scores[~positive], bins=bins, alpha=0.6, label="benign (held out)")
    ax.hist(scores[positive], bins=bins, alpha=0.6, label="malignant")
    ax.set_xscale("log")
    ax.set_xlabel("reconstruction error (standardized units)")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)
  fig.savefig(path, dpi=150, bbox_inches="tight")
  plt.close(fig)


if __name__ == "__main__":
  main()
