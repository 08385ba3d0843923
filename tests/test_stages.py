"""The two-stage pipeline end to end on synthetic data: stage1 -> probe -> stage2.

Covers the probe's results, IP-DPP draws (counts, logging, distinct draws) and
exact resumes of stage 2 after a crash during a re-draw and after SIGKILL during fine-tuning.
"""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import FrozenConfigDict

from ltr_jax import checkpointing, config_lib, pipeline, runtime, train_lib, writers
from ltr_jax.data.input import make
from ltr_jax.models import registry
from ltr_jax.stages import common, probe, rebalance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SMOKE = os.path.join(ROOT, "configs", "cifar10_lt.py") + ":smoke"
# The smoke sizes with a few steps per stage and two IP-DPP draws (stage 2: epochs 0 and 1), as
# in tests/test_stopping.py: the same programs, so the compilation cache serves both files.
SHORTEN = {
    "stage1.epochs": 1,
    "probe.epochs": 1,
    "stage2.epochs": 2,
    "stage2.redraw_every_epochs": 1,
}


def _config(**stage2):
    config = config_lib.load_config_file(SMOKE)
    for dotted, value in SHORTEN.items():
        section, key = dotted.split(".")
        config[section][key] = value
    config.stage2.update(stage2)
    return FrozenConfigDict(config)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A workdir with stage1 and probe finished (shared by the tests below)."""
    workdir = str(tmp_path_factory.mktemp("pretrained"))
    pipeline.run(_config(), workdir, ["stage1", "probe"])
    return workdir


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.slow
def test_probe_results(pretrained):
    # That the probe trains a head alone, on features of the frozen stage-1 encoder, is
    # tests/test_stage_contracts.py's (two steps of its real setup, not a second probe run).
    results = json.loads(open(os.path.join(pretrained, "probe", "results.json")).read())
    for key in ("top1", "many", "medium", "few", "per_class_acc", "max_over_epochs_top1"):
        assert key in results
    assert results["max_over_epochs_top1"] >= results["top1"]
    assert results["encoder_from"] == "stage1" and results["probe_train_size"] == sum(
        min(n, 20) for n in results["train_class_counts"]
    )


def test_features_fn_leaves_batchnorm_untouched():
    encoder = registry.make_encoder("cifar_resnet8", rngs=nnx.Rngs(0))
    before = jax.device_get(nnx.state(encoder))
    feats = probe.make_features_fn(encoder)(np.full((4, 32, 32, 3), 200, np.uint8))
    assert feats.shape == (4, 64)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(nnx.state(encoder)))):
        np.testing.assert_array_equal(a, b)


def test_balanced_subset():
    labels = np.repeat(np.arange(3), [50, 8, 3])
    pos = probe.balanced_subset(labels, 5, seed=0)
    assert np.bincount(labels[pos]).tolist() == [5, 5, 3]
    np.testing.assert_array_equal(pos, probe.balanced_subset(labels, 5, seed=0))


def test_draw_subset_counts_and_preference():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [300, 40, 10])
    p = rng.beta(5, 1, len(labels))  # mostly confident, with a spread
    table, valid = rebalance.class_table(labels, 3)
    cfg = FrozenConfigDict(dict(kernel_scale="paper", sampler="structured"))
    positions, sel = rebalance.draw_subset(jax.random.key(0), p, table, valid, 20, cfg)
    assert np.bincount(labels[positions], minlength=3).tolist() == [20, 20, 10]
    assert len(set(positions.tolist())) == len(positions)
    log = rebalance.draw_log(p, table, valid, sel, cfg)
    assert log["counts"] == [20, 20, 10] and np.isfinite(log["log_det"]).all()
    # Low-confidence images are favoured: over several draws, drawn mean p < class mean p.
    drawn = [
        rebalance.draw_log(
            p,
            table,
            valid,
            rebalance.draw_subset(jax.random.key(s), p, table, valid, 20, cfg)[1],
            cfg,
        )["mean_p_drawn"][0]
        for s in range(10)
    ]
    assert np.mean(drawn) < log["mean_p_class"][0]


def _redraws(workdir, **stage2):
    """The subsets of stage 2's first two draws (epochs 0 and 1) made by the real re-draw hook,
    on the smoke data, with fixed confidences (the same p for both draws: only the key may
    make them differ)."""
    config = _config(**stage2)
    mesh = runtime.make_mesh(1)
    data = make.load_input(config.data, mesh)
    ctx = common.StageContext(config, str(workdir), mesh, data, jax.random.key(0))
    p = jnp.asarray(np.random.default_rng(0).uniform(0.05, 1.0, len(data.train_labels)))
    conf = jax.jit(lambda state, images, labels, positions, key: p[positions])
    table, valid = rebalance.class_table(data.train_labels, data.num_classes)
    spe = 5
    key, fill_key = jax.random.key(3), jax.random.key(4)
    hook = rebalance.make_redraw(ctx, config.stage2, conf, table, valid, 20, spe, key, fill_key)
    assert hook.before_step and [s for s in range(3 * spe) if hook.due(s)] == [0, spe]
    state = train_lib.TrainState(jnp.zeros((), jnp.int32), {}, {}, {}, (), subset=None)
    subsets = [np.asarray(runtime.to_host(hook.fn(s, state).subset)) for s in (0, spe)]
    for subset in subsets:  # 20 per class (classes of 20 or fewer whole), no repeats
        counts = np.bincount(data.train_labels[subset], minlength=data.num_classes)
        np.testing.assert_array_equal(counts, np.minimum(data.class_counts, 20))
        assert len(np.unique(subset)) == len(subset)
    return subsets


def test_consecutive_draws_differ_and_fixed_subset_repeats_the_first(tmp_path):
    # SPEC §3: each draw its own fold of the run's key; stage2.fixed_subset=True reproduces the
    # released code (one key for every draw, so the same subset).
    first, second = _redraws(tmp_path / "redrawn")
    assert not np.array_equal(first, second)
    assert len(np.intersect1d(first, second)) < 0.9 * len(first)  # a new draw, not a few swaps
    fixed = _redraws(tmp_path / "fixed", fixed_subset=True)
    np.testing.assert_array_equal(fixed[0], fixed[1])
    np.testing.assert_array_equal(fixed[0], first)  # the first draw is the same either way


# A known confidence profile (two hard images, one ambivalent, five confident) and the
# inclusion probability of each image in an exact k-DPP draw of k=3 of its 8 images, computed
# below by enumerating the 56 subsets: paper scale (alpha 1/N) 0.540, 0.540, 0.429, then 0.298
# for each confident image; the reference scale (1/N^2) is nearly uniform (0.388 .. 0.369).
PROFILE = np.array([0.01, 0.01, 0.5, 0.99, 0.99, 0.99, 0.99, 0.99])


def _exact_inclusion(p, k, alpha):
    """P(i in Y) of the k-DPP with P(Y) ~ det(S_Y), S = diag(1 - alpha p s) + alpha p p^T (the
    diagonal completed so that rows sum to one), by enumerating every k-subset in float64."""
    s = alpha * np.outer(p, p)
    np.fill_diagonal(s, 1.0 - alpha * p * p.sum() + alpha * p * p)
    subsets = list(itertools.combinations(range(len(p)), k))
    dets = np.array([np.linalg.det(s[np.ix_(c, c)]) for c in subsets])
    inclusion = np.zeros(len(p))
    for weight, c in zip(dets / dets.sum(), subsets):
        inclusion[list(c)] += weight
    return inclusion


def test_draw_favours_hard_images_by_the_exact_k_dpp_amount():
    # 1000 classes with the same profile, each drawn with its own key (fold_in(key, c)): one
    # call of the stage's draw is 1000 independent draws; 4 calls, 4000 per image.
    classes, k, calls = 1000, 3, 4
    labels = np.repeat(np.arange(classes), len(PROFILE))
    p = np.tile(PROFILE, classes).astype(np.float32)
    table, valid = rebalance.class_table(labels, classes)
    cfg = config_lib.base_config().stage2  # the paper's defaults: exact k-DPP, alpha = 1/N
    assert (cfg.sampler, cfg.kernel_scale) == ("structured", "paper")
    hits = np.zeros(len(PROFILE))
    for seed in range(calls):
        _, sel = rebalance.draw_subset(jax.random.key(seed), p, table, valid, k, cfg)
        assert (sel.sum(1) == k).all()
        hits += sel[:, : len(PROFILE)].sum(0)
    freq, n = hits / (classes * calls), classes * calls
    exact = _exact_inclusion(PROFILE.astype(np.float64), k, 1.0 / len(PROFILE))
    np.testing.assert_allclose(exact[[0, 2, 3]], [0.540, 0.429, 0.298], atol=5e-4)
    # Binomial standard error 0.007 .. 0.008 per image: 4.5 of them is a false alarm in about
    # one run in 10^4 (8 images), and 0.035 is a quarter of the gap to the 1/N^2 kernel.
    tolerance = 4.5 * np.sqrt(exact * (1 - exact) / n)
    assert np.all(np.abs(freq - exact) < tolerance), (freq.round(3), exact.round(3))
    reference = _exact_inclusion(PROFILE.astype(np.float64), k, 1.0 / len(PROFILE) ** 2)
    assert np.all(np.abs(freq - reference) > tolerance)  # the 1/N^2 kernel would fail


def test_k_per_class_default():
    cfg = FrozenConfigDict(dict(k_per_class=0))
    assert rebalance.k_per_class(cfg, np.array([5000, 50])) == 500
    assert rebalance.k_per_class(FrozenConfigDict(dict(k_per_class=7)), np.array([9, 3])) == 7


def _stage2_results(workdir):
    results = json.loads(open(os.path.join(workdir, "stage2", "results.json")).read())
    return {k: v for k, v in results.items() if k != "timing"}  # times differ between runs


@pytest.fixture(scope="module")
def straight(pretrained, tmp_path_factory):
    workdir = _copy(pretrained, tmp_path_factory.mktemp("s") / "straight")
    pipeline.run(_config(), workdir)
    return workdir


@pytest.mark.slow
def test_stage2_logs_distinct_draws(straight):
    draws = writers.read_jsonl(os.path.join(straight, "stage2", "draws.jsonl"))
    assert [d["draw"] for d in draws] == [0, 1]
    assert draws[0]["counts"] == draws[1]["counts"]
    assert max(draws[0]["counts"]) == 20
    assert draws[0]["subset_crc32"] != draws[1]["subset_crc32"]  # each draw its own key
    records = writers.read_jsonl(os.path.join(straight, "metrics.jsonl"))
    assert len([r for r in records if r["stage"] == "stage2_draw"]) == 2
    results = _stage2_results(straight)
    assert results["sampler"] == "structured" and results["k_per_class"] == 20


# The SimCLR stage 2 here (the recipe's views and lr, 22 steps, on a stage 1 and probe of 12
# and 11 steps) learns too little to threshold: its top-1, seeds 0-4 (config.seed; 0 is the
# fixture's), CPU-2: 23, 16.5, 13.5, 19.5, 14 (10 % by chance), from probes of 20, 5, 10, 20, 10;
# at lr 0 10.5, 10, 10.5 (seeds 0-2; the BatchNorm statistics still move); the logged losses
# rise as often as they fall. Its learning is thresholded on crop-and-flip views in
# tests/test_baselines.py. Asserted here: fine-tuning moved the probe's head and the stage-1
# encoder it started from (train="all"). Seed 0: relative changes 0.25 % (head kernel), 0.23 %
# (stem convolution); at lr 0 none, and with the gradient stopped only weight decay's 0.003 %.
MIN_RELATIVE_CHANGE = 5e-4


@pytest.mark.slow
def test_stage2_fine_tunes_encoder_and_head(straight):
    raw = lambda sub: checkpointing.Checkpointer(os.path.join(straight, sub)).restore_latest_raw()
    final = raw(os.path.join("stage2", "checkpoints"))["params"]
    starts = {
        "head": raw(os.path.join("probe", "head")),
        "encoder": raw(os.path.join("stage1", "encoder")),
    }
    for part, path in (("head", ("fc", "kernel")), ("encoder", ("stem_conv", "kernel"))):
        start, end = starts[part], final[part]
        for key in path:
            start, end = start[key], end[key]
        start, end = np.asarray(start["value"]), np.asarray(end["value"])
        change = np.linalg.norm(end - start) / np.linalg.norm(start)
        assert change >= MIN_RELATIVE_CHANGE, (part, change)


@pytest.mark.slow
def test_stage2_resume_after_crash_during_redraw(pretrained, straight, tmp_path, monkeypatch):
    workdir = _copy(pretrained, tmp_path / "crashed")
    calls = {"n": 0}
    original = rebalance.draw_subset

    def crash_on_second_draw(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill during a re-draw")
        return original(*args, **kwargs)

    monkeypatch.setattr(rebalance, "draw_subset", crash_on_second_draw)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(_config(), workdir)
    monkeypatch.setattr(rebalance, "draw_subset", original)
    pipeline.run(_config(), workdir)
    assert _stage2_results(workdir) == _stage2_results(straight)
    load = lambda d: writers.read_jsonl(os.path.join(d, "stage2", "draws.jsonl"))
    assert load(workdir) == load(straight)


@pytest.mark.slow
def test_stage2_resume_after_sigkill(pretrained, straight, tmp_path):
    workdir = _copy(pretrained, tmp_path / "killed")
    overrides = [f"--config.{k}={v}" for k, v in SHORTEN.items()]
    cmd = [
        sys.executable,
        os.path.join(ROOT, "run.py"),
        f"--config={SMOKE}",
        f"--workdir={workdir}",
        *overrides,
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpts = os.path.join(workdir, "stage2", "checkpoints")
    deadline = time.time() + 240
    while not (os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))):
        assert proc.poll() is None and time.time() < deadline, "stage 2 ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _stage2_results(workdir) == _stage2_results(straight)


# --- Beyond the paper: stage2.subset, stage2.loss, stage2.seed --------------------------------

LT_COUNTS = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])  # CIFAR-10-LT IF100


def test_subset_counts_of_each_rule():
    counts = lambda rule: rebalance.subset_counts(
        FrozenConfigDict(dict(subset=rule, k_per_class=0)), LT_COUNTS
    ).tolist()
    assert counts("paper") == [500] * 5 + [387, 232, 139, 83, 50]
    assert counts("balanced") == [500] * 10
    # sqrt(n_c k) under k: the paper subset's 10:1 ratio square-rooted (500 / 158 = 3.2).
    assert counts("sqrt") == [500] * 5 + [440, 341, 264, 204, 158]


def test_fill_subset_repeats_small_classes_to_their_counts():
    labels = np.repeat(np.arange(3), [30, 7, 3])
    table, valid = rebalance.class_table(labels, 3)
    sel = valid.copy()
    sel[0, 12:] = False  # class 0 "drawn" down to 12
    targets = np.array([12, 12, 12])
    pos = rebalance.fill_subset(jax.random.key(1), table, sel, targets)
    assert np.bincount(labels[pos], minlength=3).tolist() == [12, 12, 12]
    per_image = np.bincount(pos, minlength=len(labels))
    assert per_image[:12].tolist() == [1] * 12 and per_image[12:30].sum() == 0  # drawn once
    assert sorted(per_image[30:37].tolist()) == [1, 1, 2, 2, 2, 2, 2]  # 12 = 7 + 5 drawn
    assert per_image[37:].tolist() == [4, 4, 4]  # 12 = 4 x 3
    np.testing.assert_array_equal(
        pos, rebalance.fill_subset(jax.random.key(1), table, sel, targets)
    )
    others = [rebalance.fill_subset(jax.random.key(s), table, sel, targets) for s in range(2, 6)]
    assert any(not np.array_equal(pos, o) for o in others)  # the fill is seeded


def _logits_batch(labels, subset, num_classes=3, rows=8):
    rng = np.random.default_rng(0)
    logits = jax.numpy.asarray(rng.normal(size=(rows, num_classes)), jax.numpy.float32)
    batch = {"labels": jax.numpy.asarray(rng.integers(0, num_classes, rows)), "subset": subset}
    return logits, batch


@pytest.mark.parametrize("loss", ["balanced_softmax", "logit_adjust", "ldam"])
def test_stage2_loss_uses_the_subset_counts(loss):
    labels = np.repeat(np.arange(3), [30, 7, 3])
    subset = jax.numpy.asarray(np.r_[np.arange(12), np.arange(30, 37), [37, 38, 39]])  # 12/7/3
    cfg = FrozenConfigDict(
        dict(loss=loss, logit_adjust=dict(tau=0.5), ldam=dict(max_margin=0.5, scale=1.0))
    )
    logits, batch = _logits_batch(labels, subset)
    got = rebalance.make_stage2_loss(cfg, jax.numpy.asarray(labels), 3)(logits, batch)
    from ltr_jax.losses import classification

    params = cfg.get(loss)
    want = classification.make_classification_loss(loss, np.array([12, 7, 3]), params)
    full = classification.make_classification_loss(loss, np.array([30, 7, 3]), params)
    np.testing.assert_allclose(got, want(logits, batch["labels"]), rtol=1e-6)
    assert abs(float(got) - float(full(logits, batch["labels"]))) > 1e-3  # not the full prior


@pytest.mark.slow
def test_stage2_prior_of_each_draw_is_that_draws_counts(pretrained, tmp_path):
    """Through the stage's own setup: after each draw (the before-step hook), the loss of a batch
    equals balanced softmax with the prior of the state's subset, whose counts the draw logged."""
    import optax

    from ltr_jax import runtime, train_lib
    from ltr_jax.data.input import make
    from ltr_jax.losses import classification

    config = _config(subset="sqrt", loss="balanced_softmax")
    workdir = _copy(pretrained, tmp_path / "prior")
    mesh = runtime.make_mesh()
    data = make.load_input(config.data, mesh)
    ctx = common.StageContext(config, workdir, mesh, data, runtime.root_key(config.seed))
    setup = rebalance.make_setup(ctx)
    _, state = train_lib.init_train_state(
        setup.model, optax.sgd(0.0), setup.trainable, setup.subset
    )
    state = runtime.put_replicated(mesh, state)  # as the training loop holds it
    spe = setup.steps_per_epoch
    steps = [e * spe for e in rebalance.draw_epochs(config.stage2)]
    assert len(steps) == 2
    rng = np.random.default_rng(0)
    for n, step in enumerate(steps):
        state = setup.hooks[0].fn(step, state)
        record = writers.read_jsonl(os.path.join(workdir, "stage2", "draws.jsonl"))[n]
        counts = np.bincount(data.train_labels[np.asarray(state.subset)], minlength=10)
        assert record["counts"] == counts.tolist()
        assert counts.tolist() != data.class_counts.tolist()  # sqrt: small classes filled up
        logits = jax.numpy.asarray(rng.normal(size=(16, 10)), jax.numpy.float32)
        labels = jax.numpy.asarray(rng.integers(0, 10, 16))
        batch = {"labels": labels, "subset": state.subset, "logits": logits}
        loss, _ = setup.loss(lambda x: x, batch, jax.random.key(0), lambda k, b: b["logits"])
        want = classification.cross_entropy(logits + np.log(counts / counts.sum()), labels)
        np.testing.assert_allclose(loss, want, rtol=1e-5)


