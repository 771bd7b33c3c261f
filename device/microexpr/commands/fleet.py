"""``microexpr fleet``: per-device health and events, read from the central broker.

Prints, for every device publishing under the topic prefix: availability,
fps, latency p95, dropped frames, outbox depth (from the retained ``stats``),
and the unique events per label over a window. Text table by default, one
JSON object per refresh with ``--json``. With ``--duration`` it prints once
after that long and exits; otherwise it refreshes every ``--interval`` seconds
until SIGINT/SIGTERM, then prints a last snapshot and exits 0. The rules
(de-duplication by ``event_id``, the window) are in ``microexpr.fleet`` and
docs/mqtt.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from microexpr import secrets
from microexpr.commands._args import int_in, positive_float
from microexpr.errors import ConfigError, ExitCode
from microexpr.fleet import DeviceRow, FleetView, render_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="localhost", help="the central broker (default: localhost)")
    parser.add_argument("--port", type=int_in(1, 65535), default=None,
                        help="its port (default: 8883 with --tls, else 1883)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-file", type=Path, default=None, metavar="PATH",
                        help="CA bundle for --tls (default: the system trust store)")
    parser.add_argument("--username", default=None,
                        help="user on the central broker; the password is the secret mqtt_password "
                        "($CREDENTIALS_DIRECTORY/mqtt_password or $MICROEXPR_MQTT_PASSWORD)")
    parser.add_argument("--topic-prefix", default="microexpr", metavar="PREFIX",
                        help="the devices' mqtt.topic_prefix (default: microexpr)")
    parser.add_argument("--session", default=None, metavar="CLIENT_ID",
                        help="a persistent session under this client id: the broker keeps the events "
                        "published while the view is not running")
    parser.add_argument("--window", type=positive_float, default=300.0, metavar="S",
                        help="events per label over the last S seconds of event time (default: 300)")
    parser.add_argument("--interval", type=positive_float, default=5.0, metavar="S",
                        help="refresh every S seconds (default: 5)")
    parser.add_argument("--duration", type=positive_float, default=None, metavar="S",
                        help="collect for S seconds, print once and exit")
    parser.add_argument("--connect-timeout", type=positive_float, default=10.0, metavar="S",
                        help="give up (exit 75) when the broker does not answer within S seconds (default: 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object per refresh instead of a table")


def _snapshot(rows: list[DeviceRow], view: FleetView, *, as_json: bool) -> str:
    if as_json:
        return json.dumps({
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "window_s": view.window_s,
            "devices": [row.to_json() for row in rows],
        }, separators=(",", ":"))
    return render_table(rows, view.window_s)


def run(args: argparse.Namespace) -> int:
    from microexpr.fleet_mqtt import FleetConnection, FleetSubscriber

    if args.ca_file is not None and not args.tls:
        raise ConfigError("--ca-file is set but --tls is not")
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigError(f"--ca-file {args.ca_file}: no such file")
    password = secrets.read(secrets.MQTT_PASSWORD) if args.username else None
    connection = FleetConnection(
        host=args.host, port=args.port or (8883 if args.tls else 1883), topic_prefix=args.topic_prefix,
        username=args.username, password=password, tls=args.tls, ca_file=args.ca_file, session=args.session,
    )
    view = FleetView(topic_prefix=args.topic_prefix, window_s=args.window)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    subscriber = FleetSubscriber(connection, view).start(timeout=args.connect_timeout)
    try:
        deadline = time.monotonic() + args.duration if args.duration is not None else None
        while not stop.is_set():
            wait = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
            if stop.wait(max(0.0, wait)) or (deadline is not None and time.monotonic() >= deadline):
                break
            if deadline is None:
                print(_snapshot(subscriber.rows(), view, as_json=args.json), flush=True)
                if not args.json:
                    print(flush=True)
        print(_snapshot(subscriber.rows(), view, as_json=args.json), flush=True)
    finally:
        subscriber.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return int(ExitCode.OK)

