"""The status server: one ``ThreadingHTTPServer`` on its own thread, read-only.

Routes (GET and HEAD only; anything else is 405, an unknown path 404):

=================  ===========================================================
``/``              the page (``page.html``: no external resources)
``/api/status``    health, fps, latency per stage, dropped frames, outbox,
                   broker and reasoner state (JSON; the ``stats`` payload)
``/api/episodes``  the recent episodes with AUs and explanation (JSON)
``/events``        server-sent events: ``status`` every second, ``aus`` every
                   ``status.live_interval_s``, ``episode`` when one arrives
``/metrics``       Prometheus exposition (:mod:`microexpr.status.prom`)
``/preview.jpg``   the latest camera frame, only with ``status.preview`` and
                   only to a loopback client
=================  ===========================================================

Bad requests never reach the daemon's state: a request line over
:data:`MAX_REQUEST_LINE` is 414, headers over :data:`MAX_HEADER_BYTES` 431,
a request body 413, garbage 400, a wrong or missing password 401; each is
counted (``microexpr_status_rejected_requests_total``) and logged at a
bounded rate. A client that stops reading is dropped after
:data:`SOCKET_TIMEOUT_S`; at most :data:`MAX_STREAMS` event streams at once.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any

from microexpr.capture import Frame
from microexpr.config import Config
from microexpr.events import Event, JsonObject, RefinedEvent, au_stream_payload, dumps
from microexpr.status.auth import REALM, BasicAuth
from microexpr.status.feed import LiveFeed, StatusSources
from microexpr.status.prom import StatusMetrics

if TYPE_CHECKING:
    from microexpr.aus import AUFrame

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 4096
MAX_HEADER_BYTES = 16 * 1024
SOCKET_TIMEOUT_S = 10.0
MAX_STREAMS = 8
#: ``status`` events on a stream are this far apart, seconds.
STATUS_EVERY_S = 1.0
#: Bounded logging of rejected requests and hook failures: one line per kind per this many seconds.
LOG_EVERY_S = 60.0

_ROUTES = ("/", "/api/status", "/api/episodes", "/events", "/metrics", "/preview.jpg")


class _Throttle:
    """At most one log line per key per :data:`LOG_EVERY_S`, with how many were not logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._hidden: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None: stay quiet; else the number of lines skipped since the last one."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, float("-inf")) < LOG_EVERY_S:
                self._hidden[key] = self._hidden.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._hidden.pop(key, 0)


