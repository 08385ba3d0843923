"""The base experiment config: every key a run may set, with its default.

Config files in ``configs/`` start from ``base_config()`` and change values; they never add
keys, so a misspelt override (``--config.data.imbalance_factr=50``) fails, naming the valid
keys. Derived values (steps per epoch, scaled learning rate, k per class) are computed by
functions at run time and never written back. Nothing here calls JAX.
"""

from __future__ import annotations

import importlib.util
import math
import os

import ml_collections as mlc
from ml_collections import config_dict

from ltr_jax.data.datasets import registry
from ltr_jax.errors import UserError

SMOKE_PER_CLASS = 50  # ``:smoke`` on your own data: at most this many images per class


def optim(name: str = "adamw", lr: float = 1e-3, lr_base_batch: int = 256, **kw) -> mlc.ConfigDict:
    """An optimizer section: peak lr = lr * batch_size / lr_base_batch, warm-up then cosine."""
    c = mlc.ConfigDict(
        dict(
            name=name,
            lr=lr,
            lr_base_batch=lr_base_batch,
            b1=0.9,
            b2=0.95,
            momentum=0.9,
            nesterov=False,
            weight_decay=0.05,
            warmup_epochs=5.0,
            layer_decay=1.0,  # < 1: layer-wise lr decay (fine-tuning ViTs); 1: off
            clip_grad_norm=0.0,
        )  # > 0: clip the global gradient norm; 0: off
    )
    c.update(kw)
    return c


def supervised_section(**kw) -> mlc.ConfigDict:
    """A stage trained from scratch with a classification loss (the ``ce`` baseline family)."""
    c = mlc.ConfigDict(
        dict(
            epochs=200,
            batch_size=128,
            sampler="uniform",  # uniform | class_balanced
            augment="crop_flip",  # crop_flip | simclr
            augment_strength=1.0,
            loss="ce",  # ce | balanced_softmax | logit_adjust | ldam (losses.classification)
            logit_adjust=dict(tau=1.0),  # the prior's weight: logits + tau * log prior
            head="linear",  # linear | cosine (LDAM's normalised classifier)
            # max_margin: margin of the rarest class (m_c ~ n_c^(-1/4)); scale: LDAM's logit
            # scale s (for cosine logits).
            ldam=dict(max_margin=0.5, scale=30.0),
            drw_start_epoch=-1,  # deferred re-weighting from this epoch on; -1: never
            drw_beta=0.9999,  # class-balanced weights (1 - beta) / (1 - beta^n_c)
            optim=optim("sgd", lr=0.1, lr_base_batch=128, weight_decay=2e-4, warmup_epochs=5.0),
        )
    )
    c.update(kw)
    return c


