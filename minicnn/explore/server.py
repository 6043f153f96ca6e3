"""The explore page's web server: the standard library's ``ThreadingHTTPServer``, bounded and careful.

Routes (GET unless said):

    /                      the page (static/index.html)
    /static/NAME           its script and style, from the package (nothing is fetched from elsewhere)
    /api/info              model, classes, layers, gallery, limits
    /api/predict           ?image=ID                      top-5 classes
    /api/activations       ?image=ID&layer=NAME           the layer's channels
    /api/explain           ?image=ID&method=M&class=K[&layer=NAME]
    /api/attack            ?image=ID&method=fgsm|pgd&eps=E
    POST /api/upload       the body is a PNG or JPEG file  -> its id and top-5

Every answer is JSON (or a static file). A bad request gets a 4xx status
and ``{"error": "message"}``: 400 bad parameter, 403 a path outside the
served folder, 404 unknown page or image, 405 another method, 411 an upload
without its length, 413 an upload over the size limit, 415 not a PNG/JPEG.
At most ``workers`` requests are handled at once; more get 503 at once (the
server stays up). An unexpected error gets 500 with one line, never a
traceback, and the server goes on. The page's Content-Security-Policy
allows only this server's own script and style, and images inline.
"""
import json
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

from .app import BadRequest

__all__ = ["ExploreServer", "Handler", "make_server", "DEFAULT_WORKERS", "DEFAULT_MAX_UPLOAD"]

DEFAULT_WORKERS = 4
DEFAULT_MAX_UPLOAD = 8 * 1024 * 1024        # bytes
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"


class ExploreServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with an ``Explorer``, a bound on concurrent requests and an upload limit."""

    daemon_threads = True

    def __init__(self, address, explorer, workers=DEFAULT_WORKERS, max_upload=DEFAULT_MAX_UPLOAD, log=None):
        self.explorer = explorer
        self.slots = threading.BoundedSemaphore(workers)
        self.workers = workers
        self.active = 0                  # requests being handled now (at most ``workers``)
        self._count = threading.Lock()
        self.max_upload = max_upload
        self.log = log
        self.static = resources.files("minicnn.explore").joinpath("static")
        super().__init__(address, Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(explorer, host="127.0.0.1", port=0, workers=DEFAULT_WORKERS, max_upload=DEFAULT_MAX_UPLOAD,
                log=None):
    """An ``ExploreServer`` bound to (host, port) (port 0: a free one; see ``server.url``); call serve_forever()."""
    return ExploreServer((host, port), explorer, workers=workers, max_upload=max_upload, log=log)


class Handler(BaseHTTPRequestHandler):
    """One request: routed, checked, answered; never a traceback to the client or a dead server."""

    server_version = "minicnn-explore"
    timeout = 30                   # a client that stalls mid-request is dropped after this many seconds
    protocol_version = "HTTP/1.1"

    # ---------------------------------------------------------------- answers
    def _send(self, status, body, content_type):
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        if status == 503:
            self.send_header("Retry-After", "1")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, status, message):
        self._json(status, {"error": message, "status": status})

    def log_message(self, fmt, *args):
        """One line per request is written by ``_guarded`` (with its time), not by the base class."""

    # ---------------------------------------------------------------- requests
    def _guarded(self, handle):
        """Run ``handle`` in one of the server's worker slots, or answer 503 when all are busy."""
        if not self.server.slots.acquire(blocking=False):
            self.close_connection = True
            return self._error(503, "the server is busy; try again in a moment")
        started = time.perf_counter()
        with self.server._count:
            self.server.active += 1
        try:
            handle()
        except BadRequest as e:
            self._error(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:               # a bug: one line for the user, the server goes on
            self.close_connection = True
            try:
                self._error(500, f"internal error: {type(e).__name__}: {e}")
            except OSError:
                pass
        finally:
            with self.server._count:
                self.server.active -= 1
            self.server.slots.release()
            if self.server.log:
                self.server.log(f"{self.command} {self.path[:100]} {getattr(self, 'status', '-')} "
                                f"{time.perf_counter() - started:.2f} s")

    def do_GET(self):
        self._guarded(self._get)

    def do_HEAD(self):
        self._guarded(self._get)

    def do_POST(self):
        self._guarded(self._post)

    def _not_allowed(self):
        self.close_connection = True
        self._error(405, f"method {self.command} is not allowed; use GET (or POST /api/upload)")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _get(self):
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        ex = self.server.explorer
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        routes = {
            "/api/info": lambda: ex.info(),
            "/api/predict": lambda: ex.predict(_param(query, "image")),
            "/api/activations": lambda: ex.activations(_param(query, "image"), _param(query, "layer")),
            "/api/explain": lambda: ex.explain(_param(query, "image"), _param(query, "method"),
                                               query.get("class"), query.get("layer")),
            "/api/attack": lambda: ex.attack(_param(query, "image"), _param(query, "method"), _param(query, "eps")),
        }
        if path not in routes:
            if path == "/api/upload":
                raise BadRequest(405, "upload with POST, the image file as the request body")
            raise BadRequest(404, f"{path}: no such page")
        self._json(200, routes[path]())

    def _static(self, name):
        """A file of the package's static folder; 403 for any path that leaves it."""
        parts = name.replace("\\", "/").split("/")
        if any(p in ("..", "") or p.startswith(".") for p in parts) or os.path.isabs(name):
            raise BadRequest(403, f"{name}: outside the served folder")
        target = self.server.static
        for p in parts:
            target = target.joinpath(p)
        if not target.is_file():
            raise BadRequest(404, f"/static/{name}: no such file")
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
        self._send(200, target.read_bytes(), kind)

    def _post(self):
        path = urlsplit(self.path).path
        if path != "/api/upload":
            self.close_connection = True
            raise BadRequest(404 if not path.startswith("/api/") else 405, f"POST {path}: only /api/upload takes POST")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise BadRequest(411, "upload: the request needs a Content-Length header")
        length = int(length)
        if length > self.server.max_upload:
            self.close_connection = True         # the body is not read: the connection is closed instead
            raise BadRequest(413, f"upload: {length:,} bytes is over the limit of {self.server.max_upload:,} "
                                  f"bytes ({self.server.max_upload / 2**20:.0f} MiB)")
        if length == 0:
            raise BadRequest(415, "upload: the body is empty; send a PNG or JPEG file")
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise BadRequest(400, f"upload: the body ended after {len(data)} of {length} bytes")
        self._json(200, self.server.explorer.upload(data))


def _param(query, name):
    if name not in query or query[name] == "":
        raise BadRequest(400, f"missing parameter {name!r}")
    return query[name]


def serve(server, stop_signals=True):
    """``server.serve_forever()`` until Ctrl-C or SIGTERM; then close the socket. Returns the signal's name."""
    import signal

    stopped = {"by": None}

    def on_term(signum, frame):
        stopped["by"] = "SIGTERM"
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if stop_signals else None
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        stopped["by"] = stopped["by"] or "Ctrl-C"
    finally:
        if stop_signals:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()
        sys.stderr.flush()
    return stopped["by"]
