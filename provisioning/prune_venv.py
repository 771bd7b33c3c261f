#!/usr/bin/env python3
"""Shrink the device venv to what the runtime uses (issue 15: venv <= 450 MB).

install.sh runs this with the venv's own interpreter after pip has filled it::

    /opt/microexpr/venv/bin/python provisioning/prune_venv.py /opt/microexpr/venv [--dry-run]

Three things, each measured with benchmarks/venv_usage.py rather than guessed:

1. the paths listed in provisioning/prune-manifest.toml (pip, setuptools, test
   suites, C headers, build tools, ONNX Runtime's unused C API library), each
   entry with its reason; a file is removed only if the distribution the entry
   names lists it in its RECORD, and the RECORD is rewritten without it, so pip
   can still upgrade or uninstall the rest;
2. byte-code: every ``__pycache__/*.pyc`` of site-packages is removed, then the
   sources in provisioning/venv-runtime-modules.txt (those whose byte-code the
   runtime loaded) are compiled again. The unit runs with
   PYTHONDONTWRITEBYTECODE=1 under ProtectSystem=strict, so nothing else would be
   used; a module outside the list still imports, compiled in memory;
3. a report, ``<venv>/prune-report.json``: what was removed, the bytes, the
   entries skipped and why.

Idempotent: a second run finds nothing to remove and compiles nothing.
Refuses (one line on stderr) a directory that is not a venv holding an installed
(not editable) microexpr: the editable dev venv `make test` uses is never pruned.

Exit codes: 0 done; 64 bad arguments or wrong interpreter; 65 not a microexpr
device venv (refused, nothing changed); 78 the manifest or module list is invalid.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import sys
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import elf_symtab  # noqa: E402  (provisioning/, beside this script)

MANIFEST = HERE / "prune-manifest.toml"
MODULES = HERE / "venv-runtime-modules.txt"
REPORT = "prune-report.json"

EX_OK, EX_USAGE, EX_REFUSED, EX_CONFIG = 0, 64, 65, 78


class Refused(Exception):
    """The target is not a venv this script knows how to prune (exit 65)."""


class BadInput(Exception):
    """The manifest or the module list is malformed (exit 78)."""


@dataclass(frozen=True, slots=True)
class Cut:
    """One manifest entry."""

    dist: str
    why: str
    paths: tuple[str, ...] = ()
    version: str | None = None
    whole: bool = False


@dataclass(slots=True)
class Dist:
    """An installed distribution: its dist-info folder and the files its RECORD lists."""

    name: str
    version: str
    info: Path
    files: set[Path] = field(default_factory=set)


@dataclass(slots=True)
class Plan:
    """What one run will remove: files per distribution, and the entries skipped."""

    files: dict[str, set[Path]] = field(default_factory=dict)  # dist name -> files
    whole: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # removed path (site-relative) -> why


def normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def load_manifest(path: Path) -> tuple[list[Cut], list[Cut]]:
    """The ``[[cut]]`` entries and the ``[[strip]]`` entries (ELF symbol tables)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: {exc}") from None
    unknown_tables = set(data) - {"cut", "strip"}
    if unknown_tables:
        raise BadInput(f"{path}: unknown table(s) {sorted(unknown_tables)}")
    cuts = _entries(path, data.get("cut", []), "cut")
    strips = _entries(path, data.get("strip", []), "strip")
    if any(s.whole or s.dist == "*" or any("*" in p for p in s.paths) for s in strips):
        raise BadInput(f"{path}: a [[strip]] entry names one distribution and exact paths")
    if not cuts:
        raise BadInput(f"{path}: no [[cut]] entries")
    return cuts, strips


def _entries(path: Path, entries: list, kind: str) -> list[Cut]:
    cuts = []
    for i, entry in enumerate(entries):
        where = f"{path}: {kind} #{i + 1}"
        unknown = set(entry) - {"dist", "why", "paths", "version", "whole"}
        if unknown:
            raise BadInput(f"{where}: unknown field(s) {sorted(unknown)}")
        if not isinstance(entry.get("dist"), str) or not isinstance(entry.get("why"), str) or not entry["why"].strip():
            raise BadInput(f"{where}: needs dist and a non-empty why")
        paths = entry.get("paths", [])
        whole = entry.get("whole", False)
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise BadInput(f"{where}: paths must be a list of globs")
        if bool(paths) == bool(whole):
            raise BadInput(f"{where}: give either paths or whole = true")
        if whole and entry["dist"] == "*":
            raise BadInput(f"{where}: whole = true needs one named distribution")
        for p in paths:
            if p.startswith("/") or not os.path.normpath(p).lstrip("./") or p.strip("*/") == "":
                raise BadInput(f"{where}: path {p!r} must be a relative glob naming something")
        cuts.append(Cut(dist=entry["dist"], why=entry["why"].strip(), paths=tuple(paths),
                        version=entry.get("version"), whole=bool(whole)))
    return cuts


