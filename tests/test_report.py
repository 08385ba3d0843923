"""The report on synthetic workdirs (results, metrics and draws written here), and the sweep.

Table numbers are checked against means and sample stds computed independently; figures must
exist and be non-trivial images.
"""

import json
import os

import numpy as np
import pytest

from ltr_jax import report, sweep

COUNTS = [100, 60, 35, 20, 10]
RNG = np.random.default_rng(0)


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _config(pipeline, seed, **ce):
    return {
        "seed": seed,
        "pipeline": list(pipeline),
        "data": {"name": "synthetic", "many_threshold": 50, "few_threshold": 20},
        "ce": dict(
            {
                "loss": "ce",
                "sampler": "uniform",
                "logit_adjust": {"tau": 1.0},
                "drw_start_epoch": -1,
            },
            **ce,
        ),
        "stage1": {"loss": "bns", "bns": {"form": "reference"}},
        "stage2": {"sampler": "structured"},
    }


def _results(few=True):
    per_class = RNG.uniform(0, 100, len(COUNTS)).round(2).tolist()
    return {
        "top1": float(RNG.uniform(20, 80)),
        "many": float(RNG.uniform(20, 80)),
        "medium": float(RNG.uniform(20, 80)),
        "few": float(RNG.uniform(0, 50)) if few else None,
        "per_class_acc": per_class,
        "train_class_counts": COUNTS,
        "num_steps": 40,
    }


def _curve(stage, steps=40, evals=(10, 20, 30)):
    records = [
        {"stage": stage, "step": s, "loss": 2.0 / s, "epoch": s / 10}
        for s in range(5, steps + 1, 5)
    ]
    return records + [{"stage": stage, "step": s, "eval_top1": float(s)} for s in evals]


def _draws():
    records = []
    for n in range(3):
        p_class = RNG.uniform(0.3, 0.9, len(COUNTS))
        records.append(
            {
                "draw": n,
                "step": 10 * n,
                "epoch": 2.0 * n,
                "counts": [20, 20, 20, 20, 10],
                "mean_p_drawn": (p_class - 0.1).tolist(),
                "mean_p_class": p_class.tolist(),
                "log_det": [0.0] * len(COUNTS),
            }
        )
    return records


def _ce_run(workdir, seed, **ce):
    _write(os.path.join(workdir, "config.json"), _config(["ce"], seed, **ce))
    results = _results()
    _write(os.path.join(workdir, "ce", "results.json"), results)
    _write_jsonl(os.path.join(workdir, "metrics.jsonl"), _curve("ce"))
    return results


def _bns_run(workdir, seed, few=True):
    _write(os.path.join(workdir, "config.json"), _config(["stage1", "probe", "stage2"], seed))
    _write(os.path.join(workdir, "stage1", "results.json"), {"epoch": 2, "num_steps": 40})
    _write(os.path.join(workdir, "probe", "results.json"), _results())
    results = _results(few)
    _write(os.path.join(workdir, "stage2", "results.json"), results)
    records = _curve("stage1", evals=()) + _curve("probe") + _curve("stage2")
    records += [{"stage": "stage2_draw", "step": 0, "mean_p_drawn": 0.5}]
    _write_jsonl(os.path.join(workdir, "metrics.jsonl"), records)
    _write_jsonl(os.path.join(workdir, "stage2", "draws.jsonl"), _draws())
    return results


@pytest.fixture
def workdirs(tmp_path):
    """CE under ce_sweep/seed_{0,1,2}, BNS under bns_sweep/seed_{0,1}, one LDAM-DRW run."""
    runs = {"ce_sweep": [], "bns_sweep": [], "ldam-DRW": []}
    for seed in range(3):
        workdir = str(tmp_path / "ce_sweep" / f"seed_{seed}")
        runs["ce_sweep"].append((workdir, _ce_run(workdir, seed)))
    for seed in range(2):
        workdir = str(tmp_path / "bns_sweep" / f"seed_{seed}")
        runs["bns_sweep"].append((workdir, _bns_run(workdir, seed, few=seed == 0)))
    workdir = str(tmp_path / "ldam")
    runs["ldam-DRW"].append((workdir, _ce_run(workdir, 0, loss="ldam", drw_start_epoch=1)))
    return runs


