"""XLA:CPU compiler options side by side: ms per train step of each variant's real program.

  python -m benchmarks.xla_options [--variants=vanilla,vae] [--rounds=7]

Every (variant, option set) program is compiled first, then timed in interleaved rounds of one epoch
(39 steps, S = 1, steps_per_call = 0), so slow drifts of a shared machine hit every column alike.
Prints medians (ms per step) and the ratio default / option, as a markdown table. This is the
measurement behind `train.compiler_options` (the YNNPACK fusion choice for BCE objectives).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import common
from jaxae import train

OPTIONS = {"default": {}, "YNNPACK individual dots only": dict(train.CPU_BCE_COMPILER_OPTIONS)}
VARIANTS = ("vanilla", "denoising", "sparse", "supervised", "vae", "conv", "contractive")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--rounds", type=int, default=7)
  args = p.parse_args(argv)
  x, y = common.protocol_data()
  compiled = {}
  for variant in args.variants.split(","):
    config = common.load_config(variant, **{"num_seeds": 1, "train.steps_per_call": 0})
    for name, options in OPTIONS.items():
      compiled[variant, name] = common.compile_program(config, x, y, xla_options=options)
  times = {k: [] for k in compiled}
  for _ in range(args.rounds):
    for k, c in compiled.items():
      times[k].append(1e3 * common.time_window(c, x, y, c.program.steps_per_epoch, 1) / c.program.steps_per_epoch)
  names = list(OPTIONS)
  print(f"| variant | {' | '.join(names)} | default / option |")
  print("|---|" + "---|" * (len(names) + 1))
  for variant in args.variants.split(","):
    med = [float(np.median(times[variant, n])) for n in names]
    print(f"| {variant} | " + " | ".join(f"{m:.2f}" for m in med) + f" | {med[0] / med[1]:.2f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
