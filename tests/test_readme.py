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