def base_config() -> mlc.ConfigDict:
    """All keys with defaults (CIFAR-10-LT IF 100, cross-entropy ResNet-32)."""
    c = mlc.ConfigDict()
    c.seed = 0
    c.pipeline = ("ce",)  # stage names run in order; see ltr_jax.pipeline.STAGES
    c.data = mlc.ConfigDict(
        dict(
            # In device memory: cifar10 | cifar100 | synthetic.
            # Streamed from disk: imagenet_lt | inaturalist2018 | synthetic_jpeg.
            # Your own data: image_folder | arrays | tfds:<name> | register_dataset() names.
            name="cifar10",
            data_dir=config_dict.placeholder(str),  # TFDS data_dir; None: TFDS default
            manual_dir=config_dict.placeholder(str),  # folder holding the official download
            split_dir=config_dict.placeholder(str),  # ImageNet-LT / iNat lists; None: manual_dir
            test_split="test",  # imagenet_lt: test (50k) | val (20k, from the train images)
            download=True,
            allow_unverified_archive=False,
            imbalance_factor=100,  # CIFAR / synthetic only (the large sets come long-tailed)
            many_threshold=100,  # Many: more training images than this (CIFAR-10 configs: 500)
            few_threshold=20,  # Few: fewer training images than this (CIFAR-10 configs: 200)
            image_size=224,  # streamed datasets: side of the crops
            num_workers=0,  # streamed datasets: decoding threads per process; 0: its CPU cores
            prefetch_steps=2,  # streamed datasets: batches decoded ahead
            worker_processes=0,  # streamed: decode in N processes instead of threads (0: threads)
            # Your own dataset (README "Your own dataset"): image_folder / arrays / tfds:<name>.
            train_path=config_dict.placeholder(str),  # root/<class>/<image> folder, or .npz(s)
            test_path=config_dict.placeholder(str),  # None: hold out test_fraction of train
            test_fraction=0.2,  # per class, seeded by split_seed, when test_path is None
            split_seed=0,
            tfds=dict(image_key="image", label_key="label", train_split="train", test_split="test"),
            class_counts=(),  # explicit per-class train counts (instead of imbalance_factor)
            max_per_class=0,  # at most this many images per class in each split (0: all)
            dataset_name="",  # the name in results and reports ("": folder/file name, or name)
            stream_above=20000,  # image_folder: stream (not decode into memory) above this
            jpeg_draft=True,  # format=jpeg: decode at 1/2..1/8 size where every crop allows
            format="jpeg",  # streamed: jpeg (decode every epoch) | decoded (a store, decoded once)
            decoded_size=256,  # format=decoded: side S of the stored centre squares
            decoded_dir=config_dict.placeholder(str),  # the store; None: <data_dir>/ltr_decoded/..
            prepare_processes=0,  # format=decoded: processes decoding the store once; 0: cores
            synthetic=dict(
                num_classes=10, train_per_class=100, test_per_class=20, seed=0, jpeg_sizes=(40, 56)
            ),
        )
    )
    c.model = mlc.ConfigDict(
        dict(
            encoder="cifar_resnet32", dtype="float32", proj_hidden=2048, proj_dim=128, init="flax"
        )  # init: flax | torch (PyTorch's default initialisers, released code)
    )
    c.model.update(  # transformer encoders, local pretrained weights (README: Transformers)
        drop_path_rate=config_dict.placeholder(float),  # None: the encoder's default
        init_from=config_dict.placeholder(str),  # a local .safetensors (timm) / .npz (big_vision)
        init_format="auto",  # auto (from the suffix) | timm | big_vision | ltr_jax (export)
        init_prefix="",  # stripped from the file's keys, e.g. "module."
        init_head=False,  # also load the file's classifier head (same number of classes)
    )
    c.model.bn_running_var = "biased"  # biased (Flax) | unbiased (PyTorch, the released code)
    c.train = mlc.ConfigDict(
        dict(
            log_every_steps=50,
            eval_every_epochs=10.0,  # 0: only at the end
            checkpoint_every_steps=0,  # 0: by time only (checkpoint_every_minutes)
            checkpoint_every_minutes=10.0,  # also at the end and at a stop; 0: by steps only
            max_checkpoints=2,
            eval_batch_size=512,
            tensorboard=True,
            stop_on_nonfinite=True,  # stop a stage at a log step whose loss is NaN or inf
        )
    )
    c.ce = supervised_section()
    c.stage1 = mlc.ConfigDict(
        dict(
            epochs=1000,
            batch_size=1024,
            augment_strength=2.0,  # SimCLR strength s (the reference code's stage-1 value)
            loss="bns",  # bns | supcon (Khosla et al. 2020, an ablation)
            views_through_bn="joint",  # joint (one pass) | separate (a pass per view: released)
            bns=dict(form="reference", tau=0.5, m=4),  # form: reference | paper
            supcon=dict(tau=0.1),
            optim=optim("adamw", lr=1e-3, lr_base_batch=256, warmup_epochs=20.0),
        )
    )
    c.probe = mlc.ConfigDict(
        dict(
            encoder_from="stage1",  # stage1 | random (an untrained encoder, for comparison)
            per_class=100,  # class-balanced subset size (smaller classes whole)
            epochs=100,
            batch_size=64,
            augment="none",  # none (features once) | simclr (a view per step: released code)
            augment_strength=2.0,  # SimCLR strength s of augment="simclr"
            encoder_bn="eval",  # augment="simclr": eval | train (BatchNorm mode: released)
            drop_last=True,  # False: keep each epoch's last partial batch (released code)
            optim=optim("adamw", lr=2.5e-4, lr_base_batch=64, warmup_epochs=20.0),
        )
    )
    c.crt = mlc.ConfigDict(
        dict(
            epochs=10,  # classifier re-training on the frozen ``ce`` encoder (Kang et al. 2020)
            batch_size=128,
            sampler="class_balanced",  # class_balanced | uniform
            optim=optim("sgd", lr=0.2, lr_base_batch=512, weight_decay=5e-4, warmup_epochs=0.0),
        )
    )
    c.stage2 = mlc.ConfigDict(
        dict(
            head_init="probe",  # probe | random (the reference code's fresh head)
            train="all",  # all | head (frozen encoder, BatchNorm in eval mode)
            p_source="clean",  # clean | augmented (the reference code's choice)
            sampler="structured",  # an ltr_jax.dpp.METHODS name; "uniform" = reference code
            kernel_scale="paper",  # paper (alpha 1/N) | reference (alpha 1/N^2)
            k_per_class=0,  # 0: 10 x the smallest class count
            redraw_every_epochs=10,
            redraw_rule="every",  # every (epochs 0, E, 2E..) | reference (0, E-1, 2E-1..)
            fixed_subset=False,  # True: every draw uses the first draw's key (released code)
            # Beyond the paper (README "Beyond the paper"); the defaults are the paper's.
            subset="paper",  # paper (over k cut to k, others whole) | balanced (k each) | sqrt
            loss="ce",  # ce | balanced_softmax | logit_adjust | ldam, prior of the current subset
            logit_adjust=dict(tau=1.0),  # logits + tau * log prior of the current subset
            # margins m_c ~ n_c^(-1/4) of the subset's counts; scale 1: the head is linear
            ldam=dict(max_margin=0.5, scale=1.0),
            seed=-1,  # the stage's own seed (-1: config.seed): stage-2 seeds on one stage 1
            drop_last=True,  # False: keep each epoch's last partial batch (released code)
            epochs=100,
            batch_size=64,
            augment="simclr",
            augment_strength=1.0,
            optim=optim("adamw", lr=2.5e-4, lr_base_batch=64, warmup_epochs=5.0),
        )
    )
    return c


