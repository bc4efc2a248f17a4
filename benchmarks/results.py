"""Every speed table in one file: `python -m benchmarks.results` regenerates benchmarks/RESULTS.md.

  python -m benchmarks.results            # all harnesses, one after another (~30 min on 2 quiet cores)
  python -m benchmarks.results --quick    # the quick version of each (a few minutes), printed, nothing written
  python -m benchmarks.results --only startup,scaling   # some harnesses, printed (--out FILE to write)

Runs, each in its own process so that one harness's compiled programs and threads do not slow the next:
the per-step table (`benchmarks.train_speed`), the whole command against a PyTorch script
(`benchmarks.end_to_end`), start-up (`benchmarks.startup`), how cost grows with seeds, batch size and
training-set size (`benchmarks.scaling`, which also redraws benchmarks/scaling.png), the two exact
contractive penalties (`benchmarks.contractive_jacobian`), the conv step's layers and matmul forms
(`benchmarks.conv_step`) and the Adam update's layout (`benchmarks.adam_layout`). Their own files
(END_TO_END.md, STARTUP.md, SCALING.md, CONV_STEP.md, ADAM_LAYOUT.md) are left as they are: each section of
RESULTS.md is that harness's output of this run, with its machine, versions, date and load average. Run it on a quiet machine: the harnesses time wall clock.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (section title, module, arguments for the full run, arguments for --quick); {out} is the section's file.
SECTIONS = (
    ("Per step: every variant, S = 1 ... 8 seeds in one program, against PyTorch eager", "train_speed",
     ["--out", "{out}"], ["--quick"]),
    ("End to end: the whole `python -m jaxae.main` process against a PyTorch script", "end_to_end",
     ["--out", "{out}"], ["--variants", "vanilla", "--rounds", "1", "--epochs", "2", "--out", ""]),
    ("Start-up: launch to the first training step", "startup", ["--out", "{out}"], ["--rounds", "1", "--out", ""]),
    ("How cost grows: seeds, batch size, training-set size", "scaling", ["--out", "{out}"], ["--quick"]),
    ("The exact contractive penalty: structured Jacobian against jax.jacrev", "contractive_jacobian", [],
     ["--rounds", "1", "--steps", "2"]),
    ("The conv step: each layer and each matmul form of its convolutions", "conv_step", ["--out", "{out}"],
     ["--rounds", "1", "--repeats", "5", "--out", ""]),
    ("The Adam update's layout: per leaf against one flat vector (optax.flatten)", "adam_layout",
     ["--out", "{out}"], ["--rounds", "1", "--variants", "vanilla", "--out", ""]),
)


def _demote(text: str) -> str:
  """Markdown headings one level down, so each harness's output sits under its section."""
  return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="each harness's quick version; prints, writes nothing")
  p.add_argument("--out", default=None, help="default: benchmarks/RESULTS.md (with --only: print only)")
  p.add_argument("--only", default="", help="comma-separated harness modules (default: all)")
  args = p.parse_args(argv)
  if args.out is None:  # a partial run never replaces the whole file unless told where to write
    args.out = "" if args.only else os.path.join(HERE, "RESULTS.md")
  unknown = set(filter(None, args.only.split(","))) - {module for _, module, _, _ in SECTIONS}
  if unknown:
    p.error(f"--only names no harness: {', '.join(sorted(unknown))} (harnesses: "
            f"{', '.join(module for _, module, _, _ in SECTIONS)})")
  only = set(args.only.split(",")) if args.only else None
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  parts, started = [], time.time()
  with tempfile.TemporaryDirectory() as tmp:
    for title, module, full, quick in SECTIONS:
      if only is not None and module not in only:
        continue
      out = os.path.join(tmp, f"{module}.md")
      argv_ = [a.replace("{out}", out) for a in (quick if args.quick else full)]
      print(f"== {module} {' '.join(argv_)}", flush=True)
      t0 = time.time()
      proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *argv_], cwd=ROOT, env=env,
                            capture_output=True, text=True)
      if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        print(f"error: benchmarks.{module} exited with status {proc.returncode}; {args.out} not written",
              file=sys.stderr)
        return 1
      text = open(out).read() if os.path.exists(out) else proc.stdout
      parts.append((title, module, text.strip(), time.time() - t0))
      print(f"   {time.time() - t0:.0f} s", flush=True)
  stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  lines = [f"# jaxae speed: every table (generated by `python -m benchmarks.results`, {stamp}, "
           f"{time.time() - started:.0f} s in all)", "",
           "Each section is one harness's output from this run, with its machine, versions, date and load "
           "average; `python -m benchmarks.<module>` regenerates one of them alone.", ""]
  lines += [f"- [{title}](#{i + 1}) (`benchmarks.{module}`, {secs:.0f} s)" for i, (title, module, _, secs) in
            enumerate(parts)] + [""]
  for i, (title, module, text, _) in enumerate(parts):
    lines += [f'<a id="{i + 1}"></a>', f"## {i + 1}. {title}", "", _demote(text), ""]
  document = "\n".join(lines)
  if args.quick or not args.out:
    print(document)
  else:
    with open(args.out, "w") as f:
      f.write(document)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
