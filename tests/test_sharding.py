"""The member axis sharded over devices: same per-seed results as one device, and no cross-device traffic.

Each test runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (the device count
is fixed when jax initializes its backend, which this pytest process has already done or may do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")


def _run(script: str, timeout: int = 240) -> dict:
  """Runs `script` with 4 simulated CPU devices; returns the JSON it prints on its last stdout line."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                        cwd=str(ROOT), timeout=timeout)
  assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_give_the_single_device_results(tmp_path):
  out = _run(f"""
    import json
    import jax
    from conftest import tiny_config
    from jaxae import run, sharding

    assert jax.device_count() == 4, jax.devices()
    used = []
    member_mesh = sharding.member_mesh

    def spy(num_members, devices=None):
      mesh = member_mesh(num_members, devices)
      used.append(mesh.size)
      return mesh

    run.sharding.member_mesh = spy
    config = tiny_config("vanilla", num_seeds=4)
    sharded = run.train_and_evaluate(config, {str(tmp_path / "four")!r})
    run.sharding.member_mesh = lambda n, devices=None: member_mesh(n, jax.devices()[:1])
    single = run.train_and_evaluate(config, {str(tmp_path / "one")!r})
    print(json.dumps({{"meshes": used, "sharded": sharded, "single": single}}))
  """)
  assert set(out["meshes"]) == {4}  # checked up front, then used for training
  a, b = out["sharded"]["settings"][0], out["single"]["settings"][0]
  assert a["seeds"] == b["seeds"] == [0, 1, 2, 3]
  compared = 0
  for split in ("train", "eval"):
    assert a[split].keys() == b[split].keys()
    for name in a[split]:
      assert a[split][name]["per_seed"] == pytest.approx(b[split][name]["per_seed"], rel=1e-6, abs=1e-6), (split, name)
      compared += 1
  assert compared >= 4
  # The 4 seeds really are different members (a vacuous comparison would also pass).
  assert len(set(a["train"]["loss"]["per_seed"])) == 4


def test_sharded_train_chunk_has_no_collectives():
  out = _run(f"""
    import json
    import jax
    import jax.numpy as jnp
    from conftest import tiny_config
    from jaxae import data as data_lib, models, sharding, sweep, train

    COLLECTIVES = {COLLECTIVES!r}
    found = lambda hlo: sorted(c for c in COLLECTIVES if c in hlo)
    result = {{}}
    for spc in (0, 1):
      config = tiny_config("vanilla", num_seeds=4, train__steps_per_call=spc)
      group = sweep.groups(config)[0]
      data = data_lib.load(config.data)
      mesh = sharding.member_mesh(len(group.members))
      program = train.build(group, data.train.x.shape[1:], len(data.train), mesh, member_loop="vmap")
      state = program.init_state()
      x, y = sharding.replicate((data.train.x, data.train.labels), mesh)
      order = program.epoch_order(state, 0)
      compiled = program.train_chunk.lower(state, x, y, order, 0).compile()
      members_split = [s.spec == jax.sharding.PartitionSpec(sharding.AXIS) for s in jax.tree.leaves(compiled.output_shardings)]
      result[spc] = {{"mesh": mesh.size, "collectives": found(compiled.as_text()), "all_outputs_split": all(members_split),
                      "order_sharded": len(order.sharding.device_set)}}
    # Positive control: reducing over the sharded member axis must show up as a collective.
    total = jax.jit(lambda s: jax.tree.reduce(lambda a, b: a + b, jax.tree.map(jnp.sum, s.params)))
    result["control"] = found(total.lower(state).compile().as_text())
    print(json.dumps(result))
  """)
  for spc in ("0", "1"):
    assert out[spc]["mesh"] == 4
    assert out[spc]["order_sharded"] == 4
    assert out[spc]["all_outputs_split"], out[spc]
    assert out[spc]["collectives"] == [], f"steps_per_call={spc}: {out[spc]['collectives']}"
  assert out["control"], "the collective detector found nothing in a cross-member reduction"


def test_detect_reads_cluster_environments():
  from jaxae import distributed

  assert distributed.detect({}) is None
  assert distributed.detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None  # one task: nothing to join
  assert distributed.detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == ("slurm", {})
  assert distributed.detect({"TPU_WORKER_HOSTNAMES": "a,b"}) == ("tpu", {})
  assert distributed.detect({"TPU_WORKER_HOSTNAMES": "a"}) is None
  kind, kwargs = distributed.detect({"JAXAE_COORDINATOR": "h:1234", "JAXAE_NUM_PROCESSES": "2", "JAXAE_PROCESS_ID": "1",
                                     "JAXAE_LOCAL_DEVICE_IDS": "0,1"})
  assert kind == "explicit"
  assert kwargs == {"coordinator_address": "h:1234", "num_processes": 2, "process_id": 1, "local_device_ids": [0, 1]}
  for bad in ({"JAXAE_COORDINATOR": "h:1"}, {"JAXAE_COORDINATOR": "h:1", "JAXAE_NUM_PROCESSES": "2", "JAXAE_PROCESS_ID": "2"}):
    with pytest.raises(ValueError, match="JAXAE_"):
      distributed.detect(bad)


