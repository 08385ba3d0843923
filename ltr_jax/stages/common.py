"""What every stage shares: its declaration, the run context, keys and folders, evaluation,
results.

A stage module declares itself with ``CHECKS`` (its section's check table; with any
cross-key invariants it makes ``Stage.validate``, run before anything trains),
``make_setup(ctx) -> train_lib.TrainSetup`` (what it trains) and ``run(ctx) -> results``
(``fit`` of its setup, then its exports and results); the `Stage` record of each is what
`ltr_jax.pipeline` runs.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ltr_jax import checkpointing, metrics, runtime, train_lib, validation, writers
from ltr_jax.data.input import augment, protocols
from ltr_jax.data.input.streamed import StreamingInput
from ltr_jax.models import modes, pretrained


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage as the pipeline sees it.

    Attributes:
      name: the stage name (``--stages``, its WORKDIR/<name> folder, its config section).
      run: ``run(ctx) -> results`` trains the stage and returns its ``results.json``.
      make_setup: ``make_setup(ctx) -> train_lib.TrainSetup`` (benchmarks build steps from it).
      checks: the check table of its section (keys relative to it; `ltr_jax.validation`).
      invariants: ``invariants(config)``: checks across keys of its section, or None.
      needs: ``needs(config)``: the earlier stages whose exports it loads.
      label: ``label(config, stages) -> str | None``: its part of a method's name in reports,
        from a workdir's ``config.json`` (a dict) and its finished ``stages``; None: no part.
      check_inputs: ``check_inputs(config, data)``: checks of the files the stage reads
        beyond the data (e.g. ``model.init_from``), run once the data has loaded and before
        anything is written; None: none.
    """

    name: str
    run: Callable
    make_setup: Callable
    checks: dict = dataclasses.field(default_factory=dict)
    invariants: Callable | None = None
    needs: Callable = lambda config: ()
    label: Callable[[Mapping, Sequence[str]], str | None] = lambda config, stages: None
    check_inputs: Callable | None = None

    def validate(self, config) -> None:
        """Checks the stage's section (``checks``, then ``invariants``); cheap, runs before
        any stage trains.

        Raises:
          validation.ConfigError: a bad value, in one line.
        """
        validation.check_section(config, self.name, self.checks)
        if self.invariants is not None:
            self.invariants(config)


@dataclasses.dataclass(frozen=True)
class StageContext:
    """The inputs of every stage: frozen config, workdir, mesh, data and the run's root key."""

    config: ml_collections.FrozenConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    data: protocols.DataInput  # an ltr_jax.data.input InMemoryInput, StreamingInput, ...
    root_key: jax.Array


def stage_key(ctx: StageContext, stage: str, seed: int = -1) -> jax.Array:
    """A key per stage name, stable across runs and Python processes; from the run's seed
    (``config.seed``), or from a stage's own ``seed`` when it is >= 0 (the same key when it
    equals ``config.seed``)."""
    root = ctx.root_key if seed < 0 else runtime.root_key(seed)
    return jax.random.fold_in(root, zlib.crc32(stage.encode()) & 0x7FFFFFFF)


def results_path(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "results.json")


def write_results(ctx: StageContext, stage: str, results: dict) -> None:
    if jax.process_index() == 0:
        writers.write_json(results_path(ctx.workdir, stage), results)


def eval_graphdef(model: nnx.Module, trainable=nnx.Param):
    """The graphdef of ``model`` in eval mode (``models.modes.eval_view``)."""
    return train_lib.split_model(modes.eval_view(model), trainable)[0]


def make_logits_fn(graphdef_eval):
    """``logits_fn(state, images_uint8) -> float32 logits``, jitted."""

    @jax.jit
    def logits_fn(state: train_lib.TrainState, images: jax.Array) -> jax.Array:
        model = train_lib.merge_model(graphdef_eval, state)
        return model(augment.to_float(images)).astype(jnp.float32)

    return logits_fn


def fit(ctx: StageContext, setup: train_lib.TrainSetup):
    """`train_lib.fit` of a stage's setup in this run: (final state, graphdef)."""
    return train_lib.fit(setup, workdir=ctx.workdir, mesh=ctx.mesh, train_config=ctx.config.train)


def evaluated_results(ctx: StageContext, setup: train_lib.TrainSetup, state) -> dict:
    """The last step's test metrics (``setup.evaluate``), the best seen during training
    (``max_over_epochs_top1``, secondary), the epochs and steps and the dataset facts."""
    report = setup.evaluate(state)
    results = final_results(ctx, report, epochs=setup.epochs, num_steps=setup.num_steps)
    results["max_over_epochs_top1"] = max_over_epochs_top1(ctx, setup.stage, report["top1"])
    return results


