"""provisioning/prune_venv.py and elf_symtab.py on small fake venvs and a synthetic ELF.

Cheap (no venv is built, nothing is installed): the full proof on real venvs,
AU values included, is provisioning/venv-prune-check.sh.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROVISIONING = ROOT / "provisioning"
SCRIPT = PROVISIONING / "prune_venv.py"
sys.path.insert(0, str(PROVISIONING))
_spec = importlib.util.spec_from_file_location("prune_venv", SCRIPT)
assert _spec and _spec.loader
prune = importlib.util.module_from_spec(_spec)
sys.modules["prune_venv"] = prune
_spec.loader.exec_module(prune)
import elf_symtab  # noqa: E402


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def write_dist(site: Path, name: str, version: str, files: dict[str, str], editable: bool | None = None) -> Path:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    for rel, text in files.items():
        path = Path(os.path.normpath(site / rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if editable is not None:
        (info / "direct_url.json").write_text(json.dumps({"url": "file:///src", "dir_info": {"editable": editable}}))
    listed = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in listed))
    return info


def fake_venv(tmp_path: Path, *, editable: bool = False) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    write_dist(site, "microexpr", "0.1.0", {"microexpr/__init__.py": "", "microexpr/cli.py": "X = 1\n"},
               editable=editable)
    write_dist(site, "numpy", "2.4.6", {"numpy/__init__.py": "", "numpy/tests/test_a.py": "",
                                        "numpy/_core/tests/test_b.py": "", "numpy/_core/multiarray.py": "",
                                        "numpy/__init__.pyi": "", "../../../bin/f2py": "#!/bin/sh\n"})
    write_dist(site, "pip", "26.3", {"pip/__init__.py": "", "pip/_internal/main.py": "", "../../../bin/pip": ""})
    return venv, site


MANIFEST = """
[[cut]]
dist = "pip"
whole = true
why = "installer"

[[cut]]
dist = "*"
paths = ["**/*.pyi"]
why = "stubs"

[[cut]]
dist = "numpy"
version = "2.4.6"
paths = ["numpy/**/tests", "../../../bin/f2py"]
why = "numpy tests"

[[cut]]
dist = "numpy"
version = "9.9"
paths = ["numpy/_core"]
why = "a version never checked"

