"""A trained classifier from a finished run: ``load_classifier(workdir)`` -> `Classifier`.

    clf = ltr_jax.load_classifier("workdirs/cifar10_lt")   # the last finished classifier stage
    probs = clf.predict(images)                             # uint8 [N, H, W, C] -> [N, C]
    clf.class_names[probs.argmax(-1)[0]]

The model is rebuilt from the run's ``config.json`` and the variables of the stage's last
checkpoint (``<stage>/checkpoints``: the state it evaluated); a stage that trained a head on
frozen features (the probe with ``probe.augment="none"``, cRT) takes its encoder from the
stage that exported it (``stage1/encoder``, ``ce/encoder``). Images are prepared exactly as
the run's own evaluation prepared its test images (``Classifier.preprocessing``, recorded in
every ``results.json``): RGB (1 channel replicated, alpha dropped), the shorter side resized
and a centred square cropped. Prediction runs in batches sharded over every device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image, UnidentifiedImageError

from ltr_jax import checkpointing, pipeline, runtime
from ltr_jax.data.datasets import long_tail, records
from ltr_jax.data.datasets import own_data as user_sources
from ltr_jax.data.datasets import registry as dataset_registry
from ltr_jax.data.input import augment
from ltr_jax.data.input import grain_pipeline as streaming
from ltr_jax.errors import UserError
from ltr_jax.models import modes, registry

# Stages whose result is a classifier, and the stage whose exported encoder a head-only
# checkpoint (a head trained on frozen features) runs on.
CLASSIFIER_STAGES: dict[str, str | None] = {
    "ce": None,
    "crt": "ce",
    "probe": "stage1",
    "stage2": None,
}


class InferenceError(UserError, ValueError):
    """A workdir, stage or input that cannot be used for prediction (one line)."""


# preprocessing["kind"] -> image (PIL) -> uint8 [S, S, 3]: the run's evaluation transform.
PREPROCESSING = {
    # Decoded once at load time (in-memory image folders, TFDS, arrays, CIFAR): the shorter
    # side to S, the centred S x S square (identity on an S x S image).
    "fit": lambda image, p: user_sources.fit_image(image, p["image_size"]),
    # Streamed datasets: the shorter side to S / 0.875, the centred S x S square.
    "centre_crop": lambda image, p: streaming.center_crop_image(image, p["image_size"]),
}


_CIFAR_SIZED = ("cifar10", "cifar100", "synthetic")  # 32 x 32 arrays, whatever image_size says


def default_preprocessing(config) -> dict:
    """The evaluation transform of a run whose ``results.json`` does not record it (runs
    before it was recorded): streamed datasets centre-crop, others fit ``data.image_size``
    (32 for the CIFAR family)."""
    data = config.data
    entry = dataset_registry.DATASETS.get(data.name)  # None: tfds:<name> or a user's registration
    if entry is not None and entry.kind == "streamed":
        return dict(kind="centre_crop", image_size=data.image_size)
    size = 32 if data.name in _CIFAR_SIZED else data.image_size
    return dict(kind="fit", image_size=size)


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InferenceError(f"{path} cannot be read ({e}): {what}.") from e


def finished_classifier_stages(workdir: str, config) -> list[str]:
    """The classifier stages of the run's pipeline that wrote their ``results.json``, in
    pipeline order (then the others)."""
    order = list(config.pipeline) + [s for s in CLASSIFIER_STAGES if s not in config.pipeline]
    return [
        s
        for s in dict.fromkeys(order)
        if s in CLASSIFIER_STAGES and os.path.exists(os.path.join(workdir, s, "results.json"))
    ]


def read_run(workdir: str, stage: str | None = None) -> tuple[ml_collections.ConfigDict, str, dict]:
    """(config, stage, the stage's results.json) of a finished run.

    Raises:
      InferenceError: no such workdir, no run in it, or no finished classifier stage (or
        ``stage`` is not one of them).
    """
    if not os.path.isdir(workdir):
        raise InferenceError(f"Workdir {workdir} does not exist: give the --workdir of a run.")
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise InferenceError(f"{workdir} holds no run (no config.json): give a run's --workdir.")
    config = ml_collections.ConfigDict(_read_json(path, "rerun the run to write it again"))
    finished = finished_classifier_stages(workdir, config)
    if stage is None and finished:
        stage = finished[-1]
    if stage not in finished:
        wanted = f"stage {stage!r} is not one of them" if stage else "none is finished"
        raise InferenceError(
            f"{workdir}: no finished classifier stage to use ({wanted}; finished: "
            f"{', '.join(finished) or 'none'}; classifier stages: {', '.join(CLASSIFIER_STAGES)})"
            f": finish one (python run.py --workdir={workdir} ...) or pick a finished one."
        )
    results = _read_json(os.path.join(workdir, stage, "results.json"), "rerun the stage")
    return config, stage, results


def _flat_arrays(tree, prefix: tuple = ()) -> dict[tuple[str, ...], np.ndarray]:
    """``{path: array}`` of a restored (nested-dict) state; NNX's ``value`` leaf dropped."""
    out = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, dict):
            out.update(_flat_arrays(value, path))
        elif value is not None:
            out[path[:-1] if key == "value" else path] = np.asarray(value)
    return out


