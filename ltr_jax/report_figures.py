"""Figures of one finished run's classifier: confusion, calibration, the IP-DPP draw as images.

    python -m ltr_jax.report_figures workdirs/cifar10_lt --out reports/cifar10_lt

- ``confusion.png``: the test confusion matrix (rows: true class, row-normalised, percent),
  classes named and ordered by training count, largest first; above ``max_classes`` classes,
  aggregated into Many / Medium / Few.
- ``reliability.png``: a reliability diagram per group (Many / Medium / Few, by the true
  class): accuracy against confidence in 15 bins, with the group's ECE; an empty group says so.
- ``ipdpp_draws.png`` (runs with a finished ``stage2``): for the largest classes, images the
  last IP-DPP draw kept and images it left out, each with its confidence p(y | x) under the
  final model. The draw is the subset in stage 2's last checkpoint (checked against the
  ``subset_crc32`` of its record in ``draws.jsonl``); the images come from the run's data.

The test predictions come from ``eval/<data>_test/predictions.npz`` when ``python -m
ltr_jax.evaluate`` wrote it, else they are computed (nothing is written to the workdir).
Writes ``figures.md`` beside the figures. Needs matplotlib (``pip install ltr_jax[report]``).
"""

from __future__ import annotations

import argparse
import os
import zlib
from collections.abc import Sequence

import ml_collections
import numpy as np

from ltr_jax import checkpointing, evaluate, inference, metrics, writers
from ltr_jax.data.input import make as inputs
from ltr_jax.report import ReportError

GROUPS = ("many", "medium", "few")


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend state)."""
    try:
        from matplotlib.figure import Figure  # an optional dependency (ltr_jax[report])
    except ImportError as e:
        raise ReportError("The figures need matplotlib: pip install 'ltr_jax[report]'.") from e
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[C, C]``: row = true class, column = predicted class."""
    flat = np.asarray(labels) * num_classes + np.asarray(preds)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def group_confusion(matrix: np.ndarray, groups) -> np.ndarray:
    """``[3, 3]`` counts between the Many / Medium / Few groups (true -> predicted)."""
    ids = [getattr(groups, g) for g in GROUPS]
    return np.array([[matrix[np.ix_(a, b)].sum() for b in ids] for a in ids])


def _row_percent(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * matrix / np.maximum(totals, 1), np.nan)


def plot_confusion(probs, labels, clf: inference.Classifier, path: str, max_classes: int = 30):
    """Writes the confusion-matrix figure (see the module docstring)."""
    matrix = confusion_matrix(np.asarray(probs).argmax(-1), labels, clf.num_classes)
    if clf.num_classes > max_classes:
        matrix = group_confusion(matrix, clf.groups)
        names = [f"{g.capitalize()} ({len(getattr(clf.groups, g))} classes)" for g in GROUPS]
        title = "confusion between groups (row %)"
    else:
        order = np.argsort(-clf.train_counts, kind="stable")
        matrix = matrix[np.ix_(order, order)]
        names = [f"{clf.class_names[c]} ({clf.train_counts[c]})" for c in order]
        title = "confusion, classes by training count (row %)"
    pct = _row_percent(matrix)
    side = max(4.0, 0.35 * len(names) + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (training images)")
    ax.set_title(f"{clf.stage}: {title}", fontsize=9)
    if len(names) <= 12:
        for (i, j), v in np.ndenumerate(pct):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=120)
    return matrix


def _group_rows(labels: np.ndarray, groups) -> dict[str, np.ndarray]:
    return {g: np.isin(labels, getattr(groups, g)) for g in GROUPS}