def _expected_cell(values):
    values = [v for v in values if v is not None]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _table_rows(table):
    lines = table.strip().splitlines()[2:]
    return {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)
    }


def _assert_png(path):
    from matplotlib import image

    assert os.path.getsize(path) > 15_000
    pixels = image.imread(path)[..., :3]  # [H, W, 3] in [0, 1]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert (pixels < 0.5).mean() > 0.005  # ink: text, axes and lines, not a blank canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # several colours


def test_table_numbers_and_json(workdirs, tmp_path):
    paths = [w for runs in workdirs.values() for w, _ in runs]
    out = str(tmp_path / "out")
    rep = report.make_report(paths, out)
    rows = _table_rows(rep["table"])
    assert list(rows) == ["ce_sweep", "bns_sweep", "ldam-DRW"]
    for method, runs in workdirs.items():
        stage, n, *cells = rows[method]
        assert stage == ("stage2" if method == "bns_sweep" else "ce") and n == str(len(runs))
        for metric, cell in zip(report.METRICS, cells, strict=True):
            assert cell == _expected_cell([res[metric] for _, res in runs]), (method, metric)
    saved = json.loads(open(os.path.join(out, "report.json")).read())
    ce = saved["methods"][0]
    values = [res["top1"] for _, res in workdirs["ce_sweep"]]
    np.testing.assert_allclose(ce["metrics"]["top1"]["mean"], np.mean(values))
    np.testing.assert_allclose(ce["metrics"]["top1"]["std"], np.std(values, ddof=1))
    per_class = np.array([res["per_class_acc"] for _, res in workdirs["ce_sweep"]])
    np.testing.assert_allclose(ce["per_class_acc"]["mean"], per_class.mean(0))
    assert saved["methods"][2]["metrics"]["top1"]["std"] is None  # a single run
    assert open(os.path.join(out, "report.md")).read().count(rep["table"]) == 1


def test_figures_exist_and_are_not_trivial(workdirs, tmp_path):
    paths = [w for runs in workdirs.values() for w, _ in runs]
    rep = report.make_report(paths, str(tmp_path / "out"))
    names = [os.path.basename(p) for p in rep["figures"]]
    assert names == ["per_class_accuracy.png", "training_curves.png", "ipdpp_confidence.png"]
    for path in rep["figures"]:
        _assert_png(path)
    assert _red_pixels(rep["figures"][1]) == 0  # finite losses: no non-finite crosses


def test_no_confidence_figure_without_draws(workdirs, tmp_path):
    paths = [w for w, _ in workdirs["ce_sweep"]]
    rep = report.make_report(paths, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "ipdpp_confidence.png")
    assert len(rep["figures"]) == 2


def test_confidence_series_averages_cut_classes(workdirs):
    run = report.load_run(workdirs["bns_sweep"][0][0])
    epochs, whole, drawn, cut = report._confidence_per_draw(run)
    assert cut == 3  # counts 100, 60, 35 cut to 20; 20 and 10 kept whole
    np.testing.assert_allclose(epochs, [0.0, 2.0, 4.0])
    want = [np.mean(d["mean_p_class"][:3]) for d in run.draws]
    np.testing.assert_allclose(whole, want)
    np.testing.assert_allclose(drawn, np.array(want) - 0.1)


