"""Batched SimCLR augmentation in PyTorch tensor ops, on whatever device the batch is on.

Variant B of ``torch_reference.py``: the recipe of SPEC §2 with an independent draw per image,
written for [B, 3, H, W] float tensors in [0, 1] (torchvision's ``transforms.v2`` applied to a
batch tensor draws ONE set of parameters for the whole batch, which is not the recipe):
random resized crop (scale 0.08..1, ratio 3/4..4/3, 10 tries, centre fallback) -> horizontal
flip -> with p 0.8 colour jitter (brightness, contrast, saturation 0.8 s, hue 0.2 s, a random
order per image) -> with p 0.2 grayscale -> 3x3 Gaussian blur, sigma ~ U(0.1, 2.0).

The crop and flip are one bilinear ``grid_sample`` (no antialiasing, border clamping at the
image edge, where torchvision clamps at the crop edge: a speed reference, not a bit-exact one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def crop_boxes(batch: int, size: int, device, tries: int = 10) -> torch.Tensor:
    """torchvision ``RandomResizedCrop`` boxes for square images: [B, 4] (top, left, h, w)."""
    area = size * size * torch.empty(batch, tries, device=device).uniform_(0.08, 1.0)
    log_ratio = torch.empty(batch, tries, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * ratio))
    h = torch.round(torch.sqrt(area / ratio))
    valid = (w > 0) & (w <= size) & (h > 0) & (h <= size)  # [B, T]
    first = torch.argmax(valid.int(), dim=1, keepdim=True)  # first valid try
    found = valid.gather(1, first)[:, 0]
    h = torch.where(found, h.gather(1, first)[:, 0], float(size))  # fallback: whole image
    w = torch.where(found, w.gather(1, first)[:, 0], float(size))
    top = torch.floor(torch.rand(batch, device=device) * (size - h + 1))
    left = torch.floor(torch.rand(batch, device=device) * (size - w + 1))
    return torch.stack([top, left, h, w], dim=1)


def resized_crop_flip(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor):
    """Bilinear resize of every box back to full size, mirrored where ``flip``: [B, 3, H, W]."""
    batch, _, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    sign = 1.0 - 2.0 * flip.float()
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0] = sign * w / width  # output x in [-1, 1] -> input x (normalised)
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, [B, 1, H, W]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b


def blend(x: torch.Tensor, target: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return torch.clamp(factor * x + (1 - factor) * target, 0.0, 1.0)


def shift_hue(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Hue rotation by ``delta`` turns ([B, 1, 1, 1]) keeping value and chroma."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    base = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    hue6 = base + num / torch.where(chroma == 0, torch.ones_like(chroma), chroma) + 6 * delta
    sector = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(sector + hue6, 6.0)
    return torch.clamp(maxc - chroma * torch.clamp(torch.minimum(k, 4 - k), 0, 1), 0, 1)


def jitter_op(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """Op 0 brightness, 1 contrast, 2 saturation (factors), 3 hue (shift in turns)."""
    if op == 0:
        return torch.clamp(factor * x, 0.0, 1.0)
    if op == 1:
        return blend(x, luma(x).mean(dim=(2, 3), keepdim=True), factor)
    if op == 2:
        return blend(x, luma(x), factor)
    return shift_hue(x, factor)


def color_jitter(x: torch.Tensor, strength: float, p: float = 0.8) -> torch.Tensor:
    """ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) with probability ``p``, random order per image."""
    batch, device = x.shape[0], x.device
    amount, hue = 0.8 * strength, min(0.2 * strength, 0.5)
    factors = torch.empty(batch, 4, device=device)
    factors[:, :3].uniform_(max(0.0, 1 - amount), 1 + amount)
    factors[:, 3].uniform_(-hue, hue)
    order = torch.argsort(torch.rand(batch, 4, device=device), dim=1)  # [B, 4] op per position
    active = torch.rand(batch, device=device) < p
    # Every op on the whole batch, then a per-image select: no data-dependent shapes, so no
    # device-to-host synchronisation (a masked gather would sync 16 times per view).
    for position in range(4):
        out = x
        for op in range(4):
            chosen = (active & (order[:, position] == op)).view(-1, 1, 1, 1)
            out = torch.where(chosen, jitter_op(x, op, factors[:, op].view(-1, 1, 1, 1)), out)
        x = out
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable 3x3 Gaussian blur, per-image sigma ([B]), reflect padding."""
    edge = torch.exp(-0.5 / sigma.square()).view(-1, 1, 1, 1)
    centre = 1.0 / (1.0 + 2.0 * edge)
    padded = F.pad(x, (0, 0, 1, 1), mode="reflect")
    x = centre * x + edge * centre * (padded[:, :, :-2] + padded[:, :, 2:])
    padded = F.pad(x, (1, 1, 0, 0), mode="reflect")
    return centre * x + edge * centre * (padded[..., :-2] + padded[..., 2:])


def simclr(images: torch.Tensor, strength: float) -> torch.Tensor:
    """One SimCLR view of every image of a [B, 3, H, W] float batch in [0, 1]."""
    batch, device = images.shape[0], images.device
    boxes = crop_boxes(batch, images.shape[-1], device)
    x = resized_crop_flip(images, boxes, torch.rand(batch, device=device) < 0.5)
    x = color_jitter(x, strength)
    gray = (torch.rand(batch, device=device) < 0.2).view(-1, 1, 1, 1)
    x = torch.where(gray, luma(x).expand_as(x), x)
    x = gaussian_blur(x, torch.empty(batch, device=device).uniform_(0.1, 2.0))
    return torch.clamp(x, 0.0, 1.0)