def stage_variables(workdir: str, stage: str) -> dict[tuple[str, ...], np.ndarray]:
    """The trained variables of a stage's last checkpoint (params, batch stats, frozen ones),
    by path in its model; a head-only model's paths are prefixed with ``head``."""
    directory = os.path.join(workdir, stage, "checkpoints")
    ckpt = checkpointing.Checkpointer(directory, max_to_keep=None)
    raw = ckpt.restore_latest_raw()
    ckpt.close()
    if raw is None:
        raise InferenceError(
            f"{directory} holds no checkpoint, though {stage}/results.json exists: "
            "the workdir is incomplete; copy the whole workdir."
        )
    variables = {}
    for part in ("params", "batch_stats", "frozen"):
        variables.update(_flat_arrays(raw.get(part) or {}))
    if not any(p[0] == "encoder" for p in variables):  # a head trained on features
        variables = {("head",) + p: v for p, v in variables.items()}
    return variables


def _load_encoder(workdir: str, stage: str, source: str, model: nnx.Module) -> None:
    """Loads the encoder that ``source`` exported (``<source>/encoder``) into ``model``."""
    directory = os.path.join(workdir, source, "encoder")
    if not os.path.isdir(directory):
        raise InferenceError(
            f"{stage} is a head on the encoder of {source}, but {directory} holds none "
            f"(e.g. probe.encoder_from=random keeps no encoder): use another --stage."
        )
    ckpt = checkpointing.Checkpointer(directory, max_to_keep=1)
    nnx.update(model.encoder, ckpt.restore_latest(nnx.state(model.encoder)))
    ckpt.close()


def build_model(workdir: str, config, stage: str, num_classes: int) -> nnx.Module:
    """The stage's trained classifier (encoder + head), in eval mode."""
    head = config[stage].get("head", "linear")
    model = registry.make_classifier(config.model, num_classes, rngs=nnx.Rngs(0), head=head)
    variables = stage_variables(workdir, stage)
    head_only = not any(p[0] == "encoder" for p in variables)
    if head_only:
        _load_encoder(workdir, stage, CLASSIFIER_STAGES[stage], model)
    targets = nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    for path, var in targets:
        value = variables.get(tuple(str(p) for p in path))
        if value is None and not (head_only and path[0] == "encoder"):
            where = os.path.join(workdir, stage, "checkpoints")
            raise InferenceError(
                f"{where} lacks {'.'.join(map(str, path))}: it is not a checkpoint of "
                f"this run's {config.model.encoder}; copy the whole workdir again."
            )
        if value is not None:
            var.set_value(jnp.asarray(value, var.get_value().dtype))
    return modes.eval_view(model)


