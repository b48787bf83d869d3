"""The ``facemark`` command line: each sub-command parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from facemark._version import __version__
from facemark.annotate import annotate
from facemark.api import MIN_QUALITY, Landmarker
from facemark.bulk import WriteError, bulk
from facemark.data.formats import FORMATS
from facemark.data.prepare import prepare
from facemark.data.store import convert_stores
from facemark.detectors import DEFAULT_DETECTOR, list_detectors
from facemark.evaluate import check_settings, compare, evaluate
from facemark.extras import MissingExtra, missing_extra_message
from facemark.images import MAX_PIXELS, default_max_bytes
from facemark.predict import SAMPLE_IMAGE, predict_paths
from facemark.schemes import CONVERSIONS, load_scheme
from facemark.spec import SHIPPED_MODELS


def _data_prepare(args) -> int:
    summary = prepare(args.root, args.out, size=args.size, context=args.context, skip_bad=args.skip_bad,
                      train_on_all=args.train_on_all, format=args.format, images=args.images,
                      scheme=_scheme_arg(args), max_pixels=args.max_pixels, max_bytes=args.max_bytes)
    print(f"{summary['faces']} faces prepared ({summary['train']} train, {summary['val']} val) "
          f"into {args.out}; {len(summary['skipped'])} skipped")
    for path, reason in summary["skipped"]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    if summary["skipped"]:
        print(f"  (list written to {Path(args.out) / 'skipped.txt'})", file=sys.stderr)
    return 0


def _scheme_arg(args):
    """``--scheme my.yaml`` loaded and validated (None when not given)."""
    if not getattr(args, "scheme", None):
        return None
    return load_scheme(args.scheme)


def _data_convert(args) -> int:
    sources = [Path(p) for p in args.sources]
    # prepared folders (train/ and val/ stores) convert split by split; store folders into one store
    splits = ["train", "val"] if all((p / "train" / "index.json").is_file() for p in sources) else [None]
    for split in splits:
        out = convert_stores([p / split if split else p for p in sources], Path(args.out) / split if split else args.out,
                             CONVERSIONS[args.to] if args.to else None, size=args.size)
        print(f"wrote {out}")
    return 0


def _data_preview(args) -> int:
    from facemark.data.preview import preview_store

    print(f"wrote {preview_store(args.store, args.out, count=args.count, augment=args.augment)}")
    return 0


def _train_flags(args) -> list[str]:
    """``--init`` and ``--scheme`` as config overrides (``--scheme`` validated first)."""
    flags = [f"init={args.init}"] if args.init else []
    if args.scheme:
        _scheme_arg(args)
        flags.append(f"scheme={args.scheme}")
    return flags


def _train(args) -> int:
    if args.print_config:
        if args.method != "cnn":
            raise ValueError("--print-config shows the config of --method cnn")
        from facemark.config import describe_config

        print(describe_config(args.config, args.set + _train_flags(args)), end="")
        return 0
    if args.config is None:
        raise ValueError("train needs --config (see configs/)")
    if args.method != "cnn":  # classical models: facemark.classical.train
        if args.resume or args.max_steps or args.init or args.scheme:
            raise ValueError(f"--resume, --max-steps, --init and --scheme apply to --method cnn, not {args.method}")
        from facemark.classical.train import train_classical

        try:
            summary = train_classical(args.method, args.config, args.set)
        except ImportError as err:  # dlib (ERT): the message names the pip extra
            raise RuntimeError(str(err)) from None
        print(f"trained {args.method} in {summary['seconds']:.0f} s; validation NME {100 * summary['val_nme']:.3f} % "
              f"(val store crops, ground-truth landmark box); model in {summary['model']}")
        return 0
    from facemark.config import load_config
    from facemark.train import train

    overrides = args.set + _train_flags(args)
    summary = train(load_config(args.config, overrides), resume=args.resume, max_steps=args.max_steps)
    print(f"stopped at step {summary['step']}; best validation NME {100 * summary['best_nme']:.3f} % "
          f"({summary['normalisation']}); checkpoints in {summary['out']}")
    return 0


def _export(args) -> int:
    from facemark.export import export_inference_checkpoint, export_onnx, quantize_onnx

    outputs = [export_onnx(args.checkpoint, args.onnx or Path(args.checkpoint).with_suffix(".onnx"), opset=args.opset)]
    if args.int8:
        outputs.append(quantize_onnx(outputs[0], outputs[0].with_suffix(".int8.onnx"), args.int8, count=args.calib))
    if args.pt:
        outputs.append(export_inference_checkpoint(args.checkpoint, args.pt))
    for out in outputs:
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _predict(args) -> int:
    paths = [p for p in args.paths if not (p == "sample" and not Path(p).exists())]
    if args.sample or len(paths) < len(args.paths):
        paths.append(SAMPLE_IMAGE)
    if not paths:
        raise ValueError("give image files, folders or videos to predict on (or --sample for the bundled photo)")
    try:
        landmarker = Landmarker(args.model, backend=args.backend, detector=args.detector, scheme=_scheme_arg(args),
                                min_quality=args.min_quality, max_pixels=args.max_pixels, max_bytes=args.max_bytes)
        result = predict_paths(paths, landmarker, args.out, json_path=args.json, boxes=args.boxes,
                               draw_box=args.draw_box, draw_indices=args.indices, draw_lines=args.lines,
                               align=args.align, pose=args.pose,
                               smooth=args.smooth, every=args.every, max_faces=args.max_faces,
                               legend=args.legend)
    except ImportError as err:  # an optional detector dependency: the message names the pip extra
        raise RuntimeError(str(err)) from None
    faces = sum(len(image["faces"]) for image in result["images"]) + sum(video["faces"] for video in result["videos"])
    json_path = args.json or Path(args.out) / "predictions.json"
    print(f"{faces} faces in {len(result['images'])} images, {len(result['videos'])} videos "
          f"({len(result['skipped'])} skipped); annotated files in {args.out}, JSON in {json_path}")
    if result["skipped"] and not (args.skip_bad and (result["images"] or result["videos"])):
        print(f"facemark: error: {len(result['skipped'])} of the inputs could not be used (listed above and under "
              f"'skipped' in {json_path}){'' if args.skip_bad else '; --skip-bad accepts that'}", file=sys.stderr)
        return 1
    return 0


def _annotate(args) -> int:
    landmarker = Landmarker(args.model, backend=args.backend, min_quality=None,  # every face, lowest quality first
                            max_pixels=args.max_pixels, max_bytes=args.max_bytes)
    result = annotate(args.images, landmarker, out=args.out, pts=args.pts, overwrite=args.overwrite,
                      max_faces=args.max_faces)
    qualities = [q for _, q in result["faces"] if q is not None]
    for item in result["skipped"]:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    print(f"{len(result['faces'])} faces labelled in {result['images']} images, lowest quality first"
          + (f" (quality {min(qualities):.3f} .. {max(qualities):.3f})" if qualities else "")
          + f"; wrote {len(result['written'])} files" + (f" ({result['written'][0]})" if args.out and result["written"] else "")
          + (f"; kept {len(result['kept'])} existing .pts (--overwrite replaces them)" if result["kept"] else "")
          + (f"; {result['extra_faces']} more faces not written (a .pts holds one)" if result["extra_faces"] else "")
          + (f"; no face in {len(result['no_face'])}: {', '.join(result['no_face'][:5])}" if result["no_face"] else "")
          + (f"; {len(result['skipped'])} skipped" if result["skipped"] else ""))
    if result["skipped"] and not (args.skip_bad and result["images"]):
        print(f"facemark: error: {len(result['skipped'])} of the images could not be labelled (listed above)"
              f"{'' if args.skip_bad else '; --skip-bad accepts that'}", file=sys.stderr)
        return 1
    return 0


def load_predictor(model: str, data: str | Path | None = None, train_store: str | Path | None = None,
                   detector: str | None = None, backend: str | None = None):
    """The predictor ``facemark eval --model`` names: ``"mean-shape"``, ``"dlib"`` (baselines,
    :mod:`facemark.baselines`), else a :class:`~facemark.Landmarker` model (``"default"``, a file).

    ``"mean-shape"`` needs a training store: ``train_store``, else the ``train`` store beside the
    evaluated ``data`` store (``data/x/val`` -> ``data/x/train``; ``data/x`` -> ``data/x/train``).
    """
    if model == "mean-shape":
        from facemark.baselines import MeanShapePredictor

        if train_store is None and data is not None:
            data = Path(data)
            train_store = data.parent / "train" if (data / "index.json").is_file() else data / "train"
        if train_store is None or not (Path(train_store) / "index.json").is_file():
            raise FileNotFoundError(f"mean-shape needs a training store (got {train_store}); pass --train-store")
        return MeanShapePredictor.from_store(train_store)
    if model == "dlib":
        from facemark.baselines import DlibPredictor

        return DlibPredictor()
    return Landmarker(model, backend=backend, detector=detector)


def _eval(args) -> int:
    if args.compare:
        result = compare(args.compare, args.out)
        print(result["table"])
        print(f"wrote {result['png']} and {result['markdown']}")
        return 0
    if not (args.model and args.data):
        raise ValueError("eval needs --model and --data (or --compare METRICS.json ...)")
    check_settings(box=args.box, jitter=args.jitter, rotate=args.rotate, max_error=args.max_error,
                   worst_k=args.worst_k)  # before the model loads
    try:
        predictor = load_predictor(args.model, data=args.data, train_store=args.train_store,
                                   detector=args.detector, backend=args.backend)
    except ImportError as err:  # dlib or a detector's optional dependency: the message names the pip extra
        raise RuntimeError(str(err)) from None
    result = evaluate(predictor, args.data, split=args.split, box=args.box, normalisation=args.norm,
                      max_error=args.max_error, jitter=args.jitter, rotate=args.rotate, out=args.out,
                      worst_k=args.worst_k, detector=args.detector, scheme=_scheme_arg(args),
                      max_pixels=args.max_pixels, max_bytes=args.max_bytes)
    print(result["headline"])
    written = ["metrics.json", "report.md", *(["ced.png"] if result.get("ced_png", True) is not None else []),
               *(["worst.png"] if args.worst_k > 0 else [])]
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0


def _positive(text: str) -> float:
    """argparse type: a finite number > 0 (nan and inf are floats too)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _float_in(text: str, low: float, high: float, what: str) -> float:
    """``text`` as a float in ``low..high`` (nan fails the check too), else an argparse error naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _quality_floor(text: str) -> float | None:
    """argparse type: a fit-quality floor in 0..1, or 'none' (keep every face)."""
    if text.strip().lower() == "none":
        return None
    return _float_in(text, 0.0, 1.0, "a number in 0..1 or 'none'")


def _port(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number (1..65535), got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {value}")
    return value


def _at_least_zero(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1 (0 or -1 would silently mean 'nothing' or 'all but one')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default; options whose default is None say it in words."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "(default" in text or action.default in (None, argparse.SUPPRESS, []):
            return text
        value = {False: "off", True: "on"}.get(action.default, action.default) if isinstance(action.default, bool) \
            else action.default
        return f"{text} (default: {value})"


SCHEME_HELP = "a point-scheme file (name, point names, flip permutation, NME pair, lines; see facemark/assets/schemes/)"
MODEL_HELP = (f"a shipped model ({', '.join(SHIPPED_MODELS)}: the models' cards in facemark/assets/models), "
              "a .pt checkpoint, an .onnx model or a classical .dat/.lbf.npz model")
BACKEND_HELP = "onnx or torch (default: the model file's: onnx for .onnx and 'default', torch for .pt)"


def _detector_help() -> str:
    return f"face detector, one of {', '.join(list_detectors())} (default: {DEFAULT_DETECTOR})"


def _command(group, name: str, text: str) -> argparse.ArgumentParser:
    return group.add_parser(name, help=text, description=text, formatter_class=_HelpWithDefaults)


def _add_data(commands) -> None:
    """``facemark data prepare | convert | preview``: its arguments."""
    data = _command(commands, "data", "prepare and inspect datasets").add_subparsers(dest="data_command", required=True)
    p = _command(data, "prepare", "read annotations, split 80/20 and pack train/val stores")
    p.add_argument("root", help="a dataset folder (300-W .pts, 300W-LP/AFLW2000-3D .mat) or annotation file "
                   "(WFLW list .txt, COFW .mat, dlib imglab .xml)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="annotation format (default: detected from root when unambiguous)")
    p.add_argument("--images", default=None, help="WFLW: the image folder (default: the list's folder); COFW: "
                   "where its embedded images are extracted (default: <out>/images)")
    p.add_argument("--out", default=None, help="output folder (default: data/<root folder name>)")
    p.add_argument("--size", type=int, default=192, help="stored region size in pixels")
    p.add_argument("--context", type=float, default=1.5, help="region size relative to the crop box")
    p.add_argument("--skip-bad", action="store_true", help="skip bad samples (listed) instead of stopping")
    p.add_argument("--train-on-all", action="store_true",
                   help="the train store holds every face, validation ones too (for a final model; its "
                        "validation figures are then not held out)")
    p.add_argument("--scheme", default=None, metavar="YAML",
                   help=f"{SCHEME_HELP} recorded in the stores (default: the built-in scheme of the point count)")
    p.set_defaults(func=_data_prepare)
    p = _command(data, "convert", "convert prepared data to another point scheme and/or merge several into one")
    p.add_argument("sources", nargs="+", help="prepared folders (each with train/ and val/, converted split by "
                   "split) or store folders (merged into one store)")
    p.add_argument("--to", choices=sorted(CONVERSIONS), default=None,
                   help="target scheme (5pt: eye centres = means of 68-point 36-41 / 42-47, nose tip 30, mouth "
                        "corners 48 and 54; 68pt: WFLW 98 -> iBUG 68 by the usual index map) "
                        "(default: none, keep the points and only merge)")
    p.add_argument("--out", required=True, help="output folder (default: none; required)")
    p.add_argument("--size", type=int, default=None, help="stored region size (default: the first source's)")
    p.set_defaults(func=_data_convert)
    p = _command(data, "preview", "draw a grid of random samples with their points")
    p.add_argument("store", help="a store folder (e.g. data/300w-lite/train)")
    p.add_argument("--out", default="preview.png", help="image file to write")
    p.add_argument("--count", type=_at_least_one, default=16, help="samples in the grid")
    p.add_argument("--augment", action="store_true", help="show training augmentation")
    p.set_defaults(func=_data_preview)


def _add_train(commands) -> None:
    """``facemark train``: its arguments."""
    p = _command(commands, "train", "train a model from a YAML config")
    p.add_argument("--config", default=None, help="YAML config, e.g. configs/300w_pipnet_resnet_128.yaml "
                   "(default: none; required unless --print-config shows the defaults)")
    p.add_argument("--method", choices=("cnn", "ert", "lbf"), default="cnn",
                   help="cnn: a neural model; ert: dlib's regression trees; lbf: local binary features")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune: start from these weights, 'default', 'default-5' or a .pt checkpoint; tensors "
                        "whose name and shape match are copied, the rest (the head for another point count) "
                        "start fresh; refused, naming the configs that fit, when most backbone tensors do not match "
                        "(--set init_partial=true) (default: the config's init, empty: random weights)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys for nested ones (crop.top=0.3); repeatable "
                        "(default: none; --print-config lists every key)")
    p.add_argument("--max-steps", type=_at_least_one, default=None,
                   help="stop after this step, schedule unchanged (default: the config's steps)")
    p.add_argument("--scheme", default=None, metavar="YAML",
                   help=f"{SCHEME_HELP} as config key scheme (default: the data's, else the point count's)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (config file + --set) with every key --set accepts, and exit")
    p.set_defaults(func=_train)


def _add_export(commands) -> None:
    """``facemark export``: its arguments."""
    p = _command(commands, "export", "export a checkpoint to ONNX (batch norm folded, model spec in the metadata)")
    p.add_argument("checkpoint", help="a .pt checkpoint")
    p.add_argument("--onnx", default=None, help="output file (default: the checkpoint's path with .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--pt", default=None,
                   help="also write an inference-only checkpoint (no optimizer state) here (default: not written)")
    p.add_argument("--int8", default=None, metavar="DATA",
                   help="also write an INT8 copy of the ONNX file (<onnx>.int8.onnx, onnxruntime static "
                   "quantization, 7-bit weights) calibrated on training crops of this prepared folder "
                   "(default: not written)")
    p.add_argument("--calib", type=_at_least_one, default=256, help="training crops for the INT8 calibration")
    p.set_defaults(func=_export)


def _add_predict(commands) -> None:
    """``facemark predict``: its arguments."""
    p = _command(commands, "predict", "landmarks for images, folders and videos: annotated copies and JSON")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders (recursive) or video files")
    p.add_argument("--sample", action="store_true", help="also predict on the bundled sample photo")
    p.add_argument("--out", default="facemark-out", help="folder for annotated files")
    p.add_argument("--json", default=None, help="JSON results file (default: <out>/predictions.json)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help=BACKEND_HELP)
    p.add_argument("--detector", choices=list_detectors(), default=None, metavar="NAME", help=_detector_help())
    p.add_argument("--boxes", default=None, help="JSON {image file name: [[x0, y0, x1, y1], ...]} of tight "
                   "landmark-style boxes, used instead of detection (default: detect)")
    p.add_argument("--draw-box", action="store_true", help="draw the face boxes")
    p.add_argument("--indices", action="store_true", help="label the points with their indices")
    p.add_argument("--lines", action="store_true", help="join the points by the scheme's lines (jaw, brows, eyes, "
                   "nose, lips for 68 points)")
    p.add_argument("--legend", action=argparse.BooleanOptionalAction, default=True,
                   help="a key to the marks (dots, red rings of unsure points, lines, boxes) in a corner of each "
                        "annotated image")
    p.add_argument("--align", action="store_true", help="write 112x112 ArcFace-aligned crops to <out>/aligned/")
    p.add_argument("--pose", action="store_true", help="estimate head pose (yaw, pitch, roll)")
    p.add_argument("--scheme", default=None, metavar="YAML",
                   help=f"{SCHEME_HELP} for flip test, pose and alignment (default: the one the model was trained with)")
    p.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True,
                   help="One-Euro smoothing of video landmarks")
    p.add_argument("--every", type=_at_least_one, default=10,
                   help="video: run the face detector every N frames (and when a face is lost); in between each "
                        "face is followed from its points in the previous frame; 1: detect on every frame (default: 10)")
    p.add_argument("--max-faces", type=_at_least_one, default=None, help="at most this many faces per image "
                   "(default: all)")
    p.add_argument("--min-quality", type=_quality_floor, default=MIN_QUALITY, metavar="Q",
                   help="drop detected faces whose fit quality is below Q (0..1; 'none' keeps every face; given "
                        "--boxes are always kept)")
    p.add_argument("--skip-bad", action="store_true",
                   help="exit 0 although some inputs could not be read (they are still listed)")
    p.set_defaults(func=_predict)


def _add_annotate(commands) -> None:
    """``facemark annotate``: its arguments."""
    p = _command(commands, "annotate", "pre-label images with the model (dlib XML or .pts), lowest quality first, "
                                      "for a person to correct")
    p.add_argument("images", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", default=None, help="dlib imglab XML file to write, e.g. labels.xml (default: none; "
                       "--out or --pts is required)")
    where.add_argument("--pts", action="store_true", help="write <image>.pts beside each image (its best face) (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace existing labels: .pts files (default: kept) or "
                   "the --out XML file (default: refused)")
    p.add_argument("--model", default="default", help="a shipped model, a .pt checkpoint or an .onnx model")
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help=BACKEND_HELP)
    p.add_argument("--max-faces", type=_at_least_one, default=None, help="at most this many faces per image "
                   "(default: all)")
    p.add_argument("--skip-bad", action="store_true",
                   help="exit 0 although some images could not be labelled (they are still listed)")
    p.set_defaults(func=_annotate)


def _add_eval(commands) -> None:
    """``facemark eval``: its arguments."""
    p = _command(commands, "eval", "score a model on annotated faces (NME, CED, AUC), or compare runs")
    p.add_argument("--model", default=None, help="'default', a .pt/.onnx file, a classical .dat/.lbf.npz model, "
                   "'mean-shape' or 'dlib' (default: none; required unless --compare)")
    p.add_argument("--data", default=None, help="a store (data/300w-lite/val), a prepared folder or a dataset folder "
                   "(default: none; required unless --compare)")
    p.add_argument("--split", default="val", help="split of a prepared or dataset folder: train, val or all")
    p.add_argument("--box", choices=("gt", "detector"), default="gt",
                   help="gt: ground-truth landmark box (300-W protocol); detector: detected and matched faces")
    p.add_argument("--detector", choices=list_detectors(), default=None, metavar="NAME",
                   help=f"face detector for --box detector, one of {', '.join(list_detectors())} (default: the model's, "
                        f"{DEFAULT_DETECTOR})")
    p.add_argument("--scheme", default=None, metavar="YAML",
                   help=f"{SCHEME_HELP} for NME normalisation and per-group errors (default: the model's, else "
                        "the data's, else the point count's)")
    p.add_argument("--norm", choices=("inter_ocular", "inter_pupil", "box_diagonal", "box_area"), default="inter_ocular",
                   help="NME normalisation")
    p.add_argument("--max-error", type=float, default=0.10, help="CED/AUC cut-off as a fraction (0.10 = 10 %%)")
    p.add_argument("--jitter", type=float, default=0.0, help="random box-edge noise, fraction of the box (gt boxes)")
    p.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                   help="turn each photo by a random angle in +-DEG about the face first (tilted heads)")
    p.add_argument("--worst-k", type=_at_least_zero, default=16, help="faces in the worst-faces gallery")
    p.add_argument("--train-store", default=None, help="for mean-shape (default: the train store beside --data)")
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help=BACKEND_HELP)
    p.add_argument("--compare", nargs="+", default=None, metavar="METRICS_JSON",
                   help="overlay the CEDs of these metrics.json files instead of evaluating (default: evaluate)")
    p.add_argument("--out", default="report", help="output folder")
    p.set_defaults(func=_eval)


def _add_bulk(commands) -> None:
    """``facemark bulk``: its arguments."""
    p = _command(commands, "bulk", "landmarks for many photos into Parquet, one row per face, on this machine or on "
                                  "a Ray cluster; run it again to resume (docs/bulk.md)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), globs "
                   "(quoted: 'photos/**/*.jpg') or URIs pyarrow reads (s3://bucket/photos/)")
    p.add_argument("--out", required=True, help="folder for the Parquet part files (default: none; required)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data (pip install \"facemark[ray]\")")
    p.add_argument("--address", default=None, help="--engine ray: join this running Ray cluster (ray start --head "
                   "prints it) (default: start a local Ray instance and stop it at the end)")
    p.add_argument("--workers", type=_at_least_one, default=None, help="model copies at once, each with CPUs/N "
                   "ONNX Runtime threads: threads on the local engine, actors on ray "
                   "(default: one per CPU; local: at most 8)")
    p.add_argument("--batch-size", type=_at_least_one, default=8, help="images per detect call")
    p.add_argument("--min-quality", type=_quality_floor, default=MIN_QUALITY, metavar="Q",
                   help="drop detected faces whose fit quality is below Q (0..1; 'none' keeps every face)")
    p.add_argument("--model", default="default", help=MODEL_HELP + " (on a cluster: the same path on every node)")
    p.add_argument("--detector", choices=list_detectors(), default=None, metavar="NAME", help=_detector_help())
    p.set_defaults(func=_bulk)


def _up_to_a_minute(text: str) -> float:
    """argparse type: seconds in 0..60."""
    return _float_in(text, 0.0, 60.0, "seconds in 0..60")


def _add_serve_limits(p) -> None:
    """``facemark serve``'s connection and live-session limits."""
    p.add_argument("--write-timeout", type=_positive, default=10, metavar="SECONDS",
                   help="a connection that reads none of its answers for this long is reset")
    p.add_argument("--max-pipelined", type=_at_least_zero, default=0, metavar="N",
                   help="answers in a row to requests sent before the previous answer was read (HTTP pipelining) "
                        "before the connection is closed (the client sends the rest again on a new one)")
    p.add_argument("--max-sessions", type=_at_least_one, default=8, metavar="N",
                   help="live-tracking sessions (/v1/track) at once; more are answered 503")
    p.add_argument("--sessions-per-client", type=_at_least_one, default=2, metavar="N",
                   help="live-tracking sessions one client address may hold (429 past it; behind a reverse proxy "
                        "every client has the proxy's address)")
    p.add_argument("--session-idle", type=_positive, default=15, metavar="SECONDS",
                   help="a live-tracking session expires this long after its last frame")
    p.add_argument("--session-max-age", type=_positive, default=600, metavar="SECONDS",
                   help="and in any case this long after it was opened")
    p.add_argument("--refusal-delay", type=_up_to_a_minute, default=1, metavar="SECONDS",
                   help="an upload refused from its image header (400, 413, 415) is answered this much later, "
                        "holding nothing but its connection, so re-sending such images in a loop costs little (0: at once)")


