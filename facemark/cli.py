"""The ``facemark`` command line: each sub-command parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_prepare(args) -> int:
    from facemark.data.prepare import prepare

    summary = prepare(args.root, args.out, size=args.size, context=args.context, skip_bad=args.skip_bad,
                      train_on_all=args.train_on_all)
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


def _export(args) -> int:
    from facemark.export import export_inference_checkpoint, export_onnx

    outputs = [export_onnx(args.checkpoint, args.onnx or Path(args.checkpoint).with_suffix(".onnx"), opset=args.opset)]
    if args.pt:
        outputs.append(export_inference_checkpoint(args.checkpoint, args.pt))
    for out in outputs:
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _predict(args) -> int:
    from facemark.api import Landmarker
    from facemark.predict import SAMPLE_IMAGE, predict_paths

    paths = [p for p in args.paths if not (p == "sample" and not Path(p).exists())]
    if args.sample or len(paths) < len(args.paths):
        paths.append(SAMPLE_IMAGE)
    if not paths:
        raise ValueError("give image files, folders or videos to predict on (or --sample for the bundled photo)")
    try:
        landmarker = Landmarker(args.model, backend=args.backend, detector=args.detector)
        result = predict_paths(paths, landmarker, args.out, json_path=args.json, boxes=args.boxes,
                               draw_box=args.draw_box, draw_indices=args.indices, align=args.align, pose=args.pose,
                               smooth=args.smooth, max_faces=args.max_faces)
    except ImportError as err:  # an optional detector dependency: the message names the pip extra
        raise RuntimeError(str(err)) from None
    faces = sum(len(image["faces"]) for image in result["images"])
    print(f"{faces} faces in {len(result['images'])} images, {len(result['videos'])} videos "
          f"({len(result['skipped'])} skipped); annotated files in {args.out}, "
          f"JSON in {args.json or Path(args.out) / 'predictions.json'}")
    return 1 if result["skipped"] and not (result["images"] or result["videos"]) else 0  # nothing usable


def _eval(args) -> int:
    from facemark.evaluate import compare, evaluate, load_predictor

    if args.compare:
        result = compare(args.compare, args.out)
        print(result["table"])
        print(f"wrote {result['png']} and {result['markdown']}")
        return 0
    if not (args.model and args.data):
        raise ValueError("eval needs --model and --data (or --compare METRICS.json ...)")
    try:
        predictor = load_predictor(args.model, data=args.data, train_store=args.train_store,
                                   detector=args.detector, backend=args.backend)
    except ImportError as err:  # dlib or a detector's optional dependency: the message names the pip extra
        raise RuntimeError(str(err)) from None
    result = evaluate(predictor, args.data, split=args.split, box=args.box, normalisation=args.norm,
                      max_error=args.max_error, jitter=args.jitter, out=args.out, worst_k=args.worst_k,
                      detector=args.detector)
    print(result["headline"])
    print(f"wrote metrics.json, report.md, ced.png, worst.png to {args.out}")
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
    p.add_argument("--train-on-all", action="store_true",
                   help="the train store holds every face, validation ones too (for a final model; its "
                        "validation figures are then not held out)")
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

    p = commands.add_parser("export", help="export a checkpoint to ONNX (batch norm folded, metadata inside)")
    p.add_argument("checkpoint", help="a .pt checkpoint")
    p.add_argument("--onnx", default=None, help="output file (default: the checkpoint's path with .onnx)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--pt", default=None, help="also write an inference-only checkpoint (no optimizer state) here")
    p.set_defaults(func=_export)

    p = commands.add_parser("predict", help="landmarks for images, folders and videos: annotated copies and JSON")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders (recursive) or video files")
    p.add_argument("--sample", action="store_true", help="also predict on the bundled sample photo")
    p.add_argument("--out", default="facemark-out", help="folder for annotated files (default: facemark-out)")
    p.add_argument("--json", default=None, help="JSON results file (default: <out>/predictions.json)")
    p.add_argument("--model", default="default", help="'default', a .pt checkpoint or an .onnx model")
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help="default: onnx when installed")
    p.add_argument("--detector", default=None, help="face detector (default: facemark.detectors.DEFAULT_DETECTOR)")
    p.add_argument("--boxes", default=None, help="JSON {image file name: [[x0, y0, x1, y1], ...]} of tight "
                   "landmark-style boxes, used instead of detection")
    p.add_argument("--draw-box", action="store_true", help="draw the face boxes")
    p.add_argument("--indices", action="store_true", help="label the points with their indices")
    p.add_argument("--align", action="store_true", help="write 112x112 ArcFace-aligned crops to <out>/aligned/")
    p.add_argument("--pose", action="store_true", help="estimate head pose (yaw, pitch, roll)")
    p.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True,
                   help="One-Euro smoothing of video landmarks (default: on)")
    p.add_argument("--max-faces", type=int, default=None, help="at most this many faces per image")
    p.set_defaults(func=_predict)

    p = commands.add_parser("eval", help="score a model on annotated faces (NME, CED, AUC), or compare runs")
    p.add_argument("--model", default=None, help="'default', a .pt/.onnx file, 'mean-shape' or 'dlib'")
    p.add_argument("--data", default=None, help="a store (data/300w-lite/val), a prepared folder or a dataset folder")
    p.add_argument("--split", default="val", help="split of a prepared or dataset folder: train, val or all")
    p.add_argument("--box", choices=("gt", "detector"), default="gt",
                   help="gt: ground-truth landmark box (300-W protocol); detector: detected and matched faces")
    p.add_argument("--detector", default=None, help="face detector for --box detector (default: the model's)")
    p.add_argument("--norm", choices=("inter_ocular", "inter_pupil", "box_diagonal", "box_area"), default="inter_ocular")
    p.add_argument("--max-error", type=float, default=0.10, help="CED/AUC cut-off as a fraction (0.10 = 10 %%)")
    p.add_argument("--jitter", type=float, default=0.0, help="random box-edge noise, fraction of the box (gt boxes)")
    p.add_argument("--worst-k", type=int, default=16, help="faces in the worst-faces gallery")
    p.add_argument("--train-store", default=None, help="for mean-shape (default: the train store beside --data)")
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help="default: onnx when installed")
    p.add_argument("--compare", nargs="+", default=None, metavar="METRICS_JSON",
                   help="overlay the CEDs of these metrics.json files instead of evaluating")
    p.add_argument("--out", default="report", help="output folder (default: report)")
    p.set_defaults(func=_eval)

    p = commands.add_parser("serve", help="HTTP service and web page (POST /v1/landmarks, GET /, /docs)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="default", help="'default', a .pt checkpoint or an .onnx model")
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help="default: onnx when installed")
    p.add_argument("--detector", default=None, help="face detector (default: facemark.detectors.DEFAULT_DETECTOR)")
    p.add_argument("--workers", type=int, default=2, help="inference threads (one process)")
    p.add_argument("--queue", type=int, default=8, help="requests that may wait for a worker before 503")
    p.add_argument("--max-upload-mb", type=float, default=10, help="larger uploads are answered 413")
    p.set_defaults(func=_serve)
    return parser


def _serve(args) -> int:
    import uvicorn

    from facemark.serve.app import create_app

    app = create_app(args.model, backend=args.backend, detector=args.detector, max_upload_mb=args.max_upload_mb,
                     workers=args.workers, queue=args.queue)
    uvicorn.run(app, host=args.host, port=args.port)  # the model loads in the app's lifespan, at start
    return 0


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
