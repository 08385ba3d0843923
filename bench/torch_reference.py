"""The stage-1 BNS step written in PyTorch by us: the reference point for ``throughput.py``.

The same network, loss, optimizer and batch as ``ltr_jax``'s stage 1 (SPEC §2): CIFAR
ResNet-18/34 (3x3 stride-1 stem, no max-pool, BasicBlocks with 1x1 projection shortcuts) or
ResNet-32 (LDAM, option-A shortcuts), global average pool, projection head feature -> 2048 ->
128 (L2-normalised), the BNS "reference" loss in float32, AdamW (0.9, 0.95), weight decay 0.05
except biases and 1-D parameters, lr 1e-3 x B/256 with warm-up + cosine, two SimCLR views
(strength 2) of every image of the batch in one forward pass.

- Variant ``A``, fed the way PyTorch users do it: torchvision transforms on PIL images
  (RandomResizedCrop(32, scale=(0.08, 1)), RandomHorizontalFlip, RandomApply([ColorJitter(1.6,
  1.6, 1.6, 0.4)], p=0.8), RandomGrayscale(0.2), GaussianBlur(3, (0.1, 2.0)), ToTensor) in a
  ``Dataset``, a ``DataLoader`` with ``--num_workers`` worker processes (``pin_memory`` on GPU),
  autocast (AMP) for ``--dtypes bfloat16`` / ``float16`` (the latter with a GradScaler).
- Variant ``B``, augmentation on the device: the uint8 training set is a device tensor, and
  ``torch_augment.simclr`` (batched tensor ops, one independent draw per image) runs there.

On CUDA: ``cudnn.benchmark``, channels-last memory format and the fused AdamW, PyTorch's usual
fast settings; ``--torch_compile`` adds ``torch.compile`` of the network.

Images/s = images of the timed steps / their wall time (every image is two views). With a data
loader step times are bursty, so the wall time of the whole timed run is the honest figure; the
median step and the time spent waiting for data are recorded too. ``OMP_WAIT_POLICY`` is
PASSIVE unless set (see below): spinning OpenMP threads collapse on a shared CPU.

    python bench/torch_reference.py                           # GPU: 3 backbones x 3 batches x
                                                              # float32,bfloat16 x variants A,B
    python bench/torch_reference.py --backbones cifar_resnet32 --batch_sizes 64 \\
        --dtypes float32 --steps 10 --num_workers 2           # CPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from collections.abc import Iterator

# Before torch loads OpenMP: threads that sleep instead of spinning while they wait. On a shared
# CPU, spinning OpenMP threads collapsed here (ResNet-32 step 0.8 s -> 3.5 s at load 6); export
# OMP_WAIT_POLICY=ACTIVE to measure PyTorch's default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import bench_lib
import numpy as np
import torch
import torch.nn.functional as F
import torch_augment
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

BACKBONES = {  # blocks, widths, stem width, shortcut
    "cifar_resnet18": ((2, 2, 2, 2), (64, 128, 256, 512), 64, "conv"),
    "cifar_resnet34": ((3, 4, 6, 3), (64, 128, 256, 512), 64, "conv"),
    "cifar_resnet32": ((5, 5, 5), (16, 32, 64), 16, "option_a"),
}
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
STRENGTH, TAU, PROJ_HIDDEN, PROJ_DIM = 2.0, 0.5, 2048, 128
WARMUP_EPOCHS, EPOCHS = 20, 1000


# --- network ----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (conv or option-A shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad, self.kind = stride, cout - cin, shortcut
        self.project = stride != 1 or cin != cout
        if self.project and shortcut == "conv":
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.project:
            return x
        if self.kind == "conv":
            return self.proj(x)
        x = x[:, :, :: self.stride, :: self.stride]  # option A: subsample, zero-pad channels
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ContrastiveNet(nn.Module):
    """CIFAR ResNet encoder + projection head (L2-normalised output)."""

    def __init__(self, backbone: str):
        super().__init__()
        blocks, widths, stem, shortcut = BACKBONES[backbone]
        layers, cin = (
            [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)],
            stem,
        )
        for stage, (n, width) in enumerate(zip(blocks, widths, strict=True)):
            for b in range(n):
                layers.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1, shortcut))
                cin = width
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projection = nn.Sequential(
            nn.Linear(cin, PROJ_HIDDEN), nn.ReLU(inplace=True), nn.Linear(PROJ_HIDDEN, PROJ_DIM)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.encoder(x)).float(), dim=1)


def bns_reference(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, tau: float = TAU):
    """SPEC §2 "reference" BNS over all 2B rows, in float32 (as ``ltr_jax.losses.bns``)."""
    z = torch.cat([F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)])  # [2B, D]
    y = torch.cat([labels, labels])
    same = y[:, None] == y[None, :]  # [2B, 2B]
    positives = same & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
    exp_sim = torch.exp(z @ z.T / tau)
    pos = (exp_sim * positives).sum(1) / positives.sum(1)
    neg = (exp_sim * ~same).sum(1) / len(y)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()


def make_optimizer(model: nn.Module, batch_size: int, steps_per_epoch: int, fused: bool):
    """AdamW (0.9, 0.95), wd 0.05 except 1-D params; warm-up + cosine per step. (opt, sched)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-3 * batch_size / 256, betas=(0.9, 0.95), fused=fused)
    warmup, total = WARMUP_EPOCHS * steps_per_epoch, EPOCHS * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