def _add_serve(commands) -> None:
    """``facemark serve``: its arguments."""
    p = _command(commands, "serve", "HTTP service and web page (POST /v1/landmarks, GET /, /docs)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (1..65535)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--backend", choices=("onnx", "torch"), default=None, help=BACKEND_HELP)
    p.add_argument("--detector", choices=list_detectors(), default=None, metavar="NAME", help=_detector_help())
    p.add_argument("--workers", type=_at_least_one, default=2, help="inference threads (one process)")
    p.add_argument("--queue", type=_at_least_zero, default=8, help="requests that may wait for a worker before 503")
    p.add_argument("--max-upload-mb", type=_positive, default=10, help="larger uploads are answered 413")
    p.add_argument("--upload-timeout", type=_positive, default=30, metavar="SECONDS",
                   help="an upload still arriving after this long is answered 408 (frees its queue place)")
    p.add_argument("--min-upload-rate", type=_positive, default=8, metavar="KB_PER_S",
                   help="an upload slower than this (kB/s) after its first 5 s is answered 408")
    p.add_argument("--header-timeout", type=_positive, default=10, metavar="SECONDS",
                   help="a connection that sends no complete request head for this long is closed")
    p.add_argument("--min-quality", type=_quality_floor, default=MIN_QUALITY, metavar="Q",
                   help="drop detected faces whose fit quality is below Q (0..1; 'none' keeps every face)")
    p.add_argument("--limit-concurrency", type=_at_least_one, default=500, metavar="N",
                   help="open connections at most (more are closed at once; requests past it get 503); keep it "
                        "below ulimit -n")
    _add_serve_limits(p)
    p.set_defaults(func=_serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``facemark`` parser: the global options, then one small builder per command."""
    parser = argparse.ArgumentParser(prog="facemark", description="2D facial landmark detection",
                                     formatter_class=_HelpWithDefaults)
    parser.add_argument("--version", action="version", version=f"facemark {__version__}")
    parser.add_argument("--max-mpx", type=_positive, default=None,
                        help="the largest image every command accepts, in megapixels (its declared size is checked "
                             "before it is decoded; the HTTP service's limit too); give it before the command "
                             "(default: 40, facemark.images.MAX_PIXELS)")
    parser.add_argument("--max-mb", type=_positive, default=None,
                        help="the largest image file every command reads, in MB (its size is checked before a byte "
                             "is read); give it before the command (default: 4 bytes a pixel of --max-mpx + 16 MiB: "
                             "176.8 MB for 40 Mpx, facemark.images.default_max_bytes)")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_data, _add_train, _add_export, _add_predict, _add_annotate, _add_eval, _add_bulk, _add_serve):
        add(commands)
    return parser


def _bulk(args) -> int:
    try:
        result = bulk(args.inputs, args.out, engine=args.engine, address=args.address, workers=args.workers,
                      batch_size=args.batch_size, model=args.model, detector=args.detector,
                      min_quality=args.min_quality, progress=sys.stderr.isatty(), max_pixels=args.max_pixels,
                      max_bytes=args.max_bytes)
    except ImportError as err:  # pyarrow, Ray or a detector's dependency: the message names the pip extra
        raise RuntimeError(str(err)) from None
    except KeyboardInterrupt as err:  # Ctrl-C: the finished images are committed (facemark.bulk.Interrupted)
        print(f"facemark: {err or 'interrupted'}", file=sys.stderr)
        return 130
    except FileNotFoundError:  # a missing model or input: main's one line, exit 2
        raise
    except (WriteError, OSError) as err:  # a full disk, a folder that cannot be written: what was done is kept
        print(f"facemark: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    skipped = f", {len(result['skipped'])} skipped (no regular file)" if result["skipped"] else ""
    print(f"{result['images']} images, {result['faces']} faces, {result['errors']} images with errors "
          f"(the error column){skipped}, {result['already_done']} already done; {result['images_per_s']:.1f} "
          f"images/s ({result['seconds']:.1f} s, {result['engine']} engine); Parquet in {result['out']}")
    return 0


def _serve(args) -> int:
    from facemark.serve.app import build_landmarker, create_app
    from facemark.serve.server import serve

    # the model and detector load once, here, so a bad --model (a folder, a crafted spec) is one line
    # before the server starts, not a traceback from its start-up; the app serves this Landmarker
    landmarker = build_landmarker(args.model, args.backend, args.detector, args.workers, args.min_quality)
    app = create_app(args.model, backend=args.backend, detector=args.detector, max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels, workers=args.workers, queue=args.queue,
                     upload_timeout_s=args.upload_timeout, min_upload_rate=args.min_upload_rate * 1024,
                     min_quality=args.min_quality, max_sessions=args.max_sessions,
                     sessions_per_client=args.sessions_per_client, session_idle_s=args.session_idle,
                     session_max_age_s=args.session_max_age, refusal_delay_s=args.refusal_delay,
                     landmarker=landmarker)
    # Ctrl-C: uvicorn shuts down, then raises KeyboardInterrupt again, which main() makes one line
    serve(app, args.host, args.port, header_timeout_s=args.header_timeout, limit_concurrency=args.limit_concurrency,
          write_timeout_s=args.write_timeout, max_pipelined=args.max_pipelined)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # this run's image caps, passed explicitly to each command's calls (nothing global is changed)
    args.max_pixels = MAX_PIXELS if args.max_mpx is None else int(args.max_mpx * 1e6)
    args.max_bytes = default_max_bytes(args.max_pixels) if args.max_mb is None else int(args.max_mb * 1e6)
    if getattr(args, "out", "") is None and getattr(args, "root", None):
        root = Path(args.root).resolve()
        args.out = str(Path("data") / (root.stem if root.is_file() else root.name))
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"facemark: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in any command: one line and the shell's code for SIGINT, no traceback
        print(f"facemark {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except ImportError as err:  # an optional extra's module (facemark.extras): name the extra, in one line
        message = str(err) if isinstance(err, MissingExtra) else missing_extra_message(
            getattr(err, "name", None), f"facemark {args.command}")
        if message is None:
            raise
        print(f"facemark: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
