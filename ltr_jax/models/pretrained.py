"""Pretrained weights from local files (``model.init_from``); nothing is ever downloaded.

Three formats, a registry of readers that each return a state dict of NumPy arrays:

- ``timm``: a timm / Hugging Face Hub ``safetensors`` state dict (PyTorch layouts, names such
  as ``blocks.0.attn.qkv.weight``), read with the ``safetensors`` NumPy API (no torch);
- ``big_vision``: a big_vision / AugReg ``.npz`` ViT checkpoint (Flax layouts, names such as
  ``Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel``), re-laid out
  to the timm names; big_vision's own class-token ViTs keep a top-level ``pos_embedding`` of
  the patch grid only (the class token gets none): its class-token entry becomes 0;
- ``ltr_jax``: a model that ``python -m ltr_jax.export`` wrote (``model.safetensors``, told
  apart by its metadata): our own flat names (``encoder.layers.0.conv1.kernel``) and layouts,
  BatchNorm statistics included, loaded as they are (`load_exported`).

The timm names match the module attributes of ltr_jax's encoders (:mod:`ltr_jax.models.vit`,
:mod:`ltr_jax.models.swin`): ``weight`` is a ``kernel`` (transposed) or a LayerNorm ``scale``.
Position embeddings of another grid are resized (bicubic interpolation of the grid); the
classifier ``head`` is kept only when asked for (and its shape matches). The report lists
missing, unexpected, resized and dropped keys.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltr_jax.errors import UserError

HEAD_PREFIXES = ("head.", "head_dist.", "pre_logits.")
# Buffers that timm recomputes and we compute on the fly.
_IGNORED = ("relative_position_index", "attn_mask")


class InitFromError(UserError, ValueError):
    """``model.init_from`` cannot initialise the model: unreadable, or of another family."""


class InitFromNotFoundError(InitFromError, FileNotFoundError):
    """``model.init_from`` names a file that does not exist."""


def read_timm(path: str) -> dict[str, np.ndarray]:
    """A ``safetensors`` state dict as NumPy arrays (bfloat16 tensors become float32)."""
    from safetensors.numpy import load_file  # imported here: only runs that load need it

    return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}


def _qkv_from_big_vision(block: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """query / key / value kernels [D, H, hd] and biases [H, hd] -> timm's qkv [3D, D], [3D]."""
    d = block[f"{prefix}/query/kernel"].shape[0]
    kernels = [block[f"{prefix}/{n}/kernel"].reshape(d, -1) for n in ("query", "key", "value")]
    biases = [block[f"{prefix}/{n}/bias"].reshape(-1) for n in ("query", "key", "value")]
    out = block[f"{prefix}/out/kernel"]  # [H, hd, D]
    return {
        "attn.qkv.weight": np.concatenate(kernels, axis=1).T,
        "attn.qkv.bias": np.concatenate(biases),
        "attn.proj.weight": out.reshape(-1, out.shape[-1]).T,
        "attn.proj.bias": block[f"{prefix}/out/bias"],
    }


