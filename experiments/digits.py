"""Study 13: real data beyond MNIST through two sources: scikit-learn's 8x8 digits as an .npz and as PNGs.

The 1,797 handwritten digits bundled with scikit-learn (`sklearn.datasets.load_digits`: the UCI "Optical
Recognition of Handwritten Digits" test set, Alpaydin & Kaynak 1998; 8x8 images, 17 grey levels 0..16)
are written once as `npz:` files and once as a `folder:` of PNGs (one sub-folder per digit), with the same
stratified 80/20 train/test split, and an MLP and a conv autoencoder are trained from each source. The
two sources hold the same uint8 pixels (round(level * 255 / 16)) in the same order, so every metric must be
equal, to the last bit: the study raises if not. PCA with as many components as the latent is the
reference a linear code reaches.

  python -m experiments.digits --out=out/digits [--smoke] [--seeds=5] [--epochs=100] [--latent=10]
"""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from experiments import common
from experiments.pca import pca_mse
from jaxae import data as data_lib

LEVELS = 16  # load_digits' grey levels are 0..16
TEST_FRACTION = 0.2


def digits() -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (1797, 8, 8, 1) = round(level * 255 / 16), labels int32 (1797,)) in load_digits' order."""
  from sklearn.datasets import load_digits

  d = load_digits()
  images = np.round(d.images * (255.0 / LEVELS)).astype(np.uint8)[..., None]
  return images, d.target.astype(np.int32)


def split_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) indices: a stratified 20% test split (seed 0), each sorted by (label, index).

  Sorted as a `folder:` source reads its images (class folders in order, file names ascending), so the
  npz rows and the folder's images line up one to one.
  """
  train, test = data_lib.stratified_split(labels, TEST_FRACTION, seed=0)
  by_class = lambda idx: idx[np.lexsort((idx, labels[idx]))]
  return by_class(train), by_class(test)


def write_sources(root: str) -> dict[str, tuple[str, str]]:
  """Writes root/{train,test}.npz and root/png/{train,test}/<digit>/<index>.png; {kind: (source, eval_source)}."""
  images, labels = digits()
  os.makedirs(root, exist_ok=True)
  sources = {"npz": [], "folder": []}
  for name, idx in zip(("train", "test"), split_index(labels)):
    path = os.path.join(root, f"{name}.npz")
    np.savez(path, x=images[idx], y=labels[idx])
    for i in idx:
      folder = os.path.join(root, "png", name, str(labels[i]))
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(images[i, ..., 0]).save(os.path.join(folder, f"{i:04d}.png"))
    sources["npz"].append(f"npz:{path}")
    sources["folder"].append(f"folder:{os.path.join(root, 'png', name)}")
  return {k: tuple(v) for k, v in sources.items()}


def config_for(model: str, source: tuple[str, str], args):
  config = common.load_config("conv" if model == "conv" else "vanilla")
  config.data.source, config.data.eval_source = source
  config.data.channels = 1  # folder: PNGs are read as grayscale (npz: already one channel)
  config.num_seeds = args.seeds
  config.model.latent_dim = args.latent
  config.model.hidden = (128, 64)
  config.model.conv_channels = (16, 32)
  config.train.epochs = args.epochs
  config.train.eval_every = max(1, args.epochs // 10)
  config.train.progress = False
  if args.smoke:
    config.train.epochs, config.train.eval_every = 2, 1
    config.train.figures = False
  return config


def main(argv=None):
  def flags(p):
    p.add_argument("--epochs", type=common.count, default=100)
    p.add_argument("--latent", type=common.count, default=10)

  args = common.parse_args(__doc__.splitlines()[0], argv, extra=flags)
  started = time.perf_counter()
  sources = write_sources(os.path.join(args.out, "data"))
  results, rows = {}, []
  for model in ("mlp", "conv"):
    for kind, source in sources.items():
      config = config_for(model, source, args)
      pairs = common.train_seeds(config, os.path.join(args.out, "runs", f"{model}_{kind}"))
      results[model, kind] = {"seeds": [s for _, s in pairs], "test_mse": common.member_values(pairs, "eval", "recon_mse"),
                              "train_loss": common.member_values(pairs, "train", "loss")}
      if kind == "npz":
        common.loss_curves(pairs, os.path.join(args.out, f"loss_curves_{model}.png"),
                           f"{model} on sklearn digits: train and held-out MSE")
        figure = os.path.join(pairs[0][0], "figures", "reconstructions.png")
        if os.path.exists(figure):
          common.copy(figure, os.path.join(args.out, f"reconstructions_{model}.png"))
    for field in ("test_mse", "train_loss"):
      npz, folder = results[model, "npz"][field], results[model, "folder"][field]
      if not np.array_equal(npz, folder):
        raise AssertionError(f"{model}: {field} differs between the npz and folder sources: {npz} vs {folder}")
  train = data_lib.load_source(sources["npz"][0])
  test = data_lib.load_source(sources["npz"][1])
  flat = lambda s: data_lib.to_float(s.x).reshape(len(s), -1).astype(np.float64)
  pca = pca_mse(flat(train), flat(test), args.latent)
  for (model, kind), r in results.items():
    rows.append([model, kind, len(r["seeds"]), common.fmt(*common.mean_std(r["train_loss"])),
                 common.fmt(*common.mean_std(r["test_mse"]))])
  rows.append([f"PCA, {args.latent} components", "npz", "-", "-", f"{pca:.4f}"])
  text = (f"{len(train)} training / {len(test)} test digits (stratified, seed 0), 8x8 pixels in [0, 1]; latent d={args.latent}; "
          f"{config_for('mlp', sources['npz'], args).train.epochs} epochs, Adam 1e-3, batch 128, MSE of sigmoid outputs; "
          f"MLP 64-128-64-{args.latent}, conv 16-32 channels (stride 2) + dense bottleneck. npz and folder sources give "
          f"identical metrics for every seed (checked: equal to the last bit).\n\n"
          + common.markdown_table(["model", "source", "seeds", "train loss (last epoch)", "held-out MSE"], rows))
  common.write_csv(os.path.join(args.out, "results.csv"), ["model", "source", "seed", "test_mse", "train_loss"],
                   [[m, k, s, e, t] for (m, k), r in results.items()
                    for s, e, t in zip(r["seeds"], r["test_mse"], r["train_loss"])])
  common.write_results(args.out, "Study 13: scikit-learn digits through npz and folder sources", [text],
                       {"latent": args.latent, "pca_test_mse": pca, "num_train": len(train), "num_test": len(test),
                        "models": [{"model": m, "source": k, **r} for (m, k), r in results.items()]}, started)
  print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
  main()
