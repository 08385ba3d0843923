"""Training-step throughput of the real stage-1 and stage-2 steps: prints a table, writes JSON.

The steps are the stages' own: each stage module's ``make_setup`` built by ``train_lib.build``
(as ``train_lib.fit`` builds them), so this measures what a run executes: the jitted train
step over the train state, with the batch gathered on device from uint8 images held in device
memory, augmented inside the step.

- ``stage1``: two SimCLR views (strength ``stage1.augment_strength`` = 2) of every image, one
  forward pass of encoder + projection head (512 -> 2048 -> 128), the BNS loss
  (``representation.make_loss``, "reference" form), AdamW. Images/s counts images, not
  views: every image is two network passes.
- ``stage2``: one SimCLR view (strength 1), encoder + linear head, cross-entropy, AdamW
  over a fixed subset of the recipe's size (the IP-DPP draw is not timed). The recipe's
  stage-2 batch is 64.

Data: random uint8 images of the size of CIFAR-10-LT IF100 (12,406) with its class counts;
speed does not depend on pixel values. Every case is compiled ahead of time (``trace`` / ``lower`` /
``compile``, timed separately), run ``--warmup`` steps, then ``--steps`` timed steps, each to
``block_until_ready``; the table reports the median step.

FLOPs: ``model_flops`` is an analytic count over the step's jaxpr: 2 x multiply-adds of every
convolution and ``dot_general`` (forward, both backward passes, augmentation and loss matmuls),
with transposed convolutions (``lhs_dilation``) counted without their inserted zeros. XLA's own
``compiled.cost_analysis()['flops']`` is recorded as ``xla_flops`` for comparison, and the numbers
of ``conditional`` and ``while`` ops in the compiled step as ``hlo_conditional_ops`` and
``hlo_while_ops`` (host round trips on XLA:GPU). Achieved TFLOP/s = model_flops / median step
time, reported as a fraction of the device's MEASURED bf16 (and float32) matmul peak: the best
of several chained square matmuls (``--peak_size``).

    python bench/throughput.py                      # GPU default: 3 backbones x 3 batches x 2
                                                    # dtypes x 2 stages: 36 compiles, likely
                                                    # over 10 minutes: split by --stages etc.
    python bench/throughput.py --backbones cifar_resnet18 --batch_sizes 1024 --dtypes bfloat16
    python bench/throughput.py --backbones cifar_resnet18,cifar_resnet32 --batch_sizes 64,128 \\
        --dtypes float32 --stages stage1 --steps 10 --warmup 2      # CPU

Transformer encoders (any name of ``ltr_jax.models.registry.ENCODERS``): the CIFAR ones as
above, the ImageNet ones with ``--image_size 224`` (stage 2 = fine-tuning, encoder + linear
head, with the base config's optimiser, no layer decay):

    python bench/throughput.py --backbones vit_small_patch4_32,swin_tiny_patch2_window4_32 \\
        --batch_sizes 512 --dtypes bfloat16                         # GPU, CIFAR, stages 1 + 2
    python bench/throughput.py --backbones vit_base_patch16_224,swin_base_patch4_window7_224 \\
        --image_size 224 --num_images 2048 --batch_sizes 256 --dtypes bfloat16   # GPU, ImageNet

Attention is ``jax.nn.dot_product_attention``: on GPU XLA may run cuDNN's fused attention, a
custom call that ``model_flops`` (dot_general and convolutions only) does not see, so the
FLOP count and peak fraction of transformers there leave out the attention matmuls.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import bench_lib  # bench/ is on sys.path when run as ``python bench/throughput.py``
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ltr_jax import config_lib, pipeline, runtime, train_lib
from ltr_jax.data.datasets import long_tail, records
from ltr_jax.data.input import in_memory
from ltr_jax.models import registry
from ltr_jax.stages import common

STAGES = ("stage1", "stage2")
BACKBONES = ("cifar_resnet18", "cifar_resnet34", "cifar_resnet32")


# --- the steps -------------------------------------------------------------------------------


def bench_config(backbone: str, dtype: str):
    """The library's base config (the CIFAR-10-LT recipe's stage sections) for one model."""
    config = config_lib.base_config()
    config.model.update(encoder=backbone, dtype=dtype)
    return config


def synthetic_input(num_images: int, mesh, image_size: int = 32) -> in_memory.InMemoryInput:
    """About ``num_images`` random uint8 square images (CIFAR-shaped by default) with the
    class counts of CIFAR-10-LT IF100 scaled to that total (12,406: those counts exactly), so
    that stage 2's subset (k = 10 x the smallest class) has the recipe's size."""
    n_max = round(5000 * num_images / 12406)
    counts = long_tail.long_tail_counts(n_max, bench_lib.NUM_CLASSES, 100.0)
    labels = np.repeat(np.arange(bench_lib.NUM_CLASSES), counts).astype(np.int32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), image_size, image_size, 3), dtype=np.uint8)
    index = np.arange(len(labels))
    lt = records.LongTail(
        name="synthetic",
        train=records.Split(images, labels, index),
        test=records.Split(images[:8], labels[:8], index[:8]),
        num_classes=bench_lib.NUM_CLASSES,
        class_names=(),
        class_counts=counts,
        groups=long_tail.shot_groups(counts, 100, 20),
        streamed=False,
    )
    return in_memory.InMemoryInput(lt, mesh)


def stage_loop(stage: str, config, data, mesh) -> train_lib.Loop:
    """The loop a run builds for ``stage``: its module's ``make_setup`` + ``train_lib.build``.

    Stage 2 loads a stage-1 encoder and a probe head: fresh ones are saved to a temporary
    workdir first (speed does not depend on the weights), and its IP-DPP draw (not timed) is
    replaced by a seeded subset of the recipe's size.
    """
    workdir = tempfile.mkdtemp(prefix="ltr_bench_")
    config = ml_collections.FrozenConfigDict(config)
    ctx = common.StageContext(config, workdir, mesh, data, runtime.root_key(config.seed))
    if stage == "stage2":
        model = registry.make_classifier(config.model, data.num_classes, rngs=nnx.Rngs(0))
        common.save_module(ctx, "stage1", "encoder", model.encoder)
        common.save_module(ctx, "probe", "head", model.head)
    setup = pipeline.STAGES[stage].make_setup(ctx)
    loop = train_lib.build(setup, mesh)
    if setup.subset is not None:
        rng = np.random.default_rng(0)
        subset = rng.choice(len(data.train_labels), setup.num_examples, replace=False)
        subset = np.sort(subset).astype(np.int32)
        loop.state = loop.state.replace(subset=runtime.put_replicated(mesh, subset))
        loop.feed.set_population(subset, 0)
    return loop


# --- FLOPs -----------------------------------------------------------------------------------


def _dot_flops(eqn) -> float:
    lhs = eqn.invars[0].aval
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[d] for d in lhs_contract)


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
    out = eqn.outvars[0].aval
    window = rhs.shape[rhs_spec[1]] * math.prod(rhs.shape[d] for d in rhs_spec[2:])
    zeros = math.prod(eqn.params.get("lhs_dilation") or (1,))  # transposed conv: skip zeros
    return 2.0 * math.prod(out.shape) * window / zeros


def _sub_jaxprs(value) -> list:
    """The jaxprs inside one equation parameter (a jaxpr, a closed jaxpr or a tuple of them)."""
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        return [value.jaxpr]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def matmul_flops(jaxpr) -> float:
    """2 x multiply-adds of every convolution and dot_general in a jaxpr, nested ones included.

    ``scan`` bodies count ``length`` times, ``cond`` its most expensive branch, loops once.
    """
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        subs = [matmul_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if not subs:
            continue
        if name == "cond":
            total += max(subs)
        else:
            total += sum(subs) * (eqn.params.get("length", 1) if name == "scan" else 1)
    return total


def xla_flops(compiled) -> float | None:
    """``cost_analysis()['flops']`` of a compiled executable, where the backend reports it."""
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


# --- the matmul peak ---------------------------------------------------------------------------


def matmul_peak_tflops(dtype: str, size: int, chain: int = 8, trials: int = 5) -> float:
    """Best measured TFLOP/s of ``chain`` chained [size, size] matmuls in ``dtype`` (one jit)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32).astype(dtype)
    b = (jax.random.normal(key_b, (size, size), jnp.float32) / math.sqrt(size)).astype(dtype)

    @jax.jit
    def run(a, b):
        return jax.lax.fori_loop(0, chain, lambda _, x: x @ b, a)

    jax.block_until_ready(run(a, b))
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        jax.block_until_ready(run(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 * chain / best / 1e12


def measure_peaks(size: int) -> dict:
    """Measured matmul peaks (TFLOP/s) in bfloat16 and float32; empty with ``size`` 0."""
    if size <= 0:
        return {}
    peaks = {d: matmul_peak_tflops(d, size) for d in ("bfloat16", "float32")}
    shown = ", ".join(f"{d} {v:.2f} TFLOP/s" for d, v in peaks.items())
    print(f"measured matmul peak at {size}^3: {shown}")
    return peaks


# --- timing ----------------------------------------------------------------------------------


def compile_step(step, state, data, key) -> tuple:
    """Traces, lowers and compiles ``step``; returns (compiled, trace/lower s, compile s, flops)."""
    start = time.perf_counter()
    traced = step.trace(state, data, key)
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    flops = {"model_flops": matmul_flops(traced.jaxpr.jaxpr), "xla_flops": xla_flops(compiled)}
    flops.update(control_flow_ops(compiled))
    return compiled, lowered_at - start, compiled_at - lowered_at, flops


def control_flow_ops(compiled) -> dict:
    """Counts of ``conditional`` and ``while`` ops in the optimised HLO of a compiled step.

    Each one costs XLA:GPU a host round trip (the predicate or trip count goes back to the
    host) unless XLA proves a constant trip count; the step should have none. On CPU, random
    bits (threefry) still use a ``while`` loop."""
    text = compiled.as_text() or ""
    return {
        "hlo_conditional_ops": text.count(" conditional("),
        "hlo_while_ops": text.count(" while("),
    }


class JaxRunner:
    """One compiled case with its train state; ``run(n)`` runs and times ``n`` more steps."""

    def __init__(
        self, stage: str, backbone: str, dtype: str, batch_size: int, num_images: int, mesh, data
    ):
        config = bench_config(backbone, dtype)
        config[stage].batch_size = batch_size
        loop = stage_loop(stage, config, data, mesh)
        step, self.state, self.key = loop.train_step, loop.state, loop.root_key
        self.data, self.batch_size = loop.feed.data(0, self.state), batch_size
        self.compiled, self.lower_s, self.compile_s, self.flops = compile_step(
            step, self.state, self.data, self.key
        )

    def run(self, steps: int) -> dict:
        """Per-step seconds (each to ``block_until_ready``), total wall and the last loss."""
        times, metrics = [], None
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.data, self.key)
            jax.block_until_ready((self.state, metrics))
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        loss = float(metrics["loss"]) if metrics is not None else None
        return dict(times=times, wall=wall, loss=loss)


def run_case(stage: str, backbone: str, dtype: str, batch_size: int, args, data, mesh) -> dict:
    """Builds, compiles and times one (stage, backbone, dtype, batch) case."""
    row = dict(stage=stage, backbone=backbone, dtype=dtype, batch_size=batch_size)
    runner = JaxRunner(stage, backbone, dtype, batch_size, args.num_images, mesh, data)
    runner.run(args.warmup)
    run = runner.run(args.steps)
    row.update(
        runner.flops,
        trace_lower_s=runner.lower_s,
        compile_s=runner.compile_s,
        final_loss=run["loss"],
        wall_s=run["wall"],
    )
    row.update(bench_lib.summarize(run["times"], batch_size))
    row["model_tflops_per_s"] = row["model_flops"] / row["step_s_median"] / 1e12
    return row


def add_peak_fractions(row: dict, peaks: dict) -> dict:
    """Achieved model TFLOP/s as a fraction of the measured bf16 peak and of its own dtype's."""
    if "model_tflops_per_s" in row and peaks:
        row["frac_bf16_peak"] = row["model_tflops_per_s"] / peaks["bfloat16"]
        row["frac_dtype_peak"] = row["model_tflops_per_s"] / peaks[row["dtype"]]
    return row


# --- CLI -------------------------------------------------------------------------------------

COLUMNS = bench_lib.columns(
    first=[("stage", "stage", "")],
    measured=[
        ("compile s", "compile_s", ".1f"),
        ("GFLOP/step", "model_gflop", ",.1f"),
        ("TFLOP/s", "model_tflops_per_s", ".3f"),
        ("% bf16 peak", "pct_bf16_peak", ".1f"),
        ("% own-dtype peak", "pct_dtype_peak", ".1f"),
    ],
)


def table_row(row: dict) -> dict:
    """Display units for one result row."""
    shown = bench_lib.shown(row)
    if "step_s_median" in row:
        shown["model_gflop"] = row["model_flops"] / 1e9
    for key in ("bf16_peak", "dtype_peak"):
        if f"frac_{key}" in row:
            shown[f"pct_{key}"] = 100 * row[f"frac_{key}"]
    return shown


def default_out() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "results", f"throughput_{jax.devices()[0].platform}.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=bench_lib.csv_list(), default=list(BACKBONES))
    parser.add_argument("--batch_sizes", type=bench_lib.csv_list(int), default=[256, 512, 1024])
    parser.add_argument("--dtypes", type=bench_lib.csv_list(), default=["float32", "bfloat16"])
    parser.add_argument("--stages", type=bench_lib.csv_list(), default=list(STAGES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    parser.add_argument("--num_images", type=int, default=bench_lib.CIFAR10_LT_IF100_SIZE)
    parser.add_argument(
        "--image_size", type=int, default=32, help="image side (224: ImageNet ViT / Swin encoders)"
    )
    parser.add_argument(
        "--peak_size",
        type=int,
        default=None,
        help="matmul size for the peak (default 8192, 1024 on CPU; 0: skip)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default results/throughput_<platform>.json next to this script)",
    )
    args = parser.parse_args(argv)
    for stage in args.stages:
        if stage not in STAGES:
            parser.error(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    for backbone in args.backbones:
        if backbone not in registry.ENCODERS:
            parser.error(f"unknown backbone {backbone!r}; valid: {', '.join(registry.ENCODERS)}")
    return args


def device_info() -> dict:
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
    }


def run_all(args, mesh, peaks: dict) -> list[dict]:
    """Every requested case in order; a failing case (e.g. out of memory) records its error."""
    data = synthetic_input(args.num_images, mesh, args.image_size)
    cases = bench_lib.grid(
        stage=args.stages, backbone=args.backbones, dtype=args.dtypes, batch_size=args.batch_sizes
    )
    measure = lambda **case: add_peak_fractions(
        run_case(**case, args=args, data=data, mesh=mesh), peaks
    )
    return bench_lib.run_cases(cases, measure, COLUMNS, table_row)


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = device_info()
    peak_size = args.peak_size
    if peak_size is None:
        peak_size = 1024 if info["platform"] == "cpu" else 8192
    peaks = measure_peaks(peak_size)
    mesh = runtime.make_mesh()
    rows = run_all(args, mesh, peaks)
    payload = dict(
        benchmark="throughput",
        device=info,
        nvidia_smi=bench_lib.nvidia_smi(),
        matmul_peak_tflops=peaks,
        peak_size=peak_size,
        args=vars(args),
    )
    return bench_lib.report(rows, COLUMNS, args.out or default_out(), payload, table_row)


if __name__ == "__main__":
    main()
