"""Batched augmentation on the training device: tensor in, tensor out, randomness from an explicit generator.

Images arrive as uint8 (N, C, H, W) at their storage size (28, 32 or 256 px) and leave as float
(N, C, S, S) at the model's input size S, normalised, in channels_last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.data.trivialaugment import trivial_augment
from alexnet.tta import TTA_MODES

# ImageNet's RGB principal components as fb.resnet.torch published them for pixels in [0, 1]: square
# roots of the covariance eigenvalues (largest first) and the eigenvectors as columns.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _reflect(positions: torch.Tensor, side: int) -> torch.Tensor:
    """Indices into a ``side``-long axis for positions up to ``side - 1`` beyond either edge, mirrored about
    the edge pixel (``F.pad``'s "reflect")."""
    positions = positions.abs()
    return torch.where(positions >= side, 2 * (side - 1) - positions, positions)


def random_crop(
    images: torch.Tensor,
    size: int,
    padding: int,
    generator: torch.Generator,
    *,
    flip: bool | torch.Tensor = False,
    padding_mode: Literal["zeros", "reflect"] = "zeros",
) -> torch.Tensor:
    """A ``size`` x ``size`` crop at a random place of each image after padding ``padding`` px per side
    (zeros, or the image mirrored about its edge), mirrored left-right at random (p = 0.5) when ``flip`` is
    True, or where a given (N,) bool ``flip`` mask is set.

    Any dtype; one gather for the whole batch (padding and mirror are folded into its row and column
    indices, so "reflect" costs no padded copy), and the result is channels_last.
    """
    n, _, h, w = images.shape
    zeros = padding and padding_mode == "zeros"
    if zeros:
        images = F.pad(images, (padding, padding, padding, padding))
        h, w = h + 2 * padding, w + 2 * padding
    margin = 0 if zeros else padding
    if size > min(h, w) + 2 * margin:
        raise ValueError(f"crop {size} is larger than the padded image {h + 2 * margin}x{w + 2 * margin}")
    if margin >= min(h, w):
        raise ValueError(f"reflect padding {margin} needs images larger than {margin} px, not {h}x{w}")
    device = images.device
    ys = torch.randint(0, h + 2 * margin - size + 1, (n,), generator=generator, device=generator.device).to(device)
    xs = torch.randint(0, w + 2 * margin - size + 1, (n,), generator=generator, device=generator.device).to(device)
    steps = torch.arange(size, device=device)
    rows = ys[:, None] + steps
    cols = xs[:, None] + steps
    if isinstance(flip, torch.Tensor):
        mirrored = flip.to(device)
    elif flip:
        mirrored = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(device)
    else:
        mirrored = None
    if mirrored is not None:
        cols = torch.where(mirrored[:, None], xs[:, None] + (size - 1 - steps), cols)
    if margin:
        rows, cols = _reflect(rows - margin, h), _reflect(cols - margin, w)
    picked = images.permute(0, 2, 3, 1)[
        torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]
    ]
    return picked.permute(0, 3, 1, 2)


