"""The contractive penalty's exact Jacobian: `jax.jacrev` vs the structured MLP form, per train step.

    python -m benchmarks.contractive_jacobian [--rounds 7] [--seeds 1]

configs/contractive.py (MLP 784-512-256-32, batch 128) built by `jaxae.train.build` with
`loss.contractive_jacobian` = 'jacrev' and 'structured', train chunk AOT-compiled (compile seconds
apart), `train.steps_per_call=1`. Rounds alternate the methods, each round timing a window of 10
steps after the previous round; the table gives the median ms per step, and the penalties of both
methods on the same parameters and batch (they must agree to float rounding).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--seeds", type=int, default=1)
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.dirname(HERE))
  from benchmarks import common
  from jaxae import train
  from jaxae.variants import contractive

  info = common.machine()
  x, y = common.protocol_data()
  methods = ("jacrev", "structured")
  compiled, times, penalties = {}, {m: [] for m in methods}, {}
  for m in methods:
    config = common.load_config("contractive", **{"loss.contractive_jacobian": m, "train.steps_per_call": 1,
                                                  "num_seeds": args.seeds})
    compiled[m] = common.compile_program(config, x, y)
    net = compiled[m].model
    params = jax.tree.map(lambda a: a[0], compiled[m].state.params)
    xb = net.prepare(x[:128]) if hasattr(net, "prepare") else x[:128]
    penalties[m] = float(contractive.penalty_fn(config, net)(params, xb))
  for _ in range(args.rounds):
    for m in methods:
      times[m].append(common.time_window(compiled[m], x, y, args.steps, 1) / args.steps)
  info["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
  lines = [f"`python -m benchmarks.contractive_jacobian` (S = {args.seeds}) — " +
           ", ".join(f"{k}: {v}" for k, v in info.items()), "",
           "| loss.contractive_jacobian | ms per step (median) | min | compile s | penalty at init |", "|---|---|---|---|---|"]
  for m in methods:
    t = np.asarray(times[m]) * 1e3
    lines.append(f"| {m} | {np.median(t):.1f} | {t.min():.1f} | {compiled[m].compile_s:.1f} | {penalties[m]:.6g} |")
  ratio = np.median(times["jacrev"]) / np.median(times["structured"])
  lines += ["", f"jacrev / structured: {ratio:.2f}; relative penalty difference "
            f"{abs(penalties['jacrev'] - penalties['structured']) / abs(penalties['jacrev']):.1e}."]
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
