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


def _install_cell(monkeypatch, tmp_path):
    """The install cell's helpers, from running the cell on its test path (no Drive, no pip)."""
    monkeypatch.setenv("LTR_JAX_NOTEBOOK_TEST", "1")
    monkeypatch.chdir(ROOT)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c.source for c in nb.cells if "def resolve_source" in c.source)
    namespace = {"WORKROOT": str(tmp_path / "runs")}
    exec(compile(cell, "install cell", "exec"), namespace)
    return namespace


def test_install_cell_finds_the_code_and_says_what_to_fix(monkeypatch, tmp_path):
    cell = _install_cell(monkeypatch, tmp_path)
    assert cell["find_checkout"](os.path.join(ROOT, "notebooks")) == ROOT
    assert cell["find_checkout"](str(tmp_path)) is None
    resolve = cell["resolve_source"]
    assert resolve(ROOT) == ("checkout", ROOT)
    assert resolve("https://example.com/x/ltr_jax.git") == (
        "git",
        "https://example.com/x/ltr_jax.git",
    )
    wheel = tmp_path / "ltr_jax-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    with pytest.raises(ValueError, match="configs/ folder next to"):
        resolve(str(wheel))
    (tmp_path / "configs").mkdir()
    assert resolve(str(wheel)) == ("wheel", str(wheel))
    for bad, message in (("", "Set LTR_JAX_SOURCE"), (str(tmp_path / "nope"), "neither")):
        with pytest.raises(ValueError, match=message):
            resolve(bad)
    assert cell["mount_drive_if_needed"](str(tmp_path), "workdirs/x") is False
    if not os.path.isdir("/content/drive/MyDrive"):  # not Colab: Drive cannot be mounted
        with pytest.raises(ValueError, match="Google Drive on Colab only"):
            cell["mount_drive_if_needed"]("/content/drive/MyDrive/runs")


def test_install_cell_asks_for_a_restart_when_pip_replaced_an_imported_package(
    monkeypatch, tmp_path
):
    cell = _install_cell(monkeypatch, tmp_path)
    before = cell["loaded_versions"]()
    assert "numpy" in before and cell["replaced_since"](before) == []
    import numpy

    before["numpy"] = "0.0"  # as if pip had since installed the current numpy over 0.0
    assert cell["replaced_since"](before) == [f"numpy 0.0 -> {numpy.__version__}"]


@pytest.mark.slow
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
    assert any(
        "text/markdown" in o["data"] and "| bns_ipdpp | stage2 | 1 |" in o["data"]["text/markdown"]
        for o in shown
    )
    images = [o for o in shown if "image/png" in o["data"]]
    assert len(images) == 3  # per-class accuracy, training curves, IP-DPP confidence
    for name in ("report.md", "per_class_accuracy.png"):
        assert (tmp_path / "runs" / "report" / name).exists()