def mirror(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where the (N,) bool ``mask`` is set."""
    return torch.where(mask.to(images.device)[:, None, None, None], images.flip(3), images)


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    return mirror(images, torch.rand(len(images), generator=generator, device=generator.device) < p)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Inception-style crop: a random area fraction in ``scale`` and aspect ratio in ``ratio``, resized
    (bilinear) to ``size``. One ``grid_sample`` for the batch; crops that would leave the image are
    clamped to it rather than drawn again. Float in, float out."""
    n = len(images)
    area = _uniform(n, *scale, generator)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (_uniform(n, 0, 1, generator) * (1 - width) + width / 2) * 2 - 1
    cy = (_uniform(n, 0, 1, generator) * (1 - height) + height / 2) * 2 - 1
    theta = torch.zeros(n, 2, 3, device=generator.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, cx, height, cy
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def cutout_(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries and Taylor, 2017): a ``size`` x ``size`` square of each image set to 0 (the
    mean of normalised inputs), centred anywhere in the image, so that near an edge only part of it falls
    inside. In place, so that the images keep their memory layout (channels_last)."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=generator, device=generator.device).to(images.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=generator.device).to(images.device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (N, W)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
    return images.masked_fill_(square, 0)


def mix(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch of model inputs with the same batch
    reversed, one draw per batch as timm's default ``mode="batch"``: (images, soft targets (N, K) float32).

    ``mixup`` and ``cutmix`` are the alpha of the Beta(alpha, alpha) the mixing weight ``lam`` is drawn from
    (0 turns that one off); with both on, each batch takes one of them at even odds. MixUp blends every pixel,
    ``lam * x + (1 - lam) * x_reversed``; CutMix pastes a box of area ``1 - lam`` of the reversed batch
    (centred anywhere, clipped at the edges) and weights the targets by the area actually pasted. In place
    on ``images``, so that they keep their memory layout (channels_last)."""
    targets = F.one_hot(labels, num_classes).float()
    kinds = [kind for kind, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha > 0]
    if not kinds or len(images) < 2:
        return images, targets
    # The batch's few scalars come from a NumPy generator seeded by the torch one (torch's Beta takes none).
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item()
    rng = np.random.default_rng(seed)
    kind = kinds[int(rng.integers(len(kinds)))]
    alpha = mixup if kind == "mixup" else cutmix
    lam = float(rng.beta(alpha, alpha))
    reversed_images = images.flip(0)
    if kind == "mixup":
        images.lerp_(reversed_images, 1.0 - lam)
    else:
        h, w = images.shape[-2:]
        cut_h, cut_w = round(h * math.sqrt(1.0 - lam)), round(w * math.sqrt(1.0 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        images[..., top:bottom, left:right] = reversed_images[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return images, torch.lerp(targets.flip(0), targets, lam)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float images to ``size`` x ``size`` (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    shrinking = size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window (the whole image when it is no larger)."""
    h, w = images.shape[-2:]
    if size >= min(h, w):
        return images
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def flip_translate_views(images: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """airbench's test views: the image, the image shifted ``shift`` px up-left and down-right (edges
    mirrored), and the mirror of each: (6, N, C, H, W)."""
    h, w = images.shape[-2:]
    padded = F.pad(images.float(), (shift,) * 4, mode="reflect").to(images.dtype)
    views = [images, padded[..., :h, :w], padded[..., 2 * shift :, 2 * shift :]]
    return torch.stack(views + [v.flip(-1) for v in views])


def ten_crops(images: torch.Tensor, size: int, padding: int = 0) -> torch.Tensor:
    """The paper's test views: four corner crops and the centre crop, then their mirrors.

    Returns (10, N, C, size, size) in the order top-left, top-right, bottom-left, bottom-right, centre,
    then the same five mirrored. ``padding`` zero-pads first, for stored images no larger than ``size``.
    """
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the image {h}x{w}")
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    views = [images[..., y : y + size, x : x + size] for y, x in corners]
    return torch.stack(views + [v.flip(-1) for v in views])


def pca_shift(n: int, generator: torch.Generator, std: float, eigval: torch.Tensor, eigvec: torch.Tensor):
    """The paper's lighting noise for ``n`` images: ``eigvec @ (alpha * eigval)`` with alpha ~ N(0, std)
    drawn once per image; (n, 3), in the units of ``eigval`` ([0, 1] pixels for the ImageNet values)."""
    alpha = torch.randn(n, 3, generator=generator, device=generator.device) * std
    return (alpha * eigval.to(alpha.device)) @ eigvec.to(alpha.device).T


@dataclass(frozen=True)
class Preprocess:
    """How stored uint8 images become model inputs, for training and for evaluation.

    ``crop``: ``"pad"`` takes a random crop of ``min(stored side, image_size)`` after ``padding`` px of
    zeros (CIFAR's pad-4-crop-32; the paper's random 224 of 256 with padding 0), ``"resized"`` an
    Inception-style random-resized crop, ``"none"`` the whole image. Then an optional mirror, an optional
    TrivialAugment operation per image (``alexnet.data.trivialaugment``), PCA lighting (``lighting`` is the
    paper's sigma, 0.1; 0 turns it off), normalisation, resize to
    ``image_size``, grey-to-RGB (or RGB-to-grey) for the model's ``channels`` and an optional cutout square
    of ``cutout`` px of the model's input.
    """

    image_size: int  # model input side, px
    channels: int  # model input channels
    mean: tuple[float, ...]  # per stored channel, pixel values in [0, 1]
    std: tuple[float, ...]
    crop: Literal["pad", "resized", "none"] = "pad"
    padding: int = 0  # px, at the stored size
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    flip: bool = True
    lighting: float = 0.0
    cutout: int = 0  # px of the model input; 0 turns it off
    trivial_augment: bool = False  # one random TrivialAugment operation per image, at the stored size
    scale: tuple[float, float] = (0.08, 1.0)  # area fractions for crop="resized"
    pca_eigval: tuple[float, ...] = IMAGENET_PCA_EIGVAL
    pca_eigvec: tuple[tuple[float, ...], ...] = IMAGENET_PCA_EIGVEC

    def _finish(self, images: torch.Tensor, shift: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """uint8 (or float, 0..255) images plus an optional per-image (N, C) shift in [0, 1] units ->
        normalised, resized, channel-matched model input."""
        n, c = images.shape[:2]
        mean = torch.tensor(self.mean, device=images.device).expand(c).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=images.device).expand(c).view(1, c, 1, 1)
        bias = -mean / std
        if shift is not None:
            bias = bias + shift.to(images.device).view(n, c, 1, 1) / std
        # (x / 255 + shift - mean) / std as one multiply-add that also converts uint8 to float.
        out = torch.addcmul(bias, images, 1.0 / (255.0 * std))
        out = resize(out, self.image_size)
        if out.shape[1] != self.channels:
            out = _match_channels(out, self.channels)
        return out.to(dtype).contiguous(memory_format=torch.channels_last)

    def train(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
        *,
        mirrored: torch.Tensor | None = None,
    ):
        """Random training views of a uint8 (N, C, H, W) batch: (N, channels, S, S) float.

        ``mirrored`` (N,) bool, when given, says which images to mirror instead of drawing it at random
        (derandomised flips); it is ignored when ``flip`` is off.
        """
        side = min(images.shape[-1], self.image_size)
        flip = (mirrored if mirrored is not None else True) if self.flip else False
        if self.crop == "pad":
            images = random_crop(images, side, self.padding, generator, flip=flip, padding_mode=self.padding_mode)
        elif mirrored is not None and self.flip:
            images = mirror(images, mirrored)
        elif self.flip:
            images = random_hflip(images, generator)
        if self.crop == "resized":
            images = random_resized_crop(images.float(), side, generator, self.scale)
        if self.trivial_augment:
            images = trivial_augment(images.float(), generator)
        shift = None
        if self.lighting > 0:
            if images.shape[1] != 3:
                raise ValueError(f"PCA lighting needs RGB images, got {images.shape[1]} channel(s)")
            eigval = torch.tensor(self.pca_eigval, dtype=torch.float32)
            eigvec = torch.tensor(self.pca_eigvec, dtype=torch.float32)
            shift = pca_shift(len(images), generator, self.lighting, eigval, eigvec)
        images = self._finish(images, shift, dtype)
        return cutout_(images, self.cutout, generator) if self.cutout else images

    def to_pixels(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs (N, channels, S, S) back to RGB pixels in [0, 1], float32 (N, 3, S, S), for pictures."""
        mean = torch.tensor(self.mean, device=inputs.device)[:, None, None]
        std = torch.tensor(self.std, device=inputs.device)[:, None, None]
        pixels = (inputs.float() * std + mean).clamp(0, 1)
        return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels

    def _room(self, stored_side: int) -> bool:
        """Whether an input-sized crop can move about the centre of an image stored at ``stored_side`` px: it
        is padded, or larger than the input."""
        return self.padding > 0 or stored_side > self.image_size

    def train_changes(self, stored_side: int) -> tuple[str, ...]:
        """What training does to images stored at ``stored_side`` px that test views can repeat: ``"mirrors"``
        (flips) and ``"shifts"`` (padded or larger-than-input crops, random-resized crops, TrivialAugment)."""
        moved = self.crop == "pad" and self._room(stored_side)
        shifts = moved or self.crop == "resized" or self.trivial_augment
        return ("mirrors",) * self.flip + ("shifts",) * shifts

    def view_changes(self, tta: str, stored_side: int) -> tuple[str, ...]:
        """What ``evaluate``'s views for ``tta`` do to images stored at ``stored_side`` px besides the centre
        crop: ``"mirrors"``, ``"shifts"`` (ten crops shift only when there is room about the centre)."""
        shifts = tta == "flip-translate" or (tta == "ten-crop" and self._room(stored_side))
        return ("mirrors",) * (tta != "none") + ("shifts",) * shifts

    def unseen_views(self, tta: str, stored_side: int, trained: Sequence[str]) -> str | None:
        """One line when ``tta``'s views do what training (its ``train_changes``, ``trained``) never did to the
        images, naming the views that match the training; else None. Unseen views cost accuracy: on
        Fashion-MNIST trained without translations, ``flip-translate`` scored 0.26 points below a single
        view and 0.44 below ``flip``."""
        unseen = [change for change in self.view_changes(tta, stored_side) if change not in trained]
        if not unseen:
            return None
        richest_first = ("flip-translate", "flip", "none")
        matched = next(m for m in richest_first if set(self.view_changes(m, stored_side)) <= set(trained))
        return (
            f"test views {tta!r} hold {' and '.join(unseen)}, which training never showed this model and "
            f"which usually cost accuracy; {matched!r} matches its training"
        )

    def evaluate(self, images: torch.Tensor, tta: str = "none", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Deterministic views: (V, N, channels, S, S) with V = 1 (``none``: centre crop), 2 (``flip``),
        6 (``flip-translate``: the centre crop shifted by one pixel both ways, and mirrors) or 10
        (``ten-crop``: corners and centre of the stored image, padded as training padded it when it is no
        larger than the input, and their mirrors). ``test_crops`` then ``finish_views``."""
        return self.finish_views(self.test_crops(images, tta), dtype)

    def test_crops(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """``evaluate``'s views of uint8 (N, C, H, W) images as stored pixels, not yet normalised or resized:
        (V, N, C, s, s) in the images' dtype, a quarter of the bytes of float32 inputs."""
        side = min(images.shape[-1], self.image_size)
        if tta == "flip-translate":
            return flip_translate_views(center_crop(images, side))
        if tta == "ten-crop":
            padding = self.padding if images.shape[-1] <= self.image_size else 0
            return ten_crops(images, side, padding)
        views = center_crop(images, side).unsqueeze(0)
        if tta == "flip":
            return torch.cat([views, views.flip(-1)])
        if tta != "none":
            raise ValueError(f"unknown test-time augmentation {tta!r}; use {', '.join(TTA_MODES)}")
        return views

    def finish_views(self, views: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``test_crops``' (V, N, C, s, s) -> model inputs (V, N, channels, S, S) in ``dtype``."""
        v, n = views.shape[:2]
        out = self._finish(views.reshape(v * n, *views.shape[2:]), None, dtype)
        return out.reshape(v, n, *out.shape[1:])


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise ValueError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
