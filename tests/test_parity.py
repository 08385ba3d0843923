"""Parity with the paper's released code, replayed from golden fixtures (no torch needed).

``bench/parity.py`` runs the released PyTorch modules and ``ltr_jax`` side by side and writes
``tests/fixtures/parity/``; here our side is recomputed from the same seeded weights and inputs
(``bench/parity_lib.py``) and compared with the released side's recorded outputs. A missing
fixture fails: regenerate them with ``python bench/parity.py`` (see bench/RESULTS.md). The
training replays: ``tests/test_parity_runs.py``.
"""

import os
import sys

import jax
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import parity_lib as pl  # noqa: E402

from ltr_jax import metrics  # noqa: E402
from ltr_jax.data.datasets import long_tail  # noqa: E402
from ltr_jax.losses import bns  # noqa: E402
from ltr_jax.models import init  # noqa: E402
from ltr_jax.stages import rebalance  # noqa: E402

FIXTURES = (
    [
        "split.json",
        "bns.json",
        "bns_grads.npy",
        "decay_groups.json",
        "metrics.json",
        "stage1_train.json",
        "classifier_steps.json",
        "table.json",
        "sampler.json",
        "augment.json",
    ]
    + [f"lr_{n}.npy" for n in ("stage1_cifar10", "probe_cifar10", "stage2_cifar10")]
    + [
        f"forward_{e}_{m}_{w}.npy"
        for e in pl.BLOCKS
        for m in ("eval", "train")
        for w in ("features", "projection")
    ]
)


def test_every_fixture_exists_and_the_harness_table_passed():
    missing = [f for f in FIXTURES if not os.path.exists(pl.fixture_path(f))]
    assert not missing, f"missing parity fixtures {missing}: run python bench/parity.py"
    assert all(r["ok"] for r in pl.load_json("table.json"))
    size = sum(os.path.getsize(pl.fixture_path(f)) for f in os.listdir(pl.FIXTURES))
    assert size < 2_000_000


def test_lt_split_matches_released_selection():
    # The JPEG copy lists CIFAR-10's training images class by class, 5000 each.
    labels = np.repeat(np.arange(10), 5000)
    ours = long_tail.ldam_subset(labels, np.arange(len(labels)), 10, 100)
    np.testing.assert_array_equal(ours, pl.load_json("split.json")["cifar10_jpeg_if100_indices"])


@pytest.mark.parametrize("encoder", list(pl.BLOCKS))
def test_forward_matches_released_model(encoder):
    x = pl.images(pl.SEED, 4)
    for mode in ("eval", "train"):
        model = pl.contrastive_net(encoder)
        if mode == "eval":
            model.eval()
        h = model.encoder(x)
        z = model.projection(h)
        for name, ours in (("features", h), ("projection", z)):
            ref = pl.load_npy(f"forward_{encoder}_{mode}_{name}.npy")
            assert pl.rel_err(ours, ref) <= 1e-5, (encoder, mode, name)


def test_bns_value_and_gradients_match_released_loss():
    rng = np.random.default_rng(pl.SEED + 2)
    zi, zj = rng.normal(size=(2, 16, 32)).astype(np.float32)
    y = rng.integers(0, 4, 16).astype(np.int32)
    fn = lambda a, b: bns.bns_loss(a, b, y, jax.random.key(0), tau=0.5, m=4, form="reference")
    value, grads = jax.value_and_grad(fn, argnums=(0, 1))(zi, zj)
    assert pl.rel_err(value, pl.load_json("bns.json")["loss"]) <= 1e-6
    assert pl.rel_err(np.stack(grads), pl.load_npy("bns_grads.npy")) <= 1e-5


def test_weight_decay_groups_match_released():
    ours = {
        pl.torch_name(p, pl.BLOCKS["cifar_resnet18"])
        for p in pl.decayed_paths(pl.contrastive_net())
    }
    assert ours == set(pl.load_json("decay_groups.json"))


@pytest.mark.parametrize(
    "name, lr, epochs, warmup, spe, batch, base",
    [
        ("stage1_cifar10", 4e-3, 1000, 20, 12, 1024, 256),
        ("probe_cifar10", 2.5e-4, 100, 20, 16, 64, 64),
        ("stage2_cifar10", 2.5e-4, 100, 5, 53, 64, 64),
    ],
)
def test_learning_rate_every_step_matches_released(name, lr, epochs, warmup, spe, batch, base):
    ours = pl.schedule(spe, epochs, warmup, lr * base / batch, base, batch)
    assert pl.rel_err(ours, pl.load_npy(f"lr_{name}.npy")) <= 1e-6


def _assert_digest(ours: dict, ref: dict, tol: float) -> None:
    assert set(ours) == set(ref)
    for name in ref:
        assert pl.rel_err(ours[name], ref[name]) <= tol, name


