"""Classify new images with a finished run: one CSV row per image, the top-k classes.

    python -m ltr_jax.predict workdirs/cifar10_lt photos/ --out preds.csv
    python -m ltr_jax.predict WORKDIR a.jpg b.png more/ batch.npz --out preds.csv --top_k 3

INPUT is an image file, a folder (searched recursively for files Pillow reads) or an ``.npz``
holding ``images`` (uint8 [N, H, W] or [N, H, W, C], at the run's input size). Image files
are prepared as the run's evaluation prepared its test images (`ltr_jax.inference`: RGB,
shorter side resized, centre crop). Each row: the input (a path, or ``file.npz[i]``), then
``class_1, prob_1, ..., class_k, prob_k``, most probable first. The CSV is written once every
input is read and classified: a bad input (a missing path, a file that is not an image, an
array of the wrong size or channels) ends the command with one line, exit code 2, and
nothing written. ``--stage`` picks a finished classifier stage (default: the last one).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ltr_jax import inference, writers

CHUNK = 256  # images read and classified at a time (the progress bar's step)


def is_image(name: str) -> bool:
    """A file name with an extension Pillow reads."""
    return os.path.splitext(name)[1].lower() in Image.registered_extensions()


def list_inputs(inputs: Sequence[str]) -> list[tuple[str, str]]:
    """``(kind, path)`` of every input: ``file`` for an image (folders searched recursively,
    sorted), ``npz`` for an arrays file.

    Raises:
      inference.InferenceError: a path that does not exist, or a folder without images.
    """
    found = []
    for path in inputs:
        if path.endswith(".npz") and os.path.isfile(path):
            found.append(("npz", path))
        elif os.path.isdir(path):
            files = sorted(
                os.path.join(folder, f)
                for folder, _, names in os.walk(path)
                for f in names
                if is_image(f)
            )
            if not files:
                raise inference.InferenceError(
                    f"{path}: no image files (extensions Pillow reads) in this folder."
                )
            found += [("file", f) for f in files]
        elif os.path.isfile(path):
            found.append(("file", path))
        else:
            raise inference.InferenceError(f"{path} does not exist: give image files or folders.")
    return found


def read_npz(clf: inference.Classifier, path: str) -> np.ndarray:
    """uint8 [N, S, S, 3] of an ``.npz``'s ``images``, checked against the model's input."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files:
                raise inference.InferenceError(
                    f"{path} holds no 'images' array (has {f.files}): save images uint8 "
                    "[N, H, W(, C)] under the key 'images'."
                )
            images = f["images"]
    except (OSError, ValueError) as e:
        raise inference.InferenceError(f"{path} is not a readable .npz ({e}).") from e
    return clf.check_images(images, path)


def _rows(clf: inference.Classifier, probs: np.ndarray, names: Sequence[str], k: int):
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    for name, p, top in zip(names, probs, order, strict=True):
        row = [name]
        for c in top:
            row += [clf.class_names[c], f"{p[c]:.6f}"]
        yield row


def predict_inputs(
    clf: inference.Classifier, inputs: Sequence[str], top_k: int = 5
) -> tuple[list[str], list[list[str]]]:
    """(CSV header, rows) of every input; a progress bar over chunks of ``CHUNK`` images."""
    found = list_inputs(inputs)
    k = max(1, min(top_k, clf.num_classes))
    files = [p for kind, p in found if kind == "file"]
    arrays = [(p, read_npz(clf, p)) for kind, p in found if kind == "npz"]  # checked first
    total = len(files) + sum(len(a) for _, a in arrays)
    progress = writers.Progress(-(-total // CHUNK), 0, "predict", CHUNK) if total > CHUNK else None
    rows, done = [], 0
    batches = [(files[i : i + CHUNK], None) for i in range(0, len(files), CHUNK)]
    for path, images in arrays:
        for i in range(0, len(images), CHUNK):
            names = [f"{path}[{j}]" for j in range(i, min(i + CHUNK, len(images)))]
            batches.append((names, images[i : i + CHUNK]))
    try:
        for names, images in batches:
            images = clf.load_images(names) if images is None else images
            rows += _rows(clf, clf.predict(images), names, k)
            done += 1
            if progress is not None:
                progress.update(done, {})
    finally:
        if progress is not None:
            progress.close()
    header = ["input"] + [f"{w}_{i}" for i in range(1, k + 1) for w in ("class", "prob")]
    return header, rows


def write_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
    """Writes the CSV whole (a temporary file renamed), creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> str:
    """The command line; returns the CSV's path."""
    parser = argparse.ArgumentParser(
        prog="python -m ltr_jax.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdir", help="a finished run's workdir")
    parser.add_argument("inputs", nargs="+", help="image files, folders, .npz files")
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--stage", default=None, help="a finished classifier stage")
    parser.add_argument("--top_k", type=int, default=5, help="classes per row (default 5)")
    args = parser.parse_args(argv)

    def run() -> str:
        clf = inference.load_classifier(args.workdir, args.stage)
        header, rows = predict_inputs(clf, args.inputs, args.top_k)
        write_csv(args.out, header, rows)
        return args.out

    return inference.run_command(parser.prog, run)


if __name__ == "__main__":
    main()
