"""Reads jaxae's SAELens export back with SAELens itself and compares codes and reconstructions.

SAELens (with transformer-lens, datasets, ...) is not a jaxae dependency and may need its own virtual
environment, so this runs in two steps, each with only its own side's imports:

  # 1. jaxae's environment: export every member and write jaxae's codes and reconstructions of a sample
  python -m experiments.saelens_check dump --workdir=runs/sae --sample='npy:acts/*.npy' --out=/tmp/check
  # 2. an environment with sae-lens (pip install sae-lens torch): load each folder with SAE.load_from_disk
  python experiments/saelens_check.py check --out=/tmp/check

Step 2 prints, per member, the largest absolute difference of the codes and reconstructions on the raw
sample (the run's normalization is folded into the exported weights) and whether the active latents
agree; it exits 1 when any difference exceeds --tol. A transcoder's reconstruction is of its target, in
the target's raw units, and is SAELens's forward() (which adds a skip transcoder's x @ W_skip.T).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def dump(args) -> int:
  import jaxae
  from jaxae import analysis, export
  from jaxae import data as data_lib

  folders = export.export_saelens(args.workdir, os.path.join(args.out, "saelens"))
  x = np.asarray(data_lib.load_source(args.sample).x[: args.rows], np.float32)
  np.save(os.path.join(args.out, "x.npy"), x)
  manifest = []
  for folder in folders:
    meta = json.load(open(os.path.join(folder, "cfg.json")))["metadata"]
    run = jaxae.load_run(meta["jaxae_workdir"])
    i = next(j for j, m in enumerate(run.members) if m["seed"] == meta["jaxae_seed"] and m["setting"] == meta["jaxae_setting"])
    params = analysis.member_params(run.params, i)
    z = analysis.encode(run.model, params, x, run.config)
    x_hat = analysis.reconstruct(run.model, params, x, run.config)
    out_normalizer = run.model.normalizer if run.model.target is None else run.model.target.normalizer
    if out_normalizer is not None:  # back to raw units (a transcoder's: its target's)
      x_hat = x_hat * out_normalizer.scale + out_normalizer.offset
    name = f"member{len(manifest)}"
    np.save(os.path.join(args.out, f"{name}_z.npy"), z)
    np.save(os.path.join(args.out, f"{name}_x_hat.npy"), x_hat)
    manifest.append({"folder": folder, "name": name})
  json.dump(manifest, open(os.path.join(args.out, "manifest.json"), "w"), indent=1)
  print(f"exported {len(folders)} member(s); reference outputs in {args.out}")
  return 0


def check(args) -> int:
  import torch
  from sae_lens import SAE

  manifest = json.load(open(os.path.join(args.out, "manifest.json")))
  x = torch.from_numpy(np.load(os.path.join(args.out, "x.npy")))
  worst = 0.0
  for entry in manifest:
    sae = SAE.load_from_disk(entry["folder"], device="cpu")
    with torch.no_grad():
      z = sae.encode(x)
      x_hat = sae.decode(z)
      if "transcoder" in sae.cfg.architecture():  # forward() adds a skip transcoder's x @ W_skip.T
        x_hat = sae.forward(x)
        x_hat = x_hat[0] if isinstance(x_hat, tuple) else x_hat
    z_ref = np.load(os.path.join(args.out, f"{entry['name']}_z.npy"))
    x_ref = np.load(os.path.join(args.out, f"{entry['name']}_x_hat.npy"))
    dz, dx = float(np.abs(z.numpy() - z_ref).max()), float(np.abs(x_hat.numpy() - x_ref).max())
    same = bool(np.array_equal(z.numpy() > 0, z_ref > 0))
    worst = max(worst, dz, dx)
    print(f"{entry['folder']}: {type(sae).__name__}, max |dz| {dz:.2e}, max |dx_hat| {dx:.2e} "
          f"(|x_hat| up to {np.abs(x_ref).max():.3g}), same active latents: {same}")
  return 0 if worst <= args.tol else 1


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("step", choices=("dump", "check"))
  p.add_argument("--out", required=True, help="folder for the export and the reference outputs")
  p.add_argument("--workdir", default="", help="dump: the jaxae run")
  p.add_argument("--sample", default="", help="dump: inputs to compare on, a data.source ('npy:acts/*.npy')")
  p.add_argument("--rows", type=int, default=1000, help="dump: rows of the sample")
  p.add_argument("--tol", type=float, default=1e-4, help="check: largest absolute difference accepted")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  return dump(args) if args.step == "dump" else check(args)


if __name__ == "__main__":
  sys.exit(main())