@pytest.mark.parametrize("kind", ["probe", "stage2"])
def test_probe_and_stage2_loss_and_gradients_match_released(kind):
    # The optimiser step itself (AdamW, decay groups) is covered by the stage-1 run above.
    x, y = pl.images(pl.SEED + 4, 8), pl.labels(pl.SEED + 4, 8)
    loss, grads, stats = pl.classifier_grads(x, y, head_only=kind == "probe")
    ref = pl.load_json("classifier_steps.json")[kind]
    assert pl.rel_err(loss, ref["loss"]) <= 1e-5
    _assert_digest(pl.param_digest(grads), ref["grads"], 1e-4)
    # model.bn_running_var="unbiased" (parity_lib.model_config): PyTorch's running variances
    variances = {p: v for p, v in stats.items() if p.endswith("var")}
    _assert_digest(pl.param_digest(variances), ref["running_var"], 1e-5)


def test_many_medium_few_match_released_metrics():
    counts = long_tail.long_tail_counts(5000, 10, 100)
    rng = np.random.default_rng(pl.SEED + 5)
    labels = np.repeat(np.arange(10), 1000)
    preds = np.where(
        rng.uniform(size=10000) < np.linspace(0.9, 0.3, 10)[labels],
        labels,
        rng.integers(0, 10, 10000),
    )
    groups = long_tail.shot_groups(counts, 500, 200)
    report = metrics.classification_report(preds, labels, 10, groups)
    ref = pl.load_json("metrics.json")
    assert [sorted(map(int, g)) for g in (groups.many, groups.medium, groups.few)] == ref["groups"]
    np.testing.assert_allclose(
        [report[g] for g in ("many", "medium", "few")], ref["many_medium_few"], rtol=1e-12
    )


def test_uniform_sampler_matches_released_sampler_in_distribution():
    from scipy import stats

    ref = pl.load_json("sampler.json")
    n, k, seeds = ref["n"], ref["k"], ref["seeds"]
    ours = pl.uniform_inclusion_counts(n, k, seeds)
    assert ours.sum() == ref["seeds"] * k == sum(ref["inclusion_counts"])
    assert stats.chi2_contingency(np.stack([ref["inclusion_counts"], ours])).pvalue > 0.01


# Our SimCLR draws vs the released pipeline's (row f): a share of ours at 1,000 draws has a
# standard error <= 0.016, the fixture's (2,000 draws) <= 0.012; 4 combined standard errors.
AUGMENT_TOL = 0.08


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_simclr_draws_match_released_pipeline_statistics(strength):
    """Crop area and aspect, jitter factors and rates against the released pipeline's: fails if
    e.g. the crop scale range (0.08 -> 0.2 moves the area CDF by 0.13) or a probability moves."""
    ref = pl.load_json("augment.json")[f"s{strength:g}"]
    ours = pl.our_simclr_params(strength, 1000, pl.AUGMENT["seed"])
    on = ours["jitter"]
    for name in ("area", "aspect", "brightness", "contrast", "saturation", "hue"):
        sample = ours[name] if name in ("area", "aspect") else ours[name][on]
        assert pl.cdf_gap(sample, ref[name]) <= AUGMENT_TOL, name
    assert abs(on.mean() - ref["jitter_rate"]) <= AUGMENT_TOL * 0.75
    assert abs(ours["gray"].mean() - ref["gray_rate"]) <= AUGMENT_TOL * 0.75


def test_cdf_gap_reads_a_ks_distance_at_the_fixture_quantiles():
    rng = np.random.default_rng(0)
    quantiles = np.quantile(rng.uniform(0.08, 1.0, 100_000), pl.LEVELS).tolist()
    assert pl.cdf_gap(rng.uniform(0.08, 1.0, 5000), quantiles) < 0.03
    assert abs(pl.cdf_gap(rng.uniform(0.2, 1.0, 5000), quantiles) - 0.12 / 0.92) < 0.03


# --------------------------------------------------------------------------------------------
# The switches themselves.


class _TwoLayers(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(64, 64, (3, 3), rngs=rngs)
        self.fc = nnx.Linear(64, 10, rngs=rngs)


def test_torch_init_draws_pytorch_default_bounds():
    model = init.apply_init(_TwoLayers(nnx.Rngs(0)), "torch", jax.random.key(1))
    kernel = np.asarray(model.conv.kernel[...])  # 3x3, 64 -> 64: bound 1/24
    bound = 1 / np.sqrt(9 * 64)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert abs(kernel.std() - bound / np.sqrt(3)) < 0.03 * bound
    bias = np.asarray(model.fc.bias[...])  # PyTorch draws linear biases too: bound 1/8
    assert np.all(np.abs(bias) <= 1 / 8) and np.any(bias != 0)
    with pytest.raises(ValueError, match="valid: flax, torch"):
        init.apply_init(model, "kaiming", jax.random.key(1))


@pytest.mark.parametrize(
    "rule, every, epochs, expected",
    [
        ("every", 10, 100, list(range(0, 100, 10))),
        ("reference", 10, 100, [0] + list(range(9, 99, 10))),
        ("reference", 20, 100, [0, 19, 39, 59, 79]),
        ("reference", 2, 4, [0, 1]),
    ],
)
def test_draw_epochs_follow_the_rule(rule, every, epochs, expected):
    cfg = mlc.ConfigDict(dict(redraw_rule=rule, redraw_every_epochs=every, epochs=epochs))
    assert rebalance.draw_epochs(cfg) == expected
