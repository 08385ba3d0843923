"""Every config in configs/baselines/ runs its ``:smoke`` variant end to end (pipeline.run).

To keep this file quick on a small CPU, runs that would repeat identical work share it: cRT
starts from the finished ``ce`` stage of the CE baseline, and BNS + Algorithm 1 from the
finished stage 1 and probe of BNS + uniform, after checking that the config sections those
stages read are equal. The CE baseline runs through ``ltr_jax.sweep`` (seed 0), and the report
is rendered from all the smoke runs at the end.
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, pipeline, report, sweep, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINES = os.path.join(ROOT, "configs", "baselines")
CE_FAMILY = ("cb_resample", "balanced_softmax", "logit_adjust", "ldam_drw")
BNS_FAMILY = ("bns_paper_form", "supcon")
SHARED_SECTIONS = ("seed", "data", "model", "train")


def _path(name):
    return os.path.join(BASELINES, f"{name}_cifar10_lt.py")


def _config(name):
    return FrozenConfigDict(config_lib.load_config_file(_path(name), "smoke"))


def _check_results(results, stage, num_classes=10):
    assert set(results) >= {stage}
    final = results[stage]
    assert 0.0 <= final["top1"] <= 100.0
    assert len(final["per_class_acc"]) == num_classes


def _reuse(src, dst, config, stages):
    """Copies a workdir whose ``stages`` are done, for a config that differs only after them."""
    saved = json.loads(open(os.path.join(src, "config.json")).read())
    current = json.loads(config.to_json())
    for key in SHARED_SECTIONS + tuple(stages):
        assert saved[key] == current[key], f"{key} differs: its work cannot be shared"
    shutil.copytree(src, dst)
    for name in os.listdir(dst):
        if name not in stages and os.path.isdir(os.path.join(dst, name)) and name in current:
            shutil.rmtree(os.path.join(dst, name))  # stages to rerun
    return str(dst)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("baselines")


@pytest.fixture(scope="module")
def ce_workdir(root):
    results = sweep.main(
        ["sweep", f"--config={_path('ce')}:smoke", "--seeds=1", f"--workdir_root={root / 'ce'}"]
    )
    _check_results(results[0], "ce")
    workdir = sweep.seed_workdir(str(root / "ce"), 0)
    for what in ("encoder", "head"):  # exported for cRT
        assert os.path.isdir(os.path.join(workdir, "ce", what))
    return workdir


@pytest.fixture(scope="module")
def bns_uniform_workdir(root):
    config = _config("bns_uniform")
    assert config.stage2.sampler == "uniform"
    workdir = str(root / "bns_uniform")
    _check_results(pipeline.run(config, workdir), "stage2")
    return workdir


def test_every_baseline_config_is_covered():
    names = {
        os.path.basename(p)[: -len("_cifar10_lt.py")]
        for p in glob.glob(os.path.join(BASELINES, "*_cifar10_lt.py"))
    }
    covered = {"ce", "crt", "bns_uniform", "bns_alg1", *CE_FAMILY, *BNS_FAMILY}
    assert names == covered


@pytest.mark.slow
@pytest.mark.parametrize("name", CE_FAMILY)
def test_ce_family(name, root):
    config = _config(name)
    assert config.pipeline == ("ce",)
    results = pipeline.run(config, str(root / name))
    _check_results(results, "ce")
    assert results["ce"]["loss"] == config.ce.loss


def test_ldam_drw_switches_weights_on_in_the_last_fifth():
    config = _config("ldam_drw")
    assert (config.ce.loss, config.ce.head) == ("ldam", "cosine")
    assert config.ce.drw_start_epoch == 1 and config.ce.epochs == 2
    full = config_lib.load_config_file(_path("ldam_drw"))
    assert (full.ce.drw_start_epoch, full.ce.epochs) == (160, 200)


@pytest.mark.slow
def test_crt(ce_workdir, root):
    config = _config("crt")
    assert config.pipeline == ("ce", "crt")
    workdir = _reuse(ce_workdir, root / "crt", config, ["ce"])
    results = pipeline.run(config, workdir)
    _check_results(results, "crt")
    assert results["crt"]["sampler"] == "class_balanced"
    assert os.path.isdir(os.path.join(workdir, "crt", "head"))


@pytest.mark.slow
def test_bns_uniform(bns_uniform_workdir):
    draws = [
        json.loads(line)
        for line in open(os.path.join(bns_uniform_workdir, "stage2", "draws.jsonl"))
    ]
    assert draws and max(draws[0]["counts"]) == 20


@pytest.mark.slow
def test_bns_alg1(bns_uniform_workdir, root):
    config = _config("bns_alg1")
    assert config.stage2.sampler == "paper_alg1"
    workdir = _reuse(bns_uniform_workdir, root / "bns_alg1", config, ["stage1", "probe"])
    results = pipeline.run(config, workdir)
    _check_results(results, "stage2")
    assert results["stage2"]["sampler"] == "paper_alg1"


@pytest.mark.slow
@pytest.mark.parametrize("name", BNS_FAMILY)
def test_bns_family(name, tmp_path):
    # These configs change stage 1 only (its loss); the probe and stage 2 after it run the same
    # code on another encoder (bns_uniform above, tests/test_stages.py), so stage 1 alone runs.
    config = _config(name)
    results = pipeline.run(config, str(tmp_path), ["stage1"])
    assert results["stage1"]["loss"] == config.stage1.loss
    assert results["stage1"]["bns_form"] == config.stage1.bns.form
    assert results["stage1"]["num_steps"] > 0 and os.path.isdir(tmp_path / "stage1" / "encoder")
    records = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
    losses = [r["loss"] for r in records if r.get("stage") == "stage1" and "loss" in r]
    assert losses and np.all(np.isfinite(losses))


@pytest.mark.slow
def test_report_of_the_smoke_runs(root, ce_workdir):
    workdirs = [ce_workdir] + sorted(
        str(p) for p in root.iterdir() if (p / "config.json").exists() and p.name != "report"
    )
    out = str(root / "report")
    rep = report.make_report(workdirs, out)
    assert rep["methods"][0]["method"] == "ce"  # seed_0 grouped under its root's name
    assert rep["table"].count("\n") == len(workdirs) + 2
    for path in rep["figures"]:
        assert os.path.getsize(path) > 10_000
    has_draws = any(os.path.exists(os.path.join(w, "stage2", "draws.jsonl")) for w in workdirs)
    assert os.path.exists(os.path.join(out, "ipdpp_confidence.png")) == has_draws
