"""How long a run of the ``paper`` budget takes: its training FLOPs, priced two ways.

No GPU run of the authors' recipes exists here, so the ``paper`` budget (``estimate: flops``) is an
*estimate*, never a measurement, computed per run from its resolved configuration::

    training GFLOP = 3 x F(backbone, image size) x images per epoch x epochs x c(method)

* ``F``: one forward pass of the run's backbone on one image, counted by
  ``torch.utils.flop_counter`` on a model built on the ``meta`` device (no memory, no compute);
  the backward pass is taken as twice the forward (the usual 3x for training);
* images per epoch: the budget's ``train_images`` for the dataset (the public release's training
  images, approximate; per task for MedMNIST, summed over the run's tasks), else the data's own
  ``n_train``; a dataset without a count is priced at the budget's flat ``estimate_s``;
* ``c``: the method's step cost relative to HPS (``execute.RELATIVE_COST``, from the benches).

Priced (1) on a GPU of an assumed ``gpu_tflops`` effective TFLOP/s (the budget's; the plan's
estimate) and (2) on this machine, from the bench's measured HPS step (``results/bench/
architectures.json``: ResNet-18, 128 images of 28 px, the seconds one training GFLOP took there,
scaled by this machine's matmul speed against the bench's). Heads, evaluation and data loading are
not counted: dense heads (PSP on NYUv2) add to the backbone's FLOPs, so Tables 5 and 7 are
under-estimates.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

#: Training FLOPs per image relative to one forward pass.
TRAIN_OVER_FORWARD = 3.0


def forward_gflops(backbone: str, height: int, width: int, options: dict[str, Any] | None = None) -> float:
    """GFLOP of one forward pass of ``backbone`` (a registered name, built with ``options``: its
    config's keys) on one ``height`` x ``width`` image."""
    kwargs = {k: v for k, v in (options or {}).items() if k not in ("name", "mola_stages")}
    if backbone.startswith("vit"):
        kwargs.setdefault("image_size", height)  # as the trainer builds it (engine.algorithm.backbone_factory)
    key = (backbone, height, width, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _COUNTED:
        _COUNTED[key] = _count_forward_gflops(backbone, height, width, kwargs)
    return _COUNTED[key]


_COUNTED: dict[tuple[Any, ...], float] = {}


def _count_forward_gflops(backbone: str, height: int, width: int, kwargs: dict[str, Any]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from molabench.models.backbones import build_backbone

    with torch.device("meta"):
        model = build_backbone(backbone, **(kwargs or {})).eval()  # eval: BatchNorm of one image on 1x1 maps
        image = torch.empty(1, int((kwargs or {}).get("in_channels", 3)), height, width)
    with FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops() / 1e9


def image_shape(data: dict[str, Any], native: dict[str, Any] | None = None) -> tuple[int, int] | None:
    """(height, width) a run's images have: ``image_size`` (a side or [h, w]), else ``height`` and
    ``width``, else the dataset's native size from ``native`` (the budget's ``image_shape``)."""
    size = data.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(data.get("height"), int) and isinstance(data.get("width"), int):
        return int(data["height"]), int(data["width"])
    shape = (native or {}).get(str(data.get("name")))
    return (int(shape[0]), int(shape[1])) if isinstance(shape, (list, tuple)) and len(shape) == 2 else None


def training_gflops(config: dict[str, Any], images: int, relative_cost: float, native: dict[str, Any] | None = None) -> float | None:
    """Training GFLOP of a run (its resolved configuration) over ``images`` training images per epoch;
    None when its image size is unknown."""
    shape = image_shape(config["data"], native)
    if shape is None:
        return None
    height, width = shape
    per_image = forward_gflops(str(config["backbone"]["name"]), height, width, dict(config["backbone"]))
    return TRAIN_OVER_FORWARD * per_image * images * int(config["trainer"]["epochs"]) * relative_cost


@cache
def _bench_seconds_per_gflop(bench: Path) -> tuple[float, float] | None:
    """(seconds per training GFLOP, the bench machine's GFLOP/s) from the architectures bench's HPS step."""
    try:
        report = json.loads(bench.read_text())
        runs = report["runs"]
        hps = next(v for k, v in runs.items() if k.startswith("hps"))
        config = report["config"]
        side = int(str(config["input"]).split("x")[-1])
        batch = int(config["batch"])
        gflops = float(config["matmul_gflops_fp32"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None
    step_gflop = TRAIN_OVER_FORWARD * forward_gflops("resnet18", side, side) * batch
    return float(hps["median_s"]) / step_gflop, gflops


def cpu_seconds(gflop: float, bench: Path, machine_gflops: float | None) -> float | None:
    """Seconds on this machine for ``gflop`` training GFLOP, priced by the bench (None without one)."""
    found = _bench_seconds_per_gflop(bench)
    if found is None:
        return None
    per_gflop, bench_speed = found
    return gflop * per_gflop * (bench_speed / machine_gflops if machine_gflops else 1.0)


def gpu_seconds(gflop: float, tflops: float) -> float:
    return gflop / (tflops * 1000.0)


def images_per_epoch(budget: dict[str, Any], data_name: str, data: dict[str, Any] | None = None) -> int | None:
    """Training images per epoch: the budget's ``train_images`` for ``data_name`` (a count, or one count
    per task summed over the run's ``data.tasks``), else the data's own ``n_train`` (built-in data)."""
    value = (budget.get("train_images") or {}).get(data_name)
    if isinstance(value, dict):
        tasks = (data or {}).get("tasks") or list(value)
        counts = [value.get(t) for t in tasks]
        return int(sum(counts)) if counts and all(isinstance(c, int) for c in counts) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    n_train = (data or {}).get("n_train")
    return int(n_train) if isinstance(n_train, int) and not isinstance(n_train, bool) and n_train > 0 else None


__all__ = ["cpu_seconds", "forward_gflops", "gpu_seconds", "image_shape", "images_per_epoch", "training_gflops"]
