"""``microexpr provision-model``: install the pinned FaceLandmarker bundle.

The work is in ``microexpr.models``; this module parses options and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from microexpr import models
from microexpr.errors import ExitCode, MicroexprError


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

    if args.mirror is not None:
        # The ONNX files come from the repository (or --source), never from
        # a model mirror or the network: say so rather than ignore the flag.
        raise MicroexprError("--mirror applies to the FaceLandmarker bundle, not to --onnx (use --source DIR)",
                             exit_code=ExitCode.USAGE)
    result = install_models(_onnx_source(args.source), args.models_dir)
    if args.json:
        print(json.dumps({"path": str(result.directory), "installed": list(result.installed), "kept": list(result.kept)}))
    else:
        print(f"ONNX models at {result.directory}: {len(result.installed)} installed, {len(result.kept)} kept (sha256 verified)")
    return 0


def _onnx_source(text: str | None) -> Path | None:
    """``--onnx --source``: a local folder (or its manifest.json). Checked
    here so the error names the option: the folder's own check would say
    "manifest ... no such file; run `microexpr provision-model --onnx`",
    the very command that failed, and a URL came out as a mangled path."""
    if not text:
        return None
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    elif len(scheme) > 1:  # len 1: a Windows drive letter
        raise MicroexprError(
            f"--source {text}: with --onnx, give a folder holding a copy of provisioning/onnx, not a URL",
            exit_code=ExitCode.USAGE,
        )
    else:
        path = Path(text).expanduser()
    from microexpr.tracking.onnx import MANIFEST_NAME

    folder = path.parent if path.is_file() and path.name == MANIFEST_NAME else path
    if not (folder / MANIFEST_NAME).is_file():
        what = ("no such folder" if not path.exists() else "not a folder" if path.is_file()
                else f"no {MANIFEST_NAME} in this folder")
        raise MicroexprError(
            f"--source {path}: {what} (with --onnx, give a copy of provisioning/onnx)",
            exit_code=ExitCode.MODEL_UNAVAILABLE,
        )
    return path
