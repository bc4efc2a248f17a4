"""`train_and_evaluate(config, workdir)`: the whole run, from config to checkpoints, metrics and figures.

config -> data -> network + variant objective (train.build) -> train step -> checkpoints/metrics ->
figures/report. Re-running on the same workdir resumes from the latest complete checkpoint (workdir.py
has the layout and the resume policy). SIGINT / SIGTERM finish the current chunk of steps, save, and
return with `interrupted` set.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxae import analysis, checkpoints, configs, files, models, report, sharding, signals, sweep, tracking, train
from jaxae import workdir as workdir_lib
from jaxae import data as data_lib
from jaxae import stream as stream_lib


def _say(msg: str) -> None:
  if sharding.is_primary():  # one voice per job, not one per host
    tqdm.write(msg, file=sys.stdout)


class _StopFlag:
  """Set by SIGINT/SIGTERM; the training loop checks it between chunks (handlers restored on exit)."""

  def __init__(self):
    self.signal = None

  def __call__(self) -> bool:
    # Every process must stop at the same chunk (they step in lockstep), so a signal to any host stops all;
    # every process calls this the same number of times (it is a collective across hosts).
    # Answer with the collective's result, never a re-read of self.signal: a signal landing just after
    # the gather would otherwise make this process stop one chunk before the others.
    stopping = sharding.any_process(self.signal is not None)
    if stopping and self.signal is None:
      self.signal = signal.SIGTERM  # another process was told to stop
    return stopping

  @contextlib.contextmanager
  def installed(self):
    # A signal noted before training began (jaxae.signals: the command line's handler) counts as the first.
    self.signal = self.signal or signals.received()

    def handler(signum, frame):
      if self.signal is not None and signum == signal.SIGINT:  # second Ctrl-C: stop hard
        raise KeyboardInterrupt
      self.signal = signum
      signals.note(signum)  # so that a KeyboardInterrupt after it is reported as the second Ctrl-C
      _say(f"\n{signal.Signals(signum).name} received: finishing the current step and saving a checkpoint...")

    old = {}
    try:
      for s in (signal.SIGINT, signal.SIGTERM):
        old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no polite stop
      pass
    try:
      yield self
    finally:
      for s, h in old.items():
        signal.signal(s, h)


def stop_if_asked(message: str) -> None:
  """Raises signals.Stopped when the command line noted a first SIGINT/SIGTERM. One process only: the hosts
  of a job stop together, at a chunk boundary, through _StopFlag's collective."""
  if jax.process_count() == 1:
    signals.check(message)


def check_data(config, data: data_lib.Data, normalizer=None) -> None:
  """Raises DataError when the data cannot serve this config's variant and likelihood (one line)."""
  variant = configs.variant_of(config)
  if variant.needs_labels:
    for split in (data.train, data.eval):
      if not data_lib.has_labels(split):
        raise data_lib.DataError(f"variant={variant.name!r} needs labels, but {split.name} has none: give "
                                 f"data.labels='npy:PATH', an npz with y, one sub-folder per class, or data.label_column")
  variant.check_data(config, data)
  if config.loss.reconstruction in configs.UNIT_INTERVAL_RECONSTRUCTIONS:
    for split in (data.train, data.eval):
      data_lib.check_unit_interval(split, f"loss.reconstruction={config.loss.reconstruction!r}", normalizer)


def _labels(split: data_lib.Split):
  """The split's labels, or zeros for unlabelled data (the train step's batches always carry some)."""
  return split.labels if data_lib.has_labels(split) else np.zeros(len(split), np.int32)


def _members(group: sweep.Group) -> list[dict]:
  return [{"setting_index": g, "setting": group.settings[g], "seed": s} for g, s in group.members]