BEYOND = os.path.join(ROOT, "configs", "beyond", "cifar10_lt.py") + ":smoke"


def _beyond_config():
    """configs/beyond/cifar10_lt.py:smoke at the sizes of `_config` (its stage 1 and probe are
    those of the shared `pretrained` workdir)."""
    config = config_lib.load_config_file(BEYOND)
    for dotted, value in SHORTEN.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return FrozenConfigDict(config)


def test_beyond_configs_validate_and_differ_from_the_recipe_only_in_stage2():
    for name in ("cifar10_lt", "cifar100_lt"):
        for arg in ("", ":smoke"):
            path = os.path.join(ROOT, "configs", "beyond", f"{name}.py") + arg
            config = config_lib.load_config_file(path)
            recipe = config_lib.load_config_file(os.path.join(ROOT, "configs", f"{name}.py") + arg)
            pipeline.validate(config, config.pipeline, 1)
            diffs = pipeline._config_diff(
                json.loads(recipe.to_json()), json.loads(config.to_json())
            )
            assert diffs and all(d.startswith("stage2.") for d in diffs), diffs
            assert (config.stage2.subset, config.stage2.loss) == ("sqrt", "balanced_softmax")


@pytest.mark.slow
@pytest.mark.parametrize("subset,loss", [("balanced", "ce"), ("sqrt", "balanced_softmax")])
def test_stage2_subset_counts_and_exact_resume(pretrained, tmp_path, monkeypatch, subset, loss):
    # sqrt + balanced softmax: the named config configs/beyond/cifar10_lt.py:smoke, run.
    config = _config(subset=subset, loss=loss) if subset != "sqrt" else _beyond_config()
    straight = _copy(pretrained, tmp_path / "straight")
    pipeline.run(config, straight)
    results = _stage2_results(straight)
    assert results["subset"] == subset and results["loss"].startswith(loss)
    want = rebalance.subset_counts(config.stage2, np.array(results["train_class_counts"]))
    load = lambda d: writers.read_jsonl(os.path.join(d, "stage2", "draws.jsonl"))
    assert [d["counts"] for d in load(straight)] == [want.tolist()] * 2
    assert load(straight)[0]["subset_crc32"] != load(straight)[1]["subset_crc32"]
    # A crash during the second draw, then the same command: the same draws and results.
    workdir = _copy(pretrained, tmp_path / "crashed")
    calls = {"n": 0}
    original = rebalance.fill_subset

    def crash_on_second_fill(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill during a re-draw")
        return original(*args, **kwargs)

    monkeypatch.setattr(rebalance, "fill_subset", crash_on_second_fill)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config, workdir)
    monkeypatch.setattr(rebalance, "fill_subset", original)
    pipeline.run(config, workdir)
    assert _stage2_results(workdir) == results
    assert load(workdir) == load(straight)


