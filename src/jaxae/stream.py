"""Streaming: training and held-out evaluation on data that do not fit in device memory (`data.stream`).

In memory (the default for data that fit), the run copies the training set to every device once
(`sharding.replicate`) and each compiled call gathers its batches there. Streamed, the data stay where
they are (a memory-mapped `.npy` read with `pread`, see `jaxae.sources.lazy`, or host memory), and
each compiled call (`Program.train_block`) gets a block of S steps' rows of every member, gathered on
the host in that member's own data order and put on the device by a background thread while the
previous block trains (`Prefetcher`: double buffering). Held-out data go through in blocks of
evaluation batches the same way (`evaluate`).

A streamed run is the in-memory run, bit for bit: the data order is the same pure function of
(seed, epoch) (`Program.epoch_order`, read back to the host), a block's rows are trained by the same
step function (`train_step` gathering batch s of the block), and held-out metrics are the same
per-batch values summed by the same reduction (`Program.eval_total`). So `data.stream` may change on
resume, and a stop between chunks (`train.steps_per_call`) resumes exactly; tests/test_stream.py
checks both.

`data.stream='auto'` streams when the training and held-out inputs together (as stored) take more
than `AUTO_FRACTION` of one device's memory: `memory_stats()['bytes_limit']` on accelerators, the
physical memory on CPU, where the in-memory path holds the data in host memory and again as device
buffers. A block holds at most `BLOCK_BYTES` of inputs.

Memory: a block is allocated by the prefetch thread and freed by the training loop. glibc serves
allocations above its mmap threshold from mmap (returned to the system when freed), but raises that
threshold to the size of any mapped block that is freed, after which blocks come from per-thread heaps
that do not shrink: the resident set then grew without bound (~160 MiB over 6 epochs of 28 MiB in
tests/test_stream.py). Streaming
therefore fixes the threshold at `MMAP_THRESHOLD` (mallopt(M_MMAP_THRESHOLD), what the environment
variable MALLOC_MMAP_THRESHOLD_ does, which is respected if set); other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue
import threading
from typing import Callable, Iterable

import jax
import numpy as np

from jaxae import data as data_lib
from jaxae import sharding, train

AUTO_FRACTION = 0.25
MMAP_THRESHOLD = 1 << 20  # bytes: larger allocations are mapped and unmapped by glibc (module docstring)
BLOCK_BYTES = 16 << 20  # inputs per block (all of this process's members); two blocks are ahead at most
PREFETCH = 2


def _each(f: Callable, x):
  """f of each array of stored inputs: one array, or the {'x', 'target'} dict of `data.inputs` (paired rows)."""
  return {k: f(v) for k, v in x.items()} if isinstance(x, dict) else f(x)


def nbytes(x) -> int:
  """Bytes of inputs as stored (numpy or LazyArray, or a `data.inputs` dict of them), without reading them."""
  if isinstance(x, dict):
    return sum(nbytes(v) for v in x.values())
  return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize


def device_memory_bytes(device=None) -> int:
  """Memory of one device: the allocator's limit on accelerators, physical memory on CPU."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def should_stream(data_config, data) -> bool:
  """`data.stream`: 'true' / 'false', or 'auto' (see the module docstring for the threshold)."""
  if data_config.stream != "auto":
    return data_config.stream == "true"
  stored = nbytes(data_lib.inputs(data.train)) + nbytes(data_lib.inputs(data.eval))
  return stored > AUTO_FRACTION * device_memory_bytes()


