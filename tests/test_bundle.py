"""Release bundles: ``provisioning/bundle.sh`` builds them (both architectures),
``install.sh --bundle`` installs one offline into a scratch root and the daemon
runs from it; bad bundles are refused with one line before anything changes;
upgrades keep the previous release for ``--rollback``; outbox and state survive.

The bundles are built once per session (about 20 s each here: pip reads the
configured index, which is a local mirror on this machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from microexpr import models
from microexpr.outbox import LAYOUT_VERSION, Outbox

pytestmark = [pytest.mark.integration, pytest.mark.skipif(platform.machine() not in {"x86_64", "aarch64"},
                                                           reason="bundles exist for x86_64 and aarch64")]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "provisioning" / "bundle.sh"
INSTALL = ROOT / "provisioning" / "install.sh"
MACHINE = platform.machine()
OTHER = "aarch64" if MACHINE == "x86_64" else "x86_64"
VENV = Path(sys.prefix)


def build(out: Path, arch: str, mirror: Path) -> Path:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BUILD), "--arch", arch, "--out", str(out), "--mirror", str(mirror)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bundle,) = out.glob(f"microexpr-*-{arch}.tar.gz")
    return bundle


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, model_mirror: Path) -> dict[str, Path]:
    """What ``make bundle`` makes: one bundle per architecture."""
    out = tmp_path_factory.mktemp("dist")
    return {arch: build(out, arch, model_mirror) for arch in (MACHINE, OTHER)}


@pytest.fixture(scope="session")
def unpacked(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's bundle, unpacked once (for re-stamped variants)."""
    where = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(bundles[MACHINE]) as tar:
        tar.extractall(where, filter="tar")
    (top,) = where.iterdir()
    return top


def install(*args: str | Path, env: dict[str, str] | None = None, netns: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(INSTALL), *map(str, args)]
    if netns:  # no network at all: a new network namespace has only a down loopback
        argv = ["unshare", "--net", *argv]
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STATE_DIRECTORY")}
    environment.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=environment)


def restamp(source: Path, out: Path, *, edit_json: dict[str, object] | None = None, touch: str | None = None,
            add: tuple[str, bytes] | None = None, remanifest: bool = True) -> Path:
    """A variant of a bundle: bundle.json edited, a file changed or added, the
    manifest regenerated (or not: a tampered bundle)."""
    work = out.with_suffix(".d")
    # Hard links, not copies (the wheels are 100+ MB); a file that changes is
    # unlinked and written anew, so the shared unpacked bundle stays intact.
    shutil.copytree(source, work / source.name, symlinks=True, copy_function=os.link)
    top = work / source.name

    def rewrite(path: Path, data: bytes) -> None:
        path.unlink(missing_ok=True)
        path.write_bytes(data)

    if edit_json:
        data = json.loads((top / "bundle.json").read_text())
        data.update(edit_json)
        rewrite(top / "bundle.json", json.dumps(data).encode())
    if touch:
        rewrite(top / touch, (top / touch).read_bytes() + b"#")
    if add:
        rewrite(top / add[0], add[1])
    if remanifest:
        files = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256")
        rewrite(top / "MANIFEST.sha256", "".join(
            f"{hashlib.sha256((top / f).read_bytes()).hexdigest()}  {f}\n" for f in files).encode())
    subprocess.run(["tar", "-C", str(work), "--use-compress-program=gzip -1", "-cf", str(out), source.name],
                   check=True)
    shutil.rmtree(work)
    return out


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def digest_tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def make_state(root: Path) -> Path:
    """An installed device's state: a real outbox with a queued event, and a camera instance's folder."""
    state = root / "var" / "lib" / "microexpr"
    for path in (state / "outbox.sqlite", state / "cam0" / "outbox.sqlite"):
        box = Outbox(path)
        box.put("e1", "microexpr/kiosk/event", '{"event_id": "e1"}', qos=1, retain=False)
        box.close()
    return state


# --------------------------------------------------------------------------
# What make bundle builds


