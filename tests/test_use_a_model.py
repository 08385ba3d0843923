"""Using a trained model: ``ltr_jax.load_classifier``, ``python -m ltr_jax.predict``,
``evaluate``, ``export`` (and ``model.init_from`` of an export), the report figures and the
inspect notebook.

Two runs are trained once for the whole module and shared by every test: the CIFAR-10-LT
smoke run (synthetic data; stage 1, the probe and stage 2, trimmed) and an image-folder run
(``configs/examples/image_folder_lt.py:smoke`` on a tiny folder of mixed PNG / JPEG, gray /
RGB / RGBA images of other sizes; the ``ce`` stage).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import ltr_jax
from ltr_jax import (
    checkpointing,
    config_lib,
    evaluate,
    export,
    inference,
    metrics,
    pipeline,
    predict,
    report,
    report_figures,
    runtime,
    train_lib,
)
from ltr_jax.data.datasets import own_data as user_sources
from ltr_jax.data.input import make as inputs
from ltr_jax.errors import UserError
from ltr_jax.models import modes, pretrained, registry
from ltr_jax.stages import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "cifar10_lt.py")
EXAMPLE = os.path.join(ROOT, "configs", "examples", "image_folder_lt.py")
NAMES = ("circle", "cross", "square")
PER_CLASS = (30, 14, 8)  # a long-tailed folder (imbalance_factor=1 keeps it as it is)


def _train(config, workdir: str) -> str:
    pipeline.run(ml_collections.FrozenConfigDict(config), workdir)
    return workdir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> str:
    """The CIFAR-10-LT smoke run, trimmed: 1 stage-1 epoch, 2 probe epochs, 2 stage-2 epochs
    with a draw each."""
    config = config_lib.load_config_file(SMOKE, "smoke")
    config.stage1.epochs = 1
    config.probe.epochs = 2
    config.stage2.update(epochs=2, redraw_every_epochs=1)
    return _train(config, str(tmp_path_factory.mktemp("smoke") / "run"))


def _shape(label: int, height: int, width: int, rng) -> np.ndarray:
    image = rng.integers(0, 60, (height, width)).astype(np.uint8)
    h, w = height // 2, width // 2
    if label == 0:
        yy, xx = np.ogrid[:height, :width]
        image[(yy - h) ** 2 + (xx - w) ** 2 < (min(h, w) // 2) ** 2] += 160
    elif label == 1:
        image[h - 2 : h + 2, :] += 160
        image[:, w - 2 : w + 2] += 160
    else:
        image[h // 2 : h + h // 2, w // 2 : w + w // 2] += 160
    return image


def write_folder(root: str, seed: int = 0) -> None:
    """``root/<class>/<i>``: 40 x 48 gray PNGs, RGB JPEGs and RGBA PNGs, classes long-tailed."""
    rng = np.random.default_rng(seed)
    for label, (name, n) in enumerate(zip(NAMES, PER_CLASS, strict=True)):
        os.makedirs(os.path.join(root, name, "sub"), exist_ok=True)
        for i in range(n):
            pil = Image.fromarray(_shape(label, 40, 48, rng))
            folder = os.path.join(root, name, "sub" if i % 2 else "")
            if i % 3 == 1:
                pil.convert("RGB").save(os.path.join(folder, f"{i:03d}.jpg"), quality=95)
            elif i % 3 == 2:
                pil.convert("RGBA").save(os.path.join(folder, f"{i:03d}.png"))
            else:
                pil.save(os.path.join(folder, f"{i:03d}.png"))


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> tuple[str, str]:
    """(workdir, image folder) of a ``ce`` + ``cRT`` run on a tiny image folder (Many / Few at
    the example's 100 / 20: no class has more than 100 images, so Many is empty)."""
    root = str(tmp_path_factory.mktemp("folder") / "images")
    write_folder(root)
    config = config_lib.load_config_file(EXAMPLE, "smoke")
    config.pipeline = ("ce", "crt")
    config.data.update(train_path=root, imbalance_factor=1, test_fraction=0.25)
    config.ce.update(epochs=2, batch_size=8)
    return _train(config, os.path.join(os.path.dirname(root), "run")), root


def _data(workdir: str, mesh=None):
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return config, inputs.load_input(config.data, mesh or runtime.make_mesh())


def _results(workdir: str, stage: str) -> dict:
    with open(common.results_path(workdir, stage)) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------
# Pure functions (fast).


def test_ece_nll_and_precision_against_a_hand_computed_example():
    # Max probabilities 0.9 (right), 0.91 (right), 0.92 (wrong) share the bin (13/15, 14/15];
    # 0.82 (wrong), 0.7 (right) and 0.55 (wrong) have a bin each. ECE = sum n_b / N |acc - conf|
    # = (3 |2/3 - 0.91| + 0.82 + 0.3 + 0.55) / 6 = 0.4.
    probs = np.array(
        [[0.9, 0.1], [0.91, 0.09], [0.08, 0.92], [0.82, 0.18], [0.3, 0.7], [0.45, 0.55]]
    )
    labels = np.array([0, 0, 0, 1, 1, 0])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(40.0)
    want_nll = -np.mean(np.log([0.9, 0.91, 0.08, 0.18, 0.7, 0.45]))
    assert metrics.negative_log_likelihood(probs, labels) == pytest.approx(want_nll)
    precision, recall = metrics.per_class_precision_recall(probs.argmax(-1), labels, 3)
    # Predicted 0: rows 0, 1, 3 (2 right); predicted 1: rows 2, 4, 5 (1 right); class 2 none.
    assert precision == pytest.approx([200 / 3, 100 / 3, None])
    assert recall == pytest.approx([50.0, 50.0, None])
    assert metrics.expected_calibration_error(probs[:0], labels[:0]) is None


def test_an_empty_group_is_named_with_the_counts_and_how_to_choose():
    notes = metrics.empty_group_notes(np.array([200, 120, 90, 60]), 100, 20)
    assert len(notes) == 1 and notes[0].startswith("Few is empty")
    assert "fewer than data.few_threshold=20" in notes[0] and "60..200" in notes[0]
    assert metrics.empty_group_notes(np.array([200, 50, 10]), 100, 20) == []


def test_class_name_check_names_the_difference():
    evaluate.check_class_names(["a", "b"], ["a", "b"], "x")
    with pytest.raises(inference.InferenceError, match="another order .*class 0: 'b'"):
        evaluate.check_class_names(["a", "b"], ["b", "a"], "x")
    with pytest.raises(inference.InferenceError, match=r"lacks \['b'\] and has \['c'\]"):
        evaluate.check_class_names(["a", "b"], ["a", "c"], "x")


# ------------------------------------------------------------------------------------------
# The smoke run.


def _stage_logits(workdir: str, stage: str) -> tuple[np.ndarray, dict]:
    """The stage's own evaluation, rebuilt through its ``make_setup``: (test logits, metrics)
    of its last checkpoint, restored into its real train state."""
    config, data = _data(workdir)
    frozen = ml_collections.FrozenConfigDict(config)
    ctx = common.StageContext(frozen, workdir, data.mesh, data, runtime.root_key(config.seed))
    setup = pipeline.STAGES[stage].make_setup(ctx)
    loop = train_lib.build(setup, data.mesh)
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, stage, "checkpoints"))
    state = ckpt.restore_latest(loop.state)
    ckpt.close()
    loop.close()
    logits_fn = common.make_logits_fn(common.eval_graphdef(setup.model, setup.trainable))
    batch = config.train.eval_batch_size
    logits = data.map_split(lambda x, y, i: logits_fn(state, x), "test", batch_size=batch)
    return logits, setup.evaluate(state)


