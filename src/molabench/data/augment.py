"""Batch-wise train-time augmentations (the :data:`~molabench.data.base.BatchAugment` protocol).

Each augmentation acts on a whole float batch ``x`` in [0, 1] of shape (B, C, H, W) on its
device, with *per-sample* random parameters drawn from the loader's CPU ``torch.Generator`` (so a
run is reproducible from its seed whatever the device). Geometric transforms are one
``grid_sample`` with a per-sample affine ``theta``; dense targets (NYUv2) are warped with the
same ``theta``.

Recipes, as in the authors' code (MediaBrain-SJTU/MoLA):

- MedMNIST: ``RandomHorizontalFlip`` -> :class:`HorizontalFlip`.
- VLCS / OfficeHome (and PACS here): ``RandomResizedCrop(224, scale=(0.7, 1))``,
  ``RandomHorizontalFlip``, ``ColorJitter(0.4, 0.4, 0.4, 0.4)``, ``RandomGrayscale(p=0.1)`` ->
  :func:`domain_recipe`. The crop is taken from the cached, already resized image (not from the
  full-resolution file) and interpolated bilinearly (the authors: bicubic); ColorJitter applies
  its four operations in one random order per batch (torchvision: per image).
- RadImageNet: ``RandomResizedCrop(224)`` (scale 0.08-1) + flip -> :func:`radimagenet_recipe`.
- NYUv2 (MTAN's ``RandomScaleCrop``): a crop of size (H/s, W/s), s in {1, 1.2, 1.5}, resized
  back to (H, W) (bilinear image/normal, nearest label/depth), depth divided by s; then a
  horizontal flip that also negates the normal's x component -> :class:`ScaleCropFlip`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from molabench.data.base import BatchAugment, Targets

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _coin(n: int, p: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) < p


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """A (B,) CPU parameter as a (B, 1, 1, 1) tensor on x's device and dtype."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def grayscale(x: Tensor) -> Tensor:
    """Luma (B, 1, H, W) of an RGB batch; a single-channel batch is returned as is."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def compose(*augments: BatchAugment) -> BatchAugment:
    """Apply augmentations left to right."""

    def apply(x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        for aug in augments:
            x, y = aug(x, y, gen)
        return x, y

    return apply


@dataclass(frozen=True)
class HorizontalFlip:
    """Flip each sample left-right with probability ``p`` (classification targets untouched)."""

    p: float = 0.5

    def __call__(self, x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        flip = _coin(x.shape[0], self.p, gen).to(x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), y


def _crop_theta(cx: Tensor, cy: Tensor, sw: Tensor, sh: Tensor, flip: Tensor) -> Tensor:
    """Affine (B, 2, 3) mapping output [-1, 1] coordinates to a crop of the input.

    ``cx, cy``: crop centre in normalised input coordinates; ``sw, sh``: crop size as a fraction
    of the input (the scale of the map); ``flip`` mirrors the output horizontally.
    """
    theta = torch.zeros(cx.shape[0], 2, 3)
    theta[:, 0, 0] = torch.where(flip, -sw, sw)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    return theta


def _warp(x: Tensor, theta: Tensor, mode: str, align_corners: bool) -> Tensor:
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=align_corners)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=align_corners)


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """torchvision's ``RandomResizedCrop`` (+ optional ``RandomHorizontalFlip``), batch-wise.

    Per sample: area fraction ~ U(scale), log aspect ratio ~ U(log ratio); up to 10 draws until the
    crop fits, else the whole image (torchvision falls back to a centre crop of clamped ratio).
    The crop is resized back to the input size.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    tries: int = 10

    def __call__(self, x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        b, _, h, w = x.shape
        area = _uniform(b * self.tries, *self.scale, gen).view(b, self.tries)
        log_r = _uniform(b * self.tries, math.log(self.ratio[0]), math.log(self.ratio[1]), gen).view(b, self.tries)
        r = torch.exp(log_r)
        # crop width/height as fractions of the image: cw*ch*w*h = area*w*h, (cw*w)/(ch*h) = r
        cw = torch.sqrt(area * r * h / w)
        ch = torch.sqrt(area / r * w / h)
        ok = (cw <= 1) & (ch <= 1)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(b, dtype=torch.long))
        cw, ch = cw.gather(1, first[:, None])[:, 0], ch.gather(1, first[:, None])[:, 0]
        none_fits = ~ok.any(1)
        cw, ch = torch.where(none_fits, 1.0, cw), torch.where(none_fits, 1.0, ch)
        # crop position uniform over the valid range, in normalised coordinates
        cx = (2 * torch.rand(b, generator=gen) - 1) * (1 - cw)
        cy = (2 * torch.rand(b, generator=gen) - 1) * (1 - ch)
        flip = _coin(b, self.flip_p, gen)
        return _warp(x, _crop_theta(cx, cy, cw, ch, flip), "bilinear", align_corners=False), y


def shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of an RGB batch by ``shift`` (B,) turns, keeping S and V (torchvision ``adjust_hue``).

    With V = max, V*S = max - min and hue sector h6 in [0, 6), each channel is
    ``V - V*S * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h6) mod 6``, n = 5, 3, 1 for R, G, B
    (the closed form of HSV -> RGB); no HSV image is materialised.
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(1)
    delta = maxc - x.amin(1)
    inv = 1.0 / delta.clamp_min(1e-12)  # where delta = 0 the hue is irrelevant: every channel equals V
    h6 = torch.where(r == maxc, (g - b) * inv, torch.where(g == maxc, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h6 = torch.remainder(h6 + 6.0 * shift.to(x.device, x.dtype).view(-1, 1, 1), 6.0)
    n = torch.tensor((5.0, 3.0, 1.0), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = n + h6[:, None]
    k = torch.where(k >= 6.0, k - 6.0, k)  # (k mod 6) for k in [0, 12), cheaper than remainder
    return maxc[:, None] - delta[:, None] * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class ColorJitter:
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` with per-sample factors.

    brightness: x*b; contrast: blend with the image's mean luma; saturation: blend with the luma
    image; hue: shift H in HSV by h in [-hue, hue]. Results are clamped to [0, 1].
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4

    def __call__(self, x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        b = x.shape[0]
        ops = []
        if self.brightness > 0:
            f = _uniform(b, max(0.0, 1 - self.brightness), 1 + self.brightness, gen)
            ops.append(lambda z, f=f: (z * _per_sample(f, z)).clamp_(0, 1))
        if self.contrast > 0:
            f = _uniform(b, max(0.0, 1 - self.contrast), 1 + self.contrast, gen)
            ops.append(lambda z, f=f: self._blend(z, grayscale(z).mean((1, 2, 3), keepdim=True), f))
        if self.saturation > 0 and x.shape[1] == 3:
            f = _uniform(b, max(0.0, 1 - self.saturation), 1 + self.saturation, gen)
            ops.append(lambda z, f=f: self._blend(z, grayscale(z), f))
        if self.hue > 0 and x.shape[1] == 3:
            f = _uniform(b, -self.hue, self.hue, gen)
            ops.append(lambda z, f=f: shift_hue(z, f))
        for k in torch.randperm(len(ops), generator=gen).tolist():
            x = ops[k](x)
        return x, y

    @staticmethod
    def _blend(x: Tensor, base: Tensor, f: Tensor) -> Tensor:
        f = _per_sample(f, x)
        return (f * x + (1 - f) * base).clamp_(0, 1)


@dataclass(frozen=True)
class RandomGrayscale:
    """Replace a sample by its luma (all channels) with probability ``p`` (torchvision default 0.1)."""

    p: float = 0.1

    def __call__(self, x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        pick = _coin(x.shape[0], self.p, gen).to(x.device).view(-1, 1, 1, 1)
        return torch.where(pick, grayscale(x).expand_as(x), x), y


def domain_recipe(scale: Sequence[float] = (0.7, 1.0), jitter: float = 0.4, gray_p: float = 0.1) -> BatchAugment:
    """The authors' VLCS/OfficeHome train transform (see module docstring)."""
    return compose(
        RandomResizedCropFlip(scale=(float(scale[0]), float(scale[1]))),
        ColorJitter(jitter, jitter, jitter, jitter),
        RandomGrayscale(gray_p),
    )


def radimagenet_recipe() -> BatchAugment:
    """The authors' RadImageNet train transform: RandomResizedCrop (0.08-1) + flip."""
    return RandomResizedCropFlip(scale=(0.08, 1.0))


@dataclass(frozen=True)
class ScaleCropFlip:
    """MTAN's ``RandomScaleCrop`` + horizontal flip for single-input dense tasks (NYUv2).

    ``y`` is the dict ``{"segmentation": long (B,H,W), "depth": (B,1,H,W), "normal": (B,3,H,W)}``
    (any subset). A crop of (int(H/s), int(W/s)) pixels at a uniformly drawn integer offset is
    resized back to (H, W) with ``align_corners=True`` as MTAN does; labels keep their values
    (nearest, -1 = ignore stays -1), depth is divided by s (a zoomed-in scene looks closer), and
    flipped samples get ``normal_x -> -normal_x``.
    """

    scales: tuple[float, ...] = (1.0, 1.2, 1.5)
    flip_p: float = 0.5

    def __call__(self, x: Tensor, y: Targets, gen: torch.Generator) -> tuple[Tensor, Targets]:
        if not isinstance(y, dict):
            raise TypeError("ScaleCropFlip needs dense targets (a dict task -> tensor)")
        b, _, h, w = x.shape
        s = torch.tensor(self.scales)[torch.randint(len(self.scales), (b,), generator=gen)]
        ch, cw = (h / s).to(torch.long), (w / s).to(torch.long)  # int() truncation as MTAN
        i = (torch.rand(b, generator=gen) * (h - ch + 1)).floor().clamp(max=h - ch)
        j = (torch.rand(b, generator=gen) * (w - cw + 1)).floor().clamp(max=w - cw)
        flip = _coin(b, self.flip_p, gen)
        # align_corners=True: output pixel r samples input pixel i + r*(ch-1)/(H-1)
        sy, sx = (ch - 1) / max(h - 1, 1), (cw - 1) / max(w - 1, 1)
        oy = (2 * i + ch - 1) / max(h - 1, 1) - 1
        ox = (2 * j + cw - 1) / max(w - 1, 1) - 1
        theta = _crop_theta(ox, oy, sx, sy, flip)
        x = _warp(x, theta, "bilinear", align_corners=True)
        out: dict[str, Tensor] = {}
        for name, t in y.items():
            if name == "segmentation":
                out[name] = _warp(t[:, None].float(), theta, "nearest", True)[:, 0].round().to(t.dtype)
            elif name == "depth":
                out[name] = _warp(t, theta, "nearest", True) / _per_sample(s, t)
            elif name == "normal":
                n = _warp(t, theta, "bilinear", True)
                sign = torch.where(flip, -1.0, 1.0).to(n.device, n.dtype).view(-1, 1, 1)
                out[name] = torch.cat((n[:, :1] * sign[:, None], n[:, 1:]), 1)
            else:
                raise KeyError(f"ScaleCropFlip does not know how to transform target {name!r}")
        return x, out


__all__ = [
    "ColorJitter",
    "HorizontalFlip",
    "RandomGrayscale",
    "RandomResizedCropFlip",
    "ScaleCropFlip",
    "compose",
    "domain_recipe",
    "grayscale",
    "radimagenet_recipe",
    "shift_hue",
]
