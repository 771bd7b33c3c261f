#!/usr/bin/env python3
"""Which files of a venv does the device runtime really open? (issue 15, item 3)

Runs the runtime's own commands in a target venv under ``strace`` (successful
``open``/``openat`` calls, every thread and child) and lists the venv files
each one opened:

* ``run`` as ``make run`` does, on the real clip, MediaPipe backend, with the
  reasoner on (a local OpenAI-speaking HTTP server, tests/fixtures), MQTT to a
  real mosquitto on loopback and the status page on;
* the same with the ONNX Runtime backend;
* ``timeline`` with each backend (the AU values the prune must not change);
* ``check-config`` and ``provision-model`` (install.sh runs both).

Every daemon run must exit 0 and print its event; every command must exit 0.
The result says, per distribution, how many MB of it were opened, and writes
the list of Python sources whose byte-code was loaded (what
provisioning/prune_venv.py byte-compiles) when asked to.

Usage (the harness itself runs in the dev venv; it needs pytest's fixtures)::

    .venv/bin/python benchmarks/venv_usage.py --venv /opt/microexpr/venv \\
        [--out DIR] [--write-modules provisioning/venv-runtime-modules.txt]
        [--timelines DIR]

Timing means nothing here (strace slows every open); only the file lists do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.broker import Broker, free_port  # noqa: E402
from fixtures.openai_server import OpenAIServer, Reply  # noqa: E402
from fixtures.toml import toml_text  # noqa: E402

SHARED = Path(os.environ.get("MICROEXPR_SHARED", ROOT.parent / "shared")).resolve()
CLIP = SHARED / "data" / "media" / "single_face.mp4"
MODEL = SHARED / "models" / "face_landmarker.task"
OPEN_RE = re.compile(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)"')


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"venv_usage: {venv}: no lib/python3*/site-packages")
    return found[0].resolve()


def traced(cmd: list[str], trace: Path, env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` under strace; stdout is returned, stderr goes to ``log``."""
    full = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=open,openat", "-e", "status=successful",
            "-o", str(trace), *cmd]
    with log.open("w") as err:
        return subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=900)


def opened(trace: Path, venv: Path) -> set[Path]:
    real = venv.resolve()
    files: set[Path] = set()
    for line in trace.read_text(errors="replace").splitlines():
        match = OPEN_RE.search(line)
        if not match:
            continue
        path = Path(os.path.realpath(match.group(1)))
        if path.is_file() and path.is_relative_to(real):
            files.add(path)
    return files


def source_of(pyc_or_py: Path) -> Path | None:
    """``pkg/__pycache__/mod.cpython-311.pyc`` -> ``pkg/mod.py``; ``.py`` stays."""
    if pyc_or_py.suffix == ".py":
        return pyc_or_py
    if pyc_or_py.suffix == ".pyc" and pyc_or_py.parent.name == "__pycache__":
        return pyc_or_py.parent.parent / (pyc_or_py.name.split(".")[0] + ".py")
    return None


