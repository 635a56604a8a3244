"""A local HTTP server on 127.0.0.1 that serves a fake checkpoint the ways real downloads go wrong.

Files are chosen by the last part of the URL path, so any folder prefix works (as with a mirror):
  good.pt     the payload, with HTTP Range support
  corrupt.pt  the payload with one byte changed (its SHA-256 does not match)
  flaky.pt    drops the connection half-way while `drops_left` > 0, then serves with Range support
  norange.pt  the payload, ignoring Range headers (always 200, the whole file)
  anything else: 404

It also holds the pytest fixtures both model test modules import: `server`, `isolated_cache`
(autouse: a fresh NAPARI_SAM2_CACHE, official URLs pointed at the local server, fast retries)
and `add_model` (puts a test checkpoint into the registry).
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from napari_sam2.models import downloads
from napari_sam2.models import registry as models

PAYLOAD = random.Random(20240728).randbytes(2_500_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def closed_port_url(filename: str = "good.pt") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused, as when offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"


class _LocalHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class CheckpointServer:
    def __init__(self, payload: bytes = PAYLOAD):
        self.payload = payload
        self.corrupt = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header) of each request
        self.drops_left = 1
        self._httpd = _LocalHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, filename: str) -> str:
        return f"{self.base_url}/{filename}"

    def reset(self, drops: int = 1) -> None:
        self.requests.clear()
        self.drops_left = drops

    def ranges(self, filename: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path.endswith("/" + filename)]

    def __enter__(self) -> "CheckpointServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                name = self.path.rsplit("/", 1)[-1]
                if name == "good.pt":
                    self._serve(server.payload, ranges=True)
                elif name == "corrupt.pt":
                    self._serve(server.corrupt, ranges=True)
                elif name == "norange.pt":
                    self._serve(server.payload, ranges=False)
                elif name == "flaky.pt":
                    drop = server.drops_left > 0
                    server.drops_left -= 1
                    self._serve(server.payload, ranges=True, drop_half_way=drop)
                else:
                    self.send_error(404, "Not Found")

            def _serve(self, data: bytes, ranges: bool, drop_half_way: bool = False):
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if ranges and match:
                    start = int(match[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes" if ranges else "none")
                self.end_headers()
                if drop_half_way:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        return Handler


@pytest.fixture(scope="module")
def server():
    with CheckpointServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def isolated_cache(server, tmp_path, monkeypatch):
    server.reset()
    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path / "cache"))
    # Every official URL now points at the local server (where it 404s): no test can reach the internet.
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", server.base_url)
    monkeypatch.setattr(downloads, "RETRY_DELAYS_S", (0.01, 0.01))
    monkeypatch.setattr(downloads, "TIMEOUT_S", 5.0)
    return tmp_path / "cache"


@pytest.fixture
def add_model(server, monkeypatch):
    """add_model(filename, sha256, name) registers a test checkpoint served as `filename`."""

    def add(filename="good.pt", sha256=PAYLOAD_SHA256, name="test_model") -> models.ModelInfo:
        info = models.ModelInfo(name, "sam2.1_hiera_t", server.url(filename), sha256, 0.1, "test checkpoint")
        monkeypatch.setitem(models.MODELS, name, info)
        return info

    return add
