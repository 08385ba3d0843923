"""Evaluate a finished run on any split the dataset registry can load.

    python -m ltr_jax.evaluate workdirs/cifar10_lt                      # its own test split
    python -m ltr_jax.evaluate WORKDIR --config.data.test_path=/data/relabelled --name=relabelled
    python -m ltr_jax.evaluate WORKDIR --split=train --stage=probe

The run's ``config.data`` with the ``--config.data.KEY=VALUE`` overrides chooses the data
(any registered dataset, `ltr_jax.data.datasets`); its class names must be the run's, in the
same order (else one line names the difference). Many / Medium / Few are the run's own groups
(its training counts and thresholds), whatever the evaluated data. Writes
``WORKDIR/eval/<name>/results.json`` (top-1, Many / Medium / Few, per-class accuracy,
precision and recall, NLL, ECE overall and per group, the dataset, split, stage and machine)
and ``predictions.npz`` (probabilities and labels, for `ltr_jax.report_figures`); ``<name>``
defaults to ``<data.name>_<split>``. A bad workdir, override, dataset or class list ends the
command with one line, exit code 2, and nothing written.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from ltr_jax import inference, metrics, writers
from ltr_jax.data.input import make as inputs

SPLITS = ("test", "train")


def apply_overrides(data_config: ml_collections.ConfigDict, overrides: Sequence[str]) -> dict:
    """Sets ``--config.data.KEY=VALUE`` overrides (values read as Python literals, else as
    strings; ``KEY`` may be dotted, e.g. ``tfds.test_split``); returns them as a dict.

    Raises:
      inference.InferenceError: an argument of another form, or an unknown key.
    """
    applied = {}
    for arg in overrides:
        m = re.fullmatch(r"--config\.data\.([\w.]+)=(.*)", arg)
        if not m:
            raise inference.InferenceError(
                f"Unknown argument {arg!r}: give --config.data.KEY=VALUE (e.g. "
                "--config.data.test_path=/data/test), --split, --stage or --name."
            )
        key, text = m.groups()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        section = data_config
        try:
            for parent in parents:
                section = section[parent]
            if leaf not in section:
                raise KeyError(leaf)
            section[leaf] = value
        except (KeyError, TypeError, AttributeError) as e:
            raise inference.InferenceError(
                f"--config.data.{key}: no such key or a value of the wrong type ({e}); valid "
                f"keys: {', '.join(sorted(data_config.keys()))}."
            ) from e
        applied[key] = value
    return applied


def check_class_names(run: Sequence[str], data: Sequence[str], dataset: str) -> None:
    """Refuses data whose class names are not the run's, in the same order (one line)."""
    run, data = [str(n) for n in run], [str(n) for n in data]
    if run == data:
        return
    if sorted(run) == sorted(data):
        i = next(i for i, (a, b) in enumerate(zip(run, data, strict=True)) if a != b)
        diff = (
            f"the same names in another order (class {i}: {data[i]!r} in the data, "
            f"{run[i]!r} in the run)"
        )
    else:
        missing, extra = sorted(set(run) - set(data)), sorted(set(data) - set(run))
        diff = f"the data lacks {missing[:5]} and has {extra[:5]} that the run has not"
    raise inference.InferenceError(
        f"{dataset} has {len(data)} classes, the run {len(run)}: {diff}. Evaluate on data "
        "with the run's classes (same names, same order)."
    )


def machine() -> dict:
    """The devices a measurement ran on."""
    return dict(
        platform=jax.default_backend(),
        device_kind=jax.devices()[0].device_kind,
        devices=jax.device_count(),
        processes=jax.process_count(),
    )


def evaluate(clf: inference.Classifier, data_config, split: str = "test") -> tuple[dict, dict]:
    """(results, predictions) of the classifier on ``split`` of ``data_config``'s dataset."""
    if split not in SPLITS:
        raise inference.InferenceError(f"--split={split}: valid: {', '.join(SPLITS)}.")
    try:
        data = inputs.load_input(data_config, clf.mesh)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, inference.UserError):
            raise
        raise inference.InferenceError(f"config.data: {e}") from e
    check_class_names(clf.class_names, data.class_names, data_config.name)
    labels = data.test_labels if split == "test" else data.train_labels
    batch = clf.batch_size(clf.config.train.eval_batch_size)
    logits = data.map_split(lambda x, y, i: clf.device_logits(x), split, batch_size=batch)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    report = metrics.calibration_report(probs, labels, clf.num_classes, clf.groups)
    results = dict(
        report,
        dataset=data_config.name,
        split=split,
        num_images=int(len(labels)),
        stage=clf.stage,
        class_names=list(clf.class_names),
        train_class_counts=clf.train_counts.tolist(),
        groups=clf.groups.as_dict(),
        many_threshold=clf.many_threshold,
        few_threshold=clf.few_threshold,
        empty_groups=metrics.empty_group_notes(
            clf.train_counts, clf.many_threshold, clf.few_threshold
        ),
        machine=machine(),
    )
    return results, dict(probabilities=probs.astype(np.float32), labels=np.asarray(labels))


def write(workdir: str, name: str, results: dict, predictions: dict) -> str:
    """Writes ``WORKDIR/eval/<name>/results.json`` and ``predictions.npz``; returns the folder."""
    folder = os.path.join(workdir, "eval", name)
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(os.path.join(folder, "predictions.npz"), **predictions)
    writers.write_json(os.path.join(folder, "results.json"), results)
    return folder


def run(workdir: str, overrides: Sequence[str] = (), *, split="test", stage=None, name=None):
    """Evaluates and writes; returns (results, folder)."""
    clf = inference.load_classifier(workdir, stage)
    data_config = ml_collections.ConfigDict(clf.config.data.to_dict())
    applied = apply_overrides(data_config, overrides)
    results, predictions = evaluate(clf, data_config, split)
    results["overrides"] = applied
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data_config.name}_{split}")
    return results, write(workdir, name, results, predictions)


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the results."""
    parser = argparse.ArgumentParser(
        prog="python -m ltr_jax.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdir", help="a finished run's workdir")
    parser.add_argument("--split", default="test", help="test (default) or train")
    parser.add_argument("--stage", default=None, help="a finished classifier stage")
    parser.add_argument("--name", default=None, help="eval/<name> (default <data>_<split>)")
    args, overrides = parser.parse_known_args(argv)

    def go() -> dict:
        results, folder = run(
            args.workdir, overrides, split=args.split, stage=args.stage, name=args.name
        )
        shown = ("top1", "many", "medium", "few", "nll", "ece")
        fmt = lambda v: "none (empty group)" if v is None else f"{v:.2f}"
        print(f"{folder}: " + " ".join(f"{k}={fmt(results[k])}" for k in shown))
        return results

    return inference.run_command(parser.prog, go)


if __name__ == "__main__":
    main()