def plot_reliability(probs, labels, clf: inference.Classifier, path: str) -> dict:
    """Writes the reliability diagrams; returns the ECE (percent) of each group (None: empty)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    fig = _figure(12.0, 4.0)
    axes = fig.subplots(1, 3, sharey=True)
    eces = {}
    for ax, (group, rows) in zip(axes, _group_rows(labels, clf.groups).items(), strict=True):
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.set_xlabel("confidence (max probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        eces[group] = metrics.expected_calibration_error(probs[rows], labels[rows])
        if not rows.any():
            empty = "no class in this group" if not len(getattr(clf.groups, group)) else "no image"
            ax.set_title(f"{group.capitalize()}: empty ({empty})", fontsize=9)
            continue
        bins = metrics.reliability_bins(probs[rows], labels[rows])
        centres, width = (bins["edges"][:-1] + bins["edges"][1:]) / 2, np.diff(bins["edges"])
        full = bins["count"] > 0
        ax.bar(centres[full], bins["accuracy"][full], width[full], edgecolor="k", alpha=0.7)
        ax.plot(centres[full], bins["confidence"][full], "r.", label="mean confidence")
        ax.set_title(
            f"{group.capitalize()}: ECE {eces[group]:.2f}% ({int(rows.sum())} images)", fontsize=9
        )
    axes[0].set_ylabel("accuracy")
    drawn = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if drawn:  # the first non-empty group
        drawn[0].legend(fontsize=8, loc="upper left")
    fig.savefig(path, dpi=120)
    return eces


def last_draw(workdir: str) -> tuple[np.ndarray, dict]:
    """(positions of stage 2's last IP-DPP draw, its draws.jsonl record).

    Raises:
      inference.InferenceError: stage 2's checkpoint or draw record is missing, or they
        disagree (a draw record of another run).
    """
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "stage2", "checkpoints"))
    raw = ckpt.restore_latest_raw()
    ckpt.close()
    records = writers.read_jsonl(os.path.join(workdir, "stage2", "draws.jsonl"))
    if raw is None or raw.get("subset") is None or not records:
        raise inference.InferenceError(f"{workdir}/stage2 holds no checkpoint or no draws.jsonl.")
    positions = np.asarray(raw["subset"], np.int32)
    record = records[-1]
    if zlib.crc32(positions.tobytes()) != record["subset_crc32"]:
        raise inference.InferenceError(
            f"{workdir}/stage2: the checkpoint's subset is not the last draw of draws.jsonl."
        )
    return positions, record


def draw_gallery_data(clf, data, positions: np.ndarray, num_classes: int = 3, per_side: int = 6):
    """For the ``num_classes`` largest classes: (class, [(image, confidence, drawn)])."""
    labels, drawn = data.train_labels, np.zeros(len(data.train_labels), bool)
    drawn[positions] = True
    out = []
    for c in np.argsort(-clf.train_counts, kind="stable")[:num_classes]:
        members = np.flatnonzero(labels == c)
        chosen = np.concatenate(
            [members[drawn[members]][:per_side], members[~drawn[members]][:per_side]]
        )
        batch = clf.batch_size(len(chosen))
        images = data.map_split(lambda x, y, i: x, "train", chosen, batch)
        confidence = clf.predict(images)[:, c]
        out.append((int(c), list(zip(images, confidence, drawn[chosen], strict=True))))
    return out


def plot_draw_gallery(gallery, clf: inference.Classifier, record: dict, path: str) -> None:
    """Writes the draw gallery: a row per class, its drawn images then its left-out ones."""
    columns = max(len(items) for _, items in gallery)
    fig = _figure(1.3 * columns + 1.0, 1.55 * len(gallery) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(gallery), columns))
    for row, (c, items) in zip(axes, gallery, strict=True):
        for ax in row:
            ax.axis("off")
        for ax, (image, conf, kept) in zip(row, items, strict=False):
            ax.imshow(image)
            colour = "tab:green" if kept else "tab:red"
            ax.set_title(
                f"{'drawn' if kept else 'left out'}\np={conf:.2f}", fontsize=7, color=colour
            )
        row[0].text(
            -0.15, 0.5, f"{clf.class_names[c]}\n({clf.train_counts[c]})", fontsize=8,
            ha="right", va="center", transform=row[0].transAxes,
        )  # fmt: skip
    fig.suptitle(
        f"IP-DPP draw {record['draw']} (epoch {record['epoch']}): kept vs left out, "
        "p(y | x) of the final model",
        fontsize=9,
    )
    fig.savefig(path, dpi=120)


def test_predictions(clf: inference.Classifier, workdir: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of the run's own test split: ``eval/<data>_test`` if written
    by this stage, else computed."""
    saved = os.path.join(workdir, "eval", f"{clf.config.data.name}_test", "predictions.npz")
    results = writers.read_json(os.path.join(os.path.dirname(saved), "results.json")) or {}
    if os.path.exists(saved) and results.get("stage") == clf.stage:
        with np.load(saved) as f:
            return f["probabilities"], f["labels"]
    data_config = ml_collections.ConfigDict(clf.config.data.to_dict())
    _, predictions = evaluate.evaluate(clf, data_config, "test")
    return predictions["probabilities"], predictions["labels"]


def run_figures(workdir: str, out: str, stage: str | None = None) -> dict:
    """Writes the figures and ``figures.md`` to ``out``; returns ``{name: path}``."""
    clf = inference.load_classifier(workdir, stage)
    probs, labels = test_predictions(clf, workdir)
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, f"{k}.png") for k in ("confusion", "reliability")}
    plot_confusion(probs, labels, clf, paths["confusion"])
    eces = plot_reliability(probs, labels, clf, paths["reliability"])
    if os.path.exists(os.path.join(workdir, "stage2", "draws.jsonl")):
        positions, record = last_draw(workdir)
        data = inputs.load_input(ml_collections.ConfigDict(clf.config.data.to_dict()), clf.mesh)
        gallery = draw_gallery_data(clf, data, positions)
        paths["ipdpp_draws"] = os.path.join(out, "ipdpp_draws.png")
        plot_draw_gallery(gallery, clf, record, paths["ipdpp_draws"])
    shown = ", ".join(f"{g} {'n/a (empty)' if e is None else f'{e:.2f}%'}" for g, e in eces.items())
    text = f"# {workdir}: {clf.stage}\n\nECE by group: {shown}.\n\n" + "".join(
        f"![{k}]({os.path.basename(p)})\n" for k, p in paths.items()
    )
    with open(os.path.join(out, "figures.md"), "w") as f:
        f.write(text)
    return paths


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the figure paths."""
    parser = argparse.ArgumentParser(
        prog="python -m ltr_jax.report_figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdir", help="a finished run's workdir")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    parser.add_argument("--stage", default=None, help="a finished classifier stage")
    args = parser.parse_args(argv)

    def go() -> dict:
        paths = run_figures(args.workdir, args.out, args.stage)
        print("Wrote", ", ".join(paths.values()))
        return paths

    return inference.run_command(parser.prog, go)


if __name__ == "__main__":
    main()
