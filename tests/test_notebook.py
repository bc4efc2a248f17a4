"""notebooks/tour.ipynb runs top to bottom (small settings: JAXAE_TOUR_SMOKE=1) and is committed stripped."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"


def test_committed_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None


def test_tour_runs(tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("JAXAE_TOUR_SMOKE", "1")
  monkeypatch.setenv("JAXAE_TOUR_DIR", str(tmp_path / "runs"))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 4  # two loss-curve images, the reconstructions, the latent scatter
  assert (tmp_path / "runs" / "vanilla" / "summary.json").exists()
  assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