def test_labels_and_derived_names(workdirs, tmp_path):
    paths = [w for w, _ in workdirs["ce_sweep"]]
    rep = report.make_report(paths, str(tmp_path / "a"), labels=["x", "y", "x"])
    assert [(r["method"], r["runs"]) for r in rep["methods"]] == [("x", 2), ("y", 1)]
    with pytest.raises(ValueError, match="2 labels given for 3 workdirs"):
        report.make_report(paths, str(tmp_path / "b"), labels=["x", "y"])
    balanced = _config(["ce"], 0, sampler="class_balanced")
    assert report.method_label(balanced, ["ce"]) == "cb_resample"  # its method, not ce [...]
    config = _config(["ce", "crt"], 0, loss="logit_adjust", sampler="class_balanced")
    assert report.method_label(config, ["ce", "crt"]) == "logit_adjust(tau=1)+cb_resample + cRT"
    config = _config(["stage1", "probe", "stage2"], 0)
    config["stage1"]["loss"] = "supcon"
    assert report.method_label(config, ["stage1", "probe"]) == "SupCon + probe"
    config["stage2"]["sampler"] = "uniform"
    assert report.method_label(config, ["stage1", "probe", "stage2"]) == "SupCon + uniform-k"


def test_distinct_configs_with_one_label_stay_apart(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _ce_run(a, 0)
    _ce_run(b, 0)
    config = json.loads(open(os.path.join(b, "config.json")).read())
    config["data"]["name"] = "cifar10"
    _write(os.path.join(b, "config.json"), config)
    runs = [report.load_run(a), report.load_run(b)]
    assert list(report.group_runs(runs)) == ["ce [data.name=synthetic]", "ce [data.name=cifar10]"]


def test_seeds_of_one_sweep_with_different_configs_are_named_by_the_difference(tmp_path):
    paths = [str(tmp_path / "sweep" / f"seed_{s}") for s in range(3)]
    for seed, path in enumerate(paths):
        _ce_run(path, seed)
    for path, tau in ((paths[1], 2.0), (paths[2], 2.0)):
        config = json.loads(open(os.path.join(path, "config.json")).read())
        config["ce"]["logit_adjust"]["tau"] = tau
        config["data"].update(many_threshold=40, few_threshold=10, max_per_class=7)
        _write(os.path.join(path, "config.json"), config)
    groups = report.group_runs([report.load_run(p) for p in paths])
    assert {k: len(v) for k, v in groups.items()} == {
        "sweep [ce.logit_adjust.tau=1.0, data.few_threshold=20, data.many_threshold=50, "
        "+1 more]": 1,
        "sweep [ce.logit_adjust.tau=2.0, data.few_threshold=10, data.many_threshold=40, "
        "+1 more]": 2,
    }


def test_labels_tied_after_the_cap_are_numbered():
    runs = []
    for first, last in ((0, 1), (0, 2), (1, 1)):
        config = _config(["ce"], 0)
        config["data"].update(a=first, b=first, c=first, d=last)
        runs.append(report.Run("w", config, {"ce": {}}, [], []))
    assert report.distinguish(["x", "x", "x"], runs) == [
        "x [data.a=0, data.b=0, data.c=0, +1 more]",
        "x [data.a=0, data.b=0, data.c=0, +1 more] #2",
        "x [data.a=1, data.b=1, data.c=1, +1 more]",
    ]
    config = _config(["ce"], 0)
    config.pop("stage2")
    runs.append(report.Run("w", config, {"ce": {}}, [], []))
    assert report.distinguish(["y", "x"], runs[2:]) == ["y", "x"]  # one config per label


def test_unfinished_stages_and_nonfinite_losses_are_noted(tmp_path):
    done, failed = str(tmp_path / "done"), str(tmp_path / "failed")
    _bns_run(done, 0)
    _bns_run(failed, 1)
    os.remove(os.path.join(failed, "stage2", "results.json"))  # stage 2 started, then failed
    losses = ((5, 1.0), (10, float("nan")), (15, float("inf")))
    records = _curve("probe") + [{"stage": "stage2", "step": s, "loss": v} for s, v in losses]
    _write_jsonl(os.path.join(failed, "metrics.jsonl"), records)
    never = str(tmp_path / "never")
    _write(os.path.join(never, "config.json"), _config(["stage1", "probe", "stage2"], 2))
    _write(os.path.join(never, "stage1", "results.json"), {"epoch": 2, "num_steps": 40})
    runs = [report.load_run(w) for w in (done, failed, never)]
    assert [r.unfinished for r in runs] == [
        {},
        {"stage2": report.NOT_FINISHED},
        {"probe": report.NOT_RUN, "stage2": report.NOT_RUN},
    ]
    assert report.nonfinite_losses(runs[1]) == {"stage2": 10}
    assert report._confidence_per_draw(runs[1])[3] == 3  # cut judged by the probe's counts
    rows = report.summarise(report.group_runs(runs))
    assert [r["stage"] for r in rows] == ["stage2", "probe", "stage1"]
    assert report.notes(rows).splitlines() == [
        f"- BNS(reference) + probe: `{failed}`: stage2 {report.NOT_FINISHED}.",
        f"- BNS(reference) + probe: `{failed}`: non-finite training loss (stage2 from step 10).",
        f"- BNS(reference): `{never}`: probe {report.NOT_RUN}; stage2 {report.NOT_RUN}.",
    ]


def test_confidence_title_shows_the_configured_k(workdirs):
    run = report.load_run(workdirs["bns_sweep"][0][0])
    assert report.configured_k(run) == "?"  # neither recorded nor configured
    run.config["stage2"]["k_per_class"] = 0
    assert report.configured_k(run) == "10 x the smallest class"
    run.config["stage2"]["k_per_class"] = 20
    assert report.confidence_title("m", [run], 3) == "m\n3 classes cut to k = 20; 1 run"
    run.results["stage2"]["k_per_class"] = 500  # what stage 2 recorded wins
    assert report.confidence_title("m", [run, run], 0) == (
        "m\nno class cut: every class <= k = 500; 2 runs"
    )


def _red_pixels(path):
    from matplotlib import image

    pixels = image.imread(path)[..., :3]
    return int(((pixels[..., 0] > 0.9) & (pixels[..., 1:] < 0.15).all(-1)).sum())


def test_cli_defaults_to_reports_notes_failures_and_marks_nonfinite_losses(
    workdirs, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    finite = [w for w, _ in workdirs["bns_sweep"]]
    failed = finite[1]
    os.remove(os.path.join(failed, "stage2", "results.json"))
    records = report.load_run(failed).metrics
    for r in records:
        if r.get("stage") == "stage2" and r.get("step", 0) >= 30 and "loss" in r:
            r["loss"] = float("nan")
    _write_jsonl(os.path.join(failed, "metrics.jsonl"), records)
    capsys.readouterr()
    report.main(finite)
    printed = capsys.readouterr().out
    assert f"`{failed}`: stage2 {report.NOT_FINISHED}." in printed
    assert "non-finite training loss (stage2 from step 30)" in printed
    markdown = open(tmp_path / "reports" / "report.md").read()
    assert report.NOTES_TITLE in markdown and report.NOT_FINISHED in markdown
    assert _red_pixels(tmp_path / "reports" / "training_curves.png") > 40  # crosses: 30, 35, 40


@pytest.mark.parametrize("make", ["nothing", "empty folder", "file", "bad json"])
def test_cli_unreadable_workdir_is_one_line_and_exit_2(tmp_path, capsys, make):
    workdir = tmp_path / "wd"
    if make == "empty folder":
        workdir.mkdir()
    elif make == "file":
        workdir.write_text("x")
    elif make == "bad json":
        workdir.mkdir()
        (workdir / "config.json").write_text("{")
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(workdir), f"--out={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m ltr_jax.report: error: ")
    assert str(workdir) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_table(workdirs, tmp_path, capsys):
    paths = [w for w, _ in workdirs["bns_sweep"]]
    report.main([*paths, f"--out={tmp_path / 'cli'}"])
    printed = capsys.readouterr().out
    assert "| bns_sweep | stage2 | 2 |" in printed
    assert os.path.exists(tmp_path / "cli" / "report.md")


def test_unevaluated_final_stage_reports_na(tmp_path):
    workdir = str(tmp_path / "stage1_only")
    _write(os.path.join(workdir, "config.json"), _config(["stage1", "probe"], 0))
    _write(os.path.join(workdir, "stage1", "results.json"), {"epoch": 2, "num_steps": 40})
    _write_jsonl(os.path.join(workdir, "metrics.jsonl"), _curve("stage1", evals=()))
    rep = report.make_report([workdir], str(tmp_path / "out"))
    assert "| BNS(reference) | stage1 | 1 | n/a | n/a | n/a | n/a |" in rep["table"]
    assert len(rep["figures"]) == 2


def test_missing_results_fail_clearly(tmp_path):
    _write(str(tmp_path / "config.json"), _config(["ce"], 0))
    with pytest.raises(ValueError, match="no finished stage"):
        report.load_run(str(tmp_path))


def test_sweep_runs_each_seed_in_its_own_workdir(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        sweep.pipeline,
        "run",
        lambda config, workdir, stages: calls.append((config.seed, workdir, stages)) or {},
    )
    config_path = os.path.join(
        os.path.dirname(__file__), "..", "configs", "baselines", "ce_cifar10_lt.py"
    )
    argv = [
        "sweep",
        f"--config={config_path}:smoke",
        "--seeds=3",
        "--stages=ce",
        f"--workdir_root={tmp_path}",
        "--config.seed=7",
        "--config.ce.epochs=1",
    ]
    sweep.main(argv)
    assert calls == [(s, str(tmp_path / f"seed_{s}"), ["ce"]) for s in range(3)]


def test_per_class_figure_names_the_classes_when_they_are_few():
    from matplotlib.figure import Figure

    row = dict(
        per_class_acc={"mean": [90.0, float("nan"), 10.0], "std": [0.0, 0.0, 0.0]},
        train_class_counts=[500, 50, 5],
        class_names=["cat", "dog", "newt"],
    )
    ax = Figure().subplots()
    report._name_points(ax, [row])
    assert [t.get_text() for t in ax.texts] == ["cat", "newt"]  # no point for a NaN accuracy
    ax = Figure().subplots()
    report._name_points(ax, [dict(row, class_names=[str(i) for i in range(3)])], max_classes=2)
    assert not ax.texts


def test_stage2_variants_are_labelled_by_loss_and_subset_and_stage2_seeds_group():
    def run(seed=0, **stage2):
        config = _config(["stage1", "probe", "stage2"], 0)
        config["stage2"].update(stage2)
        return report.Run("w", config, {"stage1": {}, "probe": {}, "stage2": {}}, [], [])

    label = lambda r: report.method_label(r.config, list(r.results))
    assert label(run()) == "BNS(reference) + IP-DPP(structured)"  # the paper's stage 2: no suffix
    assert label(run(loss="ce", subset="paper")) == "BNS(reference) + IP-DPP(structured)"
    assert (
        label(run(loss="balanced_softmax"))
        == "BNS(reference) + IP-DPP(structured) [balanced_softmax]"
    )
    assert label(run(subset="balanced")) == "BNS(reference) + IP-DPP(structured) [balanced subset]"
    both = run(loss="logit_adjust", logit_adjust={"tau": 0.5}, subset="sqrt")
    assert label(both) == "BNS(reference) + IP-DPP(structured) [logit_adjust(tau=0.5), sqrt subset]"
    # stage-2 seeds on one stage 1 are seeds of one method, not differing configs
    seeds = [run(subset="sqrt", seed=s) for s in range(3)]
    for r, s in zip(seeds, range(3)):
        r.config["stage2"]["seed"] = s
    groups = report.group_runs(seeds)
    assert list(groups) == ["BNS(reference) + IP-DPP(structured) [sqrt subset]"]
    assert [report.run_seed(r.config, "stage2") for r in seeds] == [0, 1, 2]
    assert report.run_seed(run().config, "stage2") == 0  # -1 / unset: the run's seed