@pytest.mark.slow
def test_predict_equals_the_stages_own_evaluation(smoke_run):
    clf = ltr_jax.load_classifier(smoke_run)
    assert clf.stage == "stage2" and clf.class_names == tuple(f"class_{c}" for c in range(10))
    assert clf.preprocessing == {"kind": "fit", "image_size": 32}
    config, data = _data(smoke_run, clf.mesh)
    images = data.long_tail.test.images
    want_logits, own = _stage_logits(smoke_run, "stage2")
    logits = clf.logits(images)
    np.testing.assert_allclose(logits, want_logits, atol=1e-6, rtol=0)
    results = _results(smoke_run, "stage2")
    top1 = 100.0 * np.mean(clf.predict(images).argmax(-1) == data.test_labels)
    assert top1 == pytest.approx(results["top1"]) == pytest.approx(own["top1"])
    # Any batch size, one image or a 1-channel batch: the same rows.
    np.testing.assert_allclose(clf.logits(images[:3]), logits[:3], atol=1e-6, rtol=0)
    gray = images[:5, :, :, :1]
    np.testing.assert_allclose(clf.logits(gray), clf.logits(np.repeat(gray, 3, -1)), atol=0)
    # The probe: a head on the stage-1 encoder's features (its checkpoint holds the head).
    probe = ltr_jax.load_classifier(smoke_run, "probe")
    acc = metrics.classification_report(
        probe.logits(images).argmax(-1), data.test_labels, 10, data.groups
    )
    assert acc["per_class_acc"] == _results(smoke_run, "probe")["per_class_acc"]


