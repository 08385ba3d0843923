"""Parity with the paper's released PyTorch code, step for step on CPU; writes golden fixtures.

The released code (Lin & Yuan, NeurIPS 2025; Apache-2.0) is an oracle here: its modules are
imported at run time from ``--reference_dir`` and never copied into the project. Both sides
get identical inputs; weights come from ``parity_lib.seed_weights`` (a seeded NumPy generator)
and are loaded into both models, so no weight file is needed. Each check is a row of the
parity table (max relative difference vs tolerance); the fixtures that
``tests/test_parity.py`` replays without torch go to ``tests/fixtures/parity/``.

    python bench/parity.py --reference_dir PATH/TO/BNS_IPDPP --data_dir PATH/TO/data
    # with the bench extra installed; prints the table, writes the fixtures (~9 min, 2 cores)
    python bench/parity.py --only f  # one row (letters), fixtures left alone

Rows: a. LT split, b. encoder + projection forward (ResNet-18/34, train and eval mode),
c. BNS loss and gradients, d. optimiser (decay groups, learning rate over whole runs, 20
stage-1 steps), e. one probe step and one stage-2 step built by the stages' own
``make_setup`` (and their weight decay alone, on zero gradients; stage 2's step again with both
sides in float64), f. the SimCLR augmentation
by distribution on real CIFAR-10 (JPEG copy) images and on seeded synthetic images (two-sample
tests; the synthetic images' output statistics go to the fixture), g. Many/Medium/Few
metrics, h. the released IP-DPP sampler vs ``sampler="uniform"`` (needs DPPy).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import types

import jax
import numpy as np
import torch

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_BENCH), _BENCH]  # this checkout's ltr_jax, then parity_lib
import parity_lib as pl  # noqa: E402

from ltr_jax import metrics  # noqa: E402
from ltr_jax.data.datasets import long_tail  # noqa: E402
from ltr_jax.losses import bns  # noqa: E402

TOL = {
    "forward": 1e-5,
    "bns": 1e-5,
    "lr": 1e-6,
    "train_loss": 1e-4,
    "step": 1e-5,
    "grad": 1e-3,
    # Stage 2 with both sides in float64 (row e): a float32 op anywhere on either side
    # (about 1e-7 of a value, 1e-6 after the network) is 100x over this.
    "float64": 1e-8,
    "flipped": 1e-3,
    "update_l2": 5e-2,
    "decay": 1e-4,
}
# Adam's first steps move every entry by about lr * sign(g): an entry whose gradient is float
# noise (|g| ~ 1e-6 max|g|, e.g. a direction BatchNorm cancels) moves +-lr on one side and -+lr
# on the other. Parameters are compared by the share of entries more than FLIP apart and the
# L2 difference relative to the update, not entry by entry.
FLIP = 1e-5


def param_rows(
    rows: list, label: str, ours: dict, theirs: dict, init: dict, info: bool = False
) -> None:
    """Rows for parameters after training: share of flipped entries, worst update L2."""
    total = sum(v.size for v in theirs.values())
    flipped = sum(int((np.abs(ours[p] - theirs[p]) > FLIP).sum()) for p in theirs)
    l2 = max(
        np.linalg.norm(ours[p] - theirs[p]) / max(np.linalg.norm(theirs[p] - init[p]), 1e-30)
        for p in theirs
    )
    row(
        rows,
        f"{label}: share of entries > {FLIP:.0e} apart",
        flipped / total,
        TOL["flipped"],
        f"{flipped} of {total}",
        info,
    )
    row(
        rows,
        f"{label}: worst tensor's L2 difference / its update",
        float(l2),
        TOL["update_l2"],
        info=info,
    )


def load_reference(reference_dir: str) -> types.SimpleNamespace:
    """Imports the released modules the checks need (not ``utils/misc.py``: torch._six)."""
    sys.path.insert(0, os.path.abspath(reference_dir))
    from losses import bns_loss
    from models import models_linprob, models_resnet, models_simclr
    from utils import lr_sched, lt_metrics

    return types.SimpleNamespace(
        bns_loss=bns_loss,
        linprob=models_linprob,
        resnet=models_resnet,
        simclr=models_simclr,
        lr_sched=lr_sched,
        lt_metrics=lt_metrics,
    )


def to_torch_layout(value) -> torch.Tensor:
    value = np.asarray(value)
    if value.ndim == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
        value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2:  # [in, out] -> [out, in]
        value = value.T
    return torch.from_numpy(np.ascontiguousarray(value, np.float32))


def load_into_torch(model: torch.nn.Module, ours, blocks: list[int]) -> None:
    """Copies every variable of our NNX model into the released model; all keys must match."""
    import flax.nnx as nnx

    flat = nnx.to_flat_state(nnx.state(ours))
    state = {
        pl.torch_name("/".join(map(str, p)), blocks): to_torch_layout(v.get_value())
        for p, v in flat
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")


def torch_simclr(ref, encoder: str) -> torch.nn.Module:
    base = (ref.resnet.ResNet18 if encoder == "cifar_resnet18" else ref.resnet.ResNet34)(10)
    return ref.simclr.SimCLR(base, projection_dim=128)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def row(rows: list, name: str, err: float, tol: float, note: str = "", info: bool = False) -> None:
    """A check of the table; ``info``: shown against ``tol`` but not a criterion (the exit code
    ignores it)."""
    rows.append(
        dict(check=name, max_rel_diff=err, tolerance=tol, ok=bool(err <= tol), note=note, info=info)
    )


# ---------------------------------------------------------------------------------------------
# a. The long-tailed split.


def check_split(ref_dir: str, data_dir: str, rows: list) -> None:
    path = os.path.join(data_dir, "cifar10_jpeg_bytes.npz")
    if not os.path.exists(path):
        rows.append(
            dict(
                check="a. LT split (CIFAR-10 JPEG copy)",
                max_rel_diff=float("nan"),
                tolerance=0.0,
                ok=False,
                note=f"{path} missing",
            )
        )
        return
    labels = np.load(path)["train_labels"].astype(np.int64)
    from datasets.imbalance_cifar import ImbalanceCIFAR10

    released = object.__new__(ImbalanceCIFAR10)  # no torchvision download: data set by hand
    released.data, released.targets = np.arange(len(labels))[:, None], labels.tolist()
    np.random.seed(0)  # the constructor's rand_number=0
    released.gen_imbalanced_data(released.get_img_num_per_cls(10, "exp", 0.01))
    theirs = np.sort(released.data[:, 0])
    ours = long_tail.ldam_subset(labels, np.arange(len(labels)), 10, 100)
    same = len(theirs) == len(ours) and bool(np.all(theirs == ours))
    pl.save_json("split.json", {"cifar10_jpeg_if100_indices": theirs.tolist()})
    row(
        rows,
        "a. LT split CIFAR-10 (JPEG copy) IF 100: indices",
        0.0 if same else 1.0,
        0.0,
        f"{len(theirs)} images, identical: {same}",
    )


# ---------------------------------------------------------------------------------------------
# b. Forward passes.


def check_forward(ref, rows: list) -> None:
    x = pl.images(pl.SEED, 4)
    out = {}
    for encoder in ("cifar_resnet18", "cifar_resnet34"):
        ours = pl.contrastive_net(encoder)
        theirs = torch_simclr(ref, encoder)
        load_into_torch(theirs, ours, pl.BLOCKS[encoder])
        for mode in ("eval", "train"):
            theirs.train(mode == "train")
            with torch.no_grad():
                h, z = theirs(nchw(x))
            z = torch.nn.functional.normalize(z, dim=1)
            h, z = h.numpy(), z.numpy()
            model = pl.contrastive_net(encoder)
            if mode == "eval":
                model.eval()
            h_ours = model.encoder(x)
            h_ours, z_ours = np.asarray(h_ours), np.asarray(model.projection(h_ours))
            err = max(pl.rel_err(h_ours, h), pl.rel_err(z_ours, z))
            row(rows, f"b. {encoder} + projection forward, {mode} mode", err, TOL["forward"])
            out[f"{encoder}_{mode}_features"], out[f"{encoder}_{mode}_projection"] = h, z
    for k, v in out.items():
        pl.save_npy(f"forward_{k}.npy", v.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# c. BNS loss.


def bns_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(pl.SEED + 2)
    zi, zj = rng.normal(size=(2, 16, 32)).astype(np.float32)
    return zi, zj, rng.integers(0, 4, 16).astype(np.int32)


def check_bns(ref, rows: list) -> None:
    import jax

    zi, zj, y = bns_inputs()
    ti, tj = (torch.tensor(a, requires_grad=True) for a in (zi, zj))
    ty = torch.from_numpy(y.astype(np.int64))
    loss = ref.bns_loss.BNSLoss(16, temperature=0.5)(ti, tj, ty, ty)
    loss.backward()
    fn = lambda a, b: bns.bns_loss(a, b, y, jax.random.key(0), tau=0.5, m=4, form="reference")
    value, (gi, gj) = jax.value_and_grad(fn, argnums=(0, 1))(zi, zj)
    row(rows, "c. BNS loss value (reference form)", pl.rel_err(value, loss.item()), TOL["bns"])
    err = max(pl.rel_err(gi, ti.grad.numpy()), pl.rel_err(gj, tj.grad.numpy()))
    row(rows, "c. BNS loss gradients w.r.t. both views", err, TOL["bns"])
    pl.save_json("bns.json", {"loss": loss.item()})
    pl.save_npy("bns_grads.npy", np.stack([ti.grad.numpy(), tj.grad.numpy()]))


# ---------------------------------------------------------------------------------------------
# d. Optimiser: decay groups, learning-rate schedules, 20 stage-1 steps.


def released_decay_groups(model: torch.nn.Module) -> set[str]:
    """The released ``add_weight_decay`` rule (timm >= 0.9 names it
    ``param_groups_weight_decay``): no decay for 1-D tensors and ``*.bias``."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in decayed}