def train_group(group: sweep.Group, data: data_lib.Data, workdir: str, on_corrupt: str = "fail",
                normalizer: data_lib.Normalizer | None = None, target: data_lib.Target | None = None) -> dict:
  """Trains every member of one compiled group; returns the summary dict (see report.summarize).

  normalizer: fitted on the training split (data.normalize), None for none; target: the data.Target of
  data.target_source (its shape and normalizer, fitted on the training targets), None for none.
  """
  config = group.config
  primary = sharding.is_primary()  # with several processes only process 0 writes the workdir's files
  stop_if_asked(f"stopped before training {workdir}; what was saved before is intact, the same command resumes")
  files.make_dirs(workdir)  # a group's folder (recorded in the manifest, never through a symlink)
  members = _members(group)
  flat = configs.flatten(config)
  config_path = os.path.join(workdir, workdir_lib.CONFIG)
  if primary:
    files.record_tree(os.path.join(workdir, checkpoints.CHECKPOINT_DIR))  # orbax fills it: jaxae's as a whole
  mngr = checkpoints.manager(workdir, config)
  saved = workdir_lib.saved_config(mngr, config_path)
  if saved is not None:
    workdir_lib.check_compatible(saved, flat, workdir)
  sharding.barrier("jaxae_config_checked")  # every process has read the old config before it is replaced

  data_shape = data.train.x.shape[1:]
  mesh = sharding.member_mesh(len(members))
  program = train.build(group, data_shape, len(data.train), mesh, normalizer=normalizer,
                        train_x=data_lib.inputs(data.train), target=target)
  streamed = stream_lib.should_stream(config.data, data)
  if streamed:  # batches are read from the host or disk as they are needed (jaxae/stream.py)
    (x, y), (xe, ye) = (data_lib.inputs(data.train), _labels(data.train)), (data_lib.inputs(data.eval), _labels(data.eval))
    _say(f"streaming batches from the host (data.stream={config.data.stream!r}): "
         f"{stream_lib.nbytes(x) / 2**20:.0f} MiB of training inputs stay off the device")
  else:
    x, y = sharding.replicate((data_lib.inputs(data.train), _labels(data.train)), mesh)
    xe, ye = sharding.replicate((data_lib.inputs(data.eval), _labels(data.eval)), mesh)

  restored = workdir_lib.restore_latest(mngr, program.abstract_state, on_corrupt, _say, hparams=program.hparams)
  if restored is None:
    state = program.init_state()
    records, diverged = report.truncate_records(workdir, 0, write=primary), {}
  else:
    state, meta = restored
    offset = train.global_step(state) % program.steps_per_epoch
    if offset % program.chunk:
      raise checkpoints.CheckpointError(
          f"the checkpoint stopped {offset} steps into an epoch; train.steps_per_call={config.train.steps_per_call} "
          f"must divide {offset} to resume it (use the value the run was started with)")
    records = report.truncate_records(workdir, meta["epoch"], write=primary)
    diverged = {int(k): v for k, v in meta["diverged"].items()}
    _say(f"resuming {workdir} from step {train.global_step(state)} (epoch {meta['epoch']})")
  if primary:  # after the restore: a damaged checkpoint is refused with the workdir as it was
    workdir_lib.write_config(workdir, config, members, normalizer)
  parameters = models.param_counts(program.params_abstract())
  _say(report.parameter_lines(parameters))

  spe = program.steps_per_epoch
  epochs = config.train.epochs
  epoch = start_epoch = train.global_step(state) // spe
  num = len(members)
  who = lambda i: f"seed {members[i]['seed']}" + (f" ({members[i]['setting']})" if members[i]["setting"] else "")

  def meta() -> dict:
    return {"epoch": epoch, "step": train.global_step(state), "members": members,
            "diverged": {str(k): v for k, v in diverged.items()}, "data_shape": list(data_shape),
            "config": config.to_dict(), "eval_data": data.eval_name,
            "normalizer": json.loads(normalizer.to_json()) if normalizer is not None else None,
            **({"target": json.loads(target.to_json())} if target is not None else {})}

  tracker = tracking.Tracker(workdir, config, members, train.global_step(state), program, data.eval.x)
  stop = _StopFlag()
  interrupted = None
  bar = tqdm(total=epochs, initial=min(epoch, epochs), desc=os.path.basename(os.path.normpath(workdir)) or "train",
             unit="epoch", disable=not (config.train.progress and primary and sys.stderr.isatty()), file=sys.stderr,
             leave=False)
  # The loop is pipelined: epoch N + 1 is dispatched before epoch N's metrics, evaluation and images are
  # brought to the host, logged and printed, so that host work runs while the device computes (the metric
  # sums, evaluation and images of epoch N are separate buffers that the next, donating, train chunk
  # leaves alone). Before a checkpoint the pending epoch is finished, so meta() sees its divergences.
  pending = None  # (epoch, metric sums, evaluation, images) of the last epoch dispatched, not yet logged
  t_last = time.perf_counter()

  def finish() -> None:
    nonlocal pending, t_last
    if pending is None:
      return
    done, sums, evals, images = pending
    pending = None
    train_means = train.epoch_means(program, sums)
    for i in np.flatnonzero(~np.isfinite(train_means["loss"])):
      if int(i) not in diverged:
        diverged[int(i)] = done
        _say(f"warning: {who(i)} diverged (non-finite loss) in epoch {done}; the other members keep training")
    record: dict[str, Any] = {"epoch": done, "step": done * spe}
    record["train"] = {k: v for k, v in train_means.items() if v.ndim == 1}
    if evals is not None:
      record["eval"] = {k: np.asarray(v) for k, v in sharding.to_host(evals).items() if np.ndim(v) == 1}
    now = time.perf_counter()
    record["seconds"] = now - t_last  # wall time between two epochs' results reaching the host
    t_last = now
    records.append(report.append_record(workdir, record, write=primary))
    tracker.record(records[-1], images=images)
    healthy = np.asarray([i not in diverged for i in range(num)])
    _say(report.progress_line(done, epochs, record["train"], record.get("eval"), healthy, record["seconds"],
                              program.variant.headline))
    bar.update(1)

  with stop.installed():
    while epoch < epochs:
      state, finished = (stream_lib.run_epoch if streamed else train.run_epoch)(program, state, x, y, stop)
      if config.train.figures and primary and epoch == start_epoch:
        _import_in_background("jaxae.plots")  # matplotlib's ~0.4 s of imports while the device computes
      finish()  # the previous epoch, while this one computes
      if not finished:
        interrupted = stop.signal
        break
      state, sums = train.split_epoch_metrics(state)
      epoch += 1
      evals = images = None
      if epoch % config.train.eval_every == 0 or epoch == epochs:
        evals = stream_lib.evaluate(program, state, xe, ye) if streamed else program.evaluate(state, xe, ye)
        images = tracker.draw(state)
      pending = (epoch, sums, evals, images)
      stopping = stop() or mngr.reached_preemption(epoch * spe)
      if epoch % config.checkpoint.every_epochs == 0 or epoch == epochs or stopping:
        finish()
        checkpoints.save(mngr, state, meta())  # every process writes its own members' shards
      if stopping:
        interrupted = stop.signal or signal.SIGTERM
        break
    finish()
    if interrupted is not None and train.global_step(state) not in mngr.all_steps():
      checkpoints.save(mngr, state, meta())
    mngr.wait_until_finished()
  tracker.close()
  bar.close()
  mngr.close()

  if interrupted is not None:
    step = train.global_step(state)
    _say(f"stopped at step {step} (epoch {epoch} of {epochs} complete); checkpoint saved in {workdir}. "
         f"Run the same command again (without --fresh) to resume.")
    return {"interrupted": signal.Signals(interrupted).name, "step": step, "epoch": epoch}

  summary = report.summarize(records, members, diverged, data.eval_name)
  summary["steps_per_epoch"] = spe
  summary["parameters"] = parameters
  if primary:
    report.write_summary(workdir, summary)
  if config.train.figures and signals.received() is None:  # after a Ctrl-C, main stops without them
    params = sharding.to_host(state.params)  # a collective across hosts: every process takes part
    if primary:
      _figures(workdir, records, members, program, params, data)
  return summary


