"""The one training loop: train state, optimizer, a jitted step builder and a resumable loop.

Every stage declares a `TrainSetup` (model, trainable filter, optimiser section, batch size,
examples, sampling, augmentation, loss, evaluator, hooks); `fit` builds its feed and jitted
step and runs the one resumable loop. Randomness of step t is ``fold_in(root_key, t)`` and the
data order is a pure function of the step, so the state below is all a resumed run needs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ltr_jax import checkpointing, param_groups, runtime, stopping, writers
from ltr_jax.data.input import sampler, sampler_registry
from ltr_jax.errors import UserError
from ltr_jax.models import modes
from ltr_jax.registry import Registry


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (and nothing else)."""

    step: jax.Array
    params: Any  # trainable nnx.Param state
    batch_stats: Any  # nnx.BatchStat state
    frozen: Any  # every other variable (e.g. a frozen encoder)
    opt_state: Any
    # int32 [n] training positions of the current subset (the probe's balanced subset, the
    # current IP-DPP draw), which `Sampling(subset_size=n)` samples from; or None.
    subset: Any = None


def scaled_learning_rate(optim_config, batch_size: int) -> float:
    """Peak learning rate ``lr * batch_size / lr_base_batch`` (linear scaling rule)."""
    return optim_config.lr * batch_size / optim_config.lr_base_batch


def _adamw(schedule, optim_config) -> optax.GradientTransformation:
    wd = optim_config.weight_decay
    return optax.adamw(
        schedule, optim_config.b1, optim_config.b2, weight_decay=wd, mask=param_groups.decay_mask
    )


def _sgd(schedule, optim_config) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(optim_config.weight_decay, mask=param_groups.decay_mask),
        optax.sgd(schedule, momentum=optim_config.momentum, nesterov=optim_config.nesterov),
    )


# optim.name -> builder(schedule, optim section): the optimiser before clipping / layer decay.
OPTIMIZERS: Registry[Callable] = Registry("optim.name", {"adamw": _adamw, "sgd": _sgd})


def make_optimizer(optim_config, *, batch_size: int, num_steps: int, steps_per_epoch: int):
    """AdamW or SGD with linear warm-up then cosine to 0, per step.

    No weight decay on biases, norms, position embeddings and tokens
    (:func:`ltr_jax.param_groups.decay_mask`); ``clip_grad_norm`` > 0 clips the global
    gradient norm first; ``layer_decay`` < 1 scales each layer's learning rate
    (:func:`ltr_jax.param_groups.layer_scales`).

    Returns:
      (optax transformation, learning-rate schedule).
    """
    peak = scaled_learning_rate(optim_config, batch_size)
    warmup = min(int(optim_config.warmup_epochs * steps_per_epoch), max(num_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(num_steps, 1), 0.0)
    tx = OPTIMIZERS[optim_config.name](schedule, optim_config)
    return _with_clip_and_layer_decay(tx, optim_config), schedule


def _scale_by_layer(decay: float) -> optax.GradientTransformation:
    """Multiplies each parameter's update by its layer-decay factor (a final lr scale)."""

    def update(updates, state, params=None):
        scales = param_groups.layer_scales(updates, decay)
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _with_clip_and_layer_decay(tx, optim_config):
    clip, decay = optim_config.get("clip_grad_norm", 0.0), optim_config.get("layer_decay", 1.0)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"optim.layer_decay must be in (0, 1] (1: off), got {decay}.")
    parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    parts.append(tx)
    if decay < 1.0:
        parts.append(_scale_by_layer(decay))
    return optax.chain(*parts) if len(parts) > 1 else tx


def split_model(model: nnx.Module, trainable=nnx.Param):
    """Splits a model into (graphdef, trainable params, batch stats, everything else)."""
    return nnx.split(model, trainable, nnx.BatchStat, ...)


def init_train_state(model: nnx.Module, tx, trainable=nnx.Param, subset=None):
    """Returns (graphdef, TrainState at step 0); ``subset``: positions of the training subset."""
    graphdef, params, batch_stats, frozen = split_model(model, trainable)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        frozen=frozen,
        opt_state=tx.init(params),
        subset=subset,
    )
    return graphdef, state


