#!/usr/bin/env python3
"""Storage soak (issue 14): the real daemon on ``replay:`` for N minutes, the
broker SIGKILLed every minute, the outbox's disk filled once.

Real parts only: ``microexpr run`` as a subprocess (real MediaPipe model on
the real clip, replayed in real time), a real mosquitto (persistence on,
SIGKILLed and restarted on the same port), a persistent QoS 1 subscriber,
and the outbox on a real tmpfs that is filled to the last byte
(``ENOSPC``) once, then freed.

Reported: events produced (printed by the daemon: printed only after the
outbox commit), received (distinct ``event_id`` on the broker), lost,
duplicated (and whether every duplicate shares its payload), the daemon's
own ``stats.outbox`` counts at the end, and resident memory (RSS) from
minute 2 to the end. Needs root (the tmpfs) and mosquitto. Not part of
``make test``. Usage::

    sudo nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 10     # make soak

Writes ``benchmarks/results/storage/soak.json`` and ``soak.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MOSQUITTO = Path(os.environ.get("MICROEXPR_MOSQUITTO", "/usr/sbin/mosquitto"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {workdir}/", "max_queued_messages 100000"]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Collector:
    """Persistent QoS 1 subscriber: the broker queues for it while it is away."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=1)  # type: ignore[arg-type]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        text = message.payload.decode()
        with self.lock:
            self.messages.append((json.loads(text)["event_id"], text))

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fill(folder: Path) -> Path:
    """Write zeros until ENOSPC (unbuffered: nothing is left to flush at close)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def free_bytes(folder: Path) -> int:
    info = os.statvfs(folder)
    return int(info.f_bavail) * int(info.f_frsize)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between broker SIGKILLs")
    parser.add_argument("--broker-down", type=float, default=5.0, help="seconds the broker stays dead")
    parser.add_argument("--fill-at", type=float, default=0.45, help="fraction of the run when the disk fills")
    parser.add_argument("--fill-for", type=float, default=45.0, help="seconds the disk stays full")
    parser.add_argument("--tmpfs-mb", type=int, default=48)
    parser.add_argument("--clip", type=Path, default=SHARED / "data" / "media" / "single_face.mp4")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "face_landmarker.task")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "storage")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root to mount the tmpfs the disk-full fault uses", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="microexpr-soak-"))
    state = work / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mb}m", "tmpfs", str(state)]).returncode:
        print("soak: cannot mount a tmpfs", file=sys.stderr)
        return 1
    port = free_port()
    broker = Broker(work / "broker", port)
    device_id = f"soak-{uuid.uuid4().hex[:8]}"
    config = work / "config.toml"
    config.write_text(
        f'device_id = "{device_id}"\n'
        f'[source]\nuri = "replay:{args.clip}"\n'
        f'[model]\npath = "{args.model}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nstats_interval_s = 5.0\nkeepalive_s = 5\n'
        f'[outbox]\npath = "{state / "outbox.sqlite"}"\n'
    )
    timeline: list[str] = []
    started_wall = datetime.now(UTC)

    def note(text: str) -> None:
        line = f"{time.monotonic() - t0:7.1f} s  {text}"
        timeline.append(line)
        print(line, flush=True)

    t0 = time.monotonic()
    broker.start()
    collector = Collector(port, f"microexpr/{device_id}/event")
    stats_msgs: list[dict[str, Any]] = []
    stats_client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-stats-{uuid.uuid4().hex[:6]}")
    stats_client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"microexpr/{device_id}/stats", qos=0)
    stats_client.on_message = lambda c, u, m: stats_msgs.append(json.loads(m.payload))
    stats_client.reconnect_delay_set(min_delay=0.2, max_delay=1)  # type: ignore[arg-type]
    stats_client.connect_async("127.0.0.1", port)
    stats_client.loop_start()
    time.sleep(1.0)

    out_path, err_path = work / "daemon.out", work / "daemon.err"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY")}
    env["PYTHONPATH"] = str(ROOT / "device")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        daemon = subprocess.Popen([sys.executable, "-m", "microexpr", "run", "--config", str(config), "--print-events"],
                                  cwd=ROOT, env=env, stdout=out, stderr=err)
    note(f"daemon pid {daemon.pid}, broker :{port}, outbox on a {args.tmpfs_mb} MB tmpfs")
    duration = args.minutes * 60.0
    fill_at = duration * args.fill_at
    next_kill = args.kill_every
    filler: Path | None = None
    fill_done = False
    rss: list[tuple[float, int]] = []
    next_rss = 0.0
    try:
        while (now := time.monotonic() - t0) < duration:
            if daemon.poll() is not None:
                note(f"daemon exited early with {daemon.returncode}")
                break
            if now >= next_rss:
                value = rss_kib(daemon.pid)
                if value is not None:
                    rss.append((now, value))
                next_rss = now + 10.0
            if now >= next_kill and now < duration - 20:
                broker.kill()
                note(f"broker SIGKILLed ({broker.kills})")
                time.sleep(args.broker_down)
                broker.start()
                note("broker restarted")
                next_kill += args.kill_every
            if not fill_done and filler is None and now >= fill_at:
                filler = fill(state)
                note(f"disk filled: {free_bytes(state)} bytes free on the outbox's tmpfs")
            if filler is not None and now >= fill_at + args.fill_for:
                filler.unlink()
                filler, fill_done = None, True
                note(f"disk freed: {free_bytes(state) // 1024} KiB free")
            time.sleep(0.5)
    finally:
        if filler is not None:
            filler.unlink()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(10)
        note(f"daemon stopped with {daemon.returncode}")

    printed: list[dict[str, Any]] = []
    for line in out_path.read_text(errors="replace").splitlines():
        try:
            printed.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    produced = [p["event_id"] for p in printed if "agrees_with_local" not in p]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(produced) <= {e for e, _ in collector.snapshot()}:
        time.sleep(0.5)
    received = collector.snapshot()
    got = {e for e, _ in received}
    payloads: dict[str, set[str]] = {}
    for event_id, text in received:
        payloads.setdefault(event_id, set()).add(text)
    with sqlite3_connect(state / "outbox.sqlite") as left:
        left_in_outbox = left
    last_stats = stats_msgs[-1] if stats_msgs else {}
    rss_from = [v for t, v in rss if 110 <= t <= 130] or [v for _, v in rss[:3]]
    rss_to = [v for _, v in rss[-3:]]
    growth = (statistics.median(rss_to) / statistics.median(rss_from) - 1.0) if rss_from and rss_to else None
    err_text = err_path.read_text(errors="replace")
    result = {
        "schema": "microexpr.soak/1",
        "created": started_wall.isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "minutes": args.minutes,
        "broker_sigkills": broker.kills,
        "disk_filled": {"at_s": round(fill_at, 1), "for_s": args.fill_for, "tmpfs_mb": args.tmpfs_mb},
        "produced": len(produced),
        "received": len(got & set(produced)),
        "lost": len(set(produced) - got),
        "duplicated": len(received) - len(got),
        "duplicates_share_payload": all(len(v) == 1 for v in payloads.values()),
        "left_in_outbox_after_stop": left_in_outbox,
        "daemon_exit": daemon.returncode,
        "stats_outbox_last": last_stats.get("outbox"),
        "health_seen": sorted({s.get("health", "") for s in stats_msgs}),
        "health_reasons_seen": sorted({s.get("health_reason", "") for s in stats_msgs} - {""})[:5],
        "rss_kib": {"at_2_min": statistics.median(rss_from) if rss_from else None,
                    "at_end": statistics.median(rss_to) if rss_to else None,
                    "growth": None if growth is None else round(growth, 4)},
        "tracebacks_in_log": err_text.count("Traceback"),
        "log_lines": len(err_text.splitlines()),
        "timeline": timeline,
    }
    collector.close()
    stats_client.loop_stop()
    broker.close()
    subprocess.run(["umount", "-l", str(state)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "soak.err.tail.txt").write_text("\n".join(err_text.splitlines()[-80:]) + "\n")
    md = [
        "# Storage soak (issue 14)", "",
        f"`{result['command']}` on {result['machine']['platform']} ({result['machine']['cpus']} CPUs), "
        f"{result['created']}.", "",
        "| produced | received | lost | duplicated | dup. same payload | broker SIGKILLs | RSS growth | tracebacks |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['produced']} | {result['received']} | {result['lost']} | {result['duplicated']} | "
        f"{result['duplicates_share_payload']} | {result['broker_sigkills']} | "
        f"{'n/a' if growth is None else f'{growth * 100:.1f} %'} | {result['tracebacks_in_log']} |", "",
        f"Last `stats.outbox`: `{json.dumps(result['stats_outbox_last'])}`; health seen: {result['health_seen']}; "
        f"reasons: {result['health_reasons_seen']}.", "",
        "Timeline:", "", "```", *timeline, "```", "",
    ]
    (args.out / "soak.md").write_text("\n".join(md))
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    return 0 if result["lost"] == 0 else 1


class sqlite3_connect:
    """Rows left in the outbox after the stop (0 when the broker took everything)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> int | None:
        import sqlite3

        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
                return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
