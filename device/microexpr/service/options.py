"""What ``microexpr run`` was given, and the configuration it resolves to."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from microexpr import config as cfg
from microexpr.config import Config

_LIVE_SPEC = re.compile(r"\d+|/dev/.+|picamera2(:\d+)?")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``microexpr run`` was given on its command line."""

    config_path: Path | None = None
    source: str | None = None
    device_id: str | None = None
    outbox: Path | None = None
    #: None = automatic: print unless stdout is the systemd journal.
    print_events: bool | None = None
    #: ``-v``: debug logging whatever ``logging.level`` says.
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(
            config_path=args.config,
            source=args.source,
            device_id=args.device_id,
            outbox=args.outbox,
            print_events=args.print_events,
            verbose=bool(getattr(args, "verbose", False)),
        )


def load_run_config(options: RunOptions) -> Config:
    """Read, validate and resolve the configuration with the command line on top.

    Overrides go into the parsed file *before* validation, so ``--device-id``
    is checked like the key and the client id and paths derived from it are
    right; a reload (SIGHUP) applies the same overrides, so they never show
    up as "changed".
    """
    path = cfg.find_config_file(options.config_path)
    data: dict[str, Any] = cfg.read_toml(path) if path is not None else {}
    if options.device_id is not None:
        data["device_id"] = options.device_id
    if options.source is not None:
        # typed in a shell: a relative path is the working directory's, not the config file's
        _override(data, "source", "uri", cfg.resolve_source_uri(options.source, Path.cwd()))
    if options.outbox is not None:
        _override(data, "outbox", "path", str(options.outbox.expanduser().absolute()))
    origin = str(path) if path is not None else None
    base_dir = path.absolute().parent if path is not None else None
    # What run refuses beyond the file's own validity (no source, no model,
    # ...) is checked by service.preflight, shared with check-config.
    return cfg.parse_config(data, base_dir=base_dir, origin=origin)


def _override(data: dict[str, Any], section: str, key: str, value: Any) -> None:
    table = data.setdefault(section, {})
    if isinstance(table, dict):  # anything else is reported by validation, naming the section
        table[key] = value


def stdout_is_journal(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when stdout is connected to the journal (systemd sets
    ``JOURNAL_STREAM=<dev>:<inode>`` of that stream)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stdout).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def is_live_spec(spec: str) -> bool:
    """A camera spec (index, device node, Pi camera): a failure to open it is
    "camera not there yet", retried, not bad input."""
    return bool(_LIVE_SPEC.fullmatch(spec.strip())) and not Path(spec).is_file()