def merge_model(graphdef, state: TrainState) -> nnx.Module:
    return nnx.merge(graphdef, state.params, state.batch_stats, state.frozen)


def make_train_step(graphdef, tx, batch_fn: Callable, loss_fn: Callable, mesh):
    """Builds ``train_step(state, data, root_key) -> (state, metrics)``, jitted, state donated.

    ``batch_fn(data, state)`` selects and shards the batch (a dict) on device, to which the
    step adds ``step`` and, when the state has one, ``subset`` (its `TrainState.subset`);
    ``loss_fn(model, batch, key)`` returns (scalar loss, dict of scalar metrics). State and
    metrics are replicated.
    """

    def train_step(state: TrainState, data, root_key):
        key = jax.random.fold_in(root_key, state.step)
        batch = dict(batch_fn(data, state), step=state.step)  # the step, for losses that need it
        if state.subset is not None:  # the current training subset, for losses of its prior
            batch["subset"] = state.subset

        def objective(params, batch_stats):
            # Batch stats are differentiated too (their gradient is zero and dropped): NNX may
            # only mutate variables that belong to the innermost trace.
            frozen = modes.with_step_key(state.frozen, key)  # dropout, stochastic depth
            model = nnx.merge(graphdef, params, batch_stats, frozen)
            loss, metrics = loss_fn(model, batch, key)
            return loss, (metrics, nnx.state(model, nnx.BatchStat))

        grad_fn = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
        (loss, (metrics, batch_stats)), (grads, _) = grad_fn(state.params, state.batch_stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
        return new_state, metrics

    rep = runtime.replicated(mesh)
    return jax.jit(train_step, donate_argnums=(0,), out_shardings=(rep, rep))


@dataclasses.dataclass(frozen=True)
class Hook:
    """Host work a loop does between steps, at the steps where ``due(step)`` is true.

    ``before_step``: ``fn(step, state) -> state`` runs before step ``step`` (e.g. a new
    IP-DPP draw); it must be a pure function of (step, state) for resumes to be exact. A
    state whose ``subset`` (the training subset) it replaced starts the feed on the new subset.
    Otherwise ``fn(done, state) -> dict | None`` runs after the step that makes ``done``
    steps, and a returned dict is written to WORKDIR/metrics.jsonl at step ``done``.
    """

    due: Callable[[int], bool]
    fn: Callable
    before_step: bool = False


def every(n: int, fn: Callable, *, before_step: bool = False, skip: int | None = None) -> Hook:
    """A hook due every ``n`` steps (``n`` <= 0: never), except at step ``skip``."""
    return Hook(lambda s: n > 0 and s % n == 0 and s != skip, fn, before_step)


def at_steps(steps, fn: Callable, *, before_step: bool = True) -> Hook:
    """A hook due at each of ``steps`` (before them, by default)."""
    steps = frozenset(int(s) for s in steps)
    return Hook(steps.__contains__, fn, before_step)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """What a stage trains, declared (``make_setup`` of every stage); `fit` runs it.

    Attributes:
      stage: the stage name (checkpoints, metrics and exports go to WORKDIR/<stage>).
      model: the model at initialisation (only variables matching ``trainable`` are trained).
      optim: the stage's optimiser section (``<stage>.optim``).
      batch_size: global batch size.
      epochs: epochs to train.
      num_examples: examples one epoch draws from (sets the steps per epoch).
      input: a data input (``train_feed(sampling, augment=, strength=, num_views=)``).
      sampler: ``uniform`` or ``class_balanced`` over the input's training set; over
        ``subset`` when one is given (uniform only).
      loss: ``loss(model, batch, key, view) -> (scalar loss, metrics)``, where
        ``view(key, batch, v)`` is augmented view ``v`` of the batch.
      key: the stage's key; sampling, the steps' randomness and hooks derive from it.
      augment, augment_strength, num_views: the training augmentation.
      trainable: the filter of trained variables.
      subset: int32 positions the stage trains on at step 0 (its `TrainState.subset`), or None.
      drop_last: False keeps each epoch's last partial batch (uniform sampling over a subset
        or over features: ``sampler.epoch_batch``), its padding rows weighted 0 in
        ``batch["weights"]``, which the loss must honour.
      evaluate: ``evaluate(state) -> metrics`` of the test set, or None.
      eval_every_epochs: evaluation period in epochs (None: ``train.eval_every_epochs``).
      hooks: extra hooks (e.g. re-draws of ``subset``).
    """

    stage: str
    model: nnx.Module
    optim: Any
    batch_size: int
    epochs: int
    num_examples: int
    input: Any
    sampler: str
    loss: Callable
    key: jax.Array
    augment: str = "none"
    augment_strength: float = 1.0
    num_views: int = 1
    trainable: Any = nnx.Param
    subset: np.ndarray | None = None
    drop_last: bool = True
    evaluate: Callable[[TrainState], dict] | None = None
    eval_every_epochs: float | None = None
    hooks: tuple[Hook, ...] = ()

    @property
    def steps_per_epoch(self) -> int:
        return sampler.steps_per_epoch(self.num_examples, self.batch_size, self.drop_last)

    @property
    def num_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclasses.dataclass
class Loop:
    """A `TrainSetup` made concrete: its jitted step, initial state, feed and schedule."""

    setup: TrainSetup
    graphdef: Any
    state: TrainState
    train_step: Callable
    feed: Any
    schedule: Callable
    root_key: jax.Array

    def close(self) -> None:
        """Stops the feed's decoding workers (streamed inputs)."""
        self.feed.close()


def build(setup: TrainSetup, mesh) -> Loop:
    """The optimiser, initial state (replicated on ``mesh``), feed and jitted step of a setup.

    Benchmarks time ``loop.train_step`` over ``loop.feed.data(step, state)``: exactly what a
    run executes.
    """
    spe = setup.steps_per_epoch
    tx, schedule = make_optimizer(
        setup.optim, batch_size=setup.batch_size, num_steps=setup.num_steps, steps_per_epoch=spe
    )
    subset = None if setup.subset is None else np.asarray(setup.subset, np.int32)
    graphdef, state = init_train_state(setup.model, tx, setup.trainable, subset=subset)
    size = None if subset is None else len(subset)
    sampling = sampler_registry.Sampling(
        setup.sampler,
        jax.random.fold_in(setup.key, 1),
        setup.batch_size,
        subset_size=size,
        drop_last=setup.drop_last,
    )
    feed = setup.input.train_feed(
        sampling, augment=setup.augment, strength=setup.augment_strength, num_views=setup.num_views
    )  # a streamed feed reads its subset from the state it is handed (a resume's too)
    loss = lambda model, batch, key: setup.loss(model, batch, key, feed.view)
    train_step = make_train_step(graphdef, tx, feed.batch_fn, loss, mesh)
    state = runtime.put_replicated(mesh, state)
    root_key = jax.random.fold_in(setup.key, 2)
    return Loop(setup, graphdef, state, train_step, feed, schedule, root_key)


def fit(
    setup: TrainSetup, *, workdir: str, mesh, train_config, stopper: stopping.Stopper | None = None
) -> tuple[TrainState, Any]:
    """Trains a stage's setup to its last step, resuming from its latest checkpoint.

    Evaluates (``setup.evaluate``) every ``eval_every_epochs`` but not at the last step, which
    the caller evaluates.

    Returns:
      (final state, replicated on ``mesh``; graphdef): ``merge_model(graphdef,
      jax.device_get(state))`` is the trained model.
    """
    loop = build(setup, mesh)
    num_steps = setup.num_steps
    hooks = list(setup.hooks)
    if setup.evaluate is not None:
        epochs = setup.eval_every_epochs
        if epochs is None:
            epochs = train_config.eval_every_epochs
        period = int(epochs * setup.steps_per_epoch)
        report = lambda done, state: {f"eval_{k}": v for k, v in setup.evaluate(state).items()}
        hooks.append(every(period, report, skip=num_steps))
    try:  # a clean stop (stopping.Stopped) must stop the decoding workers too
        state = run_loop(
            loop, workdir=workdir, train_config=train_config, hooks=hooks, stopper=stopper
        )
    finally:
        loop.close()
    return state, loop.graphdef


def run_loop(
    loop: Loop,
    *,
    workdir: str,
    train_config,
    hooks: Sequence[Hook] = (),
    stopper: stopping.Stopper | None = None,
) -> TrainState:
    """Runs ``loop.train_step`` to the setup's last step, resuming from the latest checkpoint.

    The step's ``data`` argument is ``loop.feed.data(step, state)`` (the device-resident
    training set, or the step's streamed batch). Hooks run on the host (see `Hook`).
    Checkpoints go to WORKDIR/<stage>/checkpoints every ``train_config.checkpoint_every_steps``
    steps and every ``checkpoint_every_minutes`` (0 turns either off), at the end and at a
    stop; metrics to WORKDIR/metrics.jsonl every ``log_every_steps``. The loop's time is kept
    in WORKDIR/<stage>/loop.json (see :func:`loop_timing`).

    Raises:
      stopping.Stopped: ``stopper`` (default: signals and ``$LTR_DEADLINE_UNIX``) asked for a
        stop; the checkpoint of the step reached is saved first.
      DivergedError: a non-finite loss at a log step (``train.stop_on_nonfinite``).
    """
    setup = loop.setup
    stage, num_steps, spe = setup.stage, setup.num_steps, setup.steps_per_epoch
    before = [h for h in hooks if h.before_step]
    after = [h for h in hooks if not h.before_step]
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, stage, "checkpoints"), max_to_keep=train_config.max_checkpoints
    )
    state = ckpt.restore_latest(loop.state)
    start = int(jax.device_get(state.step))
    writer = writers.MetricWriter(workdir, stage, tensorboard=train_config.tensorboard)
    writer.truncate_after(start)
    if start:
        logging.info("%s: resumed from step %d of %d.", stage, start, num_steps)
    clock = _LoopClock(workdir, stage, start, setup.batch_size)
    progress = writers.Progress(num_steps, start, stage, setup.batch_size)
    stopper = stopper or stopping.Stopper.from_env(agree_every=train_config.log_every_steps)
    saver = _CheckpointCadence(train_config)
    guard = DivergenceGuard(stage, train_config)
    with stopper.signals():
        try:
            for step in range(start, num_steps):
                for hook in before:
                    if hook.due(step):
                        subset, state = state.subset, hook.fn(step, state)
                        if state.subset is not subset:  # a new training subset from this step
                            loop.feed.set_population(runtime.to_host(state.subset), step)
                state, metrics = loop.train_step(state, loop.feed.data(step, state), loop.root_key)
                done = step + 1
                if done % train_config.log_every_steps == 0 or done == num_steps:
                    host = _host_metrics(metrics, done, spe, loop.schedule)
                    host["images_per_s"] = progress.update(done, host)
                    writer.write(done, host)
                    if (diverged := guard.check(done, host["loss"], ckpt)) is not None:
                        raise diverged
                for hook in after:
                    if hook.due(done) and (logged := hook.fn(done, state)):
                        writer.write(done, logged)
                # Step multiples are the same on every process; time is agreed by the stopper.
                reason, save = stopper.poll(done, saver.time_due())
                if save or saver.steps_due(done) or reason is not None or done == num_steps:
                    ckpt.save(done, state)
                    clock.save(done)
                    saver.saved()
                if reason is not None and done < num_steps:
                    logging.warning(
                        "%s: stopped at step %d of %d (%s); checkpoint saved.",
                        stage,
                        done,
                        num_steps,
                        reason,
                    )
                    raise stopping.Stopped(stage, done, reason)
        finally:
            ckpt.close()
            progress.close()
            writer.close()
    return state


