"""The ``facemark`` command line: each sub-command parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_prepare(args) -> int:
    from facemark.data.prepare import prepare

    summary = prepare(args.root, args.out, size=args.size, context=args.context, skip_bad=args.skip_bad)
    print(f"{summary['faces']} faces prepared ({summary['train']} train, {summary['val']} val) "
          f"into {args.out}; {len(summary['skipped'])} skipped")
    for path, reason in summary["skipped"]:
        print(f"  skipped {path}: {reason}")
    if summary["skipped"]:
        print(f"  (list written to {Path(args.out) / 'skipped.txt'})")
    return 0


def _data_preview(args) -> int:
    from facemark.data.preview import preview_store

    print(f"wrote {preview_store(args.store, args.out, count=args.count, augment=args.augment)}")
    return 0


def _train(args) -> int:
    from facemark.config import load_config
    from facemark.train import train

    summary = train(load_config(args.config, args.set), resume=args.resume, max_steps=args.max_steps)
    print(f"stopped at step {summary['step']}; best validation NME {100 * summary['best_nme']:.3f} % "
          f"(inter-ocular, ground-truth landmark box); checkpoints in {summary['out']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facemark", description="2D facial landmark detection")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="prepare and inspect datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("prepare", help="read annotations, split 80/20 and pack train/val stores")
    p.add_argument("root", help="dataset folder (300-W .pts, 300W-LP/AFLW2000-3D .mat)")
    p.add_argument("--out", default=None, help="output folder (default: data/<root folder name>)")
    p.add_argument("--size", type=int, default=192, help="stored region size in pixels")
    p.add_argument("--context", type=float, default=1.5, help="region size relative to the crop box")
    p.add_argument("--skip-bad", action="store_true", help="skip bad samples (listed) instead of stopping")
    p.set_defaults(func=_data_prepare)
    p = data.add_parser("preview", help="draw a grid of random samples with their points")
    p.add_argument("store", help="a store folder (e.g. data/300w-lite/train)")
    p.add_argument("--out", default="preview.png")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--augment", action="store_true", help="show training augmentation")
    p.set_defaults(func=_data_preview)

    p = commands.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (schedule unchanged)")
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "out", "") is None and getattr(args, "root", None):
        args.out = str(Path("data") / Path(args.root).resolve().name)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"facemark: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
