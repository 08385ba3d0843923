"""Each stage's documented contract after a few real steps of its own ``make_setup``.

What a stage takes from the stage before, what it trains and what it keeps frozen (SPEC §2-3,
the stages' docstrings): the probe trains a new head on features of the frozen stage-1
encoder in eval mode (no encoder variable is in its trained state); stage 2 starts from the
stage-1 encoder and the probe's head and fine-tunes all of it (``stage2.train="all"``) or the
head alone (``"head"``, BatchNorm statistics untouched); cRT trains a new head on features of
the frozen ``ce`` encoder, sampled class-balanced. The earlier stages' exports are written
here from seeded random networks (no training is needed to check who reads what), and each
setup runs two steps of its own jitted training step on the smoke data.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, runtime, train_lib
from ltr_jax.data.input import make
from ltr_jax.models import heads, registry
from ltr_jax.stages import common, crt, probe, rebalance

SMOKE = "configs/cifar10_lt.py:smoke"


def _context(workdir, **sections):
    config = config_lib.load_config_file(SMOKE)
    for section, values in sections.items():
        config[section].update(values)
    config = FrozenConfigDict(config)
    mesh = runtime.make_mesh(1)
    return common.StageContext(
        config, str(workdir), mesh, make.load_input(config.data, mesh), jax.random.key(0)
    )


def _host(module, kind=...):
    return jax.device_get(nnx.state(module, kind))


def _exports(ctx):
    """The earlier stages' exports, from seeded random networks: the states of the stage-1
    encoder, the probe's head and the ``ce`` encoder (another network).

    BatchNorm variances are set away from their initial 1 (differently for the two
    encoders), so that reading them, or reading the wrong encoder, shows.
    """
    exported = {}
    for seed, (stage, what) in enumerate((("stage1", "encoder"), ("ce", "encoder"))):
        model = registry.make_classifier(
            ctx.config.model, ctx.data.num_classes, rngs=nnx.Rngs(seed)
        )
        for path, stat in nnx.iter_graph(model.encoder):
            if isinstance(stat, nnx.BatchStat) and path[-1] == "var":
                stat[...] = stat[...] * (1.5 + seed)
        common.save_module(ctx, stage, what, model.encoder)
        exported[stage] = _host(model.encoder)
        if stage == "stage1":
            common.save_module(ctx, "probe", "head", model.head)
            exported["probe"] = _host(model.head)
    return exported


def _assert_same(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_all_changed(before, after):
    leaves = list(zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))
    assert leaves
    for x, y in leaves:
        assert not np.array_equal(np.asarray(x), np.asarray(y))


def _train(ctx, setup, steps=2):
    """Two steps of the setup's own loop (before-step hooks, e.g. the first IP-DPP draw,
    run as `train_lib.run_loop` runs them); returns the trained model, on the host."""
    loop = train_lib.build(setup, ctx.mesh)
    state = loop.state
    for step in range(steps):
        for hook in setup.hooks:
            if hook.before_step and hook.due(step):
                state = hook.fn(step, state)
                loop.feed.set_population(runtime.to_host(state.subset), step)
        state, _ = loop.train_step(state, loop.feed.data(step, state), loop.root_key)
    loop.close()
    return train_lib.merge_model(loop.graphdef, jax.device_get(state))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("contracts")


@pytest.mark.slow
@pytest.mark.parametrize("train", ["all", "head"])
def test_stage2_starts_from_stage1_and_the_probe(workdir, train):
    ctx = _context(workdir / train, stage2=dict(train=train, augment="none"))
    exported = _exports(ctx)
    encoder, head = exported["stage1"], exported["probe"]
    setup = rebalance.make_setup(ctx)
    _assert_same(_host(setup.model.encoder), encoder)  # stage-1 encoder, BatchNorm included
    _assert_same(_host(setup.model.head), head)  # the probe's head
    trained = _train(ctx, setup)
    _assert_all_changed(head, _host(trained.head))
    if train == "all":  # every encoder weight and BatchNorm statistic is fine-tuned
        _assert_all_changed(encoder, _host(trained.encoder))
    else:  # a frozen encoder in eval mode: weights and statistics as stage 1 left them
        _assert_same(_host(trained.encoder), encoder)


def _features_of(ctx, encoder_state, split, positions=None):
    encoder = registry.make_encoder(ctx.config.model.encoder, rngs=nnx.Rngs(9))
    nnx.update(encoder, encoder_state)
    features = probe.make_features_fn(encoder, ctx.mesh)
    return ctx.data.map_split(lambda x, y, i: features(x), split, positions, batch_size=64)


@pytest.mark.slow
def test_probe_and_crt_heads_learn_on_features_of_the_earlier_encoder(workdir):
    # augment="none" (the probe's default) and cRT train a bare head: no encoder is in the
    # trained state at all; the features are the earlier stage's eval-mode ones.
    ctx = _context(workdir / "features")
    exported = _exports(ctx)
    for stage, make_setup in (("probe", probe.make_setup), ("crt", crt.make_setup)):
        setup = make_setup(ctx)
        assert isinstance(setup.model, heads.LinearHead), stage
        labels = setup.input.train_labels
        if stage == "probe":  # a class-balanced subset: at most per_class images per class
            positions = probe.balanced_subset(ctx.data.train_labels, 20, ctx.config.seed)
            reads, other = "stage1", "ce"
        else:  # the whole long-tailed training set, sampled class-balanced
            positions = np.arange(len(ctx.data.train_labels))
            reads, other = "ce", "stage1"
            assert setup.sampler == "class_balanced"
        np.testing.assert_array_equal(labels, ctx.data.train_labels[positions])
        want = _features_of(ctx, exported[reads], "train", positions)
        wrong = _features_of(ctx, exported[other], "train", positions)
        assert np.abs(want).max() > 0.1 and np.abs(want - wrong).max() > 0.1  # they differ
        np.testing.assert_allclose(setup.input.features, want, rtol=1e-5, atol=1e-5)
        head = _host(setup.model)
        _assert_all_changed(head, _host(_train(ctx, setup)))
