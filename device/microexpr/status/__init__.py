"""The local status page and Prometheus ``/metrics`` (``[status]`` in the configuration).

Imported only when ``status.enabled`` is true: with it off the daemon pays
nothing, not even the import of ``prometheus_client`` (tested). The daemon
plugs in through :func:`open_status_server` and four hooks on
:class:`StatusServer` (a frame analysed, an event committed, a refinement
committed, a message the outbox refused). This package never imports the
daemon: it reads the daemon's state through :class:`StatusSources`.

Modules: :mod:`.feed` (what the page shows, between threads), :mod:`.prom`
(the private Prometheus registry), :mod:`.auth` (basic auth from a secret),
:mod:`.server` (HTTP routes, limits, server-sent events), ``page.html``.
See docs/status.md.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from microexpr.config import Config
from microexpr.status.auth import BasicAuth
from microexpr.status.feed import BrokerState, LiveFeed, StatusSources
from microexpr.status.server import StatusServer

log = logging.getLogger(__name__)


def open_status_server(config: Config, sources: StatusSources, stack: ExitStack) -> StatusServer | None:
    """Start the server for ``config.status``, closed by ``stack``.

    A user without a password is a ``ConfigError`` (exit 78: a page the
    operator believes protected must not be served open). A port that is
    taken is logged and the daemon runs without its page: recognising
    expressions matters more than showing them.
    """
    auth = BasicAuth.from_secret(config.status.username)
    server = StatusServer(config, sources, auth=auth)
    try:
        server.start()
    except OSError as exc:
        log.error("status page not served: cannot listen on %s:%d: %s; the daemon runs without it",
                  config.status.bind, config.status.port, exc.strerror or exc)
        return None
    stack.callback(server.close)
    return server


__all__ = ["BasicAuth", "BrokerState", "LiveFeed", "StatusServer", "StatusSources", "open_status_server"]
