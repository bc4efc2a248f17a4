"""How the cost of the vanilla MLP protocol grows with seeds, batch size and training-set size (issue 15).

python -m benchmarks.scaling            # S = 1..64, batch 128..4096, N = 5k..60k -> SCALING.md + scaling.png
python -m benchmarks.scaling --quick    # a few points, one repeat, prints only

Three sweeps of configs/vanilla.py (784-512-256-32, Adam 1e-3), each configuration built with
`jaxae.train.build` and its train chunk AOT-compiled (benchmarks/common.py), so compile seconds are
reported apart from run seconds:

1. seeds S in one program (batch 128, the 5,000 embedded images): seconds per epoch (median of timed
   epochs after a warm-up epoch), per seed, examples/s, and memory three ways: XLA's memory analysis of
   the compiled train chunk (arguments + outputs - aliased + temporaries: what the program holds while it
   runs), jaxae.memory's shape-based requirement (state + gradients + data, what `check_fits` compares
   with free memory), and the growth of this process's peak RSS. The largest S that fits in 24 GiB is
   extrapolated from a straight-line fit of XLA's figure over S (an estimate: activations of `lax.map`
   members are reused, so the per-seed growth is the state).
2. batch size at S = 1 on the same 5,000 images: floor(5000 / B) steps per epoch, so examples/s is the
   comparable number (an epoch of B = 4096 is one step).
3. training-set size at S = 1, batch 128: the embedded images tiled to N rows, stored as uint8 (what
   jaxae keeps for MNIST) or as float32 in [0, 1] (what an npy: source of floats gives), to see whether the
   random batch gather slows once the array leaves the last-level cache.

Dense-layer FLOPs are counted analytically (6 x sum(in x out) per example, less the first layer's input
gradient) and compared with the matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import jax
import numpy as np

from benchmarks import common
from jaxae import memory

HERE = os.path.dirname(os.path.abspath(__file__))
GIB = 2**30
BUDGET = 24 * GIB  # the memory the issue asks about


def load1() -> float:
  return os.getloadavg()[0]


def peak_rss() -> int:
  """This process's peak resident set size so far, bytes (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def xla_bytes(compiled) -> int:
  """Bytes the compiled program holds while it runs: arguments + outputs - donated aliases + temporaries."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def flops_per_example(config) -> float:
  """Dense-layer FLOPs of one training example: forward, weight gradients, input gradients (not layer 1's)."""
  widths = [784, *config.model.hidden, config.model.latent_dim, *reversed(config.model.hidden), 784]
  macs = [i * o for i, o in zip(widths[:-1], widths[1:])]
  return 6 * sum(macs) - 2 * macs[0]


def measure(config, x, y, repeats: int, window: int = 0) -> dict:
  """Compiles `config` for (x, y) and times `window` steps (0 = a whole epoch) `repeats` times (median)."""
  if window:
    config.train.steps_per_call = window
  c = common.compile_program(config, x, y)
  spe = c.program.steps_per_epoch
  steps = window or spe
  t = common.time_window(c, x, y, steps, repeats)
  s, b = config.num_seeds, config.train.batch_size
  epoch_s = t * spe / steps
  row = dict(seeds=s, batch=b, n=x.shape[0], dtype=str(x.dtype), steps=spe, window=steps, compile_s=c.compile_s,
             epoch_s=epoch_s, ex_s=s * spe * b / epoch_s, flops_s=s * spe * b * flops_per_example(config) / epoch_s,
             xla_bytes=xla_bytes(c.chunk_fn),
             need_bytes=memory.requirement(c.program.abstract_state(), x.nbytes + y.nbytes)[0])
  del c
  return row


def seeds_sweep(seeds, x, y, repeats: int, window: int) -> list[dict]:
  base = peak_rss()
  rows = []
  for s in seeds:
    r = measure(common.load_config("vanilla", num_seeds=s), x, y, repeats, window)
    r["rss_peak"] = peak_rss()
    r["rss_growth"] = r["rss_peak"] - base
    rows.append(r)
    print(f"  S={s:3d}: compile {r['compile_s']:.2f} s, {r['epoch_s']:.3f} s/epoch ({r['epoch_s'] / s:.3f} per seed), "
          f"{r['ex_s']:,.0f} ex/s, XLA {r['xla_bytes'] / 2**20:.1f} MiB, peak RSS +{r['rss_growth'] / 2**20:.0f} MiB",
          flush=True)
  return rows


def batch_sweep(batches, x, y, repeats: int) -> list[dict]:
  rows = []
  for b in batches:
    rows.append(measure(common.load_config("vanilla", num_seeds=1, **{"train.batch_size": b}), x, y, repeats))
    r = rows[-1]
    print(f"  B={b:5d}: {r['steps']} steps, {r['epoch_s']:.3f} s/epoch, {r['ex_s']:,.0f} ex/s", flush=True)
  return rows


def tiled(x, y, n: int, dtype) -> tuple[jax.Array, jax.Array]:
  """The images tiled to n rows (uint8 as stored, or float32 in [0, 1]) and their labels, on the device."""
  xs = np.resize(np.asarray(x), (n, *x.shape[1:]))
  if dtype == np.float32:
    xs = xs.astype(np.float32) / 255.0
  return jax.device_put(xs), jax.device_put(np.resize(np.asarray(y), (n,)))


def size_sweep(sizes, x, y, repeats: int, dtypes) -> list[dict]:
  rows = []
  for dtype in dtypes:
    for n in sizes:
      xs, ys = tiled(x, y, n, dtype)
      rows.append(measure(common.load_config("vanilla", num_seeds=1), xs, ys, repeats))
      r = rows[-1]
      print(f"  N={n:6d} {r['dtype']:7s} ({xs.nbytes / 2**20:.1f} MiB): {r['epoch_s']:.3f} s/epoch, {r['ex_s']:,.0f} ex/s",
            flush=True)
      del xs, ys
  return rows


def largest_fit(rows: list[dict], key: str, budget: int = BUDGET) -> tuple[int, float]:
  """(largest S within budget, bytes per seed): a straight line through the two largest S of rows[key].

  The slope of the largest S is the one that holds for extrapolation (fixed costs weigh less there).
  """
  (s0, v0), (s1, v1) = [(r["seeds"], r[key]) for r in rows[-2:]] if len(rows) > 1 else [(0, 0), (rows[0]["seeds"], rows[0][key])]
  slope = (v1 - v0) / (s1 - s0)
  return (int(s1 + (budget - v1) // slope) if slope > 0 else -1), float(slope)


def l3_bytes() -> int | None:
  """The last-level (L3) cache of cpu0 in bytes, from sysfs ("32768K"); None when unknown."""
  try:
    with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
      text = f.read().strip()
  except OSError:
    return None
  units = {"K": 2**10, "M": 2**20, "G": 2**30}
  return int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text) if text.isdigit() else None


def mib(n: float) -> str:
  return f"{n / 2**20:.1f}"


def write_markdown(path, info, peak, seed_rows, batch_rows, size_rows, loads, args) -> str:
  cmd = "python -m benchmarks.scaling" + (" --quick" if args.quick else "")
  lines = [f"# jaxae: how cost grows (generated by `{cmd}`)", ""]
  lines += ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()]
  l3 = l3_bytes()
  lines += [f"| L3 cache | {mib(l3) + ' MiB' if l3 else '?'} |",
            f"| measured f32 matmul peak (2048^3, median of 10) | {peak / 1e9:.1f} GFLOP/s |", ""]
  lines += ["configs/vanilla.py (MLP 784-512-256-32, MSE, Adam 1e-3), each configuration built by `jaxae.train.build` "
            "and its train chunk AOT-compiled (compile s apart). Seconds per epoch = median of "
            f"{args.repeats} timed windows after a warm-up window, scaled to the epoch when a window is shorter than "
            "the epoch (column `timed steps`). GFLOP/s counts dense-layer FLOPs analytically "
            "(6 x sum(in x out) per example, less layer 1's input gradient); % peak is against the matmul peak above.", ""]
  if seed_rows:
    fit_xla = largest_fit(seed_rows, "xla_bytes")
    fit_need = largest_fit(seed_rows, "need_bytes")
    fit_rss = largest_fit(seed_rows, "rss_peak")
    s1 = seed_rows[0]["epoch_s"] / seed_rows[0]["seeds"]
    lines += [f"## Seeds in one program (batch 128, 5,000 embedded images; load average (1 min) {loads['seeds'][0]:.2f} -> {loads['seeds'][1]:.2f})", "",
              "Memory: *XLA* = `compiled.memory_analysis()` of the train chunk (arguments + outputs - donated + "
              "temporaries; includes the 3.9 MB uint8 data); *check_fits* = `jaxae.memory.requirement` (state + one "
              "gradient + data, from shapes); *peak RSS growth* = this process's ru_maxrss since the sweep began "
              "(compiler memory included, monotone over the sweep).", "",
              "| S | timed steps | compile s | s/epoch | s/epoch per seed | per seed vs S=1 | examples/s (total) | GFLOP/s | % peak "
              "| XLA MiB | check_fits MiB | peak RSS growth MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in seed_rows:
      lines.append(f"| {r['seeds']} | {r['window']} | {r['compile_s']:.2f} | {r['epoch_s']:.3f} | {r['epoch_s'] / r['seeds']:.3f} | "
                   f"{r['epoch_s'] / r['seeds'] / s1:.2f} | {r['ex_s']:,.0f} | {r['flops_s'] / 1e9:.1f} | "
                   f"{100 * r['flops_s'] / peak:.0f}% | {mib(r['xla_bytes'])} | {mib(r['need_bytes'])} | "
                   f"{mib(r['rss_growth'])} |")
    last = seed_rows[-1]
    lines += ["", f"**Largest S in 24 GiB (an estimate, extrapolated by a straight line through the two largest S "
              f"above):** {fit_xla[0]:,} seeds by XLA's memory analysis ({mib(fit_xla[1])} MiB per seed), "
              f"{fit_need[0]:,} by jaxae.memory's requirement ({mib(fit_need[1])} MiB per seed), {fit_rss[0]:,} by this "
              f"process's whole peak RSS ({mib(fit_rss[1])} MiB per seed; {mib(last['rss_peak'])} MiB at S = "
              f"{last['seeds']}, Python, jax and the compiler included). The first two leave out the evaluation "
              "program, checkpoints' host copies and the process itself; none includes a real run's figures; time grows linearly with S on this CPU (members run one "
              f"after another, `train.member_loop='map'`), so {fit_xla[0]:,} seeds would take "
              f"~{fit_xla[0] * last['epoch_s'] / last['seeds'] / 60:.0f} min per epoch here.", ""]
  if batch_rows:
    lines += [f"## Batch size (S = 1, 5,000 embedded images; load average (1 min) {loads['batch'][0]:.2f} -> {loads['batch'][1]:.2f})", "",
              "An epoch is floor(5000 / B) steps, so examples per epoch shrink for large B: compare examples/s.", "",
              "| batch | steps/epoch | compile s | s/epoch | examples/s | vs batch 128 | GFLOP/s | % peak | XLA MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    b0 = batch_rows[0]["ex_s"]
    for r in batch_rows:
      lines.append(f"| {r['batch']} | {r['steps']} | {r['compile_s']:.2f} | {r['epoch_s']:.3f} | {r['ex_s']:,.0f} | "
                   f"{r['ex_s'] / b0:.2f} | {r['flops_s'] / 1e9:.1f} | {100 * r['flops_s'] / peak:.0f}% | {mib(r['xla_bytes'])} |")
    lines.append("")
  if size_rows:
    lines += [f"## Training-set size (S = 1, batch 128, embedded images tiled to N rows; load average (1 min) "
              f"{loads['size'][0]:.2f} -> {loads['size'][1]:.2f})", "",
              "| N | dtype | data MiB | steps/epoch | compile s | s/epoch | examples/s | vs smallest N (same dtype) | GFLOP/s | % peak |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in size_rows:
      base = next(q for q in size_rows if q["dtype"] == r["dtype"])
      nbytes = r["n"] * 784 * np.dtype(r["dtype"]).itemsize
      lines.append(f"| {r['n']:,} | {r['dtype']} | {mib(nbytes)} | {r['steps']} | {r['compile_s']:.2f} | {r['epoch_s']:.3f} | "
                   f"{r['ex_s']:,.0f} | {r['ex_s'] / base['ex_s']:.2f} | {r['flops_s'] / 1e9:.1f} | "
                   f"{100 * r['flops_s'] / peak:.0f}% |")
    lines.append("")
  lines.append("The load average counts this benchmark's own 2 threads (~2 when it runs alone on 2 cores). "
               "Figure: `benchmarks/scaling.png`.")
  text = "\n".join(lines) + "\n"
  if path:
    with open(path, "w") as f:
      f.write(text)
  return text


def plot(path, seed_rows, batch_rows, size_rows, peak) -> None:
  import matplotlib
  import matplotlib.ticker

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = [p for p in (seed_rows, batch_rows, size_rows) if p]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
  axes = list(axes[0])
  if seed_rows:
    ax = axes.pop(0)
    s = [r["seeds"] for r in seed_rows]
    ax.plot(s, [r["epoch_s"] / r["seeds"] for r in seed_rows], "o-", color="C0")
    ax.set(xscale="log", xlabel="seeds S in one program", ylabel="seconds per epoch per seed", title="Seeds (batch 128)")
    ax.set_xticks(s, [str(v) for v in s])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylim(bottom=0)
    ax.tick_params(axis="y", colors="C0")
    ax2 = ax.twinx()
    ax2.plot(s, [r["xla_bytes"] / 2**20 for r in seed_rows], "s--", color="C3")
    ax2.set_ylabel("XLA memory of the train chunk (MiB)", color="C3")
    ax2.tick_params(axis="y", colors="C3")
  if batch_rows:
    ax = axes.pop(0)
    b = [r["batch"] for r in batch_rows]
    ax.plot(b, [r["ex_s"] for r in batch_rows], "o-")
    ax.set(xscale="log", xlabel="batch size", ylabel="examples / s", title="Batch size (S = 1)")
    ax.set_xticks(b, [str(v) for v in b])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylim(bottom=0)
    sec = ax.secondary_yaxis("right", functions=(lambda e: 100 * e * flops_per_example(common.load_config("vanilla")) / peak,
                                                 lambda p: p * peak / 100 / flops_per_example(common.load_config("vanilla"))))
    sec.set_ylabel("% of matmul peak")
  if size_rows:
    ax = axes.pop(0)
    l3 = l3_bytes()
    for i, dtype in enumerate(dict.fromkeys(r["dtype"] for r in size_rows)):
      rows = [r for r in size_rows if r["dtype"] == dtype]
      ax.plot([r["n"] for r in rows], [r["ex_s"] for r in rows], "o-", color=f"C{i}", label=dtype)
      if l3:
        ax.axvline(l3 / (784 * np.dtype(dtype).itemsize), color=f"C{i}", ls=":", lw=1)
    ax.set(xlabel="training images N", ylabel="examples / s", title="Training-set size (S = 1, batch 128)")
    ax.set_ylim(bottom=0)
    ax.legend(title="stored as" + (" (dotted: fills L3)" if l3 else ""), fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def ints(s: str) -> list[int]:
  return [int(v) for v in s.split(",") if v]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="S = 1, 4; batch 128, 1024; N = 5k, 20k; one repeat; prints only")
  p.add_argument("--seeds", default="", help="comma-separated S (default 1,2,4,8,16,32,64)")
  p.add_argument("--batches", default="", help="comma-separated batch sizes (default 128,...,4096)")
  p.add_argument("--sizes", default="", help="comma-separated training-set sizes (default 5000,10000,20000,40000,60000)")
  p.add_argument("--repeats", type=int, default=0, help="timed windows per configuration, median (default 3; quick 1)")
  p.add_argument("--window", type=int, default=0, choices=(0, 1, 3, 13, 39),
                 help="steps timed per window in the seed sweep (divides the 39-step epoch; 0 = the whole epoch)")
  p.add_argument("--out", default="", help="markdown output (default benchmarks/SCALING.md; none with --quick)")
  p.add_argument("--figure", default="", help="figure output (default benchmarks/scaling.png; none with --quick)")
  args = p.parse_args(argv)
  seeds = ints(args.seeds) or ([1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64])
  batches = ints(args.batches) or ([128, 1024] if args.quick else [128, 256, 512, 1024, 2048, 4096])
  sizes = ints(args.sizes) or ([5000, 20000] if args.quick else [5000, 10000, 20000, 40000, 60000])
  args.repeats = args.repeats or (1 if args.quick else 3)
  out = args.out or (None if args.quick else os.path.join(HERE, "SCALING.md"))
  figure = args.figure or (None if args.quick else os.path.join(HERE, "scaling.png"))
  t_all = time.perf_counter()

  info = common.machine()
  print(info, flush=True)
  peak = common.matmul_peak()
  print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  x, y = common.protocol_data()
  loads = {}
  print("seeds:", flush=True)
  start = load1()
  seed_rows = seeds_sweep(seeds, x, y, args.repeats, args.window)
  loads["seeds"] = (start, load1())
  print("batch size:", flush=True)
  batch_rows = batch_sweep(batches, x, y, args.repeats)
  loads["batch"] = (loads["seeds"][1], load1())
  print("training-set size:", flush=True)
  size_rows = size_sweep(sizes, x, y, args.repeats, (np.uint8, np.float32))
  loads["size"] = (loads["batch"][1], load1())
  text = write_markdown(out, info, peak, seed_rows, batch_rows, size_rows, loads, args)
  print(text)
  if figure:
    plot(figure, seed_rows, batch_rows, size_rows, peak)
  print(f"wall time {time.perf_counter() - t_all:.0f} s" + (f"; wrote {out}, {figure}" if out else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