def _big_vision_block(block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One ``encoderblock_i`` (AugReg numbering LayerNorm_0/2, or big_vision's LayerNorm_0/1)."""
    out = {}
    norms = sorted({k.split("/")[0] for k in block if k.startswith("LayerNorm_")})
    for name, norm in zip(("norm1", "norm2"), norms):
        out[f"{name}.weight"], out[f"{name}.bias"] = block[f"{norm}/scale"], block[f"{norm}/bias"]
    (attn,) = {k.split("/")[0] for k in block if k.startswith("MultiHeadDotProductAttention")}
    out.update(_qkv_from_big_vision(block, attn))
    (mlp,) = {k.split("/")[0] for k in block if k.startswith("MlpBlock")}
    for i, fc in enumerate(("fc1", "fc2")):
        out[f"mlp.{fc}.weight"] = block[f"{mlp}/Dense_{i}/kernel"].T
        out[f"mlp.{fc}.bias"] = block[f"{mlp}/Dense_{i}/bias"]
    return out


_BIG_VISION_TOP = {
    "cls": "cls_token",
    "Transformer/posembed_input/pos_embedding": "pos_embed",
    "Transformer/pos_embedding": "pos_embed",
    "pos_embedding": "pos_embed",
    "Transformer/encoder_norm/scale": "norm.weight",
    "Transformer/encoder_norm/bias": "norm.bias",
    "embedding/bias": "patch_embed.proj.bias",
    "head/bias": "head.bias",
    "pre_logits/bias": "pre_logits.fc.bias",
}


def read_big_vision(path: str) -> dict[str, np.ndarray]:
    """A big_vision / AugReg ViT ``.npz`` re-laid out as a timm state dict."""
    with np.load(path) as f:
        flat = {k.removeprefix("params/"): np.asarray(f[k], np.float32) for k in f.files}
    out, blocks = {}, {}
    for key, value in flat.items():
        m = re.match(r"Transformer/encoderblock_(\d+)/(.*)", key)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key in _BIG_VISION_TOP:
            out[_BIG_VISION_TOP[key]] = value
        elif key == "embedding/kernel":  # [p, p, 3, D] -> [D, 3, p, p]
            out["patch_embed.proj.weight"] = value.transpose(3, 2, 0, 1)
        elif key in ("head/kernel", "pre_logits/kernel"):
            out[key.split("/")[0] + (".weight" if key[0] == "h" else ".fc.weight")] = value.T
        else:
            out[key] = value  # reported as unexpected
    for i, block in blocks.items():
        out.update({f"blocks.{i}.{k}": v for k, v in _big_vision_block(block).items()})
    pos = flat.get("pos_embedding")
    if pos is not None and "cls" in flat and int(np.sqrt(pos.shape[1])) ** 2 == pos.shape[1]:
        # big_vision's own ViT adds ``pos_embedding`` to the patches before it prepends the
        # class token: in timm's layout (one embedding per token) the class token's is 0.
        out["pos_embed"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    return out


def read_ltr_jax(path: str) -> dict[str, np.ndarray]:
    """A model exported by ``python -m ltr_jax.export``: our own flat names and layouts."""
    from safetensors.numpy import load_file  # imported here: only runs that load need it

    return dict(load_file(path))


FORMATS = {"timm": read_timm, "big_vision": read_big_vision, "ltr_jax": read_ltr_jax}
_SUFFIX_FORMAT = {".safetensors": "timm", ".npz": "big_vision"}
EXPORT_FORMAT = "ltr_jax"  # the ``format`` metadata of an exported model.safetensors


def _is_export(path: str) -> bool:
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        return (f.metadata() or {}).get("format") == EXPORT_FORMAT


def _is_export_safely(path: str) -> bool:
    try:
        return _is_export(path)
    except Exception:  # an unreadable file: read_state_dict names it
        return False


def resolve_format(path: str, fmt: str = "auto") -> str:
    """The format of a local checkpoint: ``fmt``, or for ``auto`` by its suffix (a
    ``.safetensors`` that ``ltr_jax.export`` wrote says so in its metadata)."""
    if not os.path.isfile(path):
        raise InitFromNotFoundError(
            f"model.init_from={path} does not exist (nothing is downloaded): give the path of "
            "a local .safetensors (timm, or an ltr_jax export) or .npz (big_vision) file."
        )
    if fmt == "auto":
        fmt = _SUFFIX_FORMAT.get(os.path.splitext(path)[1])
        if fmt is None:
            raise InitFromError(
                f"Cannot tell the format of model.init_from={path} from its suffix: set "
                f"model.init_format to one of {', '.join(FORMATS)}."
            )
        if fmt == "timm" and _is_export_safely(path):
            fmt = EXPORT_FORMAT
    if fmt not in FORMATS:
        raise InitFromError(
            f"Unknown model.init_format {fmt!r}; valid: auto, {', '.join(FORMATS)}."
        )
    return fmt


def read_state_dict(path: str, fmt: str = "auto", prefix: str = "") -> dict[str, np.ndarray]:
    """Reads a local checkpoint as a dict (timm names, or ours for an ``ltr_jax`` export);
    ``prefix`` is stripped from its keys."""
    fmt = resolve_format(path, fmt)
    try:
        state = FORMATS[fmt](path)
    except Exception as e:  # safetensors, zipfile and NumPy raise many types for a bad file
        message = " ".join(str(e).split())[:200]
        raise InitFromError(
            f"model.init_from={path} cannot be read as a {fmt} checkpoint ({type(e).__name__}: "
            f"{message}): give a timm .safetensors or a big_vision .npz file, or set "
            "model.init_format to its format."
        ) from e
    return {k.removeprefix(prefix): v for k, v in state.items() if not k.endswith(_IGNORED)}


def exported_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """``{"encoder.layers.0.conv1.kernel": array, ...}``: every parameter and BatchNorm
    statistic of a model by its path (what ``ltr_jax.export`` writes)."""
    flat = nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat}


def load_exported(model: nnx.Module, state: dict[str, np.ndarray], *, keep_head: bool) -> dict:
    """Loads an ``ltr_jax`` export (`exported_state` names) into ``model``, in place: the
    encoder's parameters and statistics, and the head's when ``keep_head``.

    Returns:
      The report, as `load_into`'s.
    """
    flat = nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    ours = {".".join(map(str, p)): v for p, v in flat}
    if not keep_head:
        ours = {k: v for k, v in ours.items() if not k.startswith("head.")}
    report = {"loaded": [], "unexpected": [], "resized": [], "dropped_head": []}
    for name, value in sorted(state.items()):
        if name.startswith("head.") and not keep_head:
            report["dropped_head"].append(name)
            continue
        if name not in ours:
            report["unexpected"].append(name)
            continue
        target = ours.pop(name)
        if value.shape != target.get_value().shape:
            raise ValueError(
                f"{name}: shape {value.shape} in the file, {target.get_value().shape} in the "
                "model: pick the matching encoder (and model.init_head=False for other classes)."
            )
        target.set_value(jnp.asarray(value, target.get_value().dtype))
        report["loaded"].append(name)
    report["missing"] = sorted(ours)
    return report


def resize_pos_embed(pos: np.ndarray, tokens: int, prefix: int) -> np.ndarray:
    """[1, T_old, D] position embeddings -> [1, tokens, D]: the grid bicubically resized.

    The checkpoint's prefix tokens (class token) are those beyond the largest square; they are
    kept if the model has ``prefix`` of them and dropped if it has none.
    """
    n_old, d = pos.shape[1], pos.shape[2]
    old_side = int(np.sqrt(n_old))
    old_prefix = n_old - old_side**2
    new_side = int(round(np.sqrt(tokens - prefix)))
    grid = pos[0, old_prefix:].reshape(old_side, old_side, d)
    grid = jax.image.resize(jnp.asarray(grid), (new_side, new_side, d), "bicubic")
    head = pos[0, :old_prefix][:prefix]
    return np.concatenate([head, np.asarray(grid).reshape(-1, d)])[None]


def _to_ours(name: str, value: np.ndarray, ours: dict) -> tuple[tuple, np.ndarray]:
    """The path in ``ours`` that a timm key names, and the value in our layout."""
    parts = tuple(int(p) if p.isdigit() else p for p in name.split("."))
    if parts[0] == "head" and parts[1] != "fc":
        parts = ("head", "fc") + parts[1:]  # ViT's ``head`` is our LinearHead's ``head.fc``
    if parts[-1] == "weight":
        if parts[:-1] + ("kernel",) in ours:
            layout = {2: (1, 0), 4: (2, 3, 1, 0)}.get(value.ndim)  # Linear, Conv (OIHW -> HWIO)
            return parts[:-1] + ("kernel",), value.transpose(layout) if layout else value
        return parts[:-1] + ("scale",), value
    return parts, value


def _flat_params(model: nnx.Module, section: str) -> dict[tuple, nnx.Variable]:
    """``{path within section: Param}`` of the model's ``section`` (encoder or head)."""
    return {
        path[1:]: v
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if path[0] == section
    }


def load_into(model: nnx.Module, state: dict[str, np.ndarray], *, keep_head: bool) -> dict:
    """Loads a timm-named state dict into ``model.encoder`` (and ``model.head``), in place.

    Returns:
      The report: ``loaded``, ``missing`` (our parameters absent from the file), ``unexpected``
      (file keys matching nothing), ``resized`` and ``dropped_head`` keys.
    """
    enc = _flat_params(model, "encoder")
    head = _flat_params(model, "head") if keep_head and hasattr(model, "head") else {}
    ours = {**enc, **{("head",) + k: v for k, v in head.items()}}
    report = {"loaded": [], "unexpected": [], "resized": [], "dropped_head": []}
    for name, value in sorted(state.items()):
        if name.startswith(HEAD_PREFIXES) and not head:
            report["dropped_head"].append(name)
            continue
        path, value = _to_ours(name, value, ours)
        if path not in ours:
            report["unexpected"].append(name)
            continue
        target = ours.pop(path)
        if path[-1] == "pos_embed" and value.shape != target.shape:
            value = resize_pos_embed(value, target.shape[1], target.shape[1] - _grid_tokens(model))
            report["resized"].append(name)
        if value.shape != target.shape:
            raise InitFromError(
                f"{name}: shape {value.shape} in the file, {target.shape} in "
                f"model {'.'.join(map(str, path))}: pick the matching encoder."
            )
        target.set_value(jnp.asarray(value, target.get_value().dtype))
        report["loaded"].append(name)
    report["missing"] = sorted(".".join(map(str, p)) for p in ours)
    return report


def check_init_from(make_model: Callable[[], nnx.Module], model_config) -> None:
    """Loads ``model.init_from`` (if set) into an abstract model (`nnx.eval_shape`: no
    parameter is allocated) to refuse a bad file before anything is written or trained.

    Raises:
      InitFromError: as `init_from_config`.
    """
    if model_config.get("init_from"):
        _load_file(nnx.eval_shape(make_model), model_config)


def _load_file(model: nnx.Module, model_config) -> dict:
    path = model_config.init_from
    fmt = resolve_format(path, model_config.init_format)
    state = read_state_dict(path, fmt, model_config.init_prefix)
    load = load_exported if fmt == EXPORT_FORMAT else load_into
    report = load(model, state, keep_head=model_config.init_head)
    if not report["loaded"]:
        example = ", ".join(sorted(state)[:3])
        raise InitFromError(
            f"model.init_from={path} sets no parameter of model.encoder={model_config.encoder} "
            f"(its keys look like {example}): give a checkpoint of this encoder's family, or "
            "set model.init_prefix to the prefix its keys carry."
        )
    return report


def _grid_tokens(model: nnx.Module) -> int:
    return model.encoder.grid**2


def init_from_config(model: nnx.Module, model_config) -> dict | None:
    """Applies ``model.init_from`` (if set) to a freshly built model; returns the report.

    Raises:
      InitFromError: the file is missing or unreadable, sets none of the encoder's parameters
        (another family, or a wrong prefix) or holds a tensor of another shape.
    """
    path = model_config.get("init_from")
    if not path:
        return None
    report = _load_file(model, model_config)
    counts = {k: len(v) for k, v in report.items()}
    logging.info("init_from %s: %s.", path, counts)
    for kind in ("missing", "unexpected", "resized"):
        if report[kind]:
            logging.warning("init_from %s: %s keys: %s", path, kind, ", ".join(report[kind]))
    return report
