"""Report: a Markdown table (mean +- std over seeds) and figures from finished workdirs.

    python -m ltr_jax.report wd/bns/seed_* wd/ce/seed_* --out=reports/c10
    python -m ltr_jax.report workdirs/cifar10_lt_smoke             # writes to reports/
    python -m ltr_jax.report wd/a wd/b --labels=BNS,CE --out=reports/ab

Reads only the workdirs (``config.json``, ``<stage>/results.json``, ``metrics.jsonl``,
``stage2/draws.jsonl``), so it works on runs copied back from another machine. Workdirs are
grouped into methods: by ``--labels`` (one per workdir) if given, else workdirs
named ``DIR/seed_<i>`` group under DIR's name, else by a label derived from the finished stages
and their key settings (stage 2's loss and subset where not the paper's). Runs that share a
label but whose configs differ beyond the seeds (``seed``, ``stage2.seed``) are kept apart, each
label naming the differing keys (``ce [data.name=cifar10]``). For each method the table gives
the final stage's top-1 / Many / Medium / Few (percent) as mean +- std over runs (sample std,
ddof 1; no std for a single run); a note lists every configured stage a run did not finish
(started but failed or stopped, or never run) and every stage whose
training loss became non-finite. Writes to OUT (default ``reports``, git-ignored):
``report.md``, ``report.json`` and the figures ``per_class_accuracy.png``,
``training_curves.png`` and, when there are IP-DPP draws, ``ipdpp_confidence.png``. Plotting
needs matplotlib (``pip install ltr_jax[report]``); it is drawn with the Agg canvas, without
pyplot, so no global backend state is touched. Non-finite losses are drawn as red crosses at
the top of the loss panel, not dropped. A missing or unreadable workdir ends the command with
one line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Sequence

import numpy as np

from ltr_jax import pipeline
from ltr_jax.errors import UserError

METRICS = ("top1", "many", "medium", "few")
HEADERS = ("top-1", "Many", "Medium", "Few")
STAGE_ORDER = tuple(pipeline.STAGES)  # the declared stages, in the pipeline's order
_SEED_DIR = re.compile(r"seed_\d+$")
SEED_KEYS = ("seed", "stage2.seed")  # not differences between runs: what seeds vary
_MAX_DIFF_KEYS = 3  # differing config keys named in a label; more are counted
NOT_RUN = "not run"
NOT_FINISHED = "started, not finished (failed, stopped or still running)"


class ReportError(UserError, ValueError):
    """A workdir the report cannot read; the command line prints it as one line."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What the report reads from one workdir."""

    workdir: str
    config: dict
    results: dict  # stage name -> results.json, finished stages in pipeline order
    metrics: list  # metrics.jsonl records
    draws: list  # stage2/draws.jsonl records ([] when absent)
    unfinished: dict = dataclasses.field(default_factory=dict)  # configured stage -> status


def unfinished_stages(workdir: str, config: dict, results: dict) -> dict[str, str]:
    """Each stage of ``config["pipeline"]`` without a results.json: NOT_FINISHED when its
    folder exists (it started), else NOT_RUN."""
    return {
        s: NOT_FINISHED if os.path.isdir(os.path.join(workdir, s)) else NOT_RUN
        for s in config.get("pipeline", ())
        if s not in results
    }


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"Cannot read {path}: {e}.") from e


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_run(workdir: str) -> Run:
    """Reads one workdir; fails (ReportError) when it has no config.json or no finished stage."""
    if not os.path.isdir(workdir):
        raise ReportError(f"{workdir} is not a folder: pass the workdir of a run (its --workdir).")
    if not os.path.exists(os.path.join(workdir, "config.json")):
        raise ReportError(f"{workdir} has no config.json: it is not an ltr_jax workdir.")
    config = _read_json(os.path.join(workdir, "config.json"))
    configured = list(config.get("pipeline", ()))
    stages = configured + [s for s in STAGE_ORDER if s not in configured]
    results = {
        s: _read_json(os.path.join(workdir, s, "results.json"))
        for s in stages
        if os.path.exists(os.path.join(workdir, s, "results.json"))
    }
    if not results:
        raise ReportError(f"{workdir} has no finished stage (no <stage>/results.json).")
    return Run(
        workdir=workdir,
        config=config,
        results=results,
        metrics=_read_jsonl(os.path.join(workdir, "metrics.jsonl")),
        draws=_read_jsonl(os.path.join(workdir, "stage2", "draws.jsonl")),
        unfinished=unfinished_stages(workdir, config, results),
    )


