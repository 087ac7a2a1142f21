"""A registry front and a blob store on loopback ports, recording what reaches them.

The front speaks enough of the distribution v2 API for the registry client: a login
challenge (basic, or bearer with a token service of its own), manifests, and blob
requests that it redirects, as real registries send blob downloads to object storage.
Both servers note every request's path, headers and client port (one port is one TCP
connection), so a test can say which credentials went where, and over how many
connections.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, TypeVar

USER = "fleet"
PASSWORD = "s3cret-for-the-registry"
TOKEN = "token-the-front-issued"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BEARER = f"Bearer {TOKEN}"
STORE_PREFIX = "/store/blobs/"
"""Where the front itself serves blobs when it redirects within its own origin."""

Answer = tuple[int, dict[str, str], bytes]
S = TypeVar("S", bound="RecordingServer")


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    """Names lowercased."""
    client_port: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as registries speak
    # Past any wait of the tests, so that only a test that failed has the server end a
    # connection left open (and then its threads can be joined).
    timeout = 15
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.note(
            Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, self.client_address[1])
        )
        status, headers, body = self.server.answer(self.path, self.headers.get("Authorization"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def handle_one_request(self) -> None:
        super().handle_one_request()
        # An empty request line is the client closing its end; the server timing an idle
        # connection out leaves the previous line in place and is not noted.
        if getattr(self, "raw_requestline", None) == b"":
            self.server.note_closed(self.client_address[1])

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads ``seen``, not stderr."""


class RecordingServer(ThreadingHTTPServer):
    # Handler threads are joined on close, so none outlives the test.
    daemon_threads = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []
        self.closed_ports: set[int] = set()
        self._changed = threading.Condition()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def note(self, seen: Seen) -> None:
        with self._changed:
            self.seen.append(seen)

    def note_closed(self, port: int) -> None:
        with self._changed:
            self.closed_ports.add(port)
            self._changed.notify_all()

    def wait_closed(self, ports: set[int], timeout: float) -> bool:
        """Whether the client closed every connection from ``ports`` in time."""
        with self._changed:
            return self._changed.wait_for(lambda: ports <= self.closed_ports, timeout)

    def answer(self, path: str, authorization: str | None) -> Answer:
        raise NotImplementedError


class BlobStore(RecordingServer):
    """Object storage: serves blobs by digest to anyone (the URL is the permission)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        super().__init__()
        self.blobs = blobs

    def answer(self, path: str, authorization: str | None) -> Answer:
        return _blob(self.blobs, path.removeprefix("/blobs/").partition("?")[0])


class RegistryFront(RecordingServer):
    """Manifests by reference and blobs by digest, behind a login. A blob request is
    redirected to ``blob_target`` + digest: another origin's URL, ``STORE_PREFIX`` (the
    front's own store, behind the same login), or anything else a test wants."""

    def __init__(
        self,
        manifests: dict[str, tuple[str, bytes]],
        blobs: dict[str, bytes],
        auth: Literal["basic", "bearer"],
        blob_target: str = STORE_PREFIX,
    ) -> None:
        super().__init__()
        self.manifests = manifests
        """By tag or digest: media type and the exact bytes."""
        self.blobs = blobs
        self.auth = auth
        self.blob_target = blob_target

    def answer(self, path: str, authorization: str | None) -> Answer:
        if path.startswith("/token?"):
            if authorization != BASIC:
                return 401, {}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": TOKEN}).encode()
        if authorization != (BEARER if self.auth == "bearer" else BASIC):
            return 401, {"WWW-Authenticate": self._challenge()}, b""
        if path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        if path.startswith(STORE_PREFIX):
            return _blob(self.blobs, path.removeprefix(STORE_PREFIX))
        _, _, rest = path.partition("/v2/demo/web/")
        kind, _, reference = rest.partition("/")
        if kind == "manifests" and reference in self.manifests:
            media_type, body = self.manifests[reference]
            return 200, {"Content-Type": media_type}, body
        if kind == "blobs":
            return 307, {"Location": f"{self.blob_target}{reference}"}, b""
        return 404, {}, b""

    def _challenge(self) -> str:
        if self.auth == "basic":
            return 'Basic realm="front"'
        return f'Bearer realm="{self.origin}/token",service="front"'


def _blob(blobs: dict[str, bytes], digest: str) -> Answer:
    if digest in blobs:
        return 200, {"Content-Type": "application/octet-stream"}, blobs[digest]
    return 404, {}, b""


@contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` answering on its own thread until the block ends."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