def load_modules(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BadInput(f"{path}: {exc}") from None
    modules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bad = [m for m in modules if not m.endswith(".py") or m.startswith("/") or ".." in Path(m).parts]
    if bad:
        raise BadInput(f"{path}: not site-packages-relative .py paths: {bad[:3]}")
    return modules


def site_packages(venv: Path) -> Path:
    """The venv's site-packages, after checking that this is a microexpr device venv."""
    if not (venv / "pyvenv.cfg").is_file():
        raise Refused(f"{venv}: not a venv (no pyvenv.cfg)")
    sites = [Path(p) for p in glob.glob(str(venv / "lib" / "python3*" / "site-packages"))]
    if len(sites) != 1:
        raise Refused(f"{venv}: expected one lib/python3*/site-packages, found {len(sites)}")
    site = sites[0]
    infos = list(site.glob("microexpr-*.dist-info"))
    if len(infos) != 1:
        raise Refused(f"{venv}: microexpr is not installed in it: not a microexpr device venv")
    direct = infos[0] / "direct_url.json"
    if direct.is_file():
        try:
            editable = json.loads(direct.read_text()).get("dir_info", {}).get("editable", False)
        except (OSError, json.JSONDecodeError):
            editable = True  # unreadable: treat as a dev venv, never prune it
        if editable:
            raise Refused(f"{venv}: microexpr is installed editable (a development venv): not pruned")
    return site


def installed(site: Path) -> dict[str, Dist]:
    dists: dict[str, Dist] = {}
    for info in site.glob("*.dist-info"):
        meta = info / "METADATA"
        name = version = ""
        if meta.is_file():
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Name: "):
                    name = line[6:].strip()
                elif line.startswith("Version: "):
                    version = line[9:].strip()
                elif not line:
                    break
        if not name:
            continue
        dist = Dist(normalise(name), version, info)
        record = info / "RECORD"
        if record.is_file():
            for line in record.read_text().splitlines():
                rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
                if rel:
                    dist.files.add(Path(os.path.normpath(site / rel)))
        dists[dist.name] = dist
    return dists


def _expand(site: Path, pattern: str) -> list[list[Path]]:
    """Files matched by a glob, one group per match (a matched folder: every file under it)."""
    out: list[list[Path]] = []
    real_site = os.path.realpath(site)
    for match in glob.glob(str(site / pattern), recursive=True):
        path = Path(os.path.normpath(match))
        if os.path.realpath(path) != os.path.normpath(os.path.join(real_site, os.path.relpath(path, site))):
            continue  # a link or reached through one (Debian's systemd, link-systemd.sh): never ours
        if path.is_dir():
            group = []
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
                group.extend(Path(root) / f for f in files if not (Path(root) / f).is_symlink())
            out.append(group)
        elif path.is_file():
            out.append([path])
    return out


def _is_bytecode(path: Path) -> bool:
    return path.parent.name == "__pycache__" and path.suffix == ".pyc"


def plan(site: Path, cuts: Iterable[Cut], dists: dict[str, Dist]) -> Plan:
    result = Plan()
    for cut in cuts:
        if cut.whole:
            dist = dists.get(normalise(cut.dist))
            if dist is None:
                continue  # already gone: idempotent
            result.whole.append(dist.name)
            venv = site.parents[2]
            # Only inside the venv, whatever a RECORD says.
            files = {f for f in dist.files if (f.exists() or f.is_symlink()) and f.is_relative_to(venv)}
            files |= {p for p in dist.info.rglob("*") if p.is_file()}
            result.files.setdefault(dist.name, set()).update(files)
            for f in files:
                result.reasons[_rel(site, f)] = cut.why
            continue
        if cut.dist == "*":
            owners = list(dists.values())
        else:
            dist = dists.get(normalise(cut.dist))
            if dist is None:
                result.skipped.append(f"{cut.dist}: not installed")
                continue
            if cut.version is not None and dist.version != cut.version:
                result.skipped.append(f"{cut.dist} {dist.version} installed, manifest checked {cut.version}: "
                                      f"{', '.join(cut.paths)} kept")
                continue
            owners = [dist]
        for pattern in cut.paths:
            for group in _expand(site, pattern):
                claimed: dict[str, set[Path]] = {}
                foreign = []
                for f in group:
                    owner = next((d for d in owners if f in d.files), None)
                    if owner is not None:
                        claimed.setdefault(owner.name, set()).add(f)
                    elif _is_bytecode(f):
                        claimed.setdefault(owners[0].name if len(owners) == 1 else "", set()).add(f)
                    else:
                        foreign.append(f)
                if foreign:
                    # Something not installed by that distribution is there: leave the whole match alone.
                    names = ", ".join(_rel(site, f) for f in foreign[:3])
                    result.skipped.append(f"{cut.dist} {pattern}: {len(foreign)} file(s) no RECORD of "
                                          f"{cut.dist} lists ({names}): kept")
                    continue
                for name, files in claimed.items():
                    result.files.setdefault(name, set()).update(files)
                    for f in files:
                        result.reasons[_rel(site, f)] = cut.why
    return result


def _rel(site: Path, path: Path) -> str:
    return os.path.relpath(path, site)


def _remove_empty_parents(path: Path, venv: Path, site: Path) -> None:
    """Remove folders left empty, up to (never including) site-packages or the venv."""
    parent = path.parent
    while parent not in (site, venv) and parent.is_relative_to(venv):
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def _rewrite_record(site: Path, dist: Dist, removed: set[Path]) -> None:
    record = dist.info / "RECORD"
    if not record.is_file():
        return
    kept = []
    for line in record.read_text().splitlines():
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if rel and Path(os.path.normpath(site / rel)) in removed:
            continue
        kept.append(line)
    record.write_text("".join(f"{line}\n" for line in kept))


def apply(site: Path, result: Plan, dists: dict[str, Dist]) -> int:
    """Remove the planned files; returns the bytes freed."""
    freed = 0
    venv = site.parents[2]
    for name, files in result.files.items():
        for f in sorted(files):
            try:
                freed += f.lstat().st_size
                f.unlink()
            except FileNotFoundError:
                continue
            _remove_empty_parents(f, venv, site)
        dist = dists.get(name)
        if dist is not None and name not in result.whole:
            _rewrite_record(site, dist, files)
    for name in result.whole:
        shutil.rmtree(dists[name].info, ignore_errors=True)
    return freed


def strip(site: Path, strips: Iterable[Cut], dists: dict[str, Dist], dry_run: bool) -> tuple[int, list[str]]:
    """Remove ELF symbol tables (elf_symtab.py); returns (bytes freed, skipped notes)."""
    freed = 0
    skipped = []
    for entry in strips:
        dist = dists.get(normalise(entry.dist))
        if dist is None:
            skipped.append(f"{entry.dist}: not installed")
            continue
        if entry.version is not None and dist.version != entry.version:
            skipped.append(f"{entry.dist} {dist.version} installed, manifest checked {entry.version}: "
                           f"{', '.join(entry.paths)} not stripped")
            continue
        for rel in entry.paths:
            path = Path(os.path.normpath(site / rel))
            if path not in dist.files or not path.is_file() or path.is_symlink():
                skipped.append(f"{entry.dist} {rel}: not a file its RECORD lists: not stripped")
                continue
            try:
                size = elf_symtab.symtab_size(path)
                if size and not dry_run:
                    size = elf_symtab.strip_symtab(path)
                    _record_new_hash(site, dist, path)
            except ValueError as exc:
                skipped.append(f"{entry.dist} {rel}: {exc}: not stripped")
                continue
            freed += size
    return freed, skipped


def _record_new_hash(site: Path, dist: Dist, path: Path) -> None:
    """RECORD keeps telling the truth about a file changed in place."""
    record = dist.info / "RECORD"
    lines = []
    for line in record.read_text().splitlines():
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if rel and Path(os.path.normpath(site / rel)) == path:
            line = f"{rel},sha256={_digest(path)},{path.stat().st_size}"
        lines.append(line)
    record.write_text("".join(f"{line}\n" for line in lines))


def bytecode(site: Path, modules: list[str], dists: dict[str, Dist], dry_run: bool) -> tuple[int, int, int]:
    """Keep byte-code only for ``modules``: returns (pyc removed, bytes freed, compiled)."""
    keep = {Path(importlib.util.cache_from_source(str(site / m))) for m in modules}
    removed: set[Path] = set()
    freed = 0
    for root, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        if Path(root).name != "__pycache__":
            continue
        for f in files:
            path = Path(root) / f
            if path.suffix == ".pyc" and path not in keep:
                freed += path.stat().st_size
                removed.add(path)
    compiled = 0
    if not dry_run:
        for path in removed:
            path.unlink()
            _remove_empty_parents(path, site.parents[2], site)
        for dist in dists.values():
            if dist.files & removed:
                _rewrite_record(site, dist, removed)
        for rel in modules:
            source = site / rel
            if not source.is_file() or source.is_symlink():
                continue
            cfile = Path(importlib.util.cache_from_source(str(source)))
            if _fresh(source, cfile):
                continue
            py_compile.compile(str(source), cfile=str(cfile), doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
            compiled += 1
    return len(removed), freed, compiled


def _fresh(source: Path, cfile: Path) -> bool:
    """Whether ``cfile`` is a timestamp pyc of this interpreter matching ``source``."""
    try:
        head = cfile.read_bytes()[:16]
    except OSError:
        return False
    st = source.stat()
    return (len(head) == 16 and head[:4] == importlib.util.MAGIC_NUMBER
            and int.from_bytes(head[4:8], "little") == 0
            and int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)


def du(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        total += sum((Path(root) / f).lstat().st_size for f in files)
    return total


def _digest(path: Path) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).decode().rstrip("=")


def _by_reason(reasons: dict[str, str]) -> dict[str, list[str]]:
    """Removed paths grouped under the first line of their manifest reason."""
    out: dict[str, list[str]] = {}
    for rel, why in sorted(reasons.items()):
        out.setdefault(why.split("\n")[0], []).append(rel)
    return out


def _write_report(path: Path, report: dict) -> None:
    """One entry per run; what was removed accumulates (a second run removes nothing)."""
    runs: list = []
    removed: dict[str, list[str]] = {}
    try:
        old = json.loads(path.read_text())
        runs, removed = list(old.get("runs", [])), dict(old.get("removed", {}))
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    for why, files in report.pop("removed").items():
        removed[why] = sorted(set(removed.get(why, [])) | set(files))
    runs.append(report)
    path.write_text(json.dumps({"runs": runs, "removed": removed}, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Remove what the microexpr runtime never opens from a device venv.")
    parser.add_argument("venv", type=Path)
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--modules", type=Path, default=MODULES)
    parser.add_argument("--dry-run", action="store_true", help="print what would go; change nothing")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    venv = Path(os.path.abspath(args.venv))
    try:
        site = site_packages(venv)
        cuts, strips = load_manifest(args.manifest)
        modules = load_modules(args.modules)
    except Refused as exc:
        print(f"prune_venv: refused: {exc}", file=sys.stderr)
        return EX_REFUSED
    except BadInput as exc:
        print(f"prune_venv: error: {exc}", file=sys.stderr)
        return EX_CONFIG
    # Byte-code is specific to the interpreter: only the venv's own may write it.
    if Path(sys.prefix).resolve() != venv.resolve():
        print(f"prune_venv: error: run it with {venv}/bin/python (this is {sys.executable})", file=sys.stderr)
        return EX_USAGE
    before = du(venv)
    dists = installed(site)
    result = plan(site, cuts, dists)
    n_files = sum(len(f) for f in result.files.values())
    planned = sum(f.lstat().st_size for fs in result.files.values() for f in fs if f.exists() or f.is_symlink())
    if args.dry_run:
        for rel in sorted(result.reasons):
            print(f"would remove {rel}")
    freed = 0 if args.dry_run else apply(site, result, dists)
    dists = installed(site)
    stripped, strip_skipped = strip(site, strips, dists, args.dry_run)
    result.skipped.extend(strip_skipped)
    pyc_removed, pyc_freed, compiled = bytecode(site, modules, dists, args.dry_run)
    after = du(venv)
    for line in result.skipped:
        print(f"prune_venv: warning: skipped {line}", file=sys.stderr)
    report = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest_sha256": _digest(args.manifest),
        "modules_sha256": _digest(args.modules),
        "dry_run": args.dry_run,
        "mb_before": round(before / 1e6, 1),
        "mb_after": round(after / 1e6, 1),
        "distributions_removed": result.whole,
        "files_removed": n_files,
        "mb_removed": round((planned if args.dry_run else freed) / 1e6, 1),
        "bytecode_removed": pyc_removed,
        "bytecode_mb_removed": round(pyc_freed / 1e6, 1),
        "bytecode_compiled": compiled,
        "mb_symbols_stripped": round(stripped / 1e6, 1),
        "skipped": result.skipped,
        "removed": _by_reason(result.reasons),
    }
    if not args.dry_run:
        _write_report(venv / REPORT, report)
    verb = "would remove" if args.dry_run else "removed"
    print(f"prune_venv: {verb} {n_files} file(s), {report['mb_removed']} MB "
          f"({', '.join(result.whole) or 'no distribution'} whole), {pyc_removed} byte-code file(s) "
          f"{pyc_freed / 1e6:.1f} MB; compiled {compiled}; symbols {stripped / 1e6:.1f} MB; venv {report['mb_before']} -> {report['mb_after']} MB"
          + ("" if args.dry_run else f"; report {venv / REPORT}"))
    return EX_OK


if __name__ == "__main__":
    raise SystemExit(main())