class StatusServer:
    """The page, its JSON, its event stream and ``/metrics``; the daemon feeds it through the ``on_*`` hooks.

    The hooks run on the daemon's threads and never raise: a failure is
    logged at a bounded rate and the frame goes on.
    """

    def __init__(self, config: Config, sources: StatusSources, *, auth: BasicAuth | None = None) -> None:
        self.config = config
        self.settings = config.status
        self.sources = sources
        self.auth = auth
        self.device_id = config.device_id
        self.feed = LiveFeed(self.settings.recent_episodes, keep_frames=self.settings.preview)
        self.metrics = StatusMetrics(sources, config.reasoner)
        self.page = resources.files("microexpr.status").joinpath("page.html").read_bytes()
        self._throttle = _Throttle()
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> StatusServer:
        """Bind and serve on a thread named ``status-http``; raises ``OSError`` if the port is taken."""
        family = _HTTPServer.family_for(self.settings.bind)
        httpd = _HTTPServer((self.settings.bind, self.settings.port), _Handler, family=family)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="status-http", daemon=True)
        self._thread.start()
        log.info("status page on %s%s", self.url, " (basic auth)" if self.auth else "")
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving; open event streams end within a poll interval."""
        self.feed.close()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- hooks (daemon threads) -----------------------------------------------

    def on_frame(self, timings: dict[str, float], face: bool, aus: AUFrame, frame: Frame | None) -> None:
        try:
            self.metrics.observe_frame(timings, face)
            self.feed.frame(aus, frame)
        except Exception:
            self._hook_failed("on_frame")

    def on_event(self, event: Event) -> None:
        try:
            self.metrics.observe_event(event)
            self.feed.episode(event)
        except Exception:
            self._hook_failed("on_event")

    def on_refined(self, refined: RefinedEvent) -> None:
        try:
            self.metrics.observe_refined(refined)
            self.feed.refined(refined)
        except Exception:
            self._hook_failed("on_refined")

    def on_store_failed(self, kind: str = "event") -> None:
        try:
            self.metrics.publish_failures.labels(reason=kind).inc()
        except Exception:
            self._hook_failed("on_store_failed")

    def _hook_failed(self, hook: str) -> None:
        skipped = self._throttle(f"hook:{hook}")
        if skipped is not None:
            log.exception("status: %s failed (%d more not logged); the frame goes on", hook, skipped)

    # -- what the routes serve ------------------------------------------------

    def status_payload(self) -> JsonObject:
        payload = self.sources.stats().to_payload()
        payload["broker"] = self.sources.broker().value
        payload["preview"] = self.settings.preview
        payload["live_interval_s"] = self.settings.live_interval_s
        payload["recent_episodes"] = self.settings.recent_episodes
        return payload

    def aus_payload(self) -> tuple[int, JsonObject | None]:
        seq, aus = self.feed.latest_aus()
        if aus is None:
            return seq, None
        return seq, au_stream_payload(aus, device_id=self.device_id)

    def rejected(self, code: int, what: str, client: str) -> None:
        self.metrics.rejected_requests.labels(code=str(code)).inc()
        skipped = self._throttle(f"reject:{code}")
        if skipped is not None:
            log.warning("status: refused a request from %s: %d %s (%d more refusals of this kind not logged)",
                        client, code, what, skipped)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16
    app: StatusServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, family: int) -> None:
        self.address_family = family
        super().__init__(address, handler)

    @staticmethod
    def family_for(bind: str) -> int:
        import socket

        return socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "microexpr-status"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    #: Errors before the version is known still get a status line (no HTTP/0.9 answers).
    default_request_version = "HTTP/1.0"
    timeout = SOCKET_TIMEOUT_S

    # -- request checks ---------------------------------------------------------

    @property
    def app(self) -> StatusServer:
        return self.server.app

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Every refusal goes through here (ours and http.server's own 400/414/431/505).
        self.app.rejected(code, message or HTTPStatus(code).phrase, self.client_address[0])
        super().send_error(code, message, explain)

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes")
            return False
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # "GET /": HTTP/0.9, which http.server would answer
            self.send_error(HTTPStatus.BAD_REQUEST, "an HTTP/1.x request line is required")
            return False
        if sum(len(k) + len(v) + 4 for k, v in self.headers.items()) > MAX_HEADER_BYTES:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"headers over {MAX_HEADER_BYTES} bytes")
            return False
        if self.command not in ("GET", "HEAD"):
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only")
            return False
        length = self.headers.get("Content-Length", "0").strip()
        if self.headers.get("Transfer-Encoding") or length not in ("", "0"):
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request bodies are not accepted")
            return False
        auth = self.app.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self.send_error(HTTPStatus.UNAUTHORIZED, "credentials required")
            return False
        return True

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if code == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        elif code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("status: %s %s", self.client_address[0], format % args)

    # -- routes -------------------------------------------------------------------

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path not in _ROUTES or (path == "/preview.jpg" and not self.app.settings.preview):
            self.send_error(HTTPStatus.NOT_FOUND, "no such page")
            return
        try:
            if path == "/":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.app.page, page=True)
            elif path == "/api/status":
                self._send_json(self.app.status_payload())
            elif path == "/api/episodes":
                self._send_json({"episodes": self.app.feed.episodes()})
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.app.metrics.registry))
            elif path == "/preview.jpg":
                self._preview()
            else:
                self._stream()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _send(self, code: int, content_type: str, body: bytes, *, page: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if page:
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "img-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: JsonObject) -> None:
        self._send(HTTPStatus.OK, "application/json", dumps(payload).encode())

    def _preview(self) -> None:
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self.send_error(HTTPStatus.FORBIDDEN, "the preview is served to this machine only")
            return
        frame = self.app.feed.latest_frame()
        if frame is None:
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            return
        import cv2

        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "cannot encode the frame")
            return
        self._send(HTTPStatus.OK, "image/jpeg", jpeg.tobytes())

    def _stream(self) -> None:
        app = self.app
        if not app._streams.acquire(blocking=False):
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_STREAMS} event streams at once")
            return
        try:
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            self.wfile.write(b"retry: 2000\n\n")
            interval = app.settings.live_interval_s
            cursor, last_aus, next_status = 0, -1, 0.0
            while not app.feed.closed:
                now = time.monotonic()
                if now >= next_status:
                    self._event("status", app.status_payload())
                    next_status = now + STATUS_EVERY_S
                seq, aus = app.aus_payload()
                if aus is not None and seq != last_aus:
                    self._event("aus", aus)
                    last_aus = seq
                cursor, fresh = app.feed.episodes_after(cursor)
                for view in fresh:
                    self._event("episode", view)
                self.wfile.flush()
                app.feed.wait(cursor, interval)
        finally:
            app._streams.release()

    def _event(self, name: str, payload: JsonObject) -> None:
        self.wfile.write(f"event: {name}\ndata: {dumps(payload)}\n\n".encode())