@pytest.mark.slow
def test_predict_command_on_files_folders_and_npz(smoke_run, tmp_path, monkeypatch, caplog):
    clf = ltr_jax.load_classifier(smoke_run)
    _, data = _data(smoke_run, clf.mesh)
    images = data.long_tail.test.images[:6]
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    Image.fromarray(images[0, :, :, 0]).save(tmp_path / "gray.png")  # 1 channel
    np.savez(tmp_path / "batch.npz", images=images[:2])
    out = tmp_path / "preds" / "p.csv"
    monkeypatch.setattr(predict, "CHUNK", 4)  # 9 images: 3 chunks, with a progress bar
    caplog.set_level(logging.INFO)
    predict.main(
        [
            smoke_run,
            str(tmp_path / "images"),
            str(tmp_path / "gray.png"),
            str(tmp_path / "batch.npz"),
        ]
        + ["--out", str(out), "--top_k", "3"]
    )
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["input", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    rows = {r[0]: r[1:] for r in rows[1:]}
    assert "predict: step 3/3 (100.0%)" in caplog.text
    assert len(rows) == 6 + 1 + 2
    probs = clf.predict(images)
    for i in range(6):
        row = rows[str(folder / f"{i}.png")]
        assert row[0] == clf.class_names[probs[i].argmax()]
        assert float(row[1]) == pytest.approx(probs[i].max(), abs=1e-6)
        assert float(row[1]) >= float(row[3]) >= float(row[5])
    assert rows[f"{tmp_path / 'batch.npz'}[1]"] == rows[str(folder / "1.png")]
    gray = np.repeat(images[:1, :, :, :1], 3, -1)
    assert rows[str(tmp_path / "gray.png")][0] == clf.class_names[clf.predict(gray)[0].argmax()]


@pytest.mark.slow
def test_evaluate_on_the_runs_own_test_split_reproduces_its_results(smoke_run):
    for stage in ("stage2", "probe"):
        results = evaluate.main([smoke_run, f"--stage={stage}", f"--name=own_{stage}"])
        saved = _results(smoke_run, stage)
        for key in ("top1", "many", "medium", "few", "per_class_acc", "train_class_counts"):
            assert results[key] == pytest.approx(saved[key]), key
        folder = os.path.join(smoke_run, "eval", f"own_{stage}")
        with open(os.path.join(folder, "results.json")) as f:
            assert json.load(f)["top1"] == results["top1"]
        assert results["per_class_recall"] == pytest.approx(saved["per_class_acc"])
        assert 0 < results["ece"] < 100 and results["nll"] > 0
        assert results["machine"]["devices"] == jax.device_count()
        with np.load(os.path.join(folder, "predictions.npz")) as f:
            assert f["probabilities"].shape == (len(f["labels"]), 10)
    # Another split the registry loads (the long-tailed training set), Many/Few of the run.
    train = evaluate.main([smoke_run, "--split=train", "--name=train"])
    assert train["num_images"] == sum(saved["train_class_counts"])
    assert train["groups"] == saved["groups"]


@pytest.mark.slow
def test_export_then_init_from_gives_identical_logits(smoke_run, tmp_path):
    card = export.main([smoke_run, "--out", str(tmp_path / "export")])
    clf = ltr_jax.load_classifier(smoke_run)
    path = str(tmp_path / "export" / "model.safetensors")
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        assert f.metadata()["format"] == "ltr_jax"
        assert "head.fc.kernel" in f.keys() and "encoder.layers.0.bn1.mean" in f.keys()
    with open(tmp_path / "export" / "model_card.json") as f:
        saved_card = json.load(f)
    assert saved_card == json.loads(json.dumps(card))
    assert card["class_names"] == list(clf.class_names) and card["stage"] == "stage2"
    assert card["train_class_counts"] == clf.train_counts.tolist()
    assert card["preprocessing"]["kind"] == "fit" and "NeurIPS 2025" in card["citation"]
    measured = {(m["source"], m["split"]) for m in card["metrics"]}
    assert ("stage2/results.json", "test") in measured
    assert card["config"]["model"]["encoder"] == "cifar_resnet8"
    # model.init_from (the head too: same classes) -> the exported model exactly.
    model_config = ml_collections.ConfigDict(clf.config.model.to_dict())
    model_config.update(init_from=path, init_head=True)
    model = registry.make_classifier(model_config, 10, rngs=nnx.Rngs(123))
    loaded = pretrained.init_from_config(model, model_config)
    assert loaded["missing"] == [] and loaded["unexpected"] == []
    again = dataclasses.replace(clf, model=modes.eval_view(model))
    _, data = _data(smoke_run, clf.mesh)
    images = data.long_tail.test.images
    np.testing.assert_array_equal(again.logits(images), clf.logits(images))
    # Fine-tuning on other classes: the encoder (statistics too), no head.
    model_config.init_head = False
    other = registry.make_classifier(model_config, 4, rngs=nnx.Rngs(1))
    loaded = pretrained.init_from_config(other, model_config)
    assert loaded["missing"] == [] and sorted(loaded["dropped_head"]) == [
        "head.fc.bias",
        "head.fc.kernel",
    ]


def _one_line_error(capsys, fn, *args, match: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        fn(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    return err


@pytest.mark.slow
def test_every_bad_input_is_one_line_exit_2_and_nothing_written(smoke_run, tmp_path, capsys):
    out = str(tmp_path / "out.csv")
    missing = str(tmp_path / "none")
    _one_line_error(capsys, predict.main, [missing, "x.png", "--out", out], match="does not exist")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(smoke_run, "config.json"), unfinished)
    for args in ([str(unfinished)], [smoke_run, "--stage=stage1"]):
        err = _one_line_error(capsys, evaluate.main, args, match="no finished classifier stage")
    assert "InferenceError" in err
    _one_line_error(capsys, export.main, [missing, "--out", out], match="does not exist")
    # A corrupt image in a folder; an array of 2 channels; of the wrong size.
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    _one_line_error(
        capsys, predict.main, [smoke_run, str(folder), "--out", out], match="broken.jpg"
    )
    np.savez(tmp_path / "two.npz", images=np.zeros((2, 32, 32, 2), np.uint8))
    np.savez(tmp_path / "size.npz", images=np.zeros((2, 28, 32, 3), np.uint8))
    _one_line_error(
        capsys, predict.main, [smoke_run, str(tmp_path / "two.npz"), "--out", out], match="C = 1"
    )
    _one_line_error(
        capsys, predict.main, [smoke_run, str(tmp_path / "size.npz"), "--out", out], match="28 x 32"
    )
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")
    # Class names that do not match; an unknown override key.
    eval_dir = os.path.join(smoke_run, "eval")
    before = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    _one_line_error(
        capsys,
        evaluate.main,
        [smoke_run, "--config.data.synthetic.num_classes=5", "--name=bad"],
        match="5 classes, the run 10",
    )
    _one_line_error(capsys, evaluate.main, [smoke_run, "--config.data.nam=x"], match="no such key")
    after = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    assert after == before
    assert issubclass(inference.InferenceError, UserError)


@pytest.mark.slow
def test_the_command_line_exits_2_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "ltr_jax.predict", "/no/such/workdir", "a.png", "--out", "p.csv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "python -m ltr_jax.predict: InferenceError: Workdir /no/such/workdir does not exist: "
        "give the --workdir of a run."
    ]


# ------------------------------------------------------------------------------------------
# The image-folder run.


@pytest.mark.slow
def test_image_folder_run_predict_evaluate_export_and_figures(folder_run, tmp_path):
    workdir, root = folder_run
    clf = ltr_jax.load_classifier(workdir, "ce")
    saved = _results(workdir, "ce")
    assert clf.stage == "ce" and clf.class_names == NAMES
    assert clf.preprocessing == {"kind": "fit", "image_size": 32}
    assert saved["empty_groups"] and saved["empty_groups"][0].startswith("Many is empty")
    # The test split's files, prepared by the classifier, give the run's own test top-1.
    paths, labels, _ = user_sources.list_image_folder(root)
    _, test = user_sources.split_fraction(labels, 0.25, 0)
    test_paths = [paths[i] for i in test]
    _, data = _data(workdir, clf.mesh)  # the run's own decoded test images, pixel for pixel
    np.testing.assert_array_equal(clf.load_images(test_paths), data.long_tail.test.images)
    top1 = 100.0 * np.mean(clf.predict(clf.load_images(test_paths)).argmax(-1) == labels[test])
    assert top1 == pytest.approx(saved["top1"])
    out = tmp_path / "p.csv"
    predict.main([workdir, root, "--out", str(out), "--stage=ce"])
    with open(out) as f:
        assert len(list(csv.reader(f))) == 1 + sum(PER_CLASS)
    results = evaluate.main([workdir, "--stage=ce"])
    for key in ("top1", "many", "medium", "few", "per_class_acc"):
        assert results[key] == pytest.approx(saved[key]), key
    assert results["many"] is None and results["empty_groups"] == saved["empty_groups"]
    card = export.main([workdir, "--out", str(tmp_path / "export"), "--stage=ce"])
    assert card["class_names"] == list(NAMES) and card["stage"] == "ce"
    assert {m["source"] for m in card["metrics"]} == {
        "ce/results.json",
        "eval/image_folder_test/results.json",
    }
    paths = report_figures.main([workdir, "--out", str(tmp_path / "figures"), "--stage=ce"])
    assert set(paths) == {"confusion", "reliability"}  # no IP-DPP draw in a ce run
    # cRT (the default: the last finished stage): a new head on the ce stage's encoder.
    crt = evaluate.main([workdir, "--name=crt"])
    assert (
        crt["stage"] == "crt" and crt["per_class_acc"] == _results(workdir, "crt")["per_class_acc"]
    )
    rep = report.make_report([workdir], str(tmp_path / "report"))
    assert "Many is empty" not in rep["notes"] and "no class in many" in rep["notes"]


@pytest.mark.slow
def test_inspect_notebook_report_table_and_figures(smoke_run, tmp_path, monkeypatch):
    """The inspect notebook on the smoke run: the report table (every stage), the figures of
    ``report_figures`` (confusion, reliability, IP-DPP draws) and predictions."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "inspect_a_run.ipynb"), as_version=4)
    monkeypatch.setenv("LTR_JAX_INSPECT_WORKDIR", smoke_run)  # the kernel inherits these
    monkeypatch.setenv("LTR_JAX_INSPECT_OUT", str(tmp_path))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    )
    client.execute()
    shown = [
        o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "display_data"
    ]
    tables = [o["data"]["text/markdown"] for o in shown if "text/markdown" in o["data"]]
    assert any("| probe | 1 |" in t and "| stage2 | 1 |" in t for t in tables)
    assert sum("image/png" in o["data"] for o in shown) == 4  # 3 figures + predictions
    for name in ("confusion", "reliability", "ipdpp_draws"):
        assert os.path.getsize(tmp_path / "figures" / f"{name}.png") > 1000
    assert "ECE by group: many" in (tmp_path / "figures" / "figures.md").read_text()
    # What the figures show: the confusion diagonal (classes by training count), the groups.
    clf = ltr_jax.load_classifier(smoke_run)
    probs, labels = report_figures.test_predictions(clf, smoke_run)
    matrix = report_figures.plot_confusion(probs, labels, clf, str(tmp_path / "c.png"))
    order = np.argsort(-clf.train_counts, kind="stable")
    hits = np.bincount(labels, probs.argmax(-1) == labels, minlength=10)
    assert np.array_equal(np.diag(matrix), hits[order])
    grouped = report_figures.plot_confusion(probs, labels, clf, str(tmp_path / "g.png"), 5)
    assert grouped.shape == (3, 3) and grouped.sum() == len(labels)
    assert np.trace(grouped) >= hits.sum()
    positions, record = report_figures.last_draw(smoke_run)
    assert record["draw"] == 1 and len(positions) == _results(smoke_run, "stage2")["subset_size"]