def evaluate(ctx: StageContext, logits_fn, state: train_lib.TrainState) -> dict:
    """Top-1, Many/Medium/Few and per-class accuracy on the test set (percent)."""
    data = ctx.data
    preds = data.map_split(
        lambda x, y, i: jnp.argmax(logits_fn(state, x), -1),
        "test",
        batch_size=ctx.config.train.eval_batch_size,
    )
    return metrics.classification_report(preds, data.test_labels, data.num_classes, data.groups)


def max_over_epochs_top1(ctx: StageContext, stage: str, final_top1: float) -> float:
    """The best test top-1 seen during training (the reference code's model selection on
    the test set): reported only as a clearly named secondary metric."""
    records = writers.read_jsonl(os.path.join(ctx.workdir, "metrics.jsonl"))
    history = [r["eval_top1"] for r in records if r.get("stage") == stage and "eval_top1" in r]
    return max(history + [final_top1])


def dataset_facts(ctx: StageContext) -> dict:
    """What every stage's ``results.json`` says about its data (stage 1's too): the dataset,
    its class names, the Many/Few thresholds, the per-class training counts and groups."""
    data, data_config = ctx.data, ctx.config.data
    return dict(
        dataset=data.dataset_name,
        class_names=list(data.class_names),
        train_class_counts=np.asarray(data.class_counts).tolist(),
        groups=data.groups.as_dict(),
        many_threshold=data_config.many_threshold,
        few_threshold=data_config.few_threshold,
        imbalance_factor=data_config.imbalance_factor,
        empty_groups=metrics.empty_group_notes(
            data.class_counts, data_config.many_threshold, data_config.few_threshold
        ),
        preprocessing=eval_preprocessing(ctx),
    )


def eval_preprocessing(ctx: StageContext) -> dict:
    """How evaluation prepared a test image (`ltr_jax.inference` repeats it on new images):
    ``centre_crop`` (streamed: shorter side to S / 0.875, centred S x S) or ``fit`` (decoded
    into memory: shorter side to S, centred S x S; S the test images' height)."""
    if isinstance(ctx.data, StreamingInput):
        return dict(kind="centre_crop", image_size=ctx.config.data.image_size)
    long_tail = getattr(ctx.data, "long_tail", None)  # an InMemoryInput's arrays
    side = ctx.config.data.image_size if long_tail is None else long_tail.test.images.shape[1]
    return dict(kind="fit", image_size=int(side))


def final_results(ctx: StageContext, report: dict, *, epochs: int, num_steps: int) -> dict:
    """The fields every evaluated ``<stage>/results.json`` carries."""
    return dict(
        report,
        epoch=epochs,
        num_steps=num_steps,
        **dataset_facts(ctx),
        encoder=ctx.config.model.encoder,
    )


def init_from_pretrained(ctx: StageContext, stage: str, model: nnx.Module) -> nnx.Module:
    """Loads ``model.init_from`` (a local file) into a new model; the report of loaded,
    missing, unexpected, resized and dropped keys goes to WORKDIR/<stage>/init_from.json."""
    report = pretrained.init_from_config(model, ctx.config.model)
    if report is not None and jax.process_index() == 0:
        report = dict(report, path=ctx.config.model.init_from)
        writers.write_json(os.path.join(ctx.workdir, stage, "init_from.json"), report)
    return model


def _module_dir(workdir: str, stage: str, what: str) -> str:
    return os.path.join(workdir, stage, what)


def save_module(ctx: StageContext, stage: str, what: str, module: nnx.Module) -> None:
    """Exports a module's variables (params and batch stats) for later stages."""
    ckpt = checkpointing.Checkpointer(_module_dir(ctx.workdir, stage, what), max_to_keep=1)
    ckpt.replace(0, nnx.state(module))  # a run killed before its results.json left one
    ckpt.close()


def load_module(ctx: StageContext, stage: str, what: str, module: nnx.Module) -> nnx.Module:
    """Loads variables exported by :func:`save_module` into ``module`` (in place)."""
    directory = _module_dir(ctx.workdir, stage, what)
    ckpt = checkpointing.Checkpointer(directory, max_to_keep=1)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(
            f"{directory} does not exist: run stage {stage!r} first (e.g. --stages={stage})."
        )
    nnx.update(module, ckpt.restore_latest(nnx.state(module)))
    ckpt.close()
    return module