def _import_in_background(module: str) -> None:
  """Starts importing `module` in a daemon thread; a later `import` of it waits for that one (the import
  lock) and raises any error itself, so errors here are dropped."""
  def load():
    try:
      importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the main thread's own import reports it
      pass

  threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def _figures(workdir, records, members, program, params, data) -> None:
  from jaxae import plots  # matplotlib (~0.4 s of imports) only when figures are drawn

  config, variant = program.config, program.variant
  figdir = os.path.join(workdir, "figures")
  plots.loss_curves(records, members, os.path.join(figdir, "loss_curves.png"), metric="loss",
                    title=f"{variant.name}: training loss and held-out loss (mean ± std over seeds)")
  if variant.headline != "loss":
    plots.loss_curves(records, members, os.path.join(figdir, f"{variant.headline}_curves.png"), metric=variant.headline)
  if len(program.net.data_shape) == 1:
    _vector_figures(figdir, members, program, params, data)
  if len(program.net.data_shape) != 3:
    return  # reconstructions are drawn for images
  images = data.eval.x[:10]
  rows, labels = [program.net.prepare(images)], ["input"]
  for g in sorted({m["setting_index"] for m in members}):
    i = next(j for j, m in enumerate(members) if m["setting_index"] == g)
    rows.append(analysis.reconstruct(program.net, analysis.member_params(params, i), images, config))
    setting = ",".join(f"{k.split('.')[-1]}={v}" for k, v in members[i]["setting"].items())
    labels.append(f"seed {members[i]['seed']} {setting}".strip())
  plots.image_rows(rows, labels, os.path.join(figdir, "reconstructions.png"),
                   title=f"{variant.name}: held-out images and reconstructions")


