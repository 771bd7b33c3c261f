"""Secrets (MQTT password, OpenAI key): systemd credentials first, then the environment.

Secrets never live in the TOML file (``config.py`` rejects ``password`` /
``api_key`` keys there). Under systemd the unit passes each one with
``LoadCredential=<name>:/etc/microexpr/credentials/<name>``; systemd copies the
file into a private, non-swappable directory readable only by the service user
and exports its path as ``$CREDENTIALS_DIRECTORY``. Outside systemd (a
developer shell, a container) the matching environment variable is used.

Secrets are read lazily, when a component needs one, never at import time, so
that importing the package or running ``check-config`` does not pull a key
into memory, and a rotated credential is picked up on the next restart.
An empty credential file means "not set": the install script creates empty
files so that ``LoadCredential=`` always finds its source.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from microexpr.errors import ConfigError

#: Where the install script keeps the source files that ``LoadCredential=`` reads.
CREDENTIALS_SOURCE_DIR = Path("/etc/microexpr/credentials")


class SecretSource(enum.StrEnum):
    """Where a secret was found (reported by ``check-config``, never the value)."""

    CREDENTIAL = "credential"
    ENVIRONMENT = "environment"


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """A named secret: its systemd credential name and its environment variable."""

    name: str
    env_var: str
    what: str

    def hint(self) -> str:
        """One phrase saying where this secret goes (used in error messages)."""
        return (
            f"put the {self.what} in {CREDENTIALS_SOURCE_DIR / self.name} "
            f"(systemd LoadCredential={self.name}) or ${self.env_var}"
        )


MQTT_PASSWORD = SecretSpec("mqtt_password", "MICROEXPR_MQTT_PASSWORD", "MQTT password")
OPENAI_API_KEY = SecretSpec("openai_api_key", "OPENAI_API_KEY", "OpenAI API key")
#: Basic auth password of the status page (``status.username``).
STATUS_PASSWORD = SecretSpec("status_password", "MICROEXPR_STATUS_PASSWORD", "status page password")
SECRETS: tuple[SecretSpec, ...] = (MQTT_PASSWORD, OPENAI_API_KEY, STATUS_PASSWORD)


def _strip_newline(value: str) -> str:
    # Files written with `echo` end in a newline that is not part of the secret;
    # other whitespace may be, so only line endings are removed.
    return value.rstrip("\r\n")


def _credentials_dir(env: Mapping[str, str]) -> Path | None:
    raw = env.get("CREDENTIALS_DIRECTORY", "")
    return Path(raw) if raw else None


def lookup_secret(
    name: str, env_var: str, *, env: Mapping[str, str] | None = None
) -> tuple[str | None, SecretSource | None]:
    """Return ``(value, source)``; ``(None, None)`` when the secret is not set.

    Raises ``ConfigError`` when a credential file exists but cannot be read
    (wrong owner, not UTF-8): silently falling back to the environment would
    hide a broken deployment.
    """
    env = os.environ if env is None else env
    directory = _credentials_dir(env)
    if directory is not None:
        path = directory / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"credential {name}: cannot read {path}: {exc.strerror or exc}") from None
        else:
            try:
                value = _strip_newline(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ConfigError(f"credential {name}: {path} is not UTF-8 text") from None
            if value:
                return value, SecretSource.CREDENTIAL
    value = _strip_newline(env.get(env_var, ""))
    if value:
        return value, SecretSource.ENVIRONMENT
    return None, None


def read_secret(name: str, env_var: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """The secret's value, from ``$CREDENTIALS_DIRECTORY/<name>`` else ``$<env_var>``; None if unset."""
    return lookup_secret(name, env_var, env=env)[0]


def read(spec: SecretSpec, *, env: Mapping[str, str] | None = None) -> str | None:
    """``read_secret`` for one of the known secrets (``MQTT_PASSWORD``, ``OPENAI_API_KEY``)."""
    return read_secret(spec.name, spec.env_var, env=env)


def source_of(spec: SecretSpec, *, env: Mapping[str, str] | None = None) -> SecretSource | None:
    """Where the secret would come from, without keeping its value."""
    return lookup_secret(spec.name, spec.env_var, env=env)[1]