def _free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_two(argv: list[str], devices_each: int = 1) -> list[subprocess.Popen]:
  """Starts `python argv...` as processes 0 and 1 of one JAX job (JAXAE_COORDINATOR)."""
  env = dict(os.environ, JAXAE_COORDINATOR=f"localhost:{_free_port()}", JAXAE_NUM_PROCESSES="2", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
  return [subprocess.Popen([sys.executable, *argv], env=dict(env, JAXAE_PROCESS_ID=str(i)), cwd=str(ROOT),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs: list[subprocess.Popen], timeout: int = 240) -> list[tuple[int, str, str]]:
  """[(rc, stdout, stderr)] of each process; kills whatever is still running after `timeout`."""
  outs = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=timeout)
    finally:
      if p.poll() is None:
        p.kill()
    # gloo (CPU collectives) announces its connections on stdout
    outs.append((p.returncode, "\n".join(l for l in stdout.splitlines() if not l.startswith("[Gloo]")), stderr))
  return outs


def _two_processes(argv: list[str], devices_each: int = 1) -> list[tuple[int, str, str]]:
  return _finish(_start_two(argv, devices_each))


def test_two_local_processes_share_one_member_mesh():
  """maybe_initialize() with JAXAE_COORDINATOR: 2 CPU processes see 2 devices; each computes its own member."""
  script = textwrap.dedent("""
    import json
    import numpy as np
    from jaxae import distributed
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    joined = distributed.maybe_initialize()
    mesh = Mesh(jax.devices(), ("members",))
    local = np.full((1, 3), float(jax.process_index()))
    members = jax.make_array_from_process_local_data(NamedSharding(mesh, P("members")), local)
    step = jax.jit(lambda a: a * 2 + 1)
    hlo = step.lower(members).compile().as_text()
    out = step(members)
    print(json.dumps({"joined": joined, "process": jax.process_index(), "devices": jax.device_count(),
                      "mine": [float(s.data[0, 0]) for s in out.addressable_shards],
                      "collectives": [c for c in %r if c in hlo]}))
  """ % (COLLECTIVES,))
  for i, (rc, stdout, stderr) in enumerate(_two_processes(["-c", script])):
    assert rc == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == {"joined": True, "process": i, "devices": 2,
                                                            "mine": [2.0 * i + 1], "collectives": []}


CLI_TINY = ["-m", "jaxae.main", "--config=configs/vanilla.py", "--config.num_seeds=4", "--config.data.max_train=256",
            "--config.data.max_eval=64", "--config.train.batch_size=32", "--config.model.hidden=(64,32)",
            "--config.train.progress=False", "--config.train.figures=False"]


def test_two_processes_train_resume_and_match_one_process(tmp_path):
  """`python -m jaxae.main` as a 2-process job (2 devices each): every process trains its own 2 of the 4
  seeds, both write their shards of each checkpoint to the shared workdir, process 0 writes the rest,
  a re-run resumes, and every per-epoch metric equals the single-process run."""
  multi, single = tmp_path / "multi", tmp_path / "single"
  subprocess.run([sys.executable, *CLI_TINY, f"--workdir={single}", "--config.train.epochs=3"], cwd=str(ROOT),
                 check=True, capture_output=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=240)
  first = _two_processes([*CLI_TINY, f"--workdir={multi}", "--config.train.epochs=2", "--config.train.figures=True"],
                         devices_each=2)
  for rc, stdout, stderr in first:
    assert rc == 0, stderr[-3000:]
  # One report, from process 0: none of its lines from process 1. (The CPU collectives inside jaxlib may
  # print their own "R is connected to N peer ranks..." there, in pieces, on a busy machine.)
  report = {l for l in first[0][1].splitlines() if len(l.strip()) > 3}
  assert "mean±std" in first[0][1] and not report & set(first[1][1].splitlines()), first[1][1]
  assert not any(word in first[1][1] for word in ("parameters", "epoch", "mean±std", "summary.json")), first[1][1]
  assert (multi / "figures" / "reconstructions.png").exists()  # params gathered from both processes
  shards = sorted(p.name for p in (multi / "checkpoints" / "16" / "params").glob("ocdbt.process_*"))
  assert shards == ["ocdbt.process_0", "ocdbt.process_1"], shards
  second = _two_processes([*CLI_TINY, f"--workdir={multi}", "--config.train.epochs=3"], devices_each=2)
  for rc, stdout, stderr in second:
    assert rc == 0, stderr[-3000:]
  assert "resuming" in second[0][1] and "from step 16" in second[0][1]

  def records(workdir):
    with open(workdir / "metrics.jsonl") as f:
      return [json.loads(line) for line in f]

  got, want = records(multi), records(single)
  assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [1, 2, 3]
  for g, w in zip(got, want):
    for split in ("train", "eval"):
      for name in w[split]:
        assert g[split][name] == pytest.approx(w[split][name], rel=1e-5), (g["epoch"], split, name)
  assert len(set(got[-1]["train"]["loss"])) == 4  # four distinct seeds, not one copied


def test_members_must_split_evenly_over_processes():
  from types import SimpleNamespace

  from jaxae import sharding

  devices = [SimpleNamespace(process_index=p, id=2 * p + i) for p in (0, 1) for i in (0, 1)]
  with pytest.raises(ValueError, match="3 members .* 2 processes.*num_seeds=4"):
    sharding.member_mesh(3, devices)


def test_sigterm_to_one_process_stops_the_whole_job_at_one_step(tmp_path):
  """Hosts step in lockstep, so a signal that reaches only process 1 must stop process 0 at the same step."""
  import signal
  import time

  workdir = tmp_path / "job"
  procs = _start_two([*CLI_TINY, f"--workdir={workdir}", "--config.train.epochs=500", "--config.train.steps_per_call=1"])
  deadline = time.time() + 180
  while not ((workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text().strip()):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "the job never finished an epoch"
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  outs = _finish(procs)
  assert [rc for rc, _, _ in outs] == [128 + signal.SIGTERM] * 2, [err[-2000:] for _, _, err in outs]
  assert "to resume:" in outs[0][1]
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and max(steps) < 500 * 8  # saved where it stopped, long before the end