def test_stage2_seed_own_key_and_copied_workdir(tmp_path):
    ctx = common.StageContext(_config(), None, None, None, jax.random.key(0))
    key = lambda seed: jax.random.key_data(common.stage_key(ctx, "stage2", seed))
    np.testing.assert_array_equal(key(-1), key(0))  # default: the run's seed (config.seed=0)
    assert not np.array_equal(key(-1), key(1))
    # A workdir whose stage 1 and probe are done takes another stage2.seed ...
    workdir = str(tmp_path)
    os.makedirs(os.path.join(workdir, "probe"))
    writers.write_json(os.path.join(workdir, "probe", "results.json"), {})
    pipeline.record_config(_config(), workdir)
    pipeline.record_config(_config(seed=3), workdir)
    # ... until its stage 2 started; the run's own seed never (it made stage 1).
    bumped = _config(seed=3).as_configdict()
    bumped.seed = 4
    with pytest.raises(pipeline.validation.ConfigError, match=r"\(seed: 0 -> 4\)"):
        pipeline.record_config(bumped, workdir)
    os.makedirs(os.path.join(workdir, "stage2"))
    writers.write_json(os.path.join(workdir, "stage2", "results.json"), {})
    with pytest.raises(pipeline.validation.ConfigError, match="stage2.seed: 3 -> 5"):
        pipeline.record_config(_config(seed=5), workdir)


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "subset",
            "square",
            "Unknown config.stage2.subset 'square'; valid: paper, balanced, sqrt.",
        ),
        ("loss", "focal", "valid: ce, balanced_softmax, logit_adjust, ldam."),
        ("seed", -2, "config.stage2.seed=-2 is invalid: it must be an integer >= -1"),
        ("logit_adjust", {"tau": -1.0}, "config.stage2.logit_adjust.tau=-1.0 is invalid"),
        ("ldam", {"max_margin": 0.0, "scale": 1.0}, "config.stage2.ldam.max_margin=0.0 is"),
        ("ldam", {"max_margin": 0.5, "scale": 0.0}, "config.stage2.ldam.scale=0.0 is invalid"),
    ],
)
def test_stage2_new_keys_are_validated(key, value, message):
    import re

    with pytest.raises(pipeline.validation.ConfigError, match=re.escape(message)):
        pipeline.STAGES["stage2"].validate(_config(**{key: value}))