@dataclasses.dataclass
class Classifier:
    """A finished run's classifier: class names, preprocessing, batched jitted prediction.

    Attributes:
      workdir, stage: where it comes from.
      class_names: ``C`` names, in the order of the outputs.
      train_counts: int ``[C]`` training images per class (the run's long-tailed set).
      groups: the Many / Medium / Few classes of the run (``many_threshold``/``few_threshold``).
      preprocessing: the run's evaluation transform (``kind``, ``image_size``).
      config: the run's config (read-only).
      results: the stage's ``results.json``.
      model: the encoder + head in eval mode.
    """

    workdir: str
    stage: str
    class_names: tuple[str, ...]
    train_counts: np.ndarray
    groups: records.ShotGroups
    many_threshold: int
    few_threshold: int
    preprocessing: dict
    config: ml_collections.FrozenConfigDict
    results: dict
    model: nnx.Module
    mesh: jax.sharding.Mesh

    def __post_init__(self):
        graphdef, state = nnx.split(self.model)
        self._state = runtime.put_replicated(self.mesh, state)

        @jax.jit
        def logits_fn(state, images):  # the same computation as a stage's evaluation
            return nnx.merge(graphdef, state)(augment.to_float(images)).astype(jnp.float32)

        self._logits_fn = logits_fn

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.preprocessing["image_size"])

    def batch_size(self, n: int) -> int:
        """The run's ``train.eval_batch_size``, or ``n`` when smaller, as a multiple of the
        device count (every device takes an equal share)."""
        devices = self.mesh.size
        size = min(self.config.train.eval_batch_size, max(n, 1))
        return -(-size // devices) * devices

    def check_images(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        """uint8 [N, S, S, 3] from uint8 [N, S, S] or [N, S, S, C] (C: 1, 3 or 4).

        Raises:
          InferenceError: another dtype, layout or size (one line saying what to give).
        """
        try:
            images = user_sources.to_rgb(images, what)
        except user_sources.DatasetError as e:
            raise InferenceError(str(e)) from e
        size = self.image_size
        if images.shape[1:3] != (size, size):
            raise InferenceError(
                f"{what}: images of {images.shape[1]} x {images.shape[2]}; this model takes "
                f"{size} x {size}: resize them first, or give image files (prepared like the "
                "run's test images)."
            )
        return images

    def device_logits(self, images: jax.Array) -> jax.Array:
        """float32 ``[B, C]`` logits of a uint8 batch already on the mesh (jitted; for
        ``DataInput.map_split``)."""
        return self._logits_fn(self._state, images)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """float32 ``[N, C]`` logits of uint8 images ``[N, S, S(, C)]`` (any N)."""
        images = self.check_images(np.asarray(images))
        if len(images) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        fn = lambda x: self._logits_fn(self._state, x)
        return runtime.apply_in_batches(fn, (images,), self.batch_size(len(images)), self.mesh)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 ``[N, C]`` class probabilities (softmax of `logits`)."""
        return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))

    def load_image(self, path: str) -> np.ndarray:
        """uint8 ``[S, S, 3]``: an image file, prepared as the run's evaluation did.

        Raises:
          InferenceError: the file cannot be read or decoded as an image.
        """
        try:
            with Image.open(path) as image:
                image.load()
                return PREPROCESSING[self.preprocessing["kind"]](image, self.preprocessing)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise InferenceError(
                f"{path} is not a readable image ({type(e).__name__}: {e}): remove or replace it."
            ) from e

    def load_images(self, paths: Sequence[str]) -> np.ndarray:
        """uint8 ``[N, S, S, 3]`` of image files (`load_image`)."""
        out = np.empty((len(paths), self.image_size, self.image_size, 3), np.uint8)
        for i, path in enumerate(paths):
            out[i] = self.load_image(path)
        return out


def load_classifier(workdir: str, stage: str | None = None, *, mesh=None) -> Classifier:
    """The classifier of a finished run.

    Args:
      workdir: the run's workdir (``config.json``, ``<stage>/checkpoints``, results).
      stage: a finished classifier stage (``ce``, ``crt``, ``probe``, ``stage2``); None: the
        last finished one of the run's pipeline.
      mesh: devices to predict on; None: every device (`runtime.make_mesh`).

    Raises:
      InferenceError: no such workdir, no finished classifier stage, or a stage that cannot
        be rebuilt (one line).
    """
    config, stage, results = read_run(workdir, stage)
    names = tuple(results["class_names"])
    counts = np.asarray(results["train_class_counts"])
    many, few = results["many_threshold"], results["few_threshold"]
    return Classifier(
        workdir=workdir,
        stage=stage,
        class_names=names,
        train_counts=counts,
        groups=long_tail.shot_groups(counts, many, few),
        many_threshold=many,
        few_threshold=few,
        preprocessing=results.get("preprocessing") or default_preprocessing(config),
        config=ml_collections.FrozenConfigDict(config),
        results=results,
        model=build_model(workdir, config, stage, len(names)),
        mesh=mesh or runtime.make_mesh(),
    )


def run_command(prog: str, main_fn, *args):
    """Runs a command's ``main_fn(*args)`` with every command line's failure handling
    (`pipeline.run_or_exit`: a `UserError` is one line and exit code 2; ``LTR_DEBUG=1``
    shows its traceback)."""
    debug = lambda: os.environ.get("LTR_DEBUG", "") not in ("", "0")
    return pipeline.run_or_exit(prog, lambda: main_fn(*args), debug=debug)
