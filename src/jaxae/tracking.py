"""Tracking a run while it trains: TensorBoard event files (and Weights & Biases, when asked for).

metrics.jsonl stays the source of truth; this module mirrors each of its records, as it is appended,
into views that people open while a run trains:

  <workdir>/tensorboard/<run>/events.out.tfevents.*    (`tensorboard --logdir <workdir>`)
    one TensorBoard run per member, `seed_<s>` (under `<setting>/` in a sweep: `beta=0.5/seed_1`), with
    the scalars `train/<metric>` and `eval/<metric>` at the record's global step, so every seed's curve
    is drawn on one chart; one run `mean` per setting with the mean over its healthy members (the same
    statistic as summary.json); at evaluation epochs the images `reconstructions` (held-out inputs over
    their reconstructions) and, for variants with a latent model, `samples` (decoded draws of p(z), the
    same draws at every epoch) per member.

Written with tensorboardX (numpy and protobuf only: no TensorFlow, no PyTorch), by process 0 only.
Resuming from a checkpoint at step S first removes every event with step > S from the event files
(a run killed after its last checkpoint logged epochs that the resumed run logs again, bit-identical),
so each step is in the files once, as it is in metrics.jsonl. Weights & Biases (`log.wandb=true`,
`pip install wandb`) gets the same scalars and images, in one wandb run per workdir whose id is kept
in `<workdir>/wandb.json` with the last step sent, so a resumed run continues it without repeating steps.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxae import configs, files, report, sharding

TENSORBOARD_DIR = "tensorboard"
WANDB_FILE = "wandb.json"
SAMPLES_SALT = 13  # the prior draws shown at every evaluation epoch: fold_in(key(seed), 13)
NUM_SAMPLES = 16


def run_names(members: list[dict]) -> list[str]:
  """TensorBoard run (sub-folder) of each member: 'seed_0', or 'beta=0.5/seed_0' in a sweep."""
  return [os.path.join(setting_name(m["setting"]), f"seed_{m['seed']}") if m["setting"] else f"seed_{m['seed']}"
          for m in members]


def setting_name(setting: dict) -> str:
  """A folder name for a sweep setting: 'beta=0.5,learning_rate=0.001' ('' for no setting)."""
  text = ",".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items())
  return re.sub(r"[^\w.=,+-]", "_", text)


# --- event files: reading and trimming (TFRecord framing of Event protos) ----------------------------------


def _records(path: str):
  """(raw bytes of the record, step of its Event) for each complete record of an event file, in order."""
  from tensorboardX.proto import event_pb2

  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    end = pos + 12 + length + 4
    if end > len(data):
      return  # cut short by a kill: the rest is unreadable
    try:
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    except Exception:  # noqa: BLE001 - a damaged record ends what can be trusted
      return
    yield data[pos:end], int(event.step), event.HasField("file_version")
    pos = end


def trim_events(logdir: str, max_step: int) -> int:
  """Removes events with step > max_step from every event file under `logdir`; returns how many went.

  A file left with nothing but its header is deleted; symlinks are never followed or written through.
  """
  removed = 0
  if not os.path.isdir(logdir) or os.path.islink(logdir):
    return 0
  for root, dirs, names in os.walk(logdir):
    dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    for name in names:
      path = os.path.join(root, name)
      if "tfevents" not in name or os.path.islink(path) or name.endswith(".tmp"):
        continue
      records = list(_records(path))
      keep = [raw for raw, step, header in records if header or step <= max_step]
      data_kept = sum(1 for _, step, header in records if not header and step <= max_step)
      gone = len(records) - len(keep)
      size = os.path.getsize(path)
      if gone == 0 and sum(map(len, keep)) == size:
        continue
      removed += gone
      if data_kept == 0:
        os.remove(path)
        continue
      def write(tmp, data=b"".join(keep)):
        with open(files.open_fd(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
          f.write(data)
      files.replace_with(path, write)
  return removed


# --- images of the members at evaluation epochs -------------------------------------------------------------


def _tile(rows: np.ndarray, gap: int = 1) -> np.ndarray:
  """(r, c, H, W, C) images in [0, 1] -> one (r*(H+gap)-gap, c*(W+gap)-gap, C) picture, grey gaps."""
  rows = np.nan_to_num(np.asarray(rows, np.float32), nan=0.0)  # a diverged member's images are black
  r, c, h, w, ch = rows.shape
  out = np.full((r * (h + gap) - gap, c * (w + gap) - gap, ch), 0.5, np.float32)
  for i in range(r):
    for j in range(c):
      out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = rows[i, j]
  return np.clip(out, 0, 1)


def image_program(program):
  """A jitted (params with member axis, raw inputs (n, *data_shape)) -> (reconstruction means (M, n, ...),
  prior samples (M, 16, ...) or None): what the tracker draws at evaluation epochs."""
  net, config, variant = program.net, program.config, program.variant
  code = variant.code_fn(config, net)
  model = variant.latent_model(config, net) if variant.latent_model is not None else None
  seeds = jnp.asarray(program.seeds, jnp.uint32)

  def member(params, seed, x):
    recon = net.mean(net.decode(params, code(params, x)))
    if model is None:
      return recon, None
    z = model.bound(params).sample_prior(jax.random.fold_in(jax.random.key(seed), SAMPLES_SALT),  # a learned prior
                                         (NUM_SAMPLES, variant_dim(net, params)))
    return recon, net.mean(net.decode(params, z))

  return jax.jit(lambda params, x: jax.vmap(member, in_axes=(0, 0, None))(params, seeds, net.prepare(x)))


def variant_dim(net, params) -> int:
  """The latent size of a Gaussian encoder (the width of its mean)."""
  shape = jax.eval_shape(lambda: net.encode(params, jnp.zeros((1, *net.data_shape))))
  return shape[0].shape[-1]


def summary_writer_class():
  """tensorboardX.SummaryWriter, imported without PyTorch when PyTorch is not already loaded.

  tensorboardX imports torch whenever it is installed (~1 s, benchmarks/STARTUP.md), only to accept torch
  tensors, and its import is optional (`try: import torch except ImportError`): jaxae passes NumPy arrays
  and floats, so it hides torch for that one import (`sys.modules['torch'] = None` makes `import torch`
  raise ImportError) and restores it at once.
  """
  import sys

  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


# --- the tracker --------------------------------------------------------------------------------------------


class Tracker:
  """Mirrors metrics.jsonl records into TensorBoard (and wandb) during training. See the module docstring.

  Every process makes one and calls it the same way (drawing images gathers every member's images, a
  collective across hosts); only process 0 writes.
  """

  def __init__(self, workdir: str, config, members: list[dict], start_step: int, program=None, eval_x=None):
    self.workdir, self.config, self.members = workdir, config, members
    self.enabled = bool(config.log.tensorboard) or bool(config.log.wandb)
    self.primary = sharding.is_primary()
    self.names = run_names(members)
    self._writers: dict[str, Any] = {}
    self._wandb = None
    self._images = None
    if not self.enabled:
      return
    if config.log.images and program is not None and eval_x is not None and len(program.net.data_shape) == 3:
      shown = np.asarray(eval_x[:config.log.images])
      self._images = (image_program(program), shown)
      self._inputs = np.clip(np.asarray(program.net.prepare(shown), np.float32), 0, 1)
    if not self.primary:
      return
    if config.log.tensorboard:
      trim_events(os.path.join(workdir, TENSORBOARD_DIR), start_step)
    if config.log.wandb:
      self._wandb = _WandB(workdir, config, start_step)

  def _writer(self, name: str):
    if name not in self._writers:
      SummaryWriter = summary_writer_class()
      logdir = files.record_tree(files.make_dirs(os.path.join(self.workdir, TENSORBOARD_DIR, name)))
      self._writers[name] = SummaryWriter(logdir, flush_secs=30,
                                          filename_suffix=f".{uuid.uuid4().hex[:8]}")
    return self._writers[name]

  def draw(self, state):
    """The members' reconstructions of the logged inputs from `state.params`, dispatched and not waited
    for (device arrays), or None when no images are logged. Pass them to `record` with that epoch's record."""
    if not self.enabled or self._images is None:
      return None
    fn, x = self._images
    return fn(state.params, x)

  def record(self, record: dict, images=None) -> None:
    """Logs one metrics.jsonl record (JSON data: lists of per-member values) and, at evaluation epochs,
    the members' images from `draw` (every process must call this: fetching them is a collective)."""
    if not self.enabled:
      return
    if images is not None:
      images = sharding.to_host(images)
    if not self.primary:
      return
    step = int(record["step"])
    scalars = self._scalars(record)
    if self.config.log.tensorboard:
      for name, values in scalars.items():
        writer = self._writer(name)
        for tag, value in values.items():
          writer.add_scalar(tag, value, step)
      if images is not None:
        self._tensorboard_images(images, step)
      for w in self._writers.values():
        w.flush()
    if self._wandb is not None:
      self._wandb.log(step, record["epoch"], scalars, None if images is None else self._pictures(images))

  def _scalars(self, record: dict) -> dict[str, dict[str, float]]:
    """{run name: {tag: value}}: every member's values and every setting's mean over healthy members."""
    out: dict[str, dict[str, float]] = {name: {} for name in self.names}
    settings = sorted({m["setting_index"] for m in self.members})
    for split in ("train", "eval"):
      for metric, values in record.get(split, {}).items():
        v = report.as_array(values)
        if v.ndim != 1 or len(v) != len(self.members):
          continue
        for i, name in enumerate(self.names):
          if np.isfinite(v[i]):
            out[name][f"{split}/{metric}"] = float(v[i])
        for g in settings:
          idx = [i for i, m in enumerate(self.members) if m["setting_index"] == g]
          mean, _ = report.mean_std(v[idx])
          if np.isfinite(mean):
            out.setdefault(self._mean_name(g), {})[f"{split}/{metric}"] = mean
    if "seconds" in record:
      for g in settings:
        out.setdefault(self._mean_name(g), {})["time/epoch_seconds"] = float(record["seconds"])
    return out

  def _mean_name(self, g: int) -> str:
    setting = next(m["setting"] for m in self.members if m["setting_index"] == g)
    return os.path.join(setting_name(setting), "mean") if setting else "mean"

  def _pictures(self, images) -> dict[str, dict[str, np.ndarray]]:
    """{run name: {'reconstructions': (H', W', C) picture, 'samples': ...}} in [0, 1]."""
    recon, samples = images
    inputs = self._inputs
    out = {}
    for i, name in enumerate(self.names):
      pics = {"reconstructions": _tile(np.stack([inputs, np.clip(recon[i], 0, 1)]))}
      if samples is not None:
        s = np.asarray(samples[i])
        side = int(np.sqrt(len(s)))
        pics["samples"] = _tile(s[:side * side].reshape(side, side, *s.shape[1:]))
      out[name] = pics
    return out

  def _tensorboard_images(self, images, step: int) -> None:
    for name, pics in self._pictures(images).items():
      for tag, pic in pics.items():
        if pic.shape[-1] == 1:
          self._writer(name).add_image(tag, pic[..., 0], step, dataformats="HW")
        else:
          self._writer(name).add_image(tag, pic[..., :3], step, dataformats="HWC")

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers = {}
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