def method_label(config: dict, stages: Sequence[str]) -> str:
    """A readable method name from the finished stages and their key settings: each stage's
    declared part (`common.Stage.label`), in the pipeline's order."""
    parts = [
        part
        for name, stage in pipeline.STAGES.items()
        if name in stages and (part := stage.label(config, stages))
    ]
    return " + ".join(parts) or "+".join(stages)


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"a.b": value as text}``: every leaf of ``config`` but the seeds (``seed`` and a
    stage's own, ``stage2.seed``; lists are leaves)."""
    flat = {}
    for key, value in config.items():
        if prefix + key in SEED_KEYS:
            continue
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return flat


def _difference(variant: dict, keys: Sequence[str]) -> str:
    """`` [k1=v1, k2=v2, +3 more]``: ``variant``'s values of the differing ``keys``."""
    shown = [f"{k}={variant.get(k, 'unset')}" for k in keys[:_MAX_DIFF_KEYS]]
    if len(keys) > _MAX_DIFF_KEYS:
        shown.append(f"+{len(keys) - _MAX_DIFF_KEYS} more")
    return f" [{', '.join(shown)}]"


def distinguish(labels: Sequence[str], runs: Sequence[Run]) -> list[str]:
    """``labels``, where runs sharing a label differ in config (beyond the seed), each followed by
    the differing keys and its values; a numbered suffix only if that still leaves a tie."""
    variants: dict[str, list[dict]] = {}
    flats = [flat_config(r.config) for r in runs]
    for label, flat in zip(labels, flats, strict=True):
        if flat not in variants.setdefault(label, []):
            variants[label].append(flat)
    named = {}
    for label, flats_of_label in variants.items():
        keys = sorted({k for f in flats_of_label for k in f})
        keys = [k for k in keys if len({f.get(k) for f in flats_of_label}) > 1]
        for i, flat in enumerate(flats_of_label):
            name = label + (_difference(flat, keys) if keys else "")
            named[(label, i)] = name if name not in named.values() else f"{name} #{i + 1}"
    return [named[(lbl, variants[lbl].index(f))] for lbl, f in zip(labels, flats, strict=True)]


def group_runs(runs: Sequence[Run], labels: Sequence[str] | None = None) -> dict[str, list[Run]]:
    """Groups runs into methods (see the module docstring), in order of first appearance."""
    if labels is not None and len(labels) != len(runs):
        raise ReportError(f"{len(labels)} labels given for {len(runs)} workdirs.")
    if labels is None:
        labels = distinguish(
            [
                os.path.basename(os.path.dirname(os.path.abspath(r.workdir)))
                if _SEED_DIR.search(os.path.basename(os.path.normpath(r.workdir)))
                else method_label(r.config, list(r.results))
                for r in runs
            ],
            runs,
        )
    groups: dict[str, list[Run]] = {}
    for label, run in zip(labels, runs, strict=True):
        groups.setdefault(label, []).append(run)
    return groups


def final_stage(runs: Sequence[Run]) -> str:
    """The last stage (in pipeline order) that every run of a group finished."""
    common = [s for s in runs[0].results if all(s in r.results for r in runs)]
    if not common:
        raise ReportError(f"No stage finished by all of {[r.workdir for r in runs]}.")
    return common[-1]


def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and sample std (ddof 1; None for one value) of the non-None values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "values": list(values)}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": float(np.mean(vals)), "std": std, "values": list(values)}