def smoke(config: mlc.ConfigDict) -> mlc.ConfigDict:
    """Shrinks any config to a CPU run of seconds per stage (``:smoke``).

    A config of a streamed dataset (ImageNet-LT, iNaturalist) gets synthetic JPEGs through
    the same streaming pipeline, at 32 x 32; CIFAR configs synthetic arrays in device memory.
    Any other dataset (your own: image_folder, arrays, tfds:<name>, ...) is kept, cut to a
    fixed subset of at most ``SMOKE_PER_CLASS`` images per class in each split (more when
    ``data.imbalance_factor`` or ``data.class_counts`` need them: the cap comes before the long
    tail, whose smallest class keeps 1 / IF of the largest). The dataset registry's entry
    says which (`registry.DatasetEntry.smoke`).
    """
    entry = registry.DATASETS.get(config.data.name)  # None: tfds:<name>, or not yet registered
    streamed = entry is not None and entry.kind == "streamed"
    if entry is not None and entry.smoke:
        config.data.update(
            name=entry.smoke,
            imbalance_factor=10,
            many_threshold=50,
            few_threshold=20,
        )
    else:  # the cap comes before the long tail: keep room for the smallest class's one image
        counts = tuple(config.data.class_counts)
        config.data.max_per_class = max(
            SMOKE_PER_CLASS, math.ceil(config.data.imbalance_factor), *counts
        )
    if streamed:
        config.data.update(image_size=32, num_workers=2, decoded_size=40, prepare_processes=1)
    config.model.update(encoder="cifar_resnet8", proj_hidden=64, proj_dim=32, dtype="float32")
    config.train.update(
        log_every_steps=5, eval_every_epochs=1.0, checkpoint_every_steps=10, eval_batch_size=64
    )
    config.ce.update(epochs=2, batch_size=32)
    config.ce.optim.warmup_epochs = 0.5
    config.stage1.update(epochs=2, batch_size=32)
    config.stage1.optim.warmup_epochs = 0.5
    config.crt.update(epochs=2, batch_size=16)
    config.probe.update(epochs=3, batch_size=16, per_class=20)
    config.probe.optim.update(lr=1e-2, warmup_epochs=1.0)
    config.stage2.update(epochs=4, batch_size=16, redraw_every_epochs=2, k_per_class=20)
    config.stage2.optim.warmup_epochs = 0.5
    return config


