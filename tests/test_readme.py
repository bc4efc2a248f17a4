"""The README's data examples work as written: its snippet writes the example files, and every
`python -m jaxae.main` command of the *Data* section that reads them trains (1 epoch, 1 seed)."""

from __future__ import annotations

import re
import shlex

from conftest import ROOT, run_main

FILES = ("npz:digits.npz", "npy:shards/*.npy", "folder:images", "csv:table.csv")


def _data_section() -> str:
  text = (ROOT / "README.md").read_text()
  return text[text.index("\n## Data\n"):text.index("\n## Layout\n")]


def test_readme_data_commands_train(tmp_path, monkeypatch, capsys):
  section = _data_section()
  snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  monkeypatch.chdir(tmp_path)
  exec(compile(snippet, "README.md", "exec"), {})
  commands = [c for c in re.findall(r"`(python -m jaxae\.main [^`]+)`", section) if any(f in c for f in FILES)]
  assert len(commands) >= len(FILES) and all(any(f in c for c in commands) for f in FILES), commands
  for command in commands:
    argv = shlex.split(command)[3:]
    argv = [a.replace("--config=configs/", f"--config={ROOT}/configs/") for a in argv]
    rc, out, err = run_main(monkeypatch, capsys, *argv, "--config.train.epochs=1", "--config.num_seeds=1",
                            "--config.train.figures=False", "--config.train.progress=False")
    assert rc == 0, (command, out[-2000:], err[-2000:])
    assert "epoch   1/1" in out, (command, out[-2000:])


def _section(title: str) -> str:
  text = (ROOT / "README.md").read_text()
  start = text.index(f"\n## {title}\n")
  return text[start:text.index("\n## ", start + 1)]


def test_from_python_snippet_runs_right_after_the_first_command(tmp_path, monkeypatch, capsys):
  """The first command (`jaxae --config=vae --workdir=runs/vae`, shrunk), then the 'From Python' snippet as
  written (its configs shrunk the same way); then evaluate's exports carry the names the README gives."""
  from jaxae import config_files, evaluate

  first = re.search(r"jaxae --config=(\S+) --workdir=(\S+)", (ROOT / "README.md").read_text())
  shrink = {"train.epochs": 1, "data.max_train": 256, "data.max_eval": 64, "train.progress": False,
            "train.figures": False, "model.hidden": (32,), "num_seeds": 2}
  monkeypatch.chdir(tmp_path)
  rc, out, err = run_main(monkeypatch, capsys, f"--config={first.group(1)}", f"--workdir={first.group(2)}",
                          *(f"--config.{k}={v}" for k, v in shrink.items()))
  assert rc == 0, err
  load = config_files.load

  def shrunk(spec):
    config = load(spec)
    for key, value in shrink.items():
      *parents, leaf = key.split(".")
      node = config
      for p in parents:
        node = node[p]
      node[leaf] = value
    return config

  monkeypatch.setattr(config_files, "load", shrunk)
  section = _section("What a run does and writes")
  snippet = re.search(r"From Python[^\n]*\n\n```python\n(.*?)```", section, re.S).group(1)
  scope = {}
  exec(compile(snippet, "README.md", "exec"), scope)
  assert scope["z"].shape == (16, 32) and "settings" in scope["summary"]
  monkeypatch.setattr(config_files, "load", load)
  # Evaluate's export: every file name the README gives exists where it says.
  assert evaluate.main([f"--workdir={first.group(2)}", "--no_figures", "--num_samples=2",
                        "--export=codes,scores"]) == 0
  names = set(re.findall(r"`(export/[\w/.]+)`", _section("Evaluating a run")))
  assert {"export/codes/member_000.npy", "export/labels.npy", "export/index.json"} <= names, names
  for name in names:
    assert (tmp_path / first.group(2) / name).exists(), name