[[cut]]
dist = "jsonschema"
paths = ["jsonschema/tests"]
why = "not installed here"
"""


def prune_once(site: Path, manifest: Path, modules: list[str]) -> tuple[prune.Plan, int]:
    cuts, _strips = prune.load_manifest(manifest)
    dists = prune.installed(site)
    plan = prune.plan(site, cuts, dists)
    freed = prune.apply(site, plan, dists)
    prune.bytecode(site, modules, prune.installed(site), dry_run=False)
    return plan, freed


def test_manifest_cuts_only_what_records_list_and_keeps_record_true(tmp_path: Path) -> None:
    venv, site = fake_venv(tmp_path)
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST)
    # A file no RECORD lists inside a matched folder: the entry is skipped, the file kept.
    (site / "numpy" / "_core" / "tests" / "local_note.txt").write_text("mine")
    # Debian's package linked in (link-systemd.sh): a symlink is never followed or removed.
    outside = tmp_path / "dist-packages" / "systemd"
    (outside / "tests").mkdir(parents=True)
    (outside / "tests" / "t.pyi").write_text("")
    (site / "systemd").symlink_to(outside)

    plan, freed = prune_once(site, manifest, ["microexpr/cli.py"])

    assert plan.whole == ["pip"]
    assert not (site / "pip").exists() and not list(site.glob("pip-*.dist-info")) and not (venv / "bin" / "pip").exists()
    assert not (site / "numpy" / "__init__.pyi").exists()
    assert not (site / "numpy" / "tests").exists() and not (venv / "bin" / "f2py").exists()
    assert (site / "numpy" / "_core" / "tests" / "local_note.txt").exists()  # foreign: its folder kept
    assert (site / "numpy" / "_core" / "tests" / "test_b.py").exists()
    assert (site / "numpy" / "_core" / "multiarray.py").exists()  # version 9.9 entry skipped
    assert (outside / "tests" / "t.pyi").exists() and (site / "systemd").is_symlink()
    assert any("numpy 2.4.6 installed, manifest checked 9.9" in s for s in plan.skipped)
    assert any(s.startswith("jsonschema: not installed") for s in plan.skipped)
    assert any("no RECORD of numpy lists" in s and "local_note.txt" in s for s in plan.skipped)
    assert freed > 0
    # RECORD names only files that still exist.
    record = next(site.glob("numpy-*.dist-info")) / "RECORD"
    for line in record.read_text().splitlines():
        assert (site / line.rsplit(",", 2)[0]).exists(), line
    # Byte-code: only the listed module is compiled.
    pyc = list(site.rglob("*.pyc"))
    assert [p.name.split(".")[0] for p in pyc] == ["cli"]

    # Idempotent: nothing more to remove.
    again, freed_again = prune_once(site, manifest, ["microexpr/cli.py"])
    assert again.whole == [] and freed_again == 0 and not any(again.files.values())


def test_unlisted_bytecode_goes_and_listed_is_compiled_once(tmp_path: Path) -> None:
    _venv, site = fake_venv(tmp_path)
    import py_compile

    stale = site / "numpy" / "_core" / "multiarray.py"
    py_compile.compile(str(stale), cfile=importlib.util.cache_from_source(str(stale)))
    removed, _freed, compiled = prune.bytecode(site, ["microexpr/cli.py", "gone/missing.py"],
                                               prune.installed(site), dry_run=False)
    assert (removed, compiled) == (1, 1)
    assert prune.bytecode(site, ["microexpr/cli.py"], prune.installed(site), dry_run=False)[::2] == (0, 0)


@pytest.mark.parametrize("case", ["not-a-venv", "no-microexpr", "editable"])
def test_refuses_what_it_does_not_recognise(tmp_path: Path, case: str) -> None:
    if case == "not-a-venv":
        target = tmp_path / "plain"
        target.mkdir()
        message = "not a venv (no pyvenv.cfg)"
    elif case == "no-microexpr":
        target, site = fake_venv(tmp_path)
        for info in site.glob("microexpr-*.dist-info"):
            for f in info.iterdir():
                f.unlink()
            info.rmdir()
        message = "microexpr is not installed in it"
    else:
        target, _site = fake_venv(tmp_path, editable=True)
        message = "installed editable (a development venv): not pruned"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = run(target)
    assert proc.returncode == 65
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune_venv: refused: ") and message in lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_dev_venv_make_test_uses_is_refused() -> None:
    proc = run(sys.prefix)
    assert proc.returncode == 65, proc.stderr
    assert "development venv" in proc.stderr


def test_another_interpreter_may_not_write_the_venvs_bytecode(tmp_path: Path) -> None:
    venv, _site = fake_venv(tmp_path)
    proc = run(venv)
    assert proc.returncode == 64
    assert proc.stderr.strip() == f"prune_venv: error: run it with {venv}/bin/python (this is {sys.executable})"


@pytest.mark.parametrize(
    ("text", "message"),
    [("[[cut]]\ndist = 'x'\nwhy = 'y'\n", "give either paths or whole = true"),
     ("[[cut]]\ndist = 'x'\npaths = ['/etc']\nwhy = 'y'\n", "must be a relative glob"),
     ("[[cut]]\ndist = 'x'\npaths = ['**']\nwhy = 'y'\n", "must be a relative glob"),
     ("[[cut]]\ndist = 'x'\npaths = ['a']\nwhy = ''\n", "needs dist and a non-empty why"),
     ("[[cut]]\ndist = '*'\nwhole = true\nwhy = 'y'\n", "whole = true needs one named distribution"),
     ("[[cut]]\ndist = 'x'\npaths = ['a']\nwhy = 'y'\nextra = 1\n", "unknown field"),
     ("[[cut]]\ndist = 'x'\npaths = ['a']\nwhy = 'y'\n[[strip]]\ndist = 'x'\npaths = ['*.so']\nwhy = 'y'\n",
      "exact paths"),
     ("[other]\n", "unknown table"), ("cut = [", "")],
)
def test_a_bad_manifest_is_one_line_exit_78(tmp_path: Path, text: str, message: str) -> None:
    venv, _site = fake_venv(tmp_path)
    manifest = tmp_path / "bad.toml"
    manifest.write_text(text)
    proc = run(venv, "--manifest", manifest)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"prune_venv: error: {manifest}") and message in lines[0]


def test_shipped_manifest_matches_the_pinned_requirements() -> None:
    cuts, strips = prune.load_manifest(prune.MANIFEST)
    pins = {}
    for req in (ROOT / "requirements").glob("*.txt"):
        for line in req.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
            if match:
                pins[prune.normalise(match.group(1))] = match.group(2)
    checked = [c for c in [*cuts, *strips] if c.version is not None and prune.normalise(c.dist) in pins]
    assert {c.dist for c in checked} >= {"numpy", "matplotlib", "onnxruntime", "mediapipe"}
    for cut in checked:
        assert cut.version == pins[prune.normalise(cut.dist)], f"{cut.dist}: manifest {cut.version}, pinned {pins[prune.normalise(cut.dist)]}"
    # Nothing the runtime was measured to load may match a cut.
    modules = prune.load_modules(prune.MODULES)
    assert len(modules) > 500
    import fnmatch

    for cut in cuts:
        for pattern in cut.paths:
            regex = fnmatch.translate(pattern.replace("**/", "*"))
            hits = [m for m in modules if re.match(regex, m) or any(re.match(regex, str(p)) for p in Path(m).parents)]
            assert not hits, f"{cut.dist} {pattern} would remove measured runtime modules: {hits[:3]}"


def test_install_sh_prunes_the_venv_it_builds_unless_told_not_to(tmp_path: Path) -> None:
    def dry(*extra: str) -> str:
        proc = subprocess.run(["bash", str(PROVISIONING / "install.sh"), "--dry-run", "--root", str(tmp_path),
                               "--skip-model", *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    venv = f"{tmp_path}/opt/microexpr/venv"
    assert f"+ {venv}/bin/python {SCRIPT} {venv}" in dry().splitlines()
    out = dry("--no-prune")
    assert "# not pruned (--no-prune)" in out and str(SCRIPT) not in out


# -- elf_symtab ---------------------------------------------------------------

def tiny_elf(path: Path, *, segment_covers_all: bool = False) -> bytes:
    """A 64-bit ELF: one PT_LOAD over the header and .text, then .symtab, .strtab, .shstrtab."""
    text = b"\x90" * 16
    symtab = bytes(24) + struct.pack("<IBBHQQ", 1, 0x12, 0, 1, 0x78, 16)
    strtab = b"\0foo\0\0\0\0"
    names = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    off_text = 64 + 56
    off_sym = off_text + len(text)
    off_str = off_sym + len(symtab)
    off_names = off_str + len(strtab)
    shoff = off_names + len(names) + (-(off_names + len(names)) % 8)
    body = text + symtab + strtab + names
    end = shoff + 5 * 64
    filesz = end if segment_covers_all else off_sym
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1, 0, 64, shoff, 0,
                         64, 56, 1, 64, 5, 4)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, filesz, filesz, 0x1000)
    shdrs = b"".join([
        bytes(64),
        struct.pack("<IIQQQQIIQQ", 1, 1, 6, off_text, off_text, len(text), 0, 0, 16, 0),
        struct.pack("<IIQQQQIIQQ", 7, 2, 0, 0, off_sym, len(symtab), 3, 1, 8, 24),
        struct.pack("<IIQQQQIIQQ", 15, 3, 0, 0, off_str, len(strtab), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 23, 3, 0, 0, off_names, len(names), 0, 0, 1, 0),
    ])
    data = header + phdr + body + bytes(shoff - off_names - len(names)) + shdrs
    path.write_bytes(data)
    path.chmod(0o755)
    return data


def section_names(data: bytes) -> list[str]:
    sections, _ = elf_symtab._read(data)
    shstrndx = struct.unpack_from("<H", data, 0x3E)[0]
    table = sections[shstrndx]
    raw = data[table.offset:table.offset + table.size]
    return [raw[s.name:raw.index(b"\0", s.name)].decode() for s in sections]


def test_strip_removes_only_the_symbol_table(tmp_path: Path) -> None:
    lib = tmp_path / "lib.so"
    original = tiny_elf(lib)
    assert section_names(original) == ["", ".text", ".symtab", ".strtab", ".shstrtab"]
    assert elf_symtab.symtab_size(lib) == 48 + 8
    freed = elf_symtab.strip_symtab(lib)
    stripped = lib.read_bytes()
    assert freed == len(original) - len(stripped) > 0
    assert section_names(stripped) == ["", ".text", ".shstrtab"]
    assert stripped[64:64 + 56 + 16] == original[64:64 + 56 + 16]  # program header and the loaded bytes
    assert lib.stat().st_mode & 0o777 == 0o755
    assert elf_symtab.strip_symtab(lib) == 0 and lib.read_bytes() == stripped  # idempotent


def test_strip_refuses_a_symbol_table_inside_a_segment_and_non_elf(tmp_path: Path) -> None:
    lib = tmp_path / "lib.so"
    original = tiny_elf(lib, segment_covers_all=True)
    with pytest.raises(ValueError, match="inside a loadable segment"):
        elf_symtab.strip_symtab(lib)
    assert lib.read_bytes() == original
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file at all, long enough to have a header\n")
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        elf_symtab.strip_symtab(text)


def test_strip_entry_rewrites_the_record_line_with_the_new_hash_and_size(tmp_path: Path) -> None:
    _venv, site = fake_venv(tmp_path)
    write_dist(site, "mediapipe", "1.2.3", {"mediapipe/__init__.py": ""})
    lib = site / "mediapipe" / "tasks" / "c" / "libmediapipe.so"
    lib.parent.mkdir(parents=True)
    tiny_elf(lib)
    record = next(site.glob("mediapipe-*.dist-info")) / "RECORD"
    record.write_text(record.read_text() + "mediapipe/tasks/c/libmediapipe.so,sha256=old,1\n")
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST + '\n[[strip]]\ndist = "mediapipe"\nversion = "1.2.3"\n'
                        'paths = ["mediapipe/tasks/c/libmediapipe.so"]\nwhy = "symbols"\n')
    _cuts, strips = prune.load_manifest(manifest)
    freed, skipped = prune.strip(site, strips, prune.installed(site), dry_run=False)
    assert freed > 0 and skipped == []
    line = next(x for x in record.read_text().splitlines() if x.startswith("mediapipe/tasks/c/libmediapipe.so,"))
    assert line == f"mediapipe/tasks/c/libmediapipe.so,sha256={prune._digest(lib)},{lib.stat().st_size}"
    # Another version installed: not stripped, said so.
    freed, skipped = prune.strip(site, [prune.Cut("mediapipe", "x", ("mediapipe/tasks/c/libmediapipe.so",), "9")],
                                 prune.installed(site), dry_run=False)
    assert freed == 0 and skipped and "manifest checked 9" in skipped[0]


def test_a_whole_distribution_never_takes_files_outside_the_venv(tmp_path: Path) -> None:
    _venv, site = fake_venv(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the venv's")
    record = next(site.glob("pip-*.dist-info")) / "RECORD"
    record.write_text(record.read_text() + "../../../../outside.txt,,\n")
    cuts = [prune.Cut("pip", "installer", whole=True)]
    dists = prune.installed(site)
    prune.apply(site, prune.plan(site, cuts, dists), dists)
    assert outside.read_text() == "not the venv's" and not (site / "pip").exists()
