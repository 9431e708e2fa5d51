"""The built-in dataset: procedurally drawn shapes, deterministic from a seed, no download.

Every image shows one object with four independent attributes — shape (6), colour (6),
size (3) and quadrant (4) — on a noisy background. Two variants show the two kinds of
heterogeneity of the paper within minutes on a CPU:

- ``variant=tasks`` (multi-input task heterogeneity, the default): four tasks ask four
  different questions (which shape / colour / size / quadrant?) about images drawn from the
  same distribution. Without a task id the questions are indistinguishable, so a single
  network with one head over the union of the label spaces (Uniform) must guess which
  question is asked — the conflict that task-specific parameters resolve.
- ``variant=domains`` (domain heterogeneity): one question (which shape?) asked in four
  rendering domains — ``solid``, ``outline``, ``inverted`` and ``striped`` — each a task with
  its own head, like the domains of VLCS/OfficeHome/PACS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from molabench.data import DATASETS
from molabench.data.base import MultiTaskData, TaskSpec, TensorSplit
from molabench.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = torch.tensor(
    [[0.9, 0.15, 0.15], [0.15, 0.8, 0.2], [0.2, 0.3, 0.95], [0.95, 0.85, 0.1], [0.85, 0.2, 0.85], [0.1, 0.85, 0.9]]
)
SIZES = (0.16, 0.24, 0.34)  # object radius as a fraction of the image side
ATTRIBUTES = {"shape": len(SHAPES), "colour": len(COLOURS), "size": len(SIZES), "quadrant": 4}
DOMAINS = ("solid", "outline", "inverted", "striped")


def _shape_masks(dx: Tensor, dy: Tensor) -> Tensor:
    """(6, N, H, W) masks of every shape in unit coordinates centred on the object."""
    r2 = dx**2 + dy**2
    triangle = (dy >= -0.9) & (dy <= 0.8) & (dx.abs() <= (dy + 0.9) * 0.55)
    cross = ((dx.abs() <= 0.3) & (dy.abs() <= 1)) | ((dy.abs() <= 0.3) & (dx.abs() <= 1))
    return torch.stack(
        [r2 <= 1, torch.maximum(dx.abs(), dy.abs()) <= 0.8, triangle, dx.abs() + dy.abs() <= 1, cross, (r2 <= 1) & (r2 >= 0.45)]
    )


def render(n: int, image_size: int, gen: torch.Generator, domain: str = "solid") -> tuple[Tensor, dict[str, Tensor]]:
    """Draw ``n`` images (uint8, N x 3 x S x S) and their four attribute labels."""
    s = image_size
    labels = {name: torch.randint(0, k, (n,), generator=gen) for name, k in ATTRIBUTES.items()}
    radius = torch.tensor(SIZES)[labels["size"]] * s * (0.9 + 0.2 * torch.rand(n, generator=gen))
    # Place the centre inside the chosen quadrant, far enough from the border for the object to fit.
    qx, qy = labels["quadrant"] % 2, labels["quadrant"] // 2
    lo, hi = radius, s / 2
    cx = torch.where(qx == 1, s - hi, lo) + torch.rand(n, generator=gen) * (hi - lo).clamp(min=0)
    cy = torch.where(qy == 1, s - hi, lo) + torch.rand(n, generator=gen) * (hi - lo).clamp(min=0)
    grid = torch.arange(s, dtype=torch.float32) + 0.5
    dx = (grid.view(1, 1, s) - cx.view(n, 1, 1)) / radius.view(n, 1, 1)
    dy = (grid.view(1, s, 1) - cy.view(n, 1, 1)) / radius.view(n, 1, 1)
    masks = _shape_masks(dx.expand(n, s, s), dy.expand(n, s, s))
    mask = masks[labels["shape"], torch.arange(n)].float()
    if domain == "outline":
        inner = torch.nn.functional.max_pool2d(1 - mask.unsqueeze(1), 3, 1, 1).squeeze(1)
        mask = mask * inner  # keep only pixels next to the outside: the contour
    colour = (COLOURS[labels["colour"]] + 0.08 * torch.randn(n, 3, generator=gen)).clamp(0, 1)
    background = 0.35 * torch.rand(n, 3, 1, 1, generator=gen) + 0.1
    if domain == "striped":
        period = torch.randint(3, 6, (n, 1, 1), generator=gen).float()
        stripes = ((grid.view(1, 1, s) + grid.view(1, s, 1)) % period.view(n, 1, 1) < period.view(n, 1, 1) / 2).float()
        background = background + 0.3 * stripes.unsqueeze(1)
    image = background * (1 - mask.unsqueeze(1)) + colour.view(n, 3, 1, 1) * mask.unsqueeze(1)
    image = image + 0.06 * torch.randn(n, 3, s, s, generator=gen)
    if domain == "inverted":
        image = 1 - image
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


@DATASETS.register("shapes")
def shapes(
    variant: str = "tasks",
    image_size: int = 28,
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 1000,
    data_seed: int = 0,
    tasks: list[str] | None = None,
) -> MultiTaskData:
    """Build the shapes dataset; sizes are per task. ``tasks`` selects a subset of tasks/domains."""
    if variant not in ("tasks", "domains"):
        raise ConfigError(f"data.variant must be 'tasks' or 'domains', got {variant!r}")
    for key, value, least in (("image_size", image_size, 16), ("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"data.{key} must be an integer of at least {least} for shapes, got {value!r}")
    names = list(ATTRIBUTES) if variant == "tasks" else list(DOMAINS)
    chosen = list(tasks) if tasks else names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise ConfigError(f"unknown shapes {variant} {unknown}; choose from {names}")
    gen = torch.Generator().manual_seed(data_seed)
    splits: dict[str, TensorSplit] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        images, targets, task_ids = [], [], []
        for t, name in enumerate(chosen):
            drawn, labels = render(n, image_size, gen, domain=name if variant == "domains" else "solid")
            images.append(drawn)
            targets.append(labels[name] if variant == "tasks" else labels["shape"])
            task_ids.append(torch.full((n,), t, dtype=torch.long))
        splits[split] = TensorSplit(torch.cat(images), torch.cat(targets), torch.cat(task_ids))
    specs = [TaskSpec(name, ATTRIBUTES[name] if variant == "tasks" else len(SHAPES)) for name in chosen]
    setting = "multi_input" if variant == "tasks" else "domain"
    return MultiTaskData(f"shapes_{variant}", setting, specs, splits, mean=(0.5,) * 3, std=(0.25,) * 3)