def owners(site: Path) -> dict[Path, str]:
    """Every file a distribution's RECORD lists -> the distribution's name."""
    owner: dict[Path, str] = {}
    for record in site.glob("*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0]
        for line in record.read_text().splitlines():
            rel = line.rsplit(",", 2)[0]
            if rel:
                owner[Path(os.path.normpath(site / rel))] = name
    return owner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="keep traces, logs and the JSON summary here")
    parser.add_argument("--write-modules", type=Path, default=None,
                        help="add the site-packages-relative sources whose byte-code was loaded to this list")
    parser.add_argument("--timelines", type=Path, default=None, help="write the timeline CSVs here")
    args = parser.parse_args()
    venv = args.venv.resolve()
    site = site_packages(venv)
    # `python -m microexpr` = the console script, and right even in a copied venv (script shebangs are absolute).
    exe_cmd = [str(venv / "bin" / "python"), "-m", "microexpr"]
    if shutil.which("strace") is None:
        raise SystemExit("venv_usage: strace is not installed")
    work = Path(tempfile.mkdtemp(prefix="venv-usage-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OPENAI_API_KEY="sk-local-test", PYTHONDONTWRITEBYTECODE="1", HOME=str(work / "home"))
    (work / "home").mkdir()
    broker = Broker(work / "mosquitto").start()
    server = OpenAIServer().start()
    server.default = Reply.answer(label="happiness", confidence=0.7, aus_cited=())
    failures: list[str] = []
    per_run: dict[str, set[Path]] = {}
    try:
        for backend in ("mediapipe", "onnx"):
            data = {
                "device_id": f"usage-{backend}",
                "source": {"uri": str(CLIP)},
                "model": {"path": str(MODEL)},
                "tracker": {"backend": backend},
                "mqtt": {"host": "127.0.0.1", "port": broker.port},
                "outbox": {"path": str(work / f"outbox-{backend}.sqlite")},
                "engine": {"ambiguous_confidence": 1.0},
                "reasoner": {"enabled": True, "base_url": server.base_url,
                             "queue_path": str(work / f"reasoner-{backend}.sqlite3")},
                "status": {"enabled": True, "port": free_port()},
            }
            config = work / f"config-{backend}.toml"
            config.write_text(toml_text(data))
            name = f"run-{backend}"
            done = traced([*exe_cmd, "run", "--config", str(config), "--print-events"],
                          out / f"{name}.strace", env, out / f"{name}.log")
            events = [line for line in done.stdout.splitlines() if '"event_id"' in line]
            refined = [line for line in events if '"agrees_with_local"' in line]
            print(f"{name}: exit {done.returncode}, {len(events)} event line(s), {len(refined)} refined by the reasoner")
            if done.returncode != 0 or not events or not refined:
                failures.append(f"{name}: exit {done.returncode}, {len(events)} events, {len(refined)} refined "
                                f"(log {out / (name + '.log')})")
            per_run[name] = opened(out / f"{name}.strace", venv)
        timelines = args.timelines or out
        timelines.mkdir(parents=True, exist_ok=True)
        for backend in ("mediapipe", "onnx"):
            name = f"timeline-{backend}"
            # The onnx files are pinned by their manifest (the provisioned ones); --model is MediaPipe's.
            model = ["--model", str(MODEL)] if backend == "mediapipe" else []
            done = traced([*exe_cmd, "timeline", str(CLIP), *model, "--backend", backend,
                           "-o", str(timelines / f"{name}.csv")], out / f"{name}.strace", env, out / f"{name}.log")
            print(f"{name}: exit {done.returncode}")
            if done.returncode != 0:
                failures.append(f"{name}: exit {done.returncode}")
            per_run[name] = opened(out / f"{name}.strace", venv)
        for name, cmd in {
            "check-config": [*exe_cmd, "check-config", "--config", str(work / "config-onnx.toml")],
            "provision-model": [*exe_cmd, "provision-model", "--dir", str(work / "models"),
                                "--mirror", str(MODEL.parent)],
        }.items():
            done = traced(cmd, out / f"{name}.strace", env, out / f"{name}.log")
            print(f"{name}: exit {done.returncode}")
            if done.returncode != 0:
                failures.append(f"{name}: exit {done.returncode}")
            per_run[name] = opened(out / f"{name}.strace", venv)
    finally:
        server.close()
        broker.stop()

    union = set().union(*per_run.values())
    owner = owners(site)
    size_all: dict[str, int] = defaultdict(int)
    size_open: dict[str, int] = defaultdict(int)
    for path, dist in owner.items():
        if path.is_file():
            size_all[dist] += path.stat().st_size
            if path in union:
                size_open[dist] += path.stat().st_size
    sources = sorted({str(s.relative_to(site)) for p in union if p.is_relative_to(site)
                      for s in [source_of(p)] if s is not None})
    data_files = sorted(str(p.relative_to(site)) for p in union
                        if p.is_relative_to(site) and p.suffix not in (".py", ".pyc"))
    summary = {
        "venv": str(venv),
        "runs": {name: len(files) for name, files in per_run.items()},
        "failures": failures,
        "mb_by_dist": {d: {"all": round(size_all[d] / 1e6, 2), "opened": round(size_open[d] / 1e6, 2)}
                       for d in sorted(size_all, key=lambda d: -size_all[d])},
        "python_sources": len(sources),
        "other_files_opened": data_files,
    }
    (out / "usage.json").write_text(json.dumps(summary, indent=1))
    if args.write_modules:
        # Merged with what earlier runs listed (e.g. one through bin/microexpr, one through -m).
        known = set()
        if args.write_modules.is_file():
            known = {line.strip() for line in args.write_modules.read_text().splitlines()
                     if line.strip() and not line.startswith("#")}
        args.write_modules.write_text(
            "# Python sources of site-packages whose byte-code the runtime loaded, measured by\n"
            "# benchmarks/venv_usage.py (run, timeline, check-config, provision-model; both backends,\n"
            "# reasoner, MQTT and status page on), the union of its runs.\n"
            "# provisioning/prune_venv.py byte-compiles these only.\n"
            + "".join(f"{s}\n" for s in sorted(known | set(sources))))
    print(f"{len(union)} venv files opened; {len(sources)} Python sources; summary {out / 'usage.json'}")
    for line in failures:
        print("FAILED:", line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
