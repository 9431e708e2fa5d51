"""Fetch or check a dataset before training.

    python scripts/prepare_data.py medmnist --root DIR [--tasks pathmnist octmnist ...] [--size 28|64|128|224] [--force]
        downloads the official MedMNIST npz files missing from DIR (Zenodo, md5-checked).
    python scripts/prepare_data.py {vlcs,officehome,pacs,radimagenet,nyuv2} --root DIR [--image-size N] [--cache-dir DIR]
        reads the dataset once: validates the files (one clear error per problem) and, for the
        folder datasets, fills the decoded-image cache; prints the split sizes.

Errors are printed as one ``error: ...`` line with exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from molabench.data import build_data, medmnist
from molabench.errors import MolabenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch (MedMNIST) or check and cache a dataset.")
    parser.add_argument("dataset", choices=["medmnist", "vlcs", "officehome", "pacs", "radimagenet", "nyuv2"])
    parser.add_argument("--root", required=True, help="dataset folder (data.root)")
    parser.add_argument("--tasks", nargs="*", default=None, help="MedMNIST tasks (default: the paper's nine)")
    parser.add_argument("--size", type=int, default=28, help="MedMNIST release resolution to download")
    parser.add_argument("--force", action="store_true", help="replace MedMNIST files whose md5 differs")
    parser.add_argument("--image-size", type=int, default=None, help="resolution to decode/cache (default: config's)")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default $MOLABENCH_CACHE or ~/.cache/molabench)")
    args = parser.parse_args(argv)
    try:
        if args.dataset == "medmnist":
            for path in medmnist.download(args.root, args.tasks, args.size, force=args.force):
                print(f"ok {path}")
            return 0
        cfg: dict[str, object] = {"name": args.dataset, "root": args.root, "seed": 0}
        if args.image_size and args.dataset != "nyuv2":
            cfg["image_size"] = args.image_size
        if args.cache_dir and args.dataset in {"vlcs", "officehome", "pacs"}:
            cfg["cache_dir"] = args.cache_dir
        data = build_data(cfg)
        for split, sizes in data.split_sizes().items():
            print(f"{split}: " + ", ".join(f"{t.display}={n}" for t, n in zip(data.tasks, sizes, strict=True)))
        return 0
    except MolabenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
