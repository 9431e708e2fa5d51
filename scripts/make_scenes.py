"""Write the procedural ``scenes`` dataset (molabench/data/scenes.py) in NYUv2's MTAN release layout.

    python scripts/make_scenes.py --out DIR [--n-train 320] [--n-test 128] [--height 96] [--width 128] [--seed 0] [--force]

writes ``DIR/train/{image,label,depth,normal}/{i}.npy`` (the ``train`` split of ``data=scenes``) and
``DIR/val/...`` (its ``test`` split; MTAN's ``val/`` is the reported split) with the release's
shapes and dtypes: image HxWx3 float32 in [0, 1], label HxW float32 (classes 0..12, -1 = ignore),
depth HxWx1 float32 (0 = missing), normal HxWx3 float32 ((0, 0, 0) = missing). The NYUv2 loader
reads it: ``data=nyuv2 data.root=DIR``. The same seed and sizes give the same scenes as
``data=scenes data.data_seed=S`` (images up to the loader's uint8 storage, which is exact here).

Everything is written into a hidden sibling folder first and renamed into place at the end, so an
interrupted run leaves no half-written DIR. A non-empty DIR is only replaced with ``--force``.
Errors are printed as one ``error: ...`` line with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from molabench.data.scenes import generate
from molabench.errors import ConfigError, MolabenchError

KINDS = ("image", "label", "depth", "normal")


def _write_split(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    for kind in KINDS:
        (folder / kind).mkdir(parents=True)
    for i in range(arrays["image"].shape[0]):
        np.save(folder / "image" / f"{i}.npy", arrays["image"][i].astype(np.float32))
        np.save(folder / "label" / f"{i}.npy", arrays["label"][i].astype(np.float32))  # MTAN stores labels as floats
        np.save(folder / "depth" / f"{i}.npy", arrays["depth"][i].astype(np.float32))
        np.save(folder / "normal" / f"{i}.npy", arrays["normal"][i].astype(np.float32))


def write_release(
    out: Path, n_train: int, n_test: int, height: int, width: int, seed: int, force: bool = False
) -> Path:
    """Render and write the release to ``out`` (see module doc); returns the final folder."""
    for name, v in (("--n-train", n_train), ("--n-test", n_test)):
        if v < 1:
            raise ConfigError(f"{name} must be at least 1, got {v}")
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} is not empty; pass --force to replace it or choose another --out")
    train = generate("train", n_train, height, width, seed)  # validates height/width first
    test = generate("test", n_test, height, width, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        _write_split(tmp / "train", train)
        _write_split(tmp / "val", test)
        if out.is_dir():
            out.rename(old)  # empty, or --force
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the procedural scenes dataset (the offline NYUv2 stand-in) in the MTAN .npy layout."
    )
    parser.add_argument(
        "--out", required=True, help="folder to create; it will hold train/ and val/ (data.root of data=nyuv2)"
    )
    parser.add_argument("--n-train", type=int, default=320, help="scenes in train/ (the train split of data=scenes)")
    parser.add_argument("--n-test", type=int, default=128, help="scenes in val/ (the test split of data=scenes)")
    parser.add_argument("--height", type=int, default=96, help="image height, a multiple of 8 (>= 16)")
    parser.add_argument("--width", type=int, default=128, help="image width, a multiple of 8 (>= 16); 3:4 like NYUv2")
    parser.add_argument("--seed", type=int, default=0, help="data seed (data.data_seed of data=scenes)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = write_release(Path(args.out), args.n_train, args.n_test, args.height, args.width, args.seed, args.force)
    except (MolabenchError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"wrote {args.n_train} train + {args.n_test} val scenes of {args.height}x{args.width} to {out} ({seconds:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
