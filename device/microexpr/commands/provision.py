"""``microexpr provision-model``: install the pinned FaceLandmarker bundle.

The work is in ``microexpr.models``; this module parses options and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from microexpr import models


def _timeout(text: str) -> float:
    # socket timeouts must be finite and positive: inf overflowed inside the
    # socket module (an internal error) and -1/nan read as "invalid URL".
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", metavar="PATH|URL",
        help="take the model from this file, file:// or http(s):// URL first",
    )
    parser.add_argument(
        "--mirror", metavar="DIR", type=Path,
        help=f"local mirror folder holding {models.FACE_LANDMARKER.name} (default: ${models.ENV_MIRROR})",
    )
    parser.add_argument(
        "--dir", metavar="DIR", type=Path, dest="models_dir",
        help=f"models directory to install into (default: ${models.ENV_MODELS_DIR}, "
        f"the service's state directory, or the user data directory)",
    )
    parser.add_argument("--timeout", type=_timeout, default=30.0, metavar="S", help="network timeout in seconds (default 30)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--onnx", action="store_true",
        help="install the ONNX Runtime backend's models instead (from --source DIR, default the "
        "repository's provisioning/onnx), each verified by the pinned manifest",
    )


def run(args: argparse.Namespace) -> int:
    if args.onnx:
        return _run_onnx(args)
    spec = models.FACE_LANDMARKER
    bar = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name, leave=False)
    try:
        result = models.provision(
            spec,
            models_dir=args.models_dir,
            source=args.source,
            mirror=args.mirror,
            timeout=args.timeout,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps({
            "name": spec.name,
            "version": spec.version,
            "path": str(result.path),
            "sha256": result.sha256,
            "size": spec.size,
            "source": result.source,
            "source_kind": result.kind.value,
            "already_installed": result.already_installed,
        }))
    elif result.already_installed:
        print(f"{spec.name} {spec.version} already installed at {result.path} (sha256 verified)")
    else:
        print(f"installed {spec.name} {spec.version} at {result.path} from {result.source} (sha256 verified)")
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    from microexpr.tracking.onnx import install_models

    result = install_models(Path(args.source) if args.source else None, args.models_dir)
    if args.json:
        print(json.dumps({"path": str(result.directory), "installed": list(result.installed), "kept": list(result.kept)}))
    else:
        print(f"ONNX models at {result.directory}: {len(result.installed)} installed, {len(result.kept)} kept (sha256 verified)")
    return 0
