"""Streaming (jaxae/stream.py): a streamed run is the in-memory run bit for bit, resumes exactly, never
puts a whole split on the device, and `npy:` files are read without growing the resident set.

Data: scikit-learn's bundled 8x8 digits as float32 vectors (N, 64) in an `.npy` (memory-mapped).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, tiny_config
from jaxae import checkpoints, configs, report, stream
from jaxae import data as data_lib
from jaxae import run as run_lib
from jaxae.sources import lazy

SPE = 8  # 256 training examples / batch 32


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory):
  from sklearn.datasets import load_digits

  path = tmp_path_factory.mktemp("digits") / "digits.npy"
  np.save(path, (load_digits().data / 16.0).astype(np.float32))
  return f"npy:{path}"


def cfg(source, variant="vanilla", **overrides):
  # 180 held-out rows (10% of 1,797): 4 evaluation batches of 40 (10 KiB each) and a last batch of 20.
  base = dict(data__source=source, train__steps_per_call=2, train__epochs=3, data__max_eval=0,
              train__eval_batch_size=40, checkpoint__every_epochs=2)
  return tiny_config(variant, **{**base, **overrides})


def raw_checkpoint(workdir):
  mngr = checkpoints.manager(str(workdir), read_only=True)
  step = mngr.latest_step()
  r = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(), state=ocp.args.StandardRestore()))
  mngr.close()
  return step, jax.device_get(r.params), jax.device_get(r.state)


def assert_same_run(workdir, ref):
  """Same checkpoint (parameters, optimizer state, metric sums) and metrics.jsonl, bit for bit."""
  (s1, p1, st1), (s2, p2, st2) = raw_checkpoint(workdir), raw_checkpoint(ref)
  assert s1 == s2
  for a, b in ((p1, p2), (st1, st2)):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  strip = lambda w: [{k: v for k, v in r.items() if k != "seconds"} for r in report.read_records(str(w))]
  assert strip(workdir) == strip(ref)


@pytest.fixture(scope="module")
def in_memory(digits_npy, tmp_path_factory):
  """Reference runs on the device (data.stream=false), by (variant, member_loop)."""
  out = {}
  for variant, loop, spc in (("vanilla", "map", 2), ("vae", "vmap", 0)):
    wd = tmp_path_factory.mktemp(f"mem_{variant}")
    run_lib.train_and_evaluate(cfg(digits_npy, variant, data__stream="false", train__member_loop=loop,
                                   train__steps_per_call=spc), str(wd))
    out[variant, loop] = wd
  return out


@pytest.mark.parametrize("variant,loop,spc,block", [("vanilla", "map", 2, 1), ("vae", "vmap", 0, 3)])
def test_streamed_run_equals_in_memory_run_bit_for_bit(digits_npy, in_memory, tmp_path, monkeypatch, variant, loop,
                                                       spc, block):
  # Blocks of `block` steps (two members x 32 rows x 256 B = 16 KiB a step): with train.steps_per_call=2,
  # two calls per chunk; with the whole 8-step epoch as one chunk, calls of 3, 3 and 2 steps. Held-out
  # data go in blocks of 1 (or 4) evaluation batches, and the smaller last batch on its own.
  monkeypatch.setattr(stream, "BLOCK_BYTES", block * 2 * 32 * 64 * 4)
  put = []
  real_put = stream._put

  def recording_put(host, shape, dtype, where):
    put.append(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return real_put(host, shape, dtype, where)

  monkeypatch.setattr(stream, "_put", recording_put)
  run_lib.train_and_evaluate(cfg(digits_npy, variant, data__stream="true", train__member_loop=loop,
                                 train__steps_per_call=spc), str(tmp_path))
  assert_same_run(tmp_path, in_memory[variant, loop])
  assert put and max(put) <= stream.BLOCK_BYTES  # no split was ever put on the device whole (256 or 180 x 256 B)


def test_streamed_stop_mid_epoch_resumes_exactly_streamed_or_not(digits_npy, in_memory, tmp_path, monkeypatch):
  calls = []
  real_run_epoch = stream.run_epoch

  def run_epoch(program, state, x, y, stop):
    def stop_soon():
      calls.append(1)
      if len(calls) == 5:  # after the 2nd chunk of epoch 2: a real SIGTERM through the handler
        signal.raise_signal(signal.SIGTERM)
      return stop()
    return real_run_epoch(program, state, x, y, stop_soon)

  monkeypatch.setattr(stream, "BLOCK_BYTES", 2 * 32 * 64 * 4)
  monkeypatch.setattr(stream, "run_epoch", run_epoch)
  out = run_lib.train_and_evaluate(cfg(digits_npy, data__stream="true"), str(tmp_path))
  assert out == {"interrupted": "SIGTERM", "step": SPE + 4, "epoch": 1}
  monkeypatch.setattr(stream, "run_epoch", real_run_epoch)
  copy = tmp_path / "copy"
  shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
  run_lib.train_and_evaluate(cfg(digits_npy, data__stream="true"), str(tmp_path))
  assert_same_run(tmp_path, in_memory["vanilla", "map"])
  # data.stream is a safe change on resume: the rest of the run on the device gives the same run.
  run_lib.train_and_evaluate(cfg(digits_npy, data__stream="false"), str(copy))
  assert_same_run(copy, in_memory["vanilla", "map"])


def test_blocks_fit_the_budget_and_stop_at_chunk_boundaries():
  assert stream.block_steps(3906, 1, 128, 4096, budget=16 << 20) == 32  # 32 x 512 KiB = 16 MiB
  assert stream.block_steps(3906, 4, 128, 4096, budget=16 << 20) == 8
  assert stream.block_steps(10, 4, 32, 100, budget=10 ** 9) == 10  # everything fits: the whole chunk
  assert stream.block_steps(12, 1, 1, 1 << 30, budget=1) == 1  # one row above the budget: one step
  assert stream.blocks(0, 10, 10, 4) == [(0, 4), (4, 4), (8, 2)]
  assert stream.blocks(4, 12, 4, 3) == [(4, 3), (7, 1), (8, 3), (11, 1)]  # resumed at step 4, chunks of 4
  for offset, spe, chunk, steps in ((0, 3906, 3906, 32), (6, 12, 2, 5), (0, 7, 7, 1), (9, 12, 3, 2)):
    got = stream.blocks(offset, spe, chunk, steps)
    assert [s for s, _ in got] == list(np.cumsum([offset] + [n for _, n in got])[:-1])  # contiguous
    assert sum(n for _, n in got) == spe - offset and max(n for _, n in got) <= steps
    assert all((s % chunk) + n <= chunk for s, n in got)  # no block crosses a chunk boundary
    assert len({n for _, n in got}) <= 2  # at most two compiled shapes


def test_prefetcher_keeps_order_raises_errors_and_stops_early():
  seen = []
  with stream.Prefetcher(range(5), lambda i: (seen.append(i), i * i)[1]) as p:
    assert list(p) == [(i, i * i) for i in range(5)]

  def fail(i):
    if i == 2:
      raise OSError("disk gone")
    return i

  with pytest.raises(OSError, match="disk gone"), stream.Prefetcher(range(5), fail) as p:
    assert [r for _, r in p] == [0, 1]
  seen.clear()
  with stream.Prefetcher(range(100), lambda i: (seen.append(i), i)[1], depth=2) as p:
    for i, _ in p:
      if i == 3:
        break
  assert len(seen) <= 4 + 2 + 1  # taken, at most `depth` waiting, one being produced when told to stop


def test_auto_streams_what_would_not_fit(digits_npy, monkeypatch):
  config = cfg(digits_npy)
  d = data_lib.load(config.data)
  size = stream.nbytes(d.train.x) + stream.nbytes(d.eval.x)
  assert size == (256 + 180) * 64 * 4
  monkeypatch.setattr(stream, "device_memory_bytes", lambda device=None: int(size / stream.AUTO_FRACTION) + 1)
  assert not stream.should_stream(config.data, d)
  monkeypatch.setattr(stream, "device_memory_bytes", lambda device=None: int(size / stream.AUTO_FRACTION) - 1)
  assert stream.should_stream(config.data, d)
  for value, expected in (("true", True), ("false", False)):
    config.data.stream = value
    assert stream.should_stream(config.data, d) is expected
  config.data.stream = "yes"
  with pytest.raises(configs.ConfigError, match="data.stream"):
    configs.validate(config)
  assert "data.stream" in configs.RESUME_SAFE


def test_npy_rows_are_read_with_pread_not_through_the_mapping(digits_npy, monkeypatch):
  x = data_lib.load_source(digits_npy).x
  full = np.load(digits_npy[4:])
  assert all(f is not None for f in x._files)

  def no_mapping(self, key):
    raise AssertionError("read through the memory mapping")

  monkeypatch.setattr(np.memmap, "__getitem__", no_mapping)
  rows = np.array([5, 6, 7, 100, 3, 3, 1796])  # a run, repeats, the last row
  np.testing.assert_array_equal(x[rows], full[rows])
  np.testing.assert_array_equal(x[10:500], full[10:500])
  np.testing.assert_array_equal(x.select(rows[::-1])[:], full[rows[::-1]])


def _peak_rss_script(body: str) -> str:
  """A script that runs `body` and prints how much its peak resident set (VmHWM) grew meanwhile, in bytes.

  /proc/self/status, not getrusage: the kernel updates ru_maxrss lazily, VmHWM at every read.
  """
  return textwrap.dedent("""
      import sys
      import numpy as np
      sys.path.insert(0, %r)
      from jaxae import data
      def hwm():
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
      before = hwm()
  """ % str(ROOT)) + textwrap.dedent(body) + "\nprint(hwm() - before)\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_scanning_a_large_npy_does_not_grow_resident_memory(tmp_path):
  """Every row of a 96 MiB file read in random batches and in chunks: the peak resident set grows by far
  less than the file (through the mapping it would grow by the whole file)."""
  path = tmp_path / "big.npy"
  with open(path, "wb") as f:  # written in pieces, so this process never holds it either
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (24576, 1024)})
    for i in range(24):
      np.full((1024, 1024), i, np.float32).tofile(f)
  body = f"""
      x = data.load_source("npy:{path}").x
      order = np.random.default_rng(0).permutation(len(x))
      total = 0.0
      for i in range(0, len(x), 512):
        total += float(x[order[i:i + 512]][:, 0].sum())
      for chunk in data.row_chunks(x):
        total += float(chunk[:, 0].sum())
      assert total == 2 * sum(i * 1024 for i in range(24)), total
  """
  grown = int(subprocess.run([sys.executable, "-c", _peak_rss_script(body)], check=True, capture_output=True,
                             text=True).stdout)
  # Bounded by the reads in flight: two 16 MiB chunks (the next is sliced while the last is alive), a batch,
  # allocator slack; measured 40-41 MiB. Through the mapping it is the whole file (checked below).
  assert grown < 3 * data_lib.CHUNK_BYTES, f"resident memory grew by {grown / 2**20:.0f} MiB reading a 96 MiB file"
  # The same reads through the mapping grow it by the whole file: the measurement can tell.
  through_mapping = body.replace('x = data.load_source("npy:', 'x = np.load("').replace('").x', '", mmap_mode="r")')
  grown = int(subprocess.run([sys.executable, "-c", _peak_rss_script(through_mapping)], check=True,
                             capture_output=True, text=True).stdout)
  assert grown > 90 << 20, grown


def test_streamed_on_four_devices_equals_in_memory_on_four_devices(digits_npy, tmp_path):
  """Members sharded over 4 (simulated) devices: each device gets its own members' rows."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
  script = textwrap.dedent(f"""
      import json
      import jax
      from conftest import tiny_config
      from jaxae import run, stream
      assert jax.device_count() == 4
      stream.BLOCK_BYTES = 4 * 32 * 64 * 4  # one step per block
      out = {{}}
      for mode in ("true", "false"):
        config = tiny_config("vanilla", num_seeds=4, data__source={digits_npy!r}, data__stream=mode,
                             train__eval_batch_size=20)
        out[mode] = run.train_and_evaluate(config, {str(tmp_path)!r} + "/" + mode)
      print(json.dumps(out))
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(ROOT),
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  streamed, on_device = out["true"]["settings"][0], out["false"]["settings"][0]
  for split in ("train", "eval"):
    for name in on_device[split]:
      assert streamed[split][name]["per_seed"] == on_device[split][name]["per_seed"], (split, name)
  assert len(set(streamed["train"]["loss"]["per_seed"])) == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_epochs_do_not_grow_resident_memory(tmp_path):
  """Eight streamed epochs over a 32 MiB file (blocks of 4 MiB made in the prefetch thread, freed in the
  loop): after the first two epochs the peak resident set grows by far less than the data streamed (without
  stream.map_large_allocations it grew by ~160 MiB here)."""
  path = tmp_path / "rows.npy"
  np.save(path, np.random.default_rng(0).random((16384, 512), dtype=np.float32))
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(ROOT / 'tests')!r})
      from conftest import tiny_config
      from jaxae import data as data_lib, sharding, stream, train
      def status(key):
        return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
      config = tiny_config("vanilla", data__source="npy:{path}", data__max_train=0, train__batch_size=128)
      d = data_lib.load(config.data)
      program = train.build(config, d.train.x.shape[1:], len(d.train), sharding.member_mesh(2))
      state = program.init_state()
      stream.BLOCK_BYTES = 4 << 20  # 7 blocks an epoch
      y = d.train.x[:, 0].astype("int32") * 0
      for _ in range(2):  # everything compiled, every kind of block seen
        state, _ = stream.run_epoch(program, state, d.train.x, y)
        state, _ = train.take_epoch_metrics(program, state)
      after_first = status("VmHWM")
      for _ in range(6):
        state, _ = stream.run_epoch(program, state, d.train.x, y)
        state, _ = train.take_epoch_metrics(program, state)
      print(status("VmHWM") - after_first)
  """)
  grown = int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                             cwd=str(ROOT)).stdout.strip().splitlines()[-1])
  assert grown < 24 << 20, f"peak resident memory grew by {grown / 2**20:.0f} MiB over 6 epochs of 28 MiB each"