def released_lrs(ref, lr: float, epochs: int, warmup: int, spe: int) -> np.ndarray:
    args = types.SimpleNamespace(lr=lr, epochs=epochs, warmup_epochs=warmup, min_lr=0.0)
    opt = types.SimpleNamespace(param_groups=[{}])
    return np.array(
        [
            ref.lr_sched.adjust_learning_rate(opt, it / spe + e, args)
            for e in range(epochs)
            for it in range(spe)
        ]
    )


# (name, peak lr, epochs, warm-up epochs, released steps per epoch, batch, base batch)
SCHEDULES = {
    "stage1_cifar10": (1e-3 * 1024 / 256, 1000, 20, 12406 // 1024, 1024, 256),
    "probe_cifar10": (2.5e-4, 100, 20, math.ceil(1000 / 64), 64, 64),
    "stage2_cifar10": (2.5e-4, 100, 5, math.ceil(3391 / 64), 64, 64),
}


def check_optimizer(ref, rows: list) -> None:
    ours = pl.contrastive_net()
    theirs = torch_simclr(ref, "cifar_resnet18")
    load_into_torch(theirs, ours, pl.BLOCKS["cifar_resnet18"])
    blocks = pl.BLOCKS["cifar_resnet18"]
    our_decay = {pl.torch_name(p, blocks) for p in pl.decayed_paths(ours)}
    their_decay = released_decay_groups(theirs)
    row(
        rows,
        "d. weight-decay groups (ResNet-18 + projection)",
        float(len(our_decay ^ their_decay)),
        0.0,
        f"{len(their_decay)} decayed",
    )
    pl.save_json("decay_groups.json", sorted(their_decay))
    for name, (lr, epochs, warmup, spe, batch, base) in SCHEDULES.items():
        theirs_lr = released_lrs(ref, lr, epochs, warmup, spe)
        ours_lr = pl.schedule(spe, epochs, warmup, lr * base / batch, base, batch)
        row(
            rows,
            f"d. learning rate every step, {name} ({len(theirs_lr)} steps)",
            pl.rel_err(ours_lr, theirs_lr),
            TOL["lr"],
        )
        pl.save_npy(f"lr_{name}.npy", theirs_lr)
    check_training(ref, rows)


def check_training(ref, rows: list) -> None:
    t = pl.TRAIN
    views, y = pl.stage1_data()
    ours0 = pl.contrastive_net()
    model = torch_simclr(ref, "cifar_resnet18")
    load_into_torch(model, ours0, pl.BLOCKS["cifar_resnet18"])
    from timm.optim import param_groups_weight_decay

    opt = torch.optim.AdamW(
        param_groups_weight_decay(model, t["wd"]), lr=t["lr"], betas=(0.9, 0.95)
    )
    crit = ref.bns_loss.BNSLoss(t["batch"], temperature=0.5)
    args = types.SimpleNamespace(
        lr=t["lr"], epochs=t["epochs"], warmup_epochs=t["warmup_epochs"], min_lr=0.0
    )
    ty, losses = torch.from_numpy(y.astype(np.int64)), []
    model.train()
    for i in range(t["steps"]):
        epoch, it = divmod(i, t["steps_per_epoch"])
        ref.lr_sched.adjust_learning_rate(opt, it / t["steps_per_epoch"] + epoch, args)
        _, ei = model(nchw(views[i, 0]))
        _, ej = model(nchw(views[i, 1]))
        loss = crit(ei, ej, ty, ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    our_losses, our_params = pl.stage1_run(views, y)
    row(
        rows,
        f"d. stage-1 loss at each of {t['steps']} steps (ResNet-18, B={t['batch']})",
        pl.rel_err(our_losses, losses),
        TOL["train_loss"],
    )
    blocks, sd = pl.BLOCKS["cifar_resnet18"], model.state_dict()
    theirs = {p: from_torch(sd[pl.torch_name(p, blocks)]) for p in our_params}
    param_rows(
        rows, "d. parameters after 20 stage-1 steps", our_params, theirs, pl.flat_params(ours0)
    )
    pl.save_json("stage1_train.json", {"losses": losses, "params": pl.param_digest(theirs)})


def from_torch(t: torch.Tensor) -> np.ndarray:
    """A released tensor in our layout (the inverse of :func:`to_torch_layout`)."""
    v = t.detach().numpy()
    return v.transpose(2, 3, 1, 0) if v.ndim == 4 else (v.T if v.ndim == 2 else v)


# ---------------------------------------------------------------------------------------------
# e. One probe step, one stage-2 step.


def released_classifier(ref, head_only: bool) -> torch.nn.Module:
    """The released probe (everything frozen but the linear layer) or stage-2 network, with
    the seeded weights."""
    simclr = torch_simclr(ref, "cifar_resnet18")
    model = ref.linprob.LinModel(simclr.enc, feature_dim=512, n_classes=10)
    load_into_torch(model, pl.classifier(), pl.BLOCKS["cifar_resnet18"])
    if head_only:
        for p in model.parameters():
            p.requires_grad = False
        for p in model.lin.parameters():
            p.requires_grad = True
    return model


def released_adamw(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    from timm.optim import param_groups_weight_decay

    return torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=lr, betas=(0.9, 0.95))


def released_step(ref, head_only: bool, x: np.ndarray, y: np.ndarray, double: bool = False):
    """One released probe / stage-2 step on the batch (``double``: the model in float64).

    Returns:
      (loss, gradients by torch name, the state dict after the step).
    """
    model = released_classifier(ref, head_only)
    model = model.double() if double else model
    opt = released_adamw(model, pl.STEP["lr"])
    model.train()
    inputs = nchw(x).double() if double else nchw(x)
    loss = torch.nn.functional.cross_entropy(model(inputs), torch.from_numpy(y.astype(np.int64)))
    opt.zero_grad()
    loss.backward()
    grads = {n: from_torch(p.grad) for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    return loss.item(), grads, model.state_dict()


def released_decay_only(ref, head_only: bool) -> dict[str, float]:
    """``||p_T - p_0|| / ||p_0||`` of every trained tensor (our path) after the released
    AdamW's ``pl.DECAY["steps"]`` steps on zero gradients, the released cosine schedule (no
    warm-up) from ``pl.DECAY["lr"]``: the weight decay alone."""
    model, t = released_classifier(ref, head_only), pl.DECAY
    opt = released_adamw(model, t["lr"])
    args = types.SimpleNamespace(lr=t["lr"], epochs=t["steps"], warmup_epochs=0, min_lr=0.0)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trained.items()}
    for i in range(t["steps"]):
        ref.lr_sched.adjust_learning_rate(opt, i, args)
        for p in trained.values():
            p.grad = torch.zeros_like(p)
        opt.step()
    ratio = {
        n: float(torch.linalg.norm(p.detach() - before[n]) / torch.linalg.norm(before[n]))
        for n, p in trained.items()
    }
    paths = pl.flat_params(pl.classifier())
    blocks = pl.BLOCKS["cifar_resnet18"]
    return {q: ratio[pl.torch_name(q, blocks)] for q in paths if pl.torch_name(q, blocks) in ratio}


def check_classifier_steps(ref, rows: list) -> None:
    """The probe and stage 2 as ``make_setup`` builds them from configs/reference/cifar10_lt.py
    (model, trainable filter, loss, optimiser) against the released probe and stage 2."""
    x, y = pl.images(pl.SEED + 4, pl.STEP["batch"]), pl.labels(pl.SEED + 4, pl.STEP["batch"])
    blocks, out = pl.BLOCKS["cifar_resnet18"], {}
    ctx = pl.stage_context(tempfile.mkdtemp(prefix="parity_stages_"))
    # Stage 2's float32 gradients and parameters after the step are shown, not judged: on this
    # batch one ReLU input of the last block is 7.2e-6 in float64 and float32 noise of a few
    # 1e-6 decides its side (one flip: up to 0.19 of a tensor's largest entry). The criterion
    # for stage 2 is the float64 comparison (check_stage2_float64).
    for kind, head_only in (("probe", True), ("stage2", False)):
        setup = pl.stage_setup(ctx, kind)
        loss, grads, sd = released_step(ref, head_only, x, y)
        _, our_grads, _ = pl.stage_grads(setup, x, y)
        our_decay = pl.decay_only(setup)
        our_loss, our_params, our_stats = pl.stage_step(setup, x, y)
        their_grads = {p: grads[pl.torch_name(p, blocks)] for p in our_grads}
        grad_names, grad_rows = pl.fingerprint(their_grads)
        errs = pl.fingerprint_errors(our_grads, grad_names, grad_rows)
        row(
            rows,
            f"e. {kind} step: gradients (worst tensor, each scaled by itself)",
            max(errs.values()),
            TOL["grad"],
            f"{len(our_grads)} tensors, worst {max(errs, key=errs.get)}",
            info=not head_only,
        )
        full = max(pl.rel_err(our_grads[p], their_grads[p]) for p in our_grads)
        l2 = max(
            np.linalg.norm(our_grads[p] - their_grads[p]) / np.linalg.norm(their_grads[p])
            for p in our_grads
        )
        row(
            rows,
            f"e. {kind} step: gradients, whole tensors (worst max-entry error; L2 in the note)",
            full,
            TOL["grad"],
            f"worst relative L2 {l2:.2e}",
            info=not head_only,
        )
        theirs = {p: from_torch(sd[pl.torch_name(p, blocks)]) for p in our_params}
        stats = {p: from_torch(sd[pl.torch_name(p, blocks)]) for p in our_stats}
        row(rows, f"e. {kind} step: loss", pl.rel_err(our_loss, loss), TOL["step"])
        param_rows(
            rows,
            f"e. {kind} step: parameters after",
            our_params,
            theirs,
            pl.flat_params(pl.classifier()),
            info=not head_only,
        )
        for leaf, what in (("mean", "means"), ("var", "variances (unbiased)")):
            err = max(pl.rel_err(our_stats[p], stats[p]) for p in stats if p.endswith(leaf))
            row(rows, f"e. {kind} step: BatchNorm running {what} after", err, TOL["step"])
        their_decay = released_decay_only(ref, head_only)
        decayed = sum(v > 0 for v in their_decay.values())
        err = max(abs(our_decay[p] - v) / (v if v > 0 else 1.0) for p, v in their_decay.items())
        if set(our_decay) != set(their_decay):
            err = float("inf")
        t = pl.DECAY
        row(
            rows,
            f"e. {kind}: weight decay alone, {t['steps']} steps from lr {t['lr']:g} (per tensor)",
            err,
            TOL["decay"],
            f"{decayed} of {len(their_decay)} tensors decayed, by up to "
            f"{max(their_decay.values()):.2e} of their norm",
        )
        stat_names, stat_rows = pl.fingerprint(stats)
        pl.save_npy(f"step_{kind}_grads.npy", grad_rows)
        pl.save_npy(f"step_{kind}_stats.npy", stat_rows)
        out[kind] = {
            "loss": loss,
            "grads": grad_names,
            "stats": stat_names,
            "decay_only": their_decay,
        }
    out["stage2"].update(check_stage2_float64(ref, rows, ctx, x, y))
    pl.save_json("classifier_steps.json", out)


def check_stage2_float64(ref, rows: list, ctx, x: np.ndarray, y: np.ndarray) -> dict:
    """Stage 2's step again with both sides in float64 (``jax.enable_x64``, the stage's model
    cast by ``parity_lib.to_float64``; the released model ``.double()``): the same seeded
    weights and batch, so float rounding is out of the comparison and the tolerance is tight.

    Returns:
      the fixture's entries: the released float64 loss, gradient and statistics names (their
      fingerprints go to ``step_stage2_grads64.npy`` and ``step_stage2_stats64.npy``).
    """
    blocks = pl.BLOCKS["cifar_resnet18"]
    loss, grads, sd = released_step(ref, False, x, y, double=True)
    with jax.enable_x64(True):
        setup = pl.stage_setup(ctx, "stage2", float64=True)
        _, our_grads, _ = pl.stage_grads(setup, x, y)
        our_loss, our_params, our_stats = pl.stage_step(setup, x, y)
    tag, tol = "e. stage2 step, float64 both sides", TOL["float64"]
    their_grads = {p: grads[pl.torch_name(p, blocks)] for p in our_grads}
    grad_names, grad_rows = pl.fingerprint(their_grads)
    errs = pl.fingerprint_errors(our_grads, grad_names, grad_rows)
    row(
        rows,
        f"{tag}: gradients (worst tensor, each scaled by itself)",
        max(errs.values()),
        tol,
        f"{len(our_grads)} tensors, worst {max(errs, key=errs.get)}",
    )
    full = max(pl.rel_err(our_grads[p], their_grads[p]) for p in our_grads)
    row(rows, f"{tag}: gradients, whole tensors (worst max-entry error)", full, tol)
    row(rows, f"{tag}: loss", pl.rel_err(our_loss, loss), tol)
    theirs = {p: from_torch(sd[pl.torch_name(p, blocks)]) for p in our_params}
    init = pl.flat_params(pl.classifier())
    # L2, not the largest entry: Adam divides by |g| + eps (1e-8), so an entry with |g| ~ 4e-9
    # turns float64's 1e-16 error of its gradient into 6e-9 of its move (measured).
    l2 = max(
        np.linalg.norm(our_params[p] - theirs[p]) / np.linalg.norm(theirs[p] - init[p])
        for p in theirs
    )
    row(rows, f"{tag}: parameters after (worst tensor's L2 difference / its update)", l2, tol)
    stats = {p: from_torch(sd[pl.torch_name(p, blocks)]) for p in our_stats}
    err = max(pl.rel_err(our_stats[p], stats[p]) for p in stats)
    row(rows, f"{tag}: BatchNorm running means and variances after", err, tol)
    stat_names, stat_rows = pl.fingerprint(stats)
    pl.save_npy("step_stage2_grads64.npy", grad_rows)
    pl.save_npy("step_stage2_stats64.npy", stat_rows)
    return {"loss64": loss, "grads64": grad_names, "stats64": stat_names}


# ---------------------------------------------------------------------------------------------
# f. The SimCLR augmentation, by distribution.

# A statistic passes when its two-sample test does not reject at P_MIN (KS for distributions,
# two-proportion z for rates, chi-square for the op order). The tolerance column shows the
# effect that rejects at 2,000 draws a side (the resolution: smaller differences pass).
P_MIN = 1e-3
C_MIN = math.sqrt(-math.log(P_MIN / 2) / 2)  # asymptotic KS coefficient: D_crit = C sqrt(2/n)


def cifar_images(data_dir: str, n: int, seed: int) -> np.ndarray | None:
    """``n`` training images of the CIFAR-10 JPEG copy (seeded pick), uint8 [n, 32, 32, 3]."""
    import io

    from PIL import Image

    path = os.path.join(data_dir, "cifar10_jpeg_bytes.npz")
    if not os.path.exists(path):
        return None
    data = np.load(path)
    blob, offsets = data["train_jpeg"], data["train_offsets"]
    pick = np.random.default_rng(seed).choice(len(offsets) - 1, n, replace=False)
    return np.stack(
        [
            np.asarray(
                Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
            )
            for i in pick
        ]
    )


def _recording(store: list, fn):
    def call(*args):
        out = fn(*args)
        store.append(out)
        return out

    return call


def released_simclr(images: np.ndarray, strength: float) -> tuple[dict, np.ndarray]:
    """The released SimCLR pipeline (``datasets/data_augmentation.py``) on every image, with
    its crop and colour-jitter parameter draws recorded as they are made.

    Returns:
      (draws as in ``parity_lib.our_simclr_params``, outputs [N, 32, 32, 3] in [0, 1]).
    """
    from datasets import data_augmentation
    from PIL import Image

    pipeline = data_augmentation.get_simclr_pipeline_transform(images.shape[1], strength)
    crop, jitter = pipeline.transforms[0], pipeline.transforms[2].transforms[0]
    boxes, colours = [], []
    crop.get_params = _recording(boxes, type(crop).get_params)
    jitter.get_params = _recording(colours, type(jitter).get_params)
    views = np.stack([pipeline(Image.fromarray(im)).numpy().transpose(1, 2, 0) for im in images])
    box = np.asarray([b[2:] for b in boxes], np.float64)  # (h, w)
    order = [pl.ORDERS.index(tuple(c[0].tolist())) for c in colours]
    factors = np.asarray([[float(v) for v in c[1:]] for c in colours])
    return dict(
        area=box[:, 0] * box[:, 1] / images.shape[1] ** 2,
        aspect=box[:, 1] / box[:, 0],
        jitter_rate=len(colours) / len(images),
        brightness=factors[:, 0],
        contrast=factors[:, 1],
        saturation=factors[:, 2],
        hue=factors[:, 3],
        order=np.asarray(order),
    ), views


def ks_row(rows: list, name: str, ours, theirs) -> None:
    from scipy import stats

    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.ndim == 2:  # one test per channel: the worst channel is the row
        tests = [stats.ks_2samp(ours[:, c], theirs[:, c]) for c in range(ours.shape[1])]
    else:
        tests = [stats.ks_2samp(ours, theirs)]
    worst = min(tests, key=lambda t: t.pvalue)
    crit = C_MIN * math.sqrt(1 / len(ours) + 1 / len(theirs))
    rows.append(
        dict(
            check=f"{name}: KS distance",
            max_rel_diff=float(worst.statistic),
            tolerance=crit,
            ok=bool(worst.pvalue >= P_MIN),
            note=f"p = {worst.pvalue:.3g}",
        )
    )


def rate_row(rows: list, name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    from scipy import stats

    n1, n2, k1, k2 = len(ours), len(theirs), int(ours.sum()), int(theirs.sum())
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)) or 1.0
    diff = k1 / n1 - k2 / n2
    p = float(2 * stats.norm.sf(abs(diff) / se))
    crit = float(stats.norm.isf(P_MIN / 2) * se)
    rows.append(
        dict(
            check=f"{name}: rate difference",
            max_rel_diff=abs(diff),
            tolerance=crit,
            ok=bool(p >= P_MIN),
            note=f"ours {k1 / n1:.3f}, released {k2 / n2:.3f}, z-test p = {p:.3g}",
        )
    )


def order_row(rows: list, name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    from scipy import stats

    counts = np.stack([np.bincount(x, minlength=len(pl.ORDERS)) for x in (ours, theirs)])
    test = stats.chi2_contingency(counts)
    rows.append(
        dict(
            check=f"{name}: chi-square statistic",
            max_rel_diff=float(test.statistic),
            tolerance=float(stats.chi2.isf(P_MIN, test.dof)),
            ok=bool(test.pvalue >= P_MIN),
            note=f"p = {test.pvalue:.3g} (24 orders)",
        )
    )


def check_augment(data_dir: str, rows: list) -> None:
    import jax

    from ltr_jax.data.input import augment

    a = pl.AUGMENT
    images = cifar_images(data_dir, a["draws"], a["seed"])
    if images is None:
        rows.append(
            dict(
                check="f. SimCLR augmentation",
                max_rel_diff=float("nan"),
                tolerance=0.0,
                ok=False,
                note=f"{data_dir}/cifar10_jpeg_bytes.npz missing",
            )
        )
        return
    np.random.seed(a["seed"])  # the released blur draws sigma from NumPy's global generator
    fixture, source_gray = {}, pl.output_stats(augment.to_float(images))["gray"]
    for s in a["strengths"]:
        theirs, their_views = released_simclr(images, s)
        ours = pl.our_simclr_params(s, a["draws"], a["seed"])
        our_views = augment.simclr(jax.random.key(a["seed"]), augment.to_float(images), s)
        mine, them = pl.output_stats(np.asarray(our_views)), pl.output_stats(their_views)
        tag = f"f. s = {s:g}"
        ks_row(rows, f"{tag} crop area / image area", ours["area"], theirs["area"])
        ks_row(rows, f"{tag} crop aspect ratio (w / h)", ours["aspect"], theirs["aspect"])
        rate_row(
            rows,
            f"{tag} colour jitter applied",
            ours["jitter"],
            np.arange(a["draws"]) < round(theirs["jitter_rate"] * a["draws"]),
        )
        for k in ("brightness", "contrast", "saturation", "hue"):
            ks_row(
                rows,
                f"{tag} {k} {'shift' if k == 'hue' else 'factor'} drawn",
                ours[k][ours["jitter"]],
                theirs[k],
            )
        order_row(
            rows,
            f"{tag} order of the four jitter ops",
            ours["order"][ours["jitter"]],
            theirs["order"],
        )
        rate_row(rows, f"{tag} grayscale outputs (R = G = B)", mine["gray"], them["gray"])
        for k in ("mean", "std"):
            ks_row(rows, f"{tag} output per-channel {k} (worst of R, G, B)", mine[k], them[k])
        for k in ("saturation", "value"):
            ks_row(rows, f"{tag} output mean HSV {k}", mine[k], them[k])
        theirs["jitter"] = np.ones(len(theirs["hue"]), bool)  # their factors: jittered views only
        colour = ~source_gray  # views made gray by the pipeline, not gray to begin with
        fixture[f"s{s:g}"] = pl.augment_fixture_stats(
            theirs, theirs["jitter_rate"], float(them["gray"][colour].mean())
        )
        # The pixel outputs again on seeded synthetic images, which CI can rebuild.
        synth = pl.augment_images(a["image_seed"], a["draws"])
        _, their_synth = released_simclr(synth, s)
        our_synth = augment.simclr(jax.random.key(a["seed"]), augment.to_float(synth), s)
        mine, them = pl.output_stats(np.asarray(our_synth)), pl.output_stats(their_synth)
        tag = f"f. s = {s:g}, synthetic images"
        rate_row(rows, f"{tag}: grayscale outputs (R = G = B)", mine["gray"], them["gray"])
        for k in ("mean", "std"):
            ks_row(rows, f"{tag}: output per-channel {k} (worst of R, G, B)", mine[k], them[k])
        for k in ("saturation", "value"):
            ks_row(rows, f"{tag}: output mean HSV {k}", mine[k], them[k])
        fixture[f"s{s:g}"]["synthetic_outputs"] = pl.output_fixture_stats(them)
    pl.save_json("augment.json", fixture)


# ---------------------------------------------------------------------------------------------
# g. Many / Medium / Few.


def check_metrics(ref, rows: list) -> None:
    counts = long_tail.long_tail_counts(5000, 10, 100)
    rng = np.random.default_rng(pl.SEED + 5)
    test_labels = np.repeat(np.arange(10), 1000)
    preds = np.where(
        rng.uniform(size=10000) < np.linspace(0.9, 0.3, 10)[test_labels],
        test_labels,
        rng.integers(0, 10, 10000),
    )
    lt = ref.lt_metrics
    groups_theirs = lt.categorize_classes({c: int(n) for c, n in enumerate(counts)}, 500, 200)
    tp, tl = torch.from_numpy(preds), torch.from_numpy(test_labels)
    theirs = [100 * lt.compute_accuracy(tp, tl, g, device="cpu") for g in groups_theirs]
    groups = long_tail.shot_groups(counts, 500, 200)
    report = metrics.classification_report(preds, test_labels, 10, groups)
    ours = [report["many"], report["medium"], report["few"]]
    same_groups = [sorted(g) for g in groups_theirs] == [
        sorted(map(int, g)) for g in (groups.many, groups.medium, groups.few)
    ]
    row(
        rows,
        "g. Many/Medium/Few accuracy (CIFAR-10-LT groups, balanced test set)",
        pl.rel_err(ours, theirs),
        1e-12,
        f"same class groups: {same_groups}",
    )
    pl.save_json(
        "metrics.json", {"groups": [sorted(g) for g in groups_theirs], "many_medium_few": theirs}
    )


# ---------------------------------------------------------------------------------------------
# h. The released IP-DPP sampler.

# Items, subset size and seeds of row h; confidences of very different shapes.
SAMPLER = dict(n=100, k=25, seeds=300)


def released_draw(ref_dir: str, p: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The released sampler's subset of one class: its kernel S and its MCMC k-DPP call."""
    from dppy.finite_dpps import FiniteDPP
    from sampling.ip_dpp_smapler import IPDPPSampler

    sampler = IPDPPSampler(np.zeros((len(p), 1)), np.zeros(len(p), np.int64), class_num=1)
    kernel = sampler.construct_symmetric_matrix(torch.from_numpy(p), device="cpu")
    dpp = FiniteDPP("likelihood", L=kernel.numpy().astype(np.float64))
    dpp.sample_mcmc_k_dpp(size=k, random_state=np.random.RandomState(seed))
    return np.sort(np.asarray(dpp.list_of_samples[0][0]))


def check_sampler(ref_dir: str, rows: list) -> None:
    from scipy import stats

    n, k, seeds = SAMPLER["n"], SAMPLER["k"], SAMPLER["seeds"]
    rng = np.random.default_rng(pl.SEED + 6)
    confidences = {
        "all 0.99": np.full(n, 0.99),
        "uniform": rng.uniform(0, 1, n),
        "bimodal": np.where(rng.uniform(size=n) < 0.5, 0.01, 0.99),
    }
    subsets = {name: released_draw(ref_dir, p, k, 42) for name, p in confidences.items()}
    same = all(np.array_equal(s, subsets["all 0.99"]) for s in subsets.values())
    row(
        rows,
        "h. released subset (seed 42) for 3 confidence profiles: identical",
        0.0 if same else 1.0,
        0.0,
        "the subset ignores p",
    )
    p = confidences["bimodal"]
    counts = np.zeros(n)
    for seed in range(seeds):
        counts[released_draw(ref_dir, p, k, seed)] += 1
    ours = pl.uniform_inclusion_counts(n, k, seeds)
    chi2 = stats.chi2_contingency(np.stack([counts, ours]))
    # Inclusion of low- vs high-confidence items: the IP-DPP would favour low p.
    low = counts[p < 0.5].sum() / max((p < 0.5).sum(), 1) / seeds
    high = counts[p >= 0.5].sum() / max((p >= 0.5).sum(), 1) / seeds
    row(
        rows,
        f"h. inclusion counts, released vs ours (uniform), {seeds} draws: chi2 p-value",
        float(chi2.pvalue < 0.01),
        0.0,
        f"p-value {chi2.pvalue:.3f} (>= 0.01 passes); inclusion low-p {low:.3f} vs high-p "
        f"{high:.3f} (k/n {k / n:.3f})",
    )
    pl.save_json(
        "sampler.json",
        {
            "subset_seed42": subsets["all 0.99"].tolist(),
            "inclusion_counts": counts.tolist(),
            **SAMPLER,
        },
    )


def print_table(rows: list) -> None:
    print("| check | max rel. diff (f: test statistic) | tolerance | within | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        ok = (
            ("yes" if r["ok"] else "no") + " (info)"
            if r.get("info")
            else ("yes" if r["ok"] else "**NO**")
        )
        err, tol = f"{r['max_rel_diff']:.2e}", f"{r['tolerance']:.2g}"
        print(f"| {r['check']} | {err} | {tol} | {ok} | {r['note']} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(pl.ROOT)
    parser.add_argument(
        "--reference_dir", default=os.path.join(here, "shared", "reference", "BNS_IPDPP")
    )
    parser.add_argument("--data_dir", default=os.path.join(here, "shared", "data"))
    parser.add_argument(
        "--only",
        default="abcdefgh",
        help="rows to run (letters); fixtures and table.json are written only when every row runs",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ref = load_reference(args.reference_dir)
    rows: list = []
    checks = {
        "a": lambda: check_split(args.reference_dir, args.data_dir, rows),
        "b": lambda: check_forward(ref, rows),
        "c": lambda: check_bns(ref, rows),
        "d": lambda: check_optimizer(ref, rows),
        "e": lambda: check_classifier_steps(ref, rows),
        "f": lambda: check_augment(args.data_dir, rows),
        "g": lambda: check_metrics(ref, rows),
        "h": lambda: check_sampler(args.reference_dir, rows),
    }
    every = set(checks) <= set(args.only)
    if not every:
        pl.FIXTURES = tempfile.mkdtemp(prefix="parity_partial_")  # the fixtures stay as they are
        print(f"partial run (--only {args.only}): fixtures written to {pl.FIXTURES}")
    for letter, check in checks.items():
        if letter in args.only:
            check()
    print_table(rows)
    pl.save_json("table.json", rows)
    return 0 if all(r["ok"] or r.get("info") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