def test_both_bundles_hold_verified_wheels_model_units_and_installer(bundles: dict[str, Path]) -> None:
    for arch, bundle in bundles.items():
        assert bundle.name == f"microexpr-{models_version()}-{arch}.tar.gz"
        side = bundle.with_name(bundle.name + ".sha256").read_text().split()
        assert side == [hashlib.sha256(bundle.read_bytes()).hexdigest(), bundle.name]
        with tarfile.open(bundle) as tar:
            names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
            top = tar.getmembers()[0].name.split("/")[0]
            manifest = tar.extractfile(f"{top}/MANIFEST.sha256").read().decode()  # type: ignore[union-attr]
            meta = json.loads(tar.extractfile(f"{top}/bundle.json").read())  # type: ignore[union-attr]
            model = tar.extractfile(f"{top}/models/face_landmarker.task").read()  # type: ignore[union-attr]
        listed = {line.split("  ", 1)[1] for line in manifest.splitlines()}
        assert listed == names - {"MANIFEST.sha256"}
        assert meta["arch"] == arch and meta["outbox_layouts"] == [LAYOUT_VERSION]
        assert hashlib.sha256(model).hexdigest() == models.FACE_LANDMARKER.sha256
        wheels = [n for n in names if n.startswith("wheels/")]
        assert any(n.startswith("wheels/mediapipe-") for n in wheels)
        assert any(n.startswith("wheels/microexpr-") for n in wheels)
        assert not any("systemd_python" in n for n in wheels)  # source-only: left out
        assert all(n.endswith("-any.whl") or f"_{arch}" in n for n in wheels), wheels
        for needed in ("services/microexpr.service", "services/microexpr@.service", "services/mosquitto-bridge.conf",
                       "provisioning/install.sh", "provisioning/bundle-lib.sh", "onnx/manifest.json",
                       "requirements/runtime.txt"):
            assert needed in names


def models_version() -> str:
    import microexpr

    return microexpr.__version__


# --------------------------------------------------------------------------
# Offline install, the daemon from it, state kept


