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
  assert out["meshes"] == [4]
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
      image_shape = data.train.images.shape[1:]
      model = models.make_model(config, image_shape)
      program = train.make_program(config, model, image_shape, len(data.train))
      mesh = sharding.member_mesh(len(group.members))
      state = sharding.shard_members(train.init_state(program, group.seeds, sweep.member_hparams(group)), mesh)
      x, y = sharding.replicate((data.train.images, data.train.labels), mesh)
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


def test_two_local_processes_share_one_member_mesh():
  """maybe_initialize() with JAXAE_COORDINATOR: 2 CPU processes see 2 devices; each computes its own member."""
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
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
  env = dict(os.environ, JAXAE_COORDINATOR=f"localhost:{port}", JAXAE_NUM_PROCESSES="2", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-c", script], env=dict(env, JAXAE_PROCESS_ID=str(i)), cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      stdout, stderr = p.communicate(timeout=120)
    finally:
      if p.poll() is None:
        p.kill()
    assert p.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  for i, o in enumerate(outs):
    assert o == {"joined": True, "process": i, "devices": 2, "mine": [2.0 * i + 1], "collectives": []}
