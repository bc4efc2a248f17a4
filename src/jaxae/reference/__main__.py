"""`python -m jaxae.reference --train --mnist_dir=DIR [--out=PATH]`: (re)trains the reference MNIST classifier."""

from __future__ import annotations

import argparse
import sys

from jaxae import reference


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxae.reference", description=__doc__.splitlines()[0])
  p.add_argument("--train", action="store_true", help="train on the 60k training set and write the weights")
  p.add_argument("--mnist_dir", default="../shared/data/mnist", help="MNIST IDX files (train and t10k)")
  p.add_argument("--out", default=reference.WEIGHTS)
  p.add_argument("--seed", type=int, default=reference.TRAIN_SEED)
  p.add_argument("--epochs", type=int, default=reference.EPOCHS)
  args = p.parse_args(argv)
  if not args.train:
    print(f"{reference.WEIGHTS}: recorded SHA-256 {reference.SHA256}")
    return 0
  r = reference.train(args.mnist_dir, args.out, args.seed, args.epochs)
  print(f"test accuracy {r['test_accuracy']:.4f} on the 10,000 MNIST test images; {r['bytes']} bytes; "
        f"{r['seconds']:.0f}s\nSHA-256 {r['sha256']} (record it as jaxae.reference.SHA256)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
