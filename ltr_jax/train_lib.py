"""The one training loop: train state, optimizer, a jitted step builder and a resumable loop.

A stage supplies a model, an optimizer config, ``batch_fn(data, state) -> batch`` (runs inside
the step, on device) and ``loss_fn(model, batch, key) -> (loss, metrics)``. Randomness of step t
is ``fold_in(root_key, t)`` and the data order is a pure function of the step, so the state
below is all a resumed run needs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ltr_jax import checkpointing, param_groups, runtime, stopping, writers
from ltr_jax.models import modes


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (and nothing else)."""

    step: jax.Array
    params: Any  # trainable nnx.Param state
    batch_stats: Any  # nnx.BatchStat state
    frozen: Any  # every other variable (e.g. a frozen encoder)
    opt_state: Any
    # int32 [n] training positions of the current subset (the probe's balanced subset, the
    # current IP-DPP draw), which `inputs.Sampling(subset_size=n)` samples from; or None.
    subset: Any = None


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Steps in one epoch with the last partial batch dropped."""
    if num_examples < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
    return num_examples // batch_size


def scaled_learning_rate(optim_config, batch_size: int) -> float:
    """Peak learning rate ``lr * batch_size / lr_base_batch`` (linear scaling rule)."""
    return optim_config.lr * batch_size / optim_config.lr_base_batch


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
    wd = optim_config.weight_decay
    if optim_config.name == "adamw":
        tx = optax.adamw(schedule, optim_config.b1, optim_config.b2, weight_decay=wd,
                         mask=param_groups.decay_mask)  # fmt: skip
    elif optim_config.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(wd, mask=param_groups.decay_mask),
            optax.sgd(schedule, momentum=optim_config.momentum, nesterov=optim_config.nesterov),
        )
    else:
        raise ValueError(f"Unknown optim.name {optim_config.name!r}; valid: adamw, sgd.")
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
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, frozen=frozen,
        opt_state=tx.init(params), subset=subset,
    )  # fmt: skip
    return graphdef, state


def merge_model(graphdef, state: TrainState) -> nnx.Module:
    return nnx.merge(graphdef, state.params, state.batch_stats, state.frozen)


def make_train_step(graphdef, tx, batch_fn: Callable, loss_fn: Callable, mesh):
    """Builds ``train_step(state, data, root_key) -> (state, metrics)``, jitted, state donated.

    ``batch_fn(data, state)`` selects and shards the batch on device; ``loss_fn(model, batch,
    key)`` returns (scalar loss, dict of scalar metrics). State and metrics are replicated.
    """

    def train_step(state: TrainState, data, root_key):
        key = jax.random.fold_in(root_key, state.step)
        batch = batch_fn(data, state)

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


def run_loop(
    *,
    stage: str,
    workdir: str,
    state: TrainState,
    train_step: Callable,
    data: Callable[[int, TrainState], Any],
    root_key: jax.Array,
    num_steps: int,
    steps_per_epoch: int,
    images_per_step: int,
    train_config,
    schedule: Callable | None = None,
    evaluate: Callable[[TrainState], dict] | None = None,
    before_step: Callable[[int, TrainState], TrainState] | None = None,
    eval_every_steps: int | None = None,
    stopper: stopping.Stopper | None = None,
) -> TrainState:
    """Runs ``train_step`` until ``num_steps``, resuming from the stage's latest checkpoint.

    ``data(step, state)`` is the ``data`` argument of the step (the device-resident training
    set, or the step's streamed batch). ``before_step(step, state)`` runs on the host before
    each step (e.g. periodic IP-DPP
    re-draws) and must be a pure function of (step, state) for resumes to be exact.
    Checkpoints go to WORKDIR/<stage>/checkpoints every ``train_config.checkpoint_every_steps``
    steps and every ``checkpoint_every_minutes`` (0 turns either off), at the end and at a
    stop; metrics to WORKDIR/metrics.jsonl every ``log_every_steps``, and
    ``evaluate(state)`` (prefixed ``eval_``) every ``eval_every_steps`` (default: every
    ``train_config.eval_every_epochs``) and not at the last step, which the caller evaluates.
    The loop's time is kept in WORKDIR/<stage>/loop.json (see :func:`loop_timing`).

    Raises:
      stopping.Stopped: ``stopper`` (default: signals and ``$LTR_DEADLINE_UNIX``) asked for a
        stop; the checkpoint of the step reached is saved first.
    """
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, stage, "checkpoints"), max_to_keep=train_config.max_checkpoints
    )
    state = ckpt.restore_latest(state)
    start = int(jax.device_get(state.step))
    writer = writers.MetricWriter(workdir, stage, tensorboard=train_config.tensorboard)
    writer.truncate_after(start)
    if start:
        logging.info("%s: resumed from step %d of %d.", stage, start, num_steps)
    clock = _LoopClock(workdir, stage, start, images_per_step)
    progress = writers.Progress(num_steps, start, stage, images_per_step)
    stopper = stopper or stopping.Stopper.from_env(agree_every=train_config.log_every_steps)
    saver = _CheckpointCadence(train_config)
    guard = DivergenceGuard(stage, train_config)
    eval_every = eval_every_steps or int(train_config.eval_every_epochs * steps_per_epoch)
    with stopper.signals():
        try:
            for step in range(start, num_steps):
                if before_step is not None:
                    state = before_step(step, state)
                state, metrics = train_step(state, data(step, state), root_key)
                done = step + 1
                if done % train_config.log_every_steps == 0 or done == num_steps:
                    host = _host_metrics(metrics, done, steps_per_epoch, schedule)
                    host["images_per_s"] = progress.update(done, host)
                    writer.write(done, host)
                    if (diverged := guard.check(done, host["loss"], ckpt)) is not None:
                        raise diverged
                if evaluate is not None and eval_every and done % eval_every == 0:
                    if done < num_steps:  # the caller evaluates the last step
                        writer.write(done, {f"eval_{k}": v for k, v in evaluate(state).items()})
                # Step multiples are the same on every process; time is agreed by the stopper.
                reason, save = stopper.poll(done, saver.time_due())
                if save or saver.steps_due(done) or reason is not None or done == num_steps:
                    ckpt.save(done, state)
                    clock.save(done)
                    saver.saved()
                if reason is not None and done < num_steps:
                    logging.warning("%s: stopped at step %d of %d (%s); checkpoint saved.",
                                    stage, done, num_steps, reason)  # fmt: skip
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
        writers.write_json(self.path, dict(
            step=step, loop_s=self.before + this_run, this_process_s=this_run,
            processes=self.processes + 1, images_per_step=self.images_per_step,
        ))  # fmt: skip


def loop_timing(workdir: str, stage: str) -> dict | None:
    """A finished stage's loop time: steps, seconds (every process), images/s; None if none.

    ``images_per_s`` includes the compilations and the periodic evaluations of the loop.
    """
    record = writers.read_json(os.path.join(workdir, stage, "loop.json"))
    if not record:
        return None
    images = record["step"] * record["images_per_step"]
    return dict(
        steps=record["step"], loop_s=round(record["loop_s"], 3),
        last_process_loop_s=round(record["this_process_s"], 3), processes=record["processes"],
        images_per_s=round(images / max(record["loop_s"], 1e-9), 1),
    )  # fmt: skip


class DivergedError(RuntimeError):
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


def apply_in_batches(fn: Callable, arrays: tuple, batch_size: int, mesh) -> np.ndarray:
    """Applies a jitted ``fn(*batch)`` over host arrays in padded, sharded batches.

    The last batch is padded to full size (so one compiled shape serves every batch) and the
    padded rows are dropped from the output.

    Returns:
      The outputs of every real row, concatenated on the host (of every process).
    """
    n = len(arrays[0])
    outs = []
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        real = len(chunk[0])
        chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, 0)]) for c in chunk]
        out = fn(*[runtime.put_batch_sharded(mesh, c) for c in chunk])
        outs.append(jax.tree.map(lambda x, r=real: x[:r], runtime.to_host(out)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