def test_offline_install_into_a_scratch_root_runs_the_daemon_and_keeps_the_outbox(
    tmp_path: Path, bundles: dict[str, Path], smile_clip: Path,
) -> None:
    root = tmp_path / "root"
    state = make_state(root)
    before = digest_tree(state)
    proc = install("--bundle", bundles[MACHINE], "--root", root, netns=True,
                   env={"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every file verified" in proc.stdout
    opt = root / "opt" / "microexpr"
    assert (opt / "venv").resolve() == (opt / "current" / "venv").resolve()
    assert not (opt / "previous").exists()
    assert (root / "etc" / "systemd" / "system" / "microexpr@.service").is_file()
    # Outbox and state untouched (the installer only added the models folder).
    assert {k: v for k, v in digest_tree(state).items() if not k.startswith("models/")} == before

    # The daemon starts from the installed release (its own code, not this checkout's).
    config = tmp_path / "site.toml"
    config.write_text(f'device_id = "bundled"\n[mqtt]\nenabled = false\n[outbox]\npath = "{tmp_path / "o.sqlite"}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STATE_DIRECTORY")}
    env["MICROEXPR_MODELS_DIR"] = str(state / "models")
    run = subprocess.run([str(opt / "venv" / "bin" / "microexpr"), "run", "--config", str(config), "--source",
                          str(smile_clip)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert events and all(e["device_id"] == "bundled" for e in events)
    where = subprocess.run([str(opt / "venv" / "bin" / "python"), "-c", "import microexpr; print(microexpr.__file__)"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert Path(where.strip()).resolve().is_relative_to((opt / "releases").resolve())


def test_upgrade_keeps_the_previous_release_and_rollback_returns_to_it(
    tmp_path: Path, unpacked: Path,
) -> None:
    """Two releases in a row, then --rollback twice. The venv of each release
    is linked (--venv-from) to keep this test fast; the offline pip install is
    the test above."""
    root = tmp_path / "root"
    state = make_state(root)
    before = digest_tree(state)
    first = restamp(unpacked, tmp_path / "v1.tar.gz", edit_json={"version": "0.1.0"})
    second = restamp(unpacked, tmp_path / "v2.tar.gz", edit_json={"version": "0.2.0"})
    opt = root / "opt" / "microexpr"

    def current() -> str:
        return json.loads((opt / "current" / "bundle.json").read_text())["version"]

    for bundle in (first, second):
        proc = install("--bundle", bundle, "--root", root, "--venv-from", VENV, "--skip-model")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert current() == "0.2.0"
    assert json.loads((opt / "previous" / "bundle.json").read_text())["version"] == "0.1.0"
    assert len(list((opt / "releases").iterdir())) == 2
    proc = install("--rollback", "--root", root)
    assert proc.returncode == 0, proc.stderr
    assert current() == "0.1.0" and "rollback:" in proc.stdout
    assert (opt / "venv").resolve() == (opt / "current" / "venv").resolve()
    proc = install("--rollback", "--root", root)  # and forward again
    assert proc.returncode == 0 and current() == "0.2.0"
    assert {k: v for k, v in digest_tree(state).items() if not k.startswith("models/")} == before
    # A third release drops the oldest: current and previous only.
    third = restamp(unpacked, tmp_path / "v3.tar.gz", edit_json={"version": "0.3.0"})
    assert install("--bundle", third, "--root", root, "--venv-from", VENV, "--skip-model").returncode == 0
    versions = sorted(json.loads((p / "bundle.json").read_text())["version"] for p in (opt / "releases").iterdir())
    assert versions == ["0.2.0", "0.3.0"]


# --------------------------------------------------------------------------
# Bad bundles: one line, a documented code, nothing installed


def refused(root: Path, *args: str | Path) -> tuple[int, str]:
    proc = install(*args, "--root", root)
    assert not (root / "opt").exists(), "something was installed from a refused bundle"
    return proc.returncode, error_line(proc)


def test_truncated_bundle_is_refused(tmp_path: Path, bundles: dict[str, Path]) -> None:
    cut = tmp_path / "cut.tar.gz"
    data = bundles[MACHINE].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    code, line = refused(tmp_path / "root", "--bundle", cut)
    assert code == 65 and line.startswith(f"install.sh: error: --bundle {cut}: truncated or not a bundle")


def test_bundle_for_the_other_architecture_is_refused(tmp_path: Path, bundles: dict[str, Path]) -> None:
    code, line = refused(tmp_path / "root", "--bundle", bundles[OTHER])
    assert code == 78 and line == f"install.sh: error: --bundle {bundles[OTHER]} is for {OTHER}; this machine is {MACHINE}"


def test_relabelled_bundle_with_foreign_wheels_is_refused(tmp_path: Path, unpacked: Path) -> None:
    foreign = tmp_path / "foreign.tar.gz"
    restamp(unpacked, foreign, add=(f"wheels/numpy-9.9-cp311-cp311-manylinux_2_28_{OTHER}.whl", b"x"))
    code, line = refused(tmp_path / "root", "--bundle", foreign)
    assert code == 78 and f"is for manylinux_2_28_{OTHER}, not {MACHINE}" in line


@pytest.mark.parametrize("case", ["changed file", "unlisted file"])
def test_bundle_with_a_bad_hash_or_an_unlisted_file_is_refused(tmp_path: Path, unpacked: Path, case: str) -> None:
    bad = tmp_path / "bad.tar.gz"
    if case == "changed file":
        restamp(unpacked, bad, touch="services/microexpr.service", remanifest=False)
        expected = "services/microexpr.service: does not match its sha256 in MANIFEST.sha256"
    else:
        restamp(unpacked, bad, add=("services/extra.sh", b"echo hi\n"), remanifest=False)
        expected = "services/extra.sh is not in MANIFEST.sha256"
    code, line = refused(tmp_path / "root", "--bundle", bad)
    assert code == 65 and line == f"install.sh: error: --bundle {bad}: {expected}"


def test_outbox_with_an_unknown_layout_is_refused_and_kept(tmp_path: Path, bundles: dict[str, Path]) -> None:
    root = tmp_path / "root"
    state = make_state(root)
    newer = state / "cam0" / "outbox.sqlite"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version={LAYOUT_VERSION + 1}")
    db.close()  # checkpoints the WAL into the file
    before = digest_tree(state)
    code, line = refused(root, "--bundle", bundles[MACHINE])
    assert code == 78
    assert line.startswith(f"install.sh: error: {newer} has queue layout {LAYOUT_VERSION + 1}; this release reads")
    assert digest_tree(state) == before


def test_missing_bundle_and_nothing_to_roll_back(tmp_path: Path) -> None:
    code, line = refused(tmp_path / "root", "--bundle", tmp_path / "nope.tar.gz")
    assert code == 66 and line == f"install.sh: error: --bundle {tmp_path / 'nope.tar.gz'}: no such file"
    code, line = refused(tmp_path / "root", "--rollback")
    assert code == 66 and "nothing to roll back to" in line
