"""TrivialAugment (Müller and Hutter, 2021), batched: each image gets one operation drawn from 14, at a strength
drawn from 31 levels, with no policy to search and nothing to tune.

The operations and their ranges are torchvision's ``TrivialAugmentWide`` (the paper's wide space): shear up to
0.99, translation up to 32 px, rotation up to 135 degrees, brightness, colour, contrast and sharpness factors
1 +- 0.99, posterize to 8..2 bits, solarize above 255..0, autocontrast, equalize and identity. Signed ranges
take either sign at even odds. Geometric operations sample the nearest pixel and fill with 0, as torchvision
does. Images are float (N, C, H, W) in 0..255 (1 or 3 channels); all randomness comes from the generator, and
the images that draw one operation are processed together.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEVELS = 31
OPERATIONS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
    "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
# operation: (strength at the top level, signed); strength rises linearly from 0 at level 0
_RANGES = {
    "shear_x": (0.99, True), "shear_y": (0.99, True), "translate_x": (32.0, True), "translate_y": (32.0, True),
    "rotate": (135.0, True), "brightness": (0.99, True), "color": (0.99, True), "contrast": (0.99, True),
    "sharpness": (0.99, True), "solarize": (255.0, False),
}  # fmt: skip


def strength(operation: str, level: torch.Tensor, negative: torch.Tensor) -> torch.Tensor | None:
    """(M,) float: the operation's argument at each level (0..30), negated where ``negative`` for signed ones.
    Posterize's is the bits kept (8 at level 0, 2 at the top); solarize's the threshold (255 down to 0).
    None for the operations that take none (identity, autocontrast, equalize)."""
    if operation in ("identity", "autocontrast", "equalize"):
        return None
    if operation == "posterize":
        return 8 - (level.float() / ((LEVELS - 1) / 6)).round()
    top, signed = _RANGES[operation]
    value = level.float() * (top / (LEVELS - 1))
    if operation == "solarize":
        return top - value
    return torch.where(negative, -value, value) if signed else value


def trivial_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One TrivialAugment operation per image of a float (N, C, H, W) batch in 0..255: a new tensor, same shape."""
    n = len(images)
    draw = generator.device
    operation = torch.randint(0, len(OPERATIONS), (n,), generator=generator, device=draw).to(images.device)
    level = torch.randint(0, LEVELS, (n,), generator=generator, device=draw).to(images.device)
    negative = (torch.rand(n, generator=generator, device=draw) < 0.5).to(images.device)
    out = images.clone()
    for index, name in enumerate(OPERATIONS):
        chosen = (operation == index).nonzero().flatten()
        if name == "identity" or len(chosen) == 0:
            continue
        out[chosen] = apply(name, images[chosen], strength(name, level[chosen], negative[chosen]))
    return out


def apply(name: str, images: torch.Tensor, argument: torch.Tensor | None) -> torch.Tensor:
    """Operation ``name`` on every image of a float (M, C, H, W) batch in 0..255, with one argument per image."""
    if name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        return _affine(images, name, argument)
    if name == "autocontrast":
        return _autocontrast(images)
    if name == "equalize":
        return _equalize(images)
    if name == "posterize":
        step = 2.0 ** (8 - argument).view(-1, 1, 1, 1)
        return torch.floor(images.round() / step) * step
    if name == "solarize":
        threshold = argument.view(-1, 1, 1, 1)
        return torch.where(images >= threshold, 255.0 - images, images)
    factor = 1.0 + argument.view(-1, 1, 1, 1)
    degenerate = {
        "brightness": torch.zeros_like,
        "color": _grey,
        "contrast": lambda x: _grey(x).mean((1, 2, 3), keepdim=True).expand_as(x),
        "sharpness": _smooth,
    }[name](images)
    return torch.lerp(degenerate, images, factor).clamp_(0, 255)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, broadcast back to the images' channels (grey images are their own)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor((0.299, 0.587, 0.114), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True).expand_as(images)


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH kernel (centre 5, neighbours 1, /13) inside the border; the border pixels stay as they are."""
    c = images.shape[1]
    kernel = torch.ones(3, 3, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(c, 1, 3, 3)
    out = images.clone()
    out[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=c)
    return out


def _affine(images: torch.Tensor, name: str, argument: torch.Tensor) -> torch.Tensor:
    """Shear, translation (px) or rotation (degrees) about the centre; nearest pixel, 0 outside."""
    m, _, h, w = images.shape
    theta = torch.zeros(m, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    a = argument.to(images.dtype)
    if name == "shear_x":
        theta[:, 0, 1] = -a * h / w  # the grid maps output to input: the inverse shear
    elif name == "shear_y":
        theta[:, 1, 0] = -a * w / h
    elif name == "translate_x":
        theta[:, 0, 2] = -2 * a / w
    elif name == "translate_y":
        theta[:, 1, 2] = -2 * a / h
    else:
        radians = a * (math.pi / 180)
        cos, sin = radians.cos(), radians.sin()
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Each channel stretched to 0..255 from its own minimum and maximum (left alone where they are equal)."""
    low = images.amin((2, 3), keepdim=True)
    high = images.amax((2, 3), keepdim=True)
    span = high - low
    stretched = (images - low) * (255.0 / span.clamp_min(1e-6))
    return torch.where(span > 0, stretched, images).clamp_(0, 255)


def _equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel, PIL's and torchvision's rule: a lookup table from the cumulative
    histogram with the top value's count left out; channels whose pixels (but for that value) are fewer than
    255 stay as they are."""
    m, c, h, w = images.shape
    values = images.round().clamp(0, 255).long().reshape(m * c, h * w)
    histogram = torch.zeros(m * c, 256, dtype=torch.long, device=images.device)
    histogram.scatter_add_(1, values, torch.ones_like(values))
    top = values.amax(1, keepdim=True)
    step = (h * w - histogram.gather(1, top)) // 255  # (M*C, 1)
    cumulative = histogram.cumsum(1)
    table = (cumulative + step // 2) // step.clamp_min(1)
    table = torch.cat([torch.zeros_like(table[:, :1]), table[:, :-1]], dim=1).clamp(0, 255)
    equalised = table.gather(1, values).to(images.dtype)
    return torch.where(step > 0, equalised, values.to(images.dtype)).reshape(m, c, h, w)
