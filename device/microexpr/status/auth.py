"""HTTP basic auth for the status page, checked in constant time.

Basic auth is only as private as the transport: on loopback that is the
machine; on a LAN (``status.allow_remote``) put the page behind a TLS
reverse proxy. The password is a secret (credential ``status_password`` or
``$MICROEXPR_STATUS_PASSWORD``), never a configuration key.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from microexpr import secrets
from microexpr.errors import ConfigError

REALM = "microexpr"


class BasicAuth:
    """Accepts exactly one user and password."""

    def __init__(self, username: str, password: str) -> None:
        self._expected = f"{username}:{password}".encode()

    @classmethod
    def from_secret(cls, username: str) -> BasicAuth | None:
        """None when ``username`` is empty (no auth); a user without a password is a configuration error."""
        if not username:
            return None
        password = secrets.read(secrets.STATUS_PASSWORD)
        if not password:
            raise ConfigError(f"status.username is set but no password is: {secrets.STATUS_PASSWORD.hint()}")
        return cls(username, password)

    def check(self, header: str | None) -> bool:
        """Is ``Authorization: <header>`` this user's basic credentials?"""
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._expected)
