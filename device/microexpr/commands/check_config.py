"""``microexpr check-config``: validate a configuration file and print it resolved.

The text output is itself TOML (every key with the value the daemon will
use), so it can be saved as a starting point. Secrets are reported as set or
unset and where they come from, never their values. Exit 78 when the file
is invalid, after listing every problem (one line each).

A valid file is then checked the way ``run`` checks it before starting
(:mod:`microexpr.service.preflight`: a source configured and openable, the
model provisioned, TLS files present, the outbox writable): each refusal is
one line, and the exit code is the one ``run`` would exit with. So
check-config accepts exactly what run starts with. ``--as-service`` resolves
paths and secrets the way the systemd unit does (its state directory and
credentials), whoever runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from microexpr import config as cfg
from microexpr import secrets
from microexpr.errors import ExitCode
from microexpr.service import preflight


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg.add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the resolved configuration as JSON")
    parser.add_argument(
        "--as-service", action="store_true",
        help=f"resolve state paths and secrets as the systemd unit does ({preflight.SERVICE_STATE_DIR}, "
        f"credentials from {preflight.SERVICE_CREDENTIALS_DIR}), not as the user running the check",
    )


def _secret_report(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    report = {}
    for spec in secrets.SECRETS:
        try:
            source = secrets.source_of(spec, env=env)
        except cfg.ConfigError as exc:
            if env is None:
                raise
            # --as-service: the service's credential files are root's; not readable here is not "unset"
            report[spec.name] = {"set": None, "source": f"unknown: {exc}", "env_var": spec.env_var}
            continue
        report[spec.name] = {"set": source is not None, "source": str(source) if source else None,
                             "env_var": spec.env_var}
    return report


def _notes(config: cfg.Config, report: dict[str, dict[str, Any]]) -> list[str]:
    """Valid but probably not what was meant."""
    notes = []
    if config.mqtt.username and not report[secrets.MQTT_PASSWORD.name]["set"]:
        notes.append(f"mqtt.username is set but no MQTT password is: {secrets.MQTT_PASSWORD.hint()}")
    if config.mqtt.enabled and config.mqtt.username and not config.mqtt.tls and config.mqtt.host not in {"localhost", "127.0.0.1", "::1"}:
        notes.append("mqtt.tls is false: the MQTT password crosses the network in clear text")
    if config.reasoner.enabled and not config.reasoner.base_url and not report[secrets.OPENAI_API_KEY.name]["set"]:
        notes.append(f"reasoner.enabled is true but no OpenAI API key is set: {secrets.OPENAI_API_KEY.hint()}")
    if config.status.enabled and config.status.username and not report[secrets.STATUS_PASSWORD.name]["set"]:
        notes.append(f"status.username is set but no status page password is (run refuses this): "
                     f"{secrets.STATUS_PASSWORD.hint()}")
    return notes


def run(args: argparse.Namespace) -> int:
    path = cfg.find_config_file(args.config)
    if path is None:
        data: dict[str, Any] = {}
        origin = f"built-in defaults ({cfg.DEFAULT_CONFIG_PATH} does not exist)"
    else:
        data = cfg.read_toml(path)
        origin = str(path)
    base_dir = path.absolute().parent if path else None
    problems = cfg.config_problems(data, base_dir=base_dir)
    if problems:
        for problem in problems:
            print(f"microexpr: error: {problem}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    as_service = bool(getattr(args, "as_service", False))
    env = preflight.service_env() if as_service else None
    config = cfg.parse_config(data, base_dir=base_dir, origin=origin, env=env)
    report = _secret_report(env)
    notes = _notes(config, report) + preflight.notes(config, as_service=as_service)
    refused = preflight.refusals(config, origin=str(path) if path else None, as_service=as_service)
    code = int(refused[0].exit_code) if refused else int(ExitCode.OK)
    for problem in refused:
        print(f"microexpr: error: {problem}", file=sys.stderr)
    if args.json:
        json.dump(
            {"config_file": str(path) if path else None, "as_service": as_service, "config": cfg.to_plain(config),
             "secrets": report, "notes": notes, "refused": [str(p) for p in refused]},
            sys.stdout, indent=2,
        )
        sys.stdout.write("\n")
        return code
    view = " as the systemd unit sees it" if as_service else ""
    out = [f"# microexpr configuration, resolved from {origin}{view}", "# (secrets are never printed)"]
    out.append(cfg.to_toml(cfg.to_plain(config)).rstrip("\n"))
    out.append("")
    out.append("# secrets:")
    for name, info in report.items():
        where = (f"set ({info['source']})" if info["set"] else info["source"] if info["set"] is None
                 else f"unset (credential {name} or ${info['env_var']})")
        out.append(f"#   {name}: {where}")
    for note in notes:
        out.append(f"# note: {note}")
    print("\n".join(out))
    return code