VECTOR_FIGURE_EXAMPLES = 10000  # the held-out examples (the first ones) that the vector figures use


def _vector_figures(figdir, members, program, params, data) -> None:
  """Vectors: held-out squared error per feature (feature_errors.png) and per example (example_errors.png)."""
  from jaxae import plots

  x = data.eval.x[:VECTOR_FIGURE_EXAMPLES]
  target = None if data.eval.target is None else data.eval.target[:VECTOR_FIGURE_EXAMPLES]
  errors = {}
  for g in sorted({m["setting_index"] for m in members}):
    idx = [i for i, m in enumerate(members) if m["setting_index"] == g]
    label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in members[idx[0]]["setting"].items())
    errors[label] = np.stack([analysis.squared_errors(program.net, analysis.member_params(params, i), x, program.config,
                                                      target=target)
                              for i in idx])  # (seeds, N, D)
  units = " (after data.normalize)" if program.net.normalizer is not None else ""
  plots.feature_errors({k: e.mean(axis=1) for k, e in errors.items()}, os.path.join(figdir, "feature_errors.png"),
                       ylabel=f"squared error{units}")
  plots.example_errors({k: e.mean(axis=2) for k, e in errors.items()}, os.path.join(figdir, "example_errors.png"),
                       xlabel=f"per-example MSE{units}")


def train_and_evaluate(config, workdir: str, fresh: bool = False, on_corrupt: str = "fail") -> dict:
  """Trains all members (seeds x sweep settings) of `config` in `workdir`; returns the summary.

  Raises an errors.BadInput (ConfigError, DataError, NetworkError, CheckpointError, WorkdirError;
  WorkdirBusy when another run holds the workdir) or an errors.EnvironmentFailure before anything in
  `workdir` changes (workdir.py lists the checks). `fresh=True` discards what jaxae wrote in `workdir` first.
  The returned dict is summary.json's content; with static sweep keys it is
  {"groups": {name: summary}}; after SIGINT/SIGTERM it is {"interrupted": ..., "step", "epoch"}.
  """
  configs.validate(config)
  groups = sweep.groups(config)
  data = data_lib.load(config.data)
  normalizers, targets = {}, {}
  for g in groups:  # everything that can be refused is refused before the workdir is touched
    kind = g.config.data.normalize
    if kind not in normalizers:
      normalizers[kind] = data_lib.Normalizer(kind).fit(data.train) if kind != "none" else None
      targets[kind] = data_lib.fit_target(data.train, kind)  # the targets' own statistics
    check_data(g.config, data, normalizers[kind])
    train.build_net(g.config, data.train.x.shape[1:], target=targets[kind])  # shapes; the user's own modules
    train.steps_per_call(g.config, len(data.train))
    mesh = sharding.member_mesh(len(g.members))  # several processes: the members must split evenly over them
    _check_resources(g, data, normalizers[kind], mesh, workdir, targets[kind])
  before = "stopped before training started; nothing was written"
  stop_if_asked(before)  # a Ctrl-C while the data loaded or the programs were shaped
  # One run at a time on a workdir (a lock held by process 0); its files are all checked before any changes.
  with workdir_lib.locked(workdir, sharding.is_primary(), sharding.any_process):
    workdir_lib.check(workdir, _runs(config, groups, workdir), fresh)
    stop_if_asked(before)
    return _train_all(config, groups, data, normalizers, workdir, fresh, on_corrupt, targets)