def _host_metrics(metrics: dict, done: int, steps_per_epoch: int, schedule) -> dict:
    """A step's metrics on the host, with its epoch and learning rate."""
    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
    host["epoch"] = done / steps_per_epoch
    if schedule is not None:
        host["lr"] = float(schedule(done - 1))
    return host


class _CheckpointCadence:
    """When a periodic checkpoint is due: every N steps and/or every M minutes (0: off)."""

    def __init__(self, train_config):
        self.every_steps = train_config.checkpoint_every_steps
        self.every_s = train_config.checkpoint_every_minutes * 60.0
        self.last = time.monotonic()

    def steps_due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def time_due(self) -> bool:
        return self.every_s > 0 and time.monotonic() - self.last >= self.every_s

    def saved(self) -> None:
        self.last = time.monotonic()


class _LoopClock:
    """Seconds spent in a stage's loop, summed over the processes whose steps were kept.

    Saved with every checkpoint to WORKDIR/<stage>/loop.json; a resume adds the time recorded
    with the checkpoint it restores (steps after that checkpoint were lost, and so is their
    time).
    """

    def __init__(self, workdir: str, stage: str, start: int, images_per_step: int):
        self.path = os.path.join(workdir, stage, "loop.json")
        self.start, self.images_per_step = start, images_per_step
        self.began = time.perf_counter()
        record = writers.read_json(self.path) or {}
        self.before = record.get("loop_s", 0.0) if record.get("step") == start and start else 0.0
        self.processes = record.get("processes", 0) if self.before else 0

    def save(self, step: int) -> None:
        if jax.process_index() != 0:
            return
        this_run = time.perf_counter() - self.began
        writers.write_json(
            self.path,
            dict(
                step=step,
                loop_s=self.before + this_run,
                this_process_s=this_run,
                processes=self.processes + 1,
                images_per_step=self.images_per_step,
            ),
        )


