"""Export a finished run's classifier: ``model.safetensors`` and ``model_card.json``.

    python -m ltr_jax.export workdirs/cifar10_lt --out exports/cifar10_lt
    python run.py --config=configs/cifar10_lt.py --stages=ce \\
        --config.model.init_from=exports/cifar10_lt/model.safetensors --config.model.init_head=True

``model.safetensors`` (written with the ``safetensors`` NumPy API, no torch) holds every
parameter and BatchNorm statistic of the classifier under its flat path
(``encoder.layers.0.conv1.kernel``, ``head.fc.bias``), float32, in ltr_jax's layouts; its
metadata says ``format=ltr_jax``, so ``model.init_from`` recognises and loads it as it is
(the head too with ``model.init_head=True`` and the same classes): fine-tuning starts from
exactly the exported model. ``model_card.json`` holds the class names, training counts,
Many / Few thresholds and groups, the evaluation preprocessing, the run's config, the measured
metrics (the stage's own test evaluation and every ``python -m ltr_jax.evaluate`` result of
the run, each with its dataset, split and, where recorded, machine) and the paper's citation.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections.abc import Sequence

import numpy as np

from ltr_jax import inference, writers
from ltr_jax.models import pretrained

CITATION = (
    'F. Lin and X. Yuan, "Long-Tailed Recognition via Information-Preservable Two-Stage '
    'Learning", NeurIPS 2025, arXiv:2510.08836.'
)
METRIC_KEYS = ("top1", "many", "medium", "few", "nll", "ece")


def measured_metrics(clf: inference.Classifier) -> list[dict]:
    """The stage's own test metrics, then every ``eval/<name>/results.json`` of this stage."""
    own = clf.results
    out = [
        dict(
            {k: own.get(k) for k in METRIC_KEYS if k in own},
            dataset=own.get("dataset"),
            split="test",
            source=f"{clf.stage}/results.json",
            machine=own.get("machine", "not recorded (the training run)"),
        )
    ]
    for path in sorted(glob.glob(os.path.join(clf.workdir, "eval", "*", "results.json"))):
        with open(path) as f:
            evaluated = json.load(f)
        if evaluated.get("stage") != clf.stage:
            continue
        out.append(
            dict(
                {k: evaluated.get(k) for k in METRIC_KEYS},
                dataset=evaluated.get("dataset"),
                split=evaluated.get("split"),
                source=os.path.relpath(path, clf.workdir),
                machine=evaluated.get("machine"),
            )
        )
    return out


def model_card(clf: inference.Classifier) -> dict:
    """Everything a user of the exported weights needs to know (see the module docstring)."""
    return dict(
        format=pretrained.EXPORT_FORMAT,
        stage=clf.stage,
        encoder=clf.config.model.encoder,
        head=clf.config[clf.stage].get("head", "linear"),
        num_classes=clf.num_classes,
        class_names=list(clf.class_names),
        train_class_counts=clf.train_counts.tolist(),
        many_threshold=clf.many_threshold,
        few_threshold=clf.few_threshold,
        groups=clf.groups.as_dict(),
        preprocessing=dict(
            clf.preprocessing,
            channels="RGB; 1 channel replicated, alpha dropped",
            scale="uint8 / 255 inside the model",
        ),
        metrics=measured_metrics(clf),
        config=clf.config.to_dict(),
        citation=CITATION,
    )


def export(clf: inference.Classifier, out: str) -> dict:
    """Writes ``out/model.safetensors`` and ``out/model_card.json``; returns the card."""
    from safetensors.numpy import save_file  # imported here: only exporting needs it

    state = {
        k: np.ascontiguousarray(v, np.float32)
        for k, v in pretrained.exported_state(clf.model).items()
    }
    card = model_card(clf)
    os.makedirs(out, exist_ok=True)
    metadata = dict(format=pretrained.EXPORT_FORMAT, encoder=card["encoder"], stage=clf.stage)
    save_file(state, os.path.join(out, "model.safetensors"), metadata=metadata)
    writers.write_json(os.path.join(out, "model_card.json"), card)
    return card


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line; returns the model card."""
    parser = argparse.ArgumentParser(
        prog="python -m ltr_jax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdir", help="a finished run's workdir")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--stage", default=None, help="a finished classifier stage")
    args = parser.parse_args(argv)

    def go() -> dict:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise inference.InferenceError(f"--out={args.out} is a file: give a folder.")
        card = export(inference.load_classifier(args.workdir, args.stage), args.out)
        print(f"{args.out}: model.safetensors, model_card.json ({card['stage']})")
        return card

    return inference.run_command(parser.prog, go)


if __name__ == "__main__":
    main()