def reference_switches(
    config: mlc.ConfigDict, *, probe_strength: float, k: int, redraw_every: int
) -> mlc.ConfigDict:
    """Sets every behaviour of the paper's released code on a CIFAR recipe (in place).

    The values of README "Differences from the released code"; ``configs/reference/``.
    """
    config.model.init = "torch"
    config.model.bn_running_var = "unbiased"
    config.train.eval_every_epochs = 1.0
    config.stage1.views_through_bn = "separate"
    config.probe.update(
        augment="simclr", augment_strength=probe_strength, encoder_bn="train", drop_last=False
    )
    config.stage2.update(
        head_init="random",
        p_source="augmented",
        sampler="uniform",
        kernel_scale="reference",
        fixed_subset=True,
        redraw_rule="reference",
        k_per_class=k,
        redraw_every_epochs=redraw_every,
        augment_strength=1.0,
        drop_last=False,
    )
    return config


def apply_arg(config: mlc.ConfigDict, arg: str | None) -> mlc.ConfigDict:
    """Applies a config-file argument: None (the full recipe) or ``smoke``."""
    if arg == "smoke":
        return smoke(config)
    if arg:
        raise ValueError(f"Unknown config argument {arg!r}; valid: smoke (or none).")
    return config


def unknown_key(config, reference=None, prefix: str = "") -> tuple[str, list[str]] | None:
    """The first key of ``config`` that ``base_config()`` lacks, as (dotted key, the valid
    keys beside it); None when every key is known. Config files change values and never add
    keys, so an unknown key is a misspelt one (``config.data.imbalance_factr = 50``)."""
    reference = base_config() if reference is None else reference
    for key in config.keys():
        if key not in reference:
            return prefix + key, sorted(reference.keys())
        value, known = config[key], reference[key]
        if hasattr(value, "keys") and hasattr(known, "keys"):
            found = unknown_key(value, known, f"{prefix}{key}.")
            if found is not None:
                return found
    return None


class ConfigFileError(UserError, ValueError):
    """A config file that cannot give a config: missing, broken, or without ``get_config``."""


def load_config_file(path: str, arg: str | None = None) -> mlc.ConfigDict:
    """``get_config(arg)`` of a config file, e.g. a recipe that another config file extends.

    Args:
      path: the config file; a ``path:arg`` suffix is accepted when ``arg`` is None.
      arg: the config-file argument (None: the full recipe; ``smoke``).

    Returns:
      The (unlocked) config.

    Raises:
      ConfigFileError: the file does not exist, does not import (its line and error named)
        or has no ``get_config``.
    """
    if arg is None:
        path, _, arg = path.partition(":")
    if not os.path.isfile(path):
        raise ConfigFileError(f"Config file {path} does not exist.")
    name = "_ltr_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: say where, not Python's import machinery
        line = e.lineno if isinstance(e, SyntaxError) else _error_line(e, path)
        raise ConfigFileError(
            f"Config file {path} does not import: {type(e).__name__} at line {line}: "
            f"{getattr(e, 'msg', None) or e}. Fix that line (--debug shows the traceback)."
        ) from e
    if not callable(getattr(module, "get_config", None)):
        raise ConfigFileError(
            f"Config file {path} has no get_config(arg=None) function returning the config: "
            "define one (see configs/cifar10_lt.py)."
        )
    try:
        return module.get_config(arg or None)
    except Exception as e:  # e.g. a value of the wrong type for its key, an unknown variant
        message = " ".join(str(e).split())
        raise ConfigFileError(
            f"get_config({arg or None!r}) of config file {path} failed at line "
            f"{_error_line(e, path)}: {type(e).__name__}: {message}"
        ) from e


def _error_line(error: BaseException, path: str) -> int | str:
    """The line of ``path`` where ``error`` was raised ("?" if it was not raised there)."""
    tb, line = error.__traceback__, "?"
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