def _per_class(results: Sequence[dict]) -> dict | None:
    if not all(r.get("per_class_acc") for r in results):
        return None  # e.g. stage 1, which is not evaluated
    acc = np.array([[np.nan if a is None else a for a in r["per_class_acc"]] for r in results])
    std = np.nanstd(acc, axis=0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
    return {"mean": np.nanmean(acc, axis=0).tolist(), "std": std.tolist()}


def run_seed(config: dict, stage: str):
    """The seed of a run's ``stage``: the stage's own seed where it has one set (>= 0), else
    the run's ``seed`` (several stage-2 seeds can share one stage 1 and probe)."""
    own = config.get(stage, {}).get("seed", -1) if isinstance(config.get(stage), dict) else -1
    return own if own is not None and own >= 0 else config.get("seed")


def summarise(groups: dict[str, list[Run]]) -> list[dict]:
    """One row per method: the final stage's metrics over runs, per-class accuracy, counts."""
    return [_row(method, runs, final_stage(runs)) for method, runs in groups.items()]


def evaluated_stage_rows(groups: dict[str, list[Run]]) -> list[dict]:
    """One row per method and evaluated stage that every run of it finished (the probe on
    BNS too, not only the last stage), in pipeline order: the report's table."""
    rows = []
    for method, runs in groups.items():
        stages = [s for s in runs[0].results if all(s in r.results for r in runs)]
        evaluated = [s for s in stages if "top1" in runs[0].results[s]] or stages[-1:]
        rows += [_row(method, runs, stage) for stage in evaluated]
    return rows


def _row(method: str, runs: Sequence[Run], stage: str) -> dict:
    """The row of one method's ``stage``: its metrics over runs and the dataset facts."""
    results = [r.results[stage] for r in runs]
    row = {
        "method": method,
        "stage": stage,
        "runs": len(runs),
        "seeds": [run_seed(r.config, stage) for r in runs],
        "workdirs": [r.workdir for r in runs],
        "metrics": {m: mean_std([res.get(m) for res in results]) for m in METRICS},
        "train_class_counts": results[0].get("train_class_counts"),
        "per_class_acc": _per_class(results),
        "thresholds": {
            k: results[0].get(
                f"{k}_threshold", runs[0].config.get("data", {}).get(f"{k}_threshold")
            )
            for k in ("many", "few")
        },
        "dataset": dataset_of(runs[0]),
        "class_names": results[0].get("class_names"),
        "unfinished": {r.workdir: r.unfinished for r in runs if r.unfinished},
        "nonfinite_loss": {r.workdir: nonfinite_losses(r) for r in runs if nonfinite_losses(r)},
        "empty_groups": empty_groups(results[0]),
    }
    return row


def empty_groups(results: dict) -> list[str]:
    """Many / Medium / Few groups without a class in a stage's results (their column is n/a)."""
    groups = results.get("groups") or {}
    return [g for g in ("many", "medium", "few") if g in groups and not groups[g]]


def nonfinite_losses(run: Run) -> dict[str, int]:
    """Stage -> first logged step whose training loss is NaN or infinite."""
    first: dict[str, int] = {}
    for r in run.metrics:
        loss = r.get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            first.setdefault(r.get("stage", "?"), int(r["step"]))
    return first


def notes(rows: Sequence[dict]) -> str:
    """Markdown bullets: unfinished configured stages and non-finite losses, per workdir."""
    lines = []
    for row in rows:
        for workdir, stages in row["unfinished"].items():
            said = "; ".join(f"{s} {status}" for s, status in stages.items())
            lines.append(f"- {row['method']}: `{workdir}`: {said}.")
        for workdir, stages in row["nonfinite_loss"].items():
            said = ", ".join(f"{s} from step {step}" for s, step in stages.items())
            lines.append(f"- {row['method']}: `{workdir}`: non-finite training loss ({said}).")
        if row.get("empty_groups"):
            t = row["thresholds"]
            lines.append(
                f"- {row['method']}: no class in {', '.join(row['empty_groups'])} with Many > "
                f"{t['many']} / Few < {t['few']} training images (counts "
                f"{_count_span(row)}): n/a in the table; choose data.many_threshold / "
                "data.few_threshold inside the counts (README: Many / Few thresholds)."
            )
    return "\n".join(lines) + "\n" if lines else ""


def _count_span(row: dict) -> str:
    counts = row.get("train_class_counts") or []
    return f"{min(counts)}..{max(counts)}" if counts else "unknown"


def dataset_of(run: Run) -> str:
    """The dataset a run trained on: ``data.name``, with its files for your own data."""
    data = run.config.get("data", {})
    name = str(data.get("name", "?"))
    return f"{name} ({data['train_path']})" if data.get("train_path") else name


def check_one_dataset(runs: Sequence[Run]) -> str:
    """The one dataset of ``runs``; fails, listing the datasets and their workdirs, when the
    runs come from several (their per-class figures and Many/Few groups do not compare)."""
    by_dataset: dict[str, list[str]] = {}
    for run in runs:
        by_dataset.setdefault(dataset_of(run), []).append(run.workdir)
    if len(by_dataset) > 1:
        listing = "; ".join(f"{d}: {', '.join(w)}" for d, w in by_dataset.items())
        raise ReportError(
            f"The workdirs hold runs of {len(by_dataset)} datasets ({listing}). Report each "
            "dataset on its own (python -m ltr_jax.report <its workdirs>), or pass "
            "--by_dataset to write one report per dataset under --out."
        )
    return next(iter(by_dataset))


def split_by_dataset(workdirs: Sequence[str]) -> dict[str, list[str]]:
    """Workdirs grouped by the dataset their runs trained on, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for workdir in workdirs:
        groups.setdefault(dataset_of(load_run(workdir)), []).append(workdir)
    return groups


def per_class_table(rows: Sequence[dict], max_classes: int = 100) -> str:
    """Markdown: per-class test accuracy of every method (mean over runs), one row per class
    named by its class name, with its training count; empty beyond ``max_classes`` classes."""
    rows = [r for r in rows if r["per_class_acc"] is not None]
    if not rows or len(rows[0]["per_class_acc"]["mean"]) > max_classes:
        return ""
    num_classes = len(rows[0]["per_class_acc"]["mean"])
    names = rows[0]["class_names"] or [str(c) for c in range(num_classes)]
    counts = rows[0]["train_class_counts"] or [None] * num_classes
    lines = [
        "| class | train images | " + " | ".join(r["method"] for r in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for c in range(num_classes):
        accs = [r["per_class_acc"]["mean"][c] for r in rows]
        cells = ["n/a" if a is None or not math.isfinite(a) else f"{a:.1f}" for a in accs]
        lines.append(f"| {names[c]} | {counts[c]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.2f}" + ("" if stat["std"] is None else f" ± {stat['std']:.2f}")


def markdown_table(rows: Sequence[dict]) -> str:
    """The Markdown table: method, final stage, runs, then mean ± std of each metric."""
    lines = [
        "| method | stage | runs | " + " | ".join(HEADERS) + " |",
        "|---|---|---|" + "---|" * len(HEADERS),
    ]
    for row in rows:
        cells = [row["method"], row["stage"], str(row["runs"])]
        cells += [_cell(row["metrics"][m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Figures (matplotlib's object-oriented API on the Agg canvas; no pyplot).


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # optional dependency
        raise ImportError(
            "The report's figures need matplotlib: pip install 'ltr_jax[report]'."
        ) from e
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def _style(index: int) -> dict:
    """Colour and marker of the ``index``-th method, the same in every figure (20 colours)."""
    from matplotlib import colormaps

    shade = (2 * index) % 20 + (index // 10) % 2  # tab20: 10 strong colours, then their light pairs
    return {"color": colormaps["tab20"](shade), "marker": _MARKERS[index % len(_MARKERS)]}


def _count_ticks(ax, rows: Sequence[dict]) -> None:
    """Labels the log x axis with the class counts themselves when there are few of them."""
    from matplotlib.ticker import NullFormatter

    counts = sorted({c for row in rows for c in row["train_class_counts"] or ()})
    if len(counts) <= 12:
        ax.set_xticks(counts, [str(c) for c in counts], fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())


def _name_points(ax, rows: Sequence[dict], max_classes: int = 20) -> None:
    """Writes each class's name beside the first method's point when there are few classes."""
    row = next((r for r in rows if r["per_class_acc"] and r["train_class_counts"]), None)
    if row is None or not row.get("class_names") or len(row["class_names"]) > max_classes:
        return
    for name, count, acc in zip(
        row["class_names"], row["train_class_counts"], row["per_class_acc"]["mean"]
    ):
        if acc is not None and math.isfinite(acc):
            ax.annotate(
                name,
                (count, acc),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=7,
                rotation=30,
                alpha=0.8,
            )


def plot_per_class(rows: Sequence[dict], path: str) -> None:
    """Per-class test accuracy against the class's training count (log x), one line per method."""
    fig = _figure(11.0, 5.0)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        if row["per_class_acc"] is None or row["train_class_counts"] is None:
            continue
        counts = np.asarray(row["train_class_counts"], float)
        order = np.argsort(-counts, kind="stable")
        mean = np.asarray(row["per_class_acc"]["mean"])[order]
        std = np.asarray(row["per_class_acc"]["std"])[order]
        ax.errorbar(
            counts[order],
            mean,
            yerr=std if row["runs"] > 1 else None,
            ms=5,
            lw=1.5,
            capsize=2,
            alpha=0.85,
            **_style(i),
            label=f"{row['method']} ({row['stage']}, n={row['runs']})",
        )
    _name_points(ax, rows)
    thresholds = rows[0]["thresholds"] if rows else {}
    for name, sign, style in (("many", ">", "--"), ("few", "<", ":")):
        if thresholds.get(name) is not None:
            ax.axvline(
                thresholds[name],
                color="grey",
                ls=style,
                lw=1,
                label=f"{name.capitalize()}: {sign} {thresholds[name]} images",
            )
    ax.set_xscale("log")
    _count_ticks(ax, rows)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(
        "Per-class test accuracy vs training count (final stage, mean ± std over runs)", fontsize=10
    )
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper")
    fig.savefig(path)


def _confidence_per_draw(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(epochs, mean p of whole class, of drawn subset), averaged over the classes that were cut;
    and the number of cut classes."""
    recorded = [r.get("train_class_counts") for r in run.results.values()]
    recorded = [c for c in recorded if c]  # stage 2's, or an earlier stage's if it did not finish
    counts = np.asarray(recorded[-1] if recorded else run.draws[0]["counts"])  # [C]
    cut = np.asarray(run.draws[0]["counts"]) < counts  # [C]
    epochs = np.array([d["epoch"] for d in run.draws], float)
    whole = np.array(
        [np.asarray(d["mean_p_class"])[cut].mean() if cut.any() else np.nan for d in run.draws]
    )
    drawn = np.array(
        [np.asarray(d["mean_p_drawn"])[cut].mean() if cut.any() else np.nan for d in run.draws]
    )
    return epochs, whole, drawn, int(cut.sum())


def configured_k(run: Run) -> str:
    """The run's k per class: the one stage 2 recorded, else the configured one."""
    k = run.results.get("stage2", {}).get("k_per_class")
    if k is None:
        k = run.config.get("stage2", {}).get("k_per_class")
        if k is not None and k <= 0:
            return "10 x the smallest class"  # the configured default (stage2.k_per_class=0)
    return "?" if k is None else str(k)


def confidence_title(method: str, runs: Sequence[Run], cut: int) -> str:
    """Title of one method's IP-DPP panel: the configured k and how many classes it cut."""
    what = f"{cut} classes cut to k" if cut else "no class cut: every class <= k"
    n = len(runs)
    return f"{method}\n{what} = {configured_k(runs[0])}; {n} run{'s' * (n > 1)}"


def plot_confidence(groups: dict[str, list[Run]], path: str) -> bool:
    """Per IP-DPP method: mean p(y|x) of the drawn subset vs the whole class, per draw.

    Averaged over the classes the draws cut (more than k images), then over runs.

    Returns:
      False (and writes nothing) when no run has draws.
    """
    methods = [(m, [r for r in runs if r.draws]) for m, runs in groups.items()]
    methods = [(m, runs) for m, runs in methods if runs]
    if not methods:
        return False
    from matplotlib.ticker import MaxNLocator

    fig = _figure(max(7.0, 4.6 * len(methods)), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, (method, runs) in zip(axes, methods, strict=True):
        per_run = [_confidence_per_draw(r) for r in runs]
        draws = min(len(p[0]) for p in per_run)
        epochs = per_run[0][0][:draws]
        whole = np.mean([p[1][:draws] for p in per_run], axis=0)
        drawn = np.mean([p[2][:draws] for p in per_run], axis=0)
        ax.plot(epochs, whole, "o-", color="tab:blue", label="whole class")
        ax.plot(epochs, drawn, "s--", color="tab:red", label="drawn subset")
        ax.set_title(confidence_title(method, runs, per_run[0][3]), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch of the draw")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean p(y | x) over cut classes")
    fig.suptitle("IP-DPP draws: mean p(y|x) of the drawn images vs their whole class", fontsize=10)
    fig.savefig(path)
    return True


def _records(run: Run, stage: str) -> list[dict]:
    """The stage's metric records, plus its final test top-1 (results.json) as ``eval_top1``."""
    records = [r for r in run.metrics if r.get("stage") == stage]
    final = run.results.get(stage, {})
    if final.get("top1") is not None and final.get("num_steps") is not None:
        records.append({"step": final["num_steps"], "eval_top1": final["top1"]})
    return records


def _stage_series(runs: Sequence[Run], stage: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over runs of ``key``) of one stage's metric records."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for r in _records(run, stage):
            if key in r:
                by_step.setdefault(int(r["step"]), []).append(float(r[key]))
    steps = np.array(sorted(by_step), int)
    return steps, np.array([np.mean(by_step[s]) for s in steps])


def _training_stages(groups: dict[str, list[Run]]) -> list[str]:
    stages = []
    for runs in groups.values():
        for run in runs:
            for r in run.metrics:
                if "loss" in r and r.get("stage") not in stages:
                    stages.append(r["stage"])
    return sorted(stages, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99)


def plot_curves(groups: dict[str, list[Run]], path: str) -> None:
    """Training loss and eval top-1 against step, one column per stage, one line per method."""
    stages = _training_stages(groups)
    if not stages:
        raise ReportError("No training records (metrics.jsonl) in the workdirs.")
    fig = _figure(4.2 * len(stages), 6.4)
    axes = fig.subplots(2, len(stages), squeeze=False)
    for col, stage in enumerate(stages):
        loss_ax, eval_ax = axes[0, col], axes[1, col]
        for i, (method, runs) in enumerate(groups.items()):
            for ax, key in ((loss_ax, "loss"), (eval_ax, "eval_top1")):
                steps, values = _stage_series(runs, stage, key)
                finite = np.isfinite(values)
                if finite.any():
                    ax.plot(
                        steps[finite],
                        values[finite],
                        ms=4,
                        lw=1.3,
                        alpha=0.85,
                        label=method,
                        markevery=max(1, int(finite.sum()) // 12),
                        **_style(i),
                    )
                if not finite.all():
                    _mark_nonfinite(ax, steps[~finite], i)
        loss_ax.set_title(f"stage {stage}: training loss")
        eval_ax.set_title(f"stage {stage}: test top-1 (last point: final)")
        loss_ax.set_ylabel("loss (mean over runs)")
        eval_ax.set_ylabel("top-1 (%)")
        for ax in (loss_ax, eval_ax):
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if not ax.lines:
                ax.text(
                    0.5,
                    0.5,
                    "no test evaluation in this stage",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                )
    _method_legend(fig, axes.ravel())
    fig.savefig(path)


NONFINITE_LABEL = "non-finite (NaN / inf)"


def _mark_nonfinite(ax, steps: np.ndarray, index: int) -> None:
    """Red crosses at the top of ``ax`` at the steps whose value is NaN or infinite."""
    from matplotlib.transforms import blended_transform_factory

    top = blended_transform_factory(ax.transData, ax.transAxes)  # x: step, y: axes fraction
    height = 0.97 - 0.04 * (index % 10)  # one row of crosses per method
    ax.plot(
        steps,
        np.full(len(steps), height),
        ls="none",
        marker="x",
        ms=7,
        mew=2,
        color="red",
        transform=top,
        clip_on=False,
        label=NONFINITE_LABEL,
    )


def _method_legend(fig, axes) -> None:
    """One legend for the whole figure, below it: every method once, in plotting order."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="outside lower center",
        fontsize=9,
        ncols=min(len(handles), 4),
    )


def _markdown_document(
    table: str, figures: Sequence[str], dataset: str = "", per_class: str = "", notes_md: str = ""
) -> str:
    images = "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in figures)
    intro = (
        "Every evaluated stage that all runs of a method finished (the last one is the "
        "method's result), test accuracy in percent, mean ± std over runs."
    )
    if dataset:
        intro = f"Dataset: {dataset}. {intro}"
    if per_class:
        per_class = f"\nPer-class test accuracy (final stage, mean over runs):\n\n{per_class}"
    if notes_md:
        notes_md = f"\n{NOTES_TITLE}\n\n{notes_md}"
    return f"# ltr_jax report\n\n{intro}\n\n{table}{notes_md}{per_class}\n{images}"


NOTES_TITLE = "Warnings (the table shows the stages that every run of a method finished):"


def make_report(workdirs: Sequence[str], out_dir: str, labels: Sequence[str] | None = None) -> dict:
    """Writes report.md, report.json and the figures to ``out_dir``.

    Returns:
      ``{"table": markdown, "methods": rows, "figures": [png paths]}``.
    """
    runs = [load_run(w) for w in workdirs]
    dataset = check_one_dataset(runs)
    groups = group_runs(runs, labels)
    rows = summarise(groups)
    table = markdown_table(evaluated_stage_rows(groups))
    per_class = per_class_table(rows)
    notes_md = notes(rows)
    os.makedirs(out_dir, exist_ok=True)
    figures = [os.path.join(out_dir, "per_class_accuracy.png")]
    plot_per_class(rows, figures[0])
    figures.append(os.path.join(out_dir, "training_curves.png"))
    plot_curves(groups, figures[-1])
    confidence = os.path.join(out_dir, "ipdpp_confidence.png")
    if plot_confidence(groups, confidence):
        figures.append(confidence)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(_markdown_document(table, figures, dataset, per_class, notes_md))
    report = {
        "table": table,
        "dataset": dataset,
        "per_class_table": per_class,
        "notes": notes_md,
        "methods": rows,
        "figures": figures,
    }
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(_finite(report), f, indent=2)
    return report


def _finite(value):
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; prints the Markdown table."""
    parser = argparse.ArgumentParser(
        prog="python -m ltr_jax.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdirs", nargs="+", help="finished (or partly finished) workdirs")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--labels", default=None, help="comma-separated, one per workdir")
    parser.add_argument(
        "--by_dataset",
        action="store_true",
        help="one report per dataset, in OUT/<n>_<dataset name>",
    )
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except (ReportError, ImportError) as e:  # what to fix, in one line, without a traceback
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    labels = args.labels.split(",") if args.labels else None
    if args.by_dataset:
        if labels:
            parser.error("--labels and --by_dataset do not combine: report each dataset alone.")
        groups = split_by_dataset(args.workdirs)
        return {
            d: _report_and_print(w, _dataset_dir(args.out, i, d), None)
            for i, (d, w) in enumerate(groups.items())
        }
    return _report_and_print(args.workdirs, args.out, labels)


def _dataset_dir(out: str, index: int, dataset: str) -> str:
    return os.path.join(out, f"{index}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_"))


def _report_and_print(workdirs: Sequence[str], out: str, labels) -> dict:
    report = make_report(workdirs, out, labels)
    notes_txt = f"{NOTES_TITLE}\n{report['notes']}\n" if report["notes"] else ""
    print(f"{report['dataset']}:\n{report['table']}\n{notes_txt}{report['per_class_table']}")
    print("Wrote", ", ".join([os.path.join(out, "report.md")] + report["figures"]))
    return report


if __name__ == "__main__":
    main()