def test_stage2_defaults_are_the_papers():
    stage2 = config_lib.base_config().stage2
    assert (stage2.subset, stage2.loss, stage2.seed) == ("paper", "ce", -1)
    pipeline.STAGES["stage2"].validate(_config())  # and valid


def test_gpu_beyond_variants_take_the_papers_stage2_steps():
    """bench/gpu_reproduce.py (standard library only) states each variant's epochs; at the
    paper's budget (100 epochs of the paper subset, batch 64) every variant takes within 1 %
    of its steps, with 10 draws."""
    import importlib.util

    from ltr_jax.data.input import sampler

    spec = importlib.util.spec_from_file_location(
        "gpu_reproduce", os.path.join(ROOT, "bench", "gpu_reproduce.py")
    )
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    base = config_lib.base_config().stage2
    steps = lambda cfg, epochs: (
        epochs
        * sampler.steps_per_epoch(
            int(rebalance.subset_counts(cfg, LT_COUNTS).sum()), base.batch_size, True
        )
    )
    paper = steps(base, base.epochs)
    for name, (overrides, epochs, every) in gpu.BEYOND_VARIANTS.items():
        cfg = config_lib.base_config().stage2
        for o in overrides:
            key, value = o.split("=")
            cfg[key.split(".")[1]] = value
        cfg.update(epochs=epochs, redraw_every_epochs=every)
        assert abs(steps(cfg, epochs) - paper) <= 0.01 * paper, name
        assert len(rebalance.draw_epochs(cfg)) == 10, name