class _WandB:
  """One wandb run per workdir (id in wandb.json), resumed on restart; steps already sent are skipped."""

  def __init__(self, workdir: str, config, start_step: int):
    import wandb  # configs.validate checked that it is installed

    path = os.path.join(workdir, WANDB_FILE)
    state = {}
    if start_step > 0 and os.path.lexists(path):
      state = files.read_json(path)  # a symlink or a file jaxae did not write: a one-line WorkdirError
    self.path = path
    self.state = {"id": state.get("id") or uuid.uuid4().hex[:12], "last_step": int(state.get("last_step", -1))}
    self.run = wandb.init(project=config.log.wandb_project, id=self.state["id"], resume="allow", dir=workdir,
                          name=os.path.basename(os.path.normpath(workdir)), config=configs.flatten(config))
    self._save()

  def _save(self) -> None:
    files.write_json(self.path, self.state)

  def log(self, step: int, epoch: int, scalars: dict, pictures: dict | None) -> None:
    if step <= self.state["last_step"]:
      return  # sent before a restart; resume is bit-exact, so the values are the same
    import wandb

    data = {"epoch": epoch}
    for name, values in scalars.items():
      data.update({f"{name}/{tag}": v for tag, v in values.items()})
    for name, pics in (pictures or {}).items():
      data.update({f"{name}/{tag}": wandb.Image(pic) for tag, pic in pics.items()})
    self.run.log(data, step=step)
    self.state["last_step"] = step
    self._save()

  def finish(self) -> None:
    self.run.finish()
