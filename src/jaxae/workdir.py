"""The workdir of a run: what jaxae writes there, the lock, the checks before anything changes, the resume policy.

One run, or one sweep group under `groups/<name>/`:
  config.json     the resolved config (of the whole invocation at the top, of the group in a group)
  members.json    [{setting_index, setting, seed}] in member order
  metrics.jsonl   one record per epoch (report.py)
  summary.json    final train and held-out metrics per member, mean/std per setting
  checkpoints/    orbax steps (checkpoints.py)
  figures/        loss curves, reconstructions, sweep figures (eval_*.png: python -m jaxae.evaluate)
  tensorboard/    TensorBoard event files (tracking.py); wandb.json: the Weights & Biases run id
  evaluation.json, export/   what python -m jaxae.evaluate (and python -m jaxae.export) wrote
  manifest.jsonl  every file and folder jaxae wrote here, as it wrote them (files.confined): what --fresh deletes
  jaxae.lock      while a run, an evaluation or an export is on it: who holds the workdir (removed at the end)

Nothing can corrupt it:
- `locked` holds an OS-level lock (fcntl.flock) for the whole run, from process 0 of a job (the other
  hosts of one multi-host job share the workdir legitimately). A second run is refused at once, with
  the other's pid, host and start time; the kernel drops the lock of a killed process, so a SIGKILLed
  run never blocks the next one.
- `check` reads everything before anything is written: config.json (whenever it exists) and the latest
  checkpoint's config against this config and against each other, members.json, metrics.jsonl against
  the checkpoint's epoch, summary.json; symlinks and files of the wrong kind. Any disagreement is a
  one-line error naming the file and the key: earlier results are never silently rewritten.
- Files are replaced atomically and never written through a symlink (files.py).
- `--fresh` plans every deletion first (`fresh_plan`: only what manifest.jsonl says jaxae wrote; a
  symlink, a file inside jaxae's folders that the manifest does not list, or a folder it cannot write
  stops it before anything is deleted). A workdir written before jaxae kept a manifest falls back to
  the names jaxae writes (PNGs in figures/, orbax step folders in checkpoints/).
- evaluate and export take the same lock (`taken`): a workdir that is training is refused, never read
  half-written.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import socket
from typing import Any, Callable

from jaxae import checkpoints, configs, errors, files, report

CONFIG = "config.json"
MEMBERS = "members.json"
NORMALIZER = "normalizer.json"
SWEEP_SUMMARY = "sweep_summary.json"
LOCK = "jaxae.lock"
FIGURES = "figures"
GROUPS = "groups"
EVALUATION = "evaluation.json"
EXPORT = "export"
TENSORBOARD = "tensorboard"
WANDB = "wandb.json"
MANIFEST = files.MANIFEST
_FILES = (CONFIG, MEMBERS, NORMALIZER, report.METRICS, report.SUMMARY, SWEEP_SUMMARY, EVALUATION, WANDB, MANIFEST)
_DIRS = (checkpoints.CHECKPOINT_DIR, FIGURES, GROUPS, TENSORBOARD, EXPORT)
WRITTEN = _FILES + _DIRS + tuple(f + ".tmp" for f in _FILES)
_STEP_DIR = re.compile(r"^\d+(\.orbax-checkpoint-tmp(-\d+)?)?$")  # orbax: '40', '40.orbax-checkpoint-tmp-171..'


# ---------------------------------------------------------------------------------------------- the lock


def _first_missing(path: str) -> str | None:
  """The outermost ancestor of `path` (or itself) that does not exist yet, None when it exists."""
  path = os.path.abspath(path)
  missing = None
  while not os.path.lexists(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def ensure_directory(workdir: str) -> str | None:
  """Creates `workdir` (and parents) when missing; returns the outermost folder created (None if none).

  Raises EnvironmentFailure when it is a file or cannot be created or written (read-only filesystem,
  permissions).
  """
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise errors.EnvironmentFailure(f"--workdir={workdir} is a file, not a directory")
  created = _first_missing(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.EnvironmentFailure(f"cannot create --workdir={workdir}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.EnvironmentFailure(f"cannot write in --workdir={workdir} (read-only filesystem or no permission)")
  return created


def _holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that is starting"


def _remove_created(created: str | None, workdir: str) -> None:
  """Removes the empty folders this run created (a refused run leaves no trace)."""
  if created is None:
    return
  path = os.path.abspath(workdir)
  while True:
    try:
      os.rmdir(path)
    except OSError:
      return
    if path == created:
      return
    path = os.path.dirname(path)


@contextlib.contextmanager
def locked(workdir: str, primary: bool = True, agree: Callable[[bool], bool] = bool):
  """Holds `<workdir>/jaxae.lock` (fcntl.flock) while the body runs; creates the workdir if needed.

  primary: this process takes the lock (process 0 of a job; the others share it). agree(flag) tells
  every process whether any process flagged a failure (sharding.any_process; `bool` for one process).
  Raises WorkdirBusy naming the holder when another run holds it, EnvironmentFailure when the workdir
  is a file or cannot be written. The lock file is removed on release, and so is a workdir this call
  created if the body raised and left it empty.
  """
  import fcntl

  created, fd, problem = None, None, None
  try:
    if primary:
      created = ensure_directory(workdir)
      path = os.path.join(workdir, LOCK)
      while True:
        fd = files.open_fd(path, os.O_RDWR | os.O_CREAT)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
          if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            problem = errors.WorkdirBusy(f"--workdir={workdir} is in use by another jaxae run ({_holder(fd)}): wait "
                                         f"for it to finish, or use another --workdir")
          else:  # a filesystem without locks (ENOLCK / EOPNOTSUPP): say so and go on unlocked
            print(f"warning: cannot lock {path} ({e.strerror}): make sure no other run uses this workdir")
          os.close(fd)
          fd = None
          break
        # The holder we waited for may have removed the file after we opened it: lock the file that is there.
        try:
          same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
          same = False
        if same:
          break
        os.close(fd)
      if fd is not None:
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode(), 0)
  except BaseException as e:
    problem = e
  if agree(problem is not None) and problem is None:
    problem = errors.WorkdirBusy(f"--workdir={workdir}: process 0 of this job could not take the workdir's lock")
  failed = problem is not None
  try:
    if problem is not None:
      raise problem
    yield
  except BaseException:
    failed = True
    raise
  finally:
    if fd is not None:
      with contextlib.suppress(OSError):
        os.unlink(os.path.join(workdir, LOCK))
      os.close(fd)
    if failed and primary:
      _remove_created(created, workdir)


@contextlib.contextmanager
def taken(workdir: str, writes: bool = True):
  """The lock of an existing workdir, for evaluate and export: they never read a run that is training.

  Raises WorkdirError when `workdir` does not exist (nothing is created), EnvironmentFailure when it is a
  file or (writes) cannot be written, WorkdirBusy naming the run that holds it. writes=False (an export
  to --out elsewhere): a workdir this process cannot write is read without taking its lock, unless a run
  holds the lock now (a lock file is only ever created by a process that can write the folder).
  """
  import fcntl

  if not os.path.lexists(workdir):
    raise errors.WorkdirError(f"--workdir={workdir}: no such folder")
  if not os.path.isdir(workdir):
    raise errors.EnvironmentFailure(f"--workdir={workdir} is a file, not a directory")
  if writes or os.access(workdir, os.W_OK | os.X_OK):
    with locked(workdir):
      yield
    return
  try:
    fd = files.open_fd(os.path.join(workdir, LOCK), os.O_RDONLY)
  except FileNotFoundError:
    yield
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise errors.WorkdirBusy(f"--workdir={workdir} is in use by another jaxae run ({_holder(fd)}): wait for it "
                                 f"to finish") from None
    yield
  finally:
    os.close(fd)


@contextlib.contextmanager
def writing(workdir: str):
  """The body's writes below `workdir` pass no symlink at any level and are listed in its manifest.jsonl
  (files.confined) -- unless the workdir holds jaxae's files from before manifests: then nothing is listed,
  and --fresh keeps to the names jaxae writes there."""
  legacy = not os.path.lexists(os.path.join(workdir, MANIFEST)) and any(
      os.path.lexists(os.path.join(workdir, n)) for n in WRITTEN)
  with files.confined(workdir, record=not legacy):
    yield


# ---------------------------------------------------------------------------------------------- the checks


def first_symlink(path: str) -> str | None:
  """The first symlink at or under `path` (not following any), or None."""
  if os.path.islink(path):
    return path
  for root, dirs, names in os.walk(path, followlinks=False):
    for n in sorted(dirs + names):
      if os.path.islink(os.path.join(root, n)):
        return os.path.join(root, n)
  return None


def _check_kinds(directory: str) -> None:
  """Every name jaxae writes in `directory` is a plain file or folder, as jaxae writes it; no symlink."""
  for name in _FILES + tuple(f + ".tmp" for f in _FILES) + _DIRS + (LOCK,):
    path = os.path.join(directory, name)
    if not os.path.lexists(path):
      continue
    files.refuse_symlink(path)
    want_dir = name in _DIRS
    if os.path.isdir(path) != want_dir:
      raise errors.WorkdirError(f"{path} is a {'file' if want_dir else 'folder'}, but jaxae writes a "
                                f"{'folder' if want_dir else 'file'} there: move it out of the workdir")
    if want_dir and name != GROUPS:
      link = first_symlink(path)
      if link:
        files.refuse_symlink(link)


def canonical_sweep(value) -> Any:
  """The sweep as comparable data: '{"a": [1e-3]}' and '{"a": [0.001]}' are the same sweep."""
  raw = value
  if isinstance(raw, str):
    if not raw:
      return {}
    try:
      raw = json.loads(raw)
    except json.JSONDecodeError:
      return value
  if not isinstance(raw, dict):
    return value
  return [(k, [configs._same_value(v) for v in vs] if isinstance(vs, list) else vs) for k, vs in raw.items()]


def _same_members(a: list, b: list) -> bool:
  norm = lambda ms: [(m.get("setting_index"), m.get("seed"),
                      sorted((k, configs._same_value(v)) for k, v in (m.get("setting") or {}).items()))
                     for m in ms if isinstance(m, dict)] if isinstance(ms, list) else ms
  return norm(a) == norm(b)


def _latest_meta(directory: str) -> tuple[int, dict] | None:
  """(step, meta) of the latest checkpoint whose metadata reads; None without one (damage: restore's job)."""
  ckpt = os.path.join(directory, checkpoints.CHECKPOINT_DIR)
  if not os.path.isdir(ckpt):
    return None
  steps = sorted((int(n) for n in os.listdir(ckpt) if n.isdigit()), reverse=True)
  if not steps:
    return None
  mngr = checkpoints.manager(directory, read_only=True)
  try:
    for step in steps:
      try:
        return step, checkpoints.read_meta(mngr, step)
      except checkpoints.CheckpointError:
        continue
  finally:
    mngr.close()
  return None


def check_run(directory: str, config, members: list[dict] | None) -> None:
  """Raises (before anything is written) unless `directory` is empty of jaxae's files or holds a run this
  config may continue: files of the right kind and no symlink; config.json and the latest checkpoint's
  config compatible with `config` and with each other; members.json, the checkpoint's members and
  metrics.jsonl's records agreeing with `members`; metrics.jsonl reaching the checkpoint's epoch.

  CheckpointMismatch for another config (keys named, saved -> now); WorkdirError for files that
  disagree with each other or that jaxae did not write (file and line or key named).
  """
  if not os.path.lexists(directory):
    return
  if not os.path.isdir(directory):
    raise errors.WorkdirError(f"{directory} is a file, but jaxae keeps a run's files in a folder there")
  _check_kinds(directory)
  current = configs.flatten(config)
  config_path = os.path.join(directory, CONFIG)
  saved = None
  if os.path.lexists(config_path):
    saved = configs.flatten(configs.from_dict(files.read_json(config_path)))
    check_compatible(saved, current, directory, source=CONFIG)
  latest = _latest_meta(directory)
  epoch = 0
  if latest is not None:
    step, meta = latest
    from_ckpt = configs.flatten(configs.from_dict(meta["config"]))
    where = f"checkpoint step {step}"
    check_compatible(from_ckpt, current, directory, source=where)
    if saved is not None:
      bad = incompatible_keys(from_ckpt, saved)
      if bad:
        raise errors.WorkdirError(f"{directory}: {CONFIG} and {where} disagree ({_diffs(from_ckpt, saved, bad)}): the "
                                  f"workdir's files were changed outside jaxae; use --fresh or another --workdir")
    if members is not None and not _same_members(meta["members"], members):
      raise errors.WorkdirError(f"{directory}: {where} holds {len(meta['members'])} members that differ from the "
                                f"{len(members)} this config implies; use --fresh or another --workdir")
    epoch = meta["epoch"]
  members_path = os.path.join(directory, MEMBERS)
  if members is not None and os.path.lexists(members_path):
    listed = files.read_json(members_path, list)
    if not _same_members(listed, members):
      raise errors.WorkdirError(f"{members_path} lists {len(listed)} members that differ from the {len(members)} "
                                f"this config implies: the workdir's files disagree; use --fresh or another --workdir")
  records = report.read_records(directory, len(members) if members is not None else None)
  last = records[-1]["epoch"] if records else 0
  if last < epoch:
    raise errors.WorkdirError(f"{os.path.join(directory, report.METRICS)} has records up to epoch {last}, but the "
                              f"checkpoint it resumes from is at epoch {epoch}: the workdir's files disagree (was it "
                              f"edited or deleted?); use --fresh to start over, or another --workdir")
  if records and not os.path.isdir(os.path.join(directory, checkpoints.CHECKPOINT_DIR)):
    raise errors.WorkdirError(f"{os.path.join(directory, report.METRICS)} has {len(records)} epochs but "
                              f"{checkpoints.CHECKPOINT_DIR}/ is missing: the workdir's files disagree; use --fresh "
                              f"to start over, or another --workdir")
  summary_path = os.path.join(directory, report.SUMMARY)
  if os.path.lexists(summary_path):
    files.read_json(summary_path)
    if not records:
      raise errors.WorkdirError(f"{summary_path} exists but {report.METRICS} has no record: the workdir's files "
                                f"disagree; use --fresh to start over, or another --workdir")
  for name in (NORMALIZER, SWEEP_SUMMARY):
    if os.path.lexists(os.path.join(directory, name)):
      files.read_json(os.path.join(directory, name))


def check(workdir: str, runs: list[tuple[str, Any, list[dict] | None]], fresh: bool) -> list[str]:
  """Everything this invocation will do to `workdir`, checked before any of it is done.

  runs: (folder, config, members) of each run it trains (the workdir itself, or the workdir with the whole
  config plus one folder per sweep group). fresh: only plan the deletions (fresh_plan). Returns the paths
  --fresh will delete ([] without it).
  """
  if fresh:
    return fresh_plan(workdir)
  for directory, config, members in runs:
    if directory != workdir:  # a group's folder (the workdir itself may be a link to where runs live)
      files.refuse_symlink(directory)
    check_run(directory, config, members)
  return []


# ---------------------------------------------------------------------------------------------- --fresh


def _writable(path: str) -> None:
  if not os.access(path, os.W_OK | os.X_OK):
    raise errors.EnvironmentFailure(f"--fresh cannot delete in {path} (read-only filesystem or no permission); "
                                    f"nothing was deleted")


def _foreign(path: str) -> errors.WorkdirError:
  return errors.WorkdirError(f"--fresh would delete {path}, which jaxae did not write: move it out of the workdir "
                             f"first (nothing was deleted)")


def _check_recorded(workdir: str, recorded: dict[str, set[str]]) -> None:
  """WorkdirError naming the first file or folder among jaxae's names that manifest.jsonl does not list."""
  trees = recorded["tree"]

  def covered(rel: str, is_dir: bool) -> bool:
    if any(rel == t or rel.startswith(t + os.sep) for t in trees):
      return True
    if is_dir:
      return rel in recorded["dir"]
    return rel in recorded["file"] or (rel.endswith(".tmp") and rel[:-4] in recorded["file"])

  for name in WRITTEN:
    path = os.path.join(workdir, name)
    if name == MANIFEST or not os.path.lexists(path):
      continue
    if not os.path.isdir(path):
      if not covered(name, False):
        raise _foreign(path)
      continue
    folders = []  # folders it does not list: named after any foreign file, the deepest one first
    for root, dirs, names in os.walk(path, followlinks=False):
      dirs.sort()
      rel_root = os.path.relpath(root, workdir)
      if not covered(rel_root, True):
        folders.append(root)
      for n in sorted(names) + dirs:
        files.refuse_symlink(os.path.join(root, n))
      for n in sorted(names):
        if not covered(os.path.join(rel_root, n), False):
          raise _foreign(os.path.join(root, n))
    if folders:
      raise _foreign(max(folders, key=lambda f: f.count(os.sep)))


def fresh_plan(workdir: str) -> list[str]:
  """The paths `--fresh` deletes: only what jaxae wrote, each checked first.

  What jaxae wrote is what manifest.jsonl lists (files.confined records every file and folder as it is
  written). Raises WorkdirError for a symlink, or a file or folder among jaxae's names that it does not
  list (also a name in checkpoints/ that is not an orbax step folder); EnvironmentFailure for a folder it
  could not delete from. Nothing is deleted here. A workdir from before manifests: PNGs in figures/,
  orbax steps in checkpoints/, one run folder per group in groups/ (the names jaxae writes).
  """
  if not os.path.isdir(workdir):
    return []
  _check_kinds(workdir)
  recorded = files.read_manifest(workdir)
  if recorded is not None:
    _check_recorded(workdir, recorded)
  plan = []
  for name in WRITTEN:
    path = os.path.join(workdir, name)
    if not os.path.lexists(path):
      continue
    if name == checkpoints.CHECKPOINT_DIR:
      foreign = [n for n in os.listdir(path) if not (_STEP_DIR.match(n) and os.path.isdir(os.path.join(path, n)))]
      if foreign:
        raise _foreign(os.path.join(path, foreign[0]))
    elif recorded is None and name == FIGURES:
      for root, dirs, names in os.walk(path):
        foreign = [n for n in dirs + names if not (n.endswith(".png") or n.endswith(".png.tmp")) or
                   os.path.isdir(os.path.join(root, n))]
        if foreign:
          raise _foreign(os.path.join(root, foreign[0]))
    elif recorded is None and name == GROUPS:
      for group in os.listdir(path):
        group_dir = os.path.join(path, group)
        files.refuse_symlink(group_dir)
        if not os.path.isdir(group_dir):
          raise _foreign(group_dir)
        inner = fresh_plan(group_dir)
        if not inner:
          raise _foreign(group_dir)
        foreign = sorted(set(os.listdir(group_dir)) - {os.path.basename(p) for p in inner} - {LOCK})
        if foreign:
          raise _foreign(os.path.join(group_dir, foreign[0]))
    if os.path.isdir(path):
      for root, dirs, _ in os.walk(path):
        _writable(root)
    plan.append(path)
  if plan:
    _writable(workdir)
  # The manifest goes last: a --fresh cut short still lists what is left of what jaxae wrote.
  return sorted(plan, key=lambda p: os.path.basename(p) == MANIFEST)


def clear(workdir: str) -> None:
  """Removes what jaxae wrote in `workdir` (never anything else: see fresh_plan, which runs first)."""
  for path in fresh_plan(workdir):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


# ---------------------------------------------------------------------------------------------- writing


def write_config(workdir: str, config, members: list[dict] | None = None, normalizer=None) -> None:
  """config.json, members.json (unless None) and the fitted data.Normalizer (normalizer.json, when
  data.normalize is not 'none'; checkpoints hold it too), each replaced atomically."""
  files.write_text(os.path.join(workdir, CONFIG), config.to_json(indent=1))
  if members is not None:
    files.write_json(os.path.join(workdir, MEMBERS), members, indent=1)
  if normalizer is not None:
    files.write_text(os.path.join(workdir, NORMALIZER), normalizer.to_json())


def config_from_json(path: str) -> dict[str, Any]:
  """The flattened config saved at `path` (configs.flatten); WorkdirError when it is not jaxae's JSON."""
  return configs.flatten(configs.from_dict(files.read_json(path)))


def saved_config(mngr, config_path: str) -> dict[str, Any] | None:
  """Flattened config of the run in a workdir: from the latest readable checkpoint's metadata, else from
  `config_path` (config.json is rewritten at each start, so a checkpoint is the better witness).
  None when there is no checkpoint."""
  steps = sorted(mngr.all_steps(), reverse=True)
  for step in steps:
    try:
      return configs.flatten(configs.from_dict(checkpoints.read_meta(mngr, step)["config"]))
    except (checkpoints.CheckpointError, KeyError):
      continue  # damaged: restoring reports it (or falls back)
  if steps and os.path.exists(config_path):
    return config_from_json(config_path)  # written atomically: never cut short
  return None


def _unused_keys(flat: dict[str, Any]) -> set[str]:
  """Keys declared only by variants other than the config's own: they change nothing in its run."""
  from jaxae import variants

  try:
    own = set(variants.get(flat.get("variant")).options)
  except KeyError:  # a variant this process has not registered: compare every key
    return set()
  return {k for v in variants.all_variants() for k in v.options} - own


def incompatible_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Dotted config keys whose change alters what a checkpoint means (everything not RESUME_SAFE).

  Keys of other variants are ignored (a vanilla run does not read loss.beta).
  """
  ignored = _unused_keys(saved) & _unused_keys(current)
  keys = sorted((set(saved) | set(current)) - ignored)
  safe = set(configs.RESUME_SAFE)
  decays = lambda flat: bool(flat.get("optimizer.decay_fraction")) or "optimizer.decay_fraction" in str(flat.get("sweep", ""))
  if ({saved.get("optimizer.schedule"), current.get("optimizer.schedule")} & set(configs.LENGTH_DEPENDENT_SCHEDULES)
      or decays(saved) or decays(current)):
    safe.discard("train.epochs")  # a decaying schedule's length: more epochs change every remaining rate
  same = lambda k: (canonical_sweep(saved.get(k, "")) == canonical_sweep(current.get(k, "")) if k == "sweep" else
                    saved.get(k, "<absent>") == current.get(k, "<absent>"))
  return [k for k in keys if k not in safe and not same(k)]


def _diffs(saved: dict[str, Any], current: dict[str, Any], keys: list[str]) -> str:
  return "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in keys)


def check_compatible(saved: dict[str, Any], current: dict[str, Any], workdir: str, source: str = "") -> None:
  """Raises CheckpointMismatch listing the keys (saved -> now) that forbid resuming; `source` names the
  file the saved config was read from."""
  bad = incompatible_keys(saved, current)
  if bad:
    where = f" ({source})" if source else ""
    raise checkpoints.CheckpointMismatch(f"{workdir} holds a run with a different config{where}: "
                                         f"{_diffs(saved, current, bad)}. Use another --workdir, or --fresh to "
                                         f"discard that run and start over.")


def restore_latest(mngr, make_abstract: Callable[[], Any], on_corrupt: str, say: Callable[[str], None] = print,
                   hparams: dict | None = None):
  """(state, meta) of the latest complete checkpoint, or None when there is none.

  `hparams` (the program's per-member hyperparameters) fills those an older jaxae's checkpoint lacks
  (checkpoints.restore).

  A damaged latest step raises CheckpointError (with a hint) unless on_corrupt='previous', which falls
  back to earlier steps and deletes the damaged later ones. A mismatch (another config or version of
  jaxae) always raises: earlier steps would not match either. `make_abstract()` gives the restore target;
  it is called only when there is a checkpoint (a fresh run skips tracing init for it).
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  abstract = make_abstract() if steps else None
  for i, step in enumerate(steps):
    try:
      restored = checkpoints.restore(mngr, step, abstract, hparams=hparams, say=say)
    except checkpoints.CheckpointMismatch:
      raise
    except checkpoints.CheckpointError as e:
      if on_corrupt != "previous" or i == len(steps) - 1:
        hint = (" Re-run with --on_corrupt=previous to resume from the previous complete step "
                f"({steps[i + 1]})." if i + 1 < len(steps) and on_corrupt != "previous" else "")
        raise checkpoints.CheckpointError(str(e) + hint) from None
      say(f"warning: {e}; falling back to step {steps[i + 1]}")
      continue
    for bad in steps[:i]:  # damaged later steps would shadow the new ones (and block saving their step)
      say(f"deleting damaged checkpoint step {bad}")
      mngr.delete(bad)
    return restored
  return None
