"""The Colab notebook, executed headlessly on its smoke path (RUN_FULL = False, no pip)."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "ltr_jax_colab.ipynb")


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o["output_type"] == kind]


def test_one_flag_selects_the_full_recipe():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert sources.count("RUN_FULL = False") == 1
    assert 'SUFFIX = "" if RUN_FULL else ":smoke"' in sources
    assert "configs/cifar10_lt.py" in sources and "pip" in sources


def test_smoke_path_runs_and_shows_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("LTR_JAX_NOTEBOOK_TEST", "1")  # skips the pip install
    monkeypatch.setenv("LTR_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    )
    client.execute()
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    shown = _outputs(last, "display_data")
    assert any("text/markdown" in o["data"] and "| bns_ipdpp | stage2 | 1 |" in
               o["data"]["text/markdown"] for o in shown)  # fmt: skip
    images = [o for o in shown if "image/png" in o["data"]]
    assert len(images) == 3  # per-class accuracy, training curves, IP-DPP confidence
    for name in ("report.md", "per_class_accuracy.png"):
        assert (tmp_path / "runs" / "report" / name).exists()