# --- variant A: torchvision transforms + DataLoader workers ----------------------------------


def simclr_transform(strength: float = STRENGTH) -> transforms.Compose:
    """The SimCLR view recipe with torchvision's PIL transforms (the reference code's way)."""
    s = strength
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(32, scale=(0.08, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomApply(
                [transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8
            ),
            transforms.RandomGrayscale(p=0.2),
            transforms.GaussianBlur(3, sigma=(0.1, 2.0)),
            transforms.ToTensor(),
        ]
    )


class TwoViewDataset(Dataset):
    """uint8 [N, 32, 32, 3] images -> (view 1, view 2, label), each view a fresh draw."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = simclr_transform()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i])
        return self.transform(image), self.transform(image), int(self.labels[i])


def make_loader(images, labels, batch_size: int, num_workers: int, device) -> DataLoader:
    """A shuffling, last-batch-dropping DataLoader with persistent workers."""
    # forkserver: a process that has started JAX's threads (compare_cpu.py) must not fork.
    workers = dict(persistent_workers=True, multiprocessing_context="forkserver")
    return DataLoader(
        TwoViewDataset(images, labels),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        **(workers if num_workers else {}),
    )


def endless(loader: DataLoader) -> Iterator:
    """Epoch after epoch of a loader."""
    while True:
        yield from loader


# --- one benchmark case ----------------------------------------------------------------------


class TorchRunner:
    """Model, optimizer and input pipeline of one case; ``run(n)`` times ``n`` steps."""

    def __init__(
        self,
        backbone: str,
        dtype: str,
        batch_size: int,
        variant: str,
        data: dict,
        num_workers: int,
        device: torch.device,
        compile_model: bool = False,
    ):
        self.device, self.variant, self.batch_size = device, variant, batch_size
        cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        model = ContrastiveNet(backbone).to(device, memory_format=self.memory_format)
        self.model = torch.compile(model) if compile_model else model
        spe = len(data["labels"]) // batch_size
        self.opt, self.sched = make_optimizer(model, batch_size, spe, fused=cuda)
        self.amp_dtype = AMP_DTYPES.get(dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
        self.num_workers = num_workers if variant == "A" else 0
        if variant == "A":
            self.loader = make_loader(
                data["images"], data["labels"], batch_size, num_workers, device
            )
            self.batches = endless(self.loader)
        else:
            self.images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous()
            self.images = self.images.to(device)  # uint8 [N, 3, H, W] on the device
            self.labels = torch.from_numpy(data["labels"]).long().to(device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views as one [2B, 3, 32, 32] float batch on the device, and the labels."""
        if self.variant == "A":
            v1, v2, labels = next(self.batches)
            views = torch.cat([v1, v2]).to(self.device, non_blocking=True)
            return views, labels.to(self.device, non_blocking=True)
        idx = torch.randint(len(self.labels), (self.batch_size,), device=self.device)
        x = self.images[idx].float() / 255.0
        views = torch.cat([torch_augment.simclr(x, STRENGTH), torch_augment.simclr(x, STRENGTH)])
        return views, self.labels[idx]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, views: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        views = views.contiguous(memory_format=self.memory_format)
        with self.autocast():
            z1, z2 = self.model(views).chunk(2)
        loss = bns_reference(z1, z2, labels)  # outside autocast: float32
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return loss

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def drain(self) -> None:
        """Consumes the batches the loader prefetched while this case was idle (untimed)."""
        for _ in range(self.num_workers * 2):  # DataLoader's default prefetch_factor is 2
            next(self.batches)

    def run(self, steps: int) -> dict:
        """Runs ``steps`` steps; per-step seconds, seconds spent getting data, wall, last loss."""
        times, data_times = [], []
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            views, labels = self.next_batch()
            self.sync()
            t1 = time.perf_counter()
            loss = self.train_step(views, labels)
            self.sync()
            times.append(time.perf_counter() - t0)
            data_times.append(t1 - t0)
        wall = time.perf_counter() - start
        return dict(times=times, data_times=data_times, wall=wall, loss=float(loss))

    def close(self) -> None:
        if self.variant == "A":
            del self.batches  # stops the persistent workers with the iterator
            self.loader = None


def summarize_run(run: dict, batch_size: int) -> dict:
    """Images/s over the wall time, median step, and the share of time spent waiting for data."""
    row = bench_lib.summarize(run["times"], batch_size)
    row["step_images_per_s"] = row.pop("images_per_s")  # at the median step
    row.update(
        images_per_s=batch_size * len(run["times"]) / run["wall"],
        wall_s=run["wall"],
        data_s_mean=float(np.mean(run["data_times"])),
        data_frac=float(np.sum(run["data_times"]) / run["wall"]),
        final_loss=run["loss"],
    )
    return row


def run_case(backbone, dtype, batch_size, variant, args, data, device) -> dict:
    """Builds one case, runs ``--warmup`` then ``--steps`` timed steps."""
    row = dict(
        backbone=backbone,
        dtype=dtype,
        batch_size=batch_size,
        variant=variant,
        num_workers=args.num_workers if variant == "A" else 0,
    )
    start = time.perf_counter()
    runner = TorchRunner(
        backbone, dtype, batch_size, variant, data, args.num_workers, device, args.torch_compile
    )
    try:
        runner.run(args.warmup)
        row["setup_and_warmup_s"] = time.perf_counter() - start
        row.update(summarize_run(runner.run(args.steps), batch_size))
    finally:
        runner.close()
    return row


# --- CLI -------------------------------------------------------------------------------------

COLUMNS = bench_lib.columns(
    first=[("variant", "variant", "")],
    measured=[("workers", "num_workers", "d"), ("waiting for data", "data_pct", ".0f")],
)


def table_row(row: dict) -> dict:
    shown = bench_lib.shown(row)
    if "data_frac" in row:
        shown["data_pct"] = 100 * row["data_frac"]
    return shown


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_args(argv=None) -> argparse.Namespace:
    cpu = not torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=bench_lib.csv_list(), default=list(BACKBONES))
    parser.add_argument("--batch_sizes", type=bench_lib.csv_list(int), default=[256, 512, 1024])
    parser.add_argument(
        "--dtypes",
        type=bench_lib.csv_list(),
        default=["float32"] if cpu else ["float32", "bfloat16"],
    )
    parser.add_argument("--variants", type=bench_lib.csv_list(), default=["A", "B"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--num_images", type=int, default=bench_lib.CIFAR10_LT_IF100_SIZE)
    parser.add_argument("--torch_compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for name in args.backbones:
        if name not in BACKBONES:
            parser.error(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    for dtype in args.dtypes:
        if dtype not in ("float32", *AMP_DTYPES):
            parser.error(f"unknown dtype {dtype!r}; valid: float32, {', '.join(AMP_DTYPES)}")
    if set(args.variants) - {"A", "B"}:
        parser.error("--variants takes A and/or B")
    return args


def synthetic_data(num_images: int, seed: int = 0) -> dict:
    """Random uint8 CIFAR-shaped images and labels (speed does not depend on pixel values)."""
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, bench_lib.NUM_CLASSES, num_images).astype(np.int64),
    }


def torch_info(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = default_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = synthetic_data(args.num_images)
    cases = bench_lib.grid(
        variant=args.variants,
        backbone=args.backbones,
        dtype=args.dtypes,
        batch_size=args.batch_sizes,
    )
    measure = lambda **case: run_case(**case, args=args, data=data, device=device)
    rows = bench_lib.run_cases(cases, measure, COLUMNS, table_row)
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "results", f"torch_reference_{device.type}.json")
    payload = dict(
        benchmark="torch_reference",
        torch=torch_info(device),
        nvidia_smi=bench_lib.nvidia_smi(),
        args=vars(args),
    )
    return bench_lib.report(rows, COLUMNS, out, payload, table_row)


if __name__ == "__main__":
    main()