def loop_timing(workdir: str, stage: str) -> dict | None:
    """A finished stage's loop time: steps, seconds (every process), images/s; None if none.

    ``images_per_s`` includes the compilations and the periodic evaluations of the loop.
    """
    record = writers.read_json(os.path.join(workdir, stage, "loop.json"))
    if not record:
        return None
    images = record["step"] * record["images_per_step"]
    return dict(
        steps=record["step"],
        loop_s=round(record["loop_s"], 3),
        last_process_loop_s=round(record["this_process_s"], 3),
        processes=record["processes"],
        images_per_s=round(images / max(record["loop_s"], 1e-9), 1),
    )


class DivergedError(UserError, RuntimeError):
    """The loss became non-finite at a log step (``train.stop_on_nonfinite``)."""


class DivergenceGuard:
    """Stops a stage at the first log step whose loss is not finite (NaN or inf).

    Checked only at log steps (metrics leave the device only there). With
    ``train.stop_on_nonfinite=False`` the stage trains on and the loss is only logged.
    """

    def __init__(self, stage: str, train_config):
        self.stage = stage
        self.enabled = bool(getattr(train_config, "stop_on_nonfinite", True))
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    def check(
        self, step: int, loss: float, ckpt: checkpointing.Checkpointer
    ) -> DivergedError | None:
        """Records a finite loss; returns the error to raise for a non-finite one.

        Returns:
          None, or a `DivergedError` of one line with the step, the stage, the last finite
          loss and the checkpoint a rerun resumes from.
        """
        if math.isfinite(loss):
            self.last_finite = (step, loss)
            return None
        if not self.enabled:
            return None
        last = "none logged"
        if self.last_finite is not None:
            last = f"{self.last_finite[1]:.4g} at step {self.last_finite[0]}"
        resume = ckpt.latest_step()
        lr = f"--config.{self.stage}.optim.lr"
        advice = (
            f"a rerun resumes from {os.path.join(ckpt.directory, str(resume))} (step {resume}); "
            f"to lower {lr}, use a new --workdir"
            if resume is not None
            else f"no checkpoint was saved yet: rerun with a lower {lr}"
        )
        return DivergedError(
            f"Stage {self.stage} diverged: loss {loss} at step {step} (last finite loss: "
            f"{last}); {advice}, or set --config.train.stop_on_nonfinite=False to train on."
        )