def _check_resources(group, data, normalizer, mesh, workdir, target=None) -> None:
  """ConfigError when the group's state, gradients and data cannot fit in a device's memory (memory.py);
  EnvironmentFailure when the workdir's disk cannot hold one checkpoint."""
  from jaxae import memory

  program = train.build(group, data.train.x.shape[1:], len(data.train), normalizer=normalizer, target=target)
  data_bytes = sum(stream_lib.nbytes(data_lib.inputs(s)) for s in (data.train, data.eval))
  abstract = program.abstract_state()
  memory.check_fits(abstract, data_bytes, devices=mesh.size)
  checkpoints.check_disk_space(workdir, abstract, "a checkpoint")


def _runs(config, groups, workdir) -> list:
  """(folder, config, members) of each run an invocation trains: the workdir, or one folder per sweep group
  plus the workdir itself with the whole config."""
  if len(groups) == 1:
    return [(workdir, groups[0].config, _members(groups[0]))]
  return [(workdir, config, None)] + [(os.path.join(workdir, "groups", g.name), g.config, _members(g)) for g in groups]


def _sweep_figures(pairs, swept, workdir) -> None:
  from jaxae import plots

  plots.sweep_figures(sweep.points(pairs), swept, os.path.join(workdir, "figures"))


def _train_all(config, groups, data, normalizers, workdir, fresh, on_corrupt, targets) -> dict:
  if fresh and sharding.is_primary():
    workdir_lib.clear(workdir)
  sharding.barrier("jaxae_workdir_ready")  # no process opens the workdir while process 0 clears it
  # Process 0 writes the workdir's files: each is listed in manifest.jsonl (what --fresh may delete).
  with workdir_lib.writing(workdir) if sharding.is_primary() else contextlib.nullcontext():
    return _train_groups(config, groups, data, normalizers, workdir, on_corrupt, targets)


def _train_groups(config, groups, data, normalizers, workdir, on_corrupt, targets) -> dict:
  swept = list(configs.parse_sweep(config))
  if len(groups) == 1:
    kind = groups[0].config.data.normalize
    summary = train_group(groups[0], data, workdir, on_corrupt, normalizers[kind], targets[kind])
    if swept and "interrupted" not in summary and config.train.figures and sharding.is_primary():
      _sweep_figures([(groups[0], summary)], swept, workdir)
    return summary
  static = [k for k in swept if k not in sweep.dynamic_keys(config, configs.parse_sweep(config))]
  if sharding.is_primary():
    workdir_lib.write_config(workdir, config)  # the whole sweep: a later invocation is compared with it
  _say(f"the sweep changes array shapes or code ({', '.join(static)}): "
       f"training {len(groups)} separately compiled groups, each with {len(groups[0].members)} members in one program")
  out = {}
  for g in groups:
    _say(f"== group {g.name}")
    out[g.name] = train_group(g, data, os.path.join(workdir, "groups", g.name), on_corrupt,
                              normalizers[g.config.data.normalize], targets[g.config.data.normalize])
    if "interrupted" in out[g.name]:
      return out[g.name]
  if not sharding.is_primary():
    return {"groups": out}
  files.write_json(os.path.join(workdir, workdir_lib.SWEEP_SUMMARY), {"groups": out}, indent=1)
  if config.train.figures:
    _sweep_figures([(g, out[g.name]) for g in groups], swept, workdir)
  return {"groups": out}