def block_steps(chunk: int, members: int, batch: int, row_bytes: int, budget: int | None = None) -> int:
  """S: the most steps per streamed call whose rows (members x S x batch) fit `budget`, at most `chunk`; >= 1."""
  budget = BLOCK_BYTES if budget is None else budget
  return max(1, min(chunk, budget // max(1, members * batch * row_bytes)))


def blocks(offset: int, steps_per_epoch: int, chunk: int, steps: int) -> list[tuple[int, int]]:
  """(first step, number of steps) of the streamed calls from `offset` to the end of the epoch.

  Blocks of `steps` never cross a chunk boundary (where `stop()` is asked, as in train.run_epoch), so
  each chunk is its blocks of `steps` and, if `steps` does not divide it, one shorter block: at most
  two compiled shapes.
  """
  out = []
  for start in range(offset, steps_per_epoch, chunk):
    end = min(start + chunk, steps_per_epoch)
    out += [(b, min(steps, end - b)) for b in range(start, end, steps)]
  return out


_malloc_fixed: list[bool] = []


def map_large_allocations() -> None:
  """Fixes glibc's mmap threshold at MMAP_THRESHOLD (once per process; see the module docstring)."""
  if _malloc_fixed or "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
    return
  _malloc_fixed.append(True)
  m_mmap_threshold = -3  # glibc's malloc.h
  ctypes.CDLL(None).mallopt(m_mmap_threshold, MMAP_THRESHOLD)


class Prefetcher:
  """`produce(item)` for each of `items` in a background thread, up to `depth` results ahead.

  Iterate for (item, result) in order. An exception in `produce` is raised by the iteration; `close`
  (or leaving a `with` block) stops the thread and drops results not taken.
  """

  _END = object()

  def __init__(self, items: Iterable, produce: Callable, depth: int = PREFETCH):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._cancel = threading.Event()
    self._thread = threading.Thread(target=self._work, args=(list(items), produce), daemon=True,
                                    name="jaxae-prefetch")
    self._thread.start()

  def _offer(self, entry) -> bool:
    while not self._cancel.is_set():
      try:
        self._queue.put(entry, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def _work(self, items, produce) -> None:
    try:
      for item in items:
        if self._cancel.is_set() or not self._offer((item, produce(item), None)):
          return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
      self._offer((None, None, e))
      return
    self._offer((self._END, None, None))

  def __iter__(self):
    while True:
      item, result, error = self._queue.get()
      if error is not None:
        raise error
      if item is self._END:
        return
      yield item, result

  def close(self) -> None:
    self._cancel.set()
    self._thread.join()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _row_bytes(x) -> int:
  if isinstance(x, dict):
    return sum(_row_bytes(v) for v in x.values())
  return int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize


def _put(host: Callable, shape: tuple, dtype, where) -> jax.Array:
  """A device array of `shape` whose rows `host(slice)` reads, placed by `where` (a sharding or None).

  With a sharding every process reads only its addressable part (its own members).
  """
  if where is None:
    return jax.device_put(host(slice(None)))
  read = {}  # devices that hold the same rows (replicas) share one read

  def rows(index):
    key = index[0].indices(shape[0]) if index else None
    if key not in read:
      read[key] = host(index[0] if index else slice(None)).astype(dtype, copy=False)
    return read[key]

  return jax.make_array_from_callback(shape, where, rows)


def _member_rows(x, y, order: np.ndarray, start: int, steps: int):
  """host(members) -> (inputs (m, S*B, ...), labels (m, S*B)) for steps start:start+steps of `order`.
  x: one stored array (a dict of inputs and targets is gathered array by array, `_each`)."""

  def rows(members: slice):
    idx = order[members, start:start + steps].reshape(-1)
    m = len(range(*members.indices(len(order))))
    return idx, m

  def inputs(members):
    idx, m = rows(members)
    return np.asarray(x[idx]).reshape(m, -1, *x.shape[1:])

  def labels(members):
    idx, m = rows(members)
    return np.asarray(y)[idx].reshape(m, -1)

  return inputs, labels


def run_epoch(program: train.Program, state: train.TrainState, x, y, stop: Callable[[], bool] = lambda: False):
  """`train.run_epoch` on host data: x (N, ...) numpy or LazyArray (or a `data.inputs` dict of them, inputs and
  targets), y (N,) int32. Returns (state, finished).

  Trains from the state's position to the end of its epoch, in blocks of at most S steps
  (`block_steps`, `blocks`), asking `stop()` after every `program.chunk` steps as train.run_epoch does.
  """
  map_large_allocations()
  spe, chunk = program.steps_per_epoch, program.chunk
  epoch, offset = divmod(train.global_step(state), spe)
  order = np.asarray(sharding.to_host(program.epoch_order(state, epoch)))  # (M, spe, B), every member's
  members, _, batch = order.shape
  steps = block_steps(chunk, max(1, members // jax.process_count()), batch, _row_bytes(x))
  where = program.member_sharding

  def produce(block):
    start, n = block
    shape = (members, n * batch)

    def put(a):  # the same rows of every stored array (inputs, targets): pairs stay paired
      inputs, _ = _member_rows(a, y, order, start, n)
      return _put(inputs, (*shape, *a.shape[1:]), a.dtype, where)

    labels = _member_rows(x if not isinstance(x, dict) else x["x"], y, order, start, n)[1]
    return _each(put, x), _put(labels, shape, np.int32, where)

  with Prefetcher(blocks(offset, spe, chunk, steps), produce) as prefetched:
    for (start, n), (xb, yb) in prefetched:
      state = program.train_block(state, xb, yb, np.arange(n * batch, dtype=np.int32).reshape(n, batch))
      # Wait for the call: dispatch is asynchronous, and a loop that ran ahead would hold every block it
      # dispatched (the whole epoch's rows). The next block is ready meanwhile, so the device barely idles.
      jax.block_until_ready(state)
      done = start + n
      if done < spe and done % chunk == 0 and stop():
        return state, False
  return state, True


def evaluate(program: train.Program, state: train.TrainState, x, y) -> dict:
  """`program.evaluate(state, x, y)` on host data, read in blocks of evaluation batches: {metric: (M, ...)}."""
  map_large_allocations()
  n = train.num_rows(x)
  bs = min(program.config.train.eval_batch_size, n)
  full = n // bs
  per_block = max(1, min(full, BLOCK_BYTES // max(1, bs * _row_bytes(x))))
  where = program.member_sharding
  everywhere = sharding.replicated(where.mesh) if where is not None else None
  y = np.asarray(y)

  def produce(block):
    k0, k = block
    lo, hi = k0 * bs, (k0 + k) * bs
    xs = _each(lambda a: _put(lambda _: np.asarray(a[lo:hi]).reshape(k, bs, *a.shape[1:]), (k, bs, *a.shape[1:]),
                              a.dtype, everywhere), x)
    return xs, _put(lambda _: y[lo:hi].reshape(k, bs), (k, bs), np.int32, everywhere)

  parts = []
  with Prefetcher([(k0, min(per_block, full - k0)) for k0 in range(0, full, per_block)], produce) as blocks:
    for _, (xs, ys) in blocks:
      parts.append(sharding.to_host(program.eval_batches(state, xs, ys)))
  per_batch = jax.tree.map(lambda *p: np.concatenate(p, axis=1), *parts)
  last = None
  if n % bs:
    rest = (n - full * bs,)
    xr = _each(lambda a: _put(lambda _: np.asarray(a[full * bs:]), rest + tuple(a.shape[1:]), a.dtype, everywhere), x)
    last = sharding.to_host(program.eval_last(state, xr, _put(lambda _: y[full * bs:], rest, np.int32, everywhere)))
  return program.eval_total(per_batch, last, bs, n)
