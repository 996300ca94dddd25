"""A real, slow HTTP source: a repository directory served over HTTP/1.0 with ``Range``,
its blobs dripped at a set rate, every blob byte it sends counted.

It runs in a thread of the test process (the standard library's threading HTTP server), so a
test can change the rate while a node downloads from it and read what it sent: the source's
own count, not the node's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d{1,19})-(\d{0,19})\Z")


class SlowSource:
    """State shared with the handler threads: the rate, the counts, the stop switch."""

    def __init__(self, root: Path, rate: int | None, chunk: int = 8192) -> None:
        self.root = root.resolve()
        #: bytes per second for files under blobs/ (None: as fast as the socket takes them)
        self.rate = rate
        self.chunk = chunk
        self.blob_bytes_sent = 0
        self.blob_requests: list[tuple[str, int]] = []  # (path, first byte asked for)
        #: requests made before the last reset_counts() count no more bytes (a killed client's
        #: handler may still write its last block into the closed socket afterwards)
        self.generation = 0
        self.url = ""
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def sent(self, count: int, generation: int) -> None:
        with self._lock:
            if generation == self.generation:
                self.blob_bytes_sent += count

    def reset_counts(self) -> None:
        with self._lock:
            self.generation += 1
            self.blob_bytes_sent = 0
            self.blob_requests.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        source = self.server.source
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (source.root / rel).resolve()
        if source.root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data)
        header = self.headers.get("Range")
        status = 200
        if header:
            match = _RANGE.match(header)
            if match is None or int(match.group(1)) > len(data):
                self.send_error(416)
                return
            start = int(match.group(1))
            if match.group(2):
                end = min(end, int(match.group(2)) + 1)
            status = 206
        is_blob = rel.startswith("blobs/")
        generation = source.generation
        if is_blob:
            source.blob_requests.append((rel, start))
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        position = start
        try:
            while position < end and not source.stopping.is_set():
                block = data[position : min(end, position + source.chunk)]
                rate = source.rate if is_blob else None
                if rate:
                    time.sleep(len(block) / rate)
                self.wfile.write(block)
                self.wfile.flush()
                position += len(block)
                if is_blob:
                    source.sent(len(block), generation)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: SlowSource


@contextmanager
def slow_source(root: Path, rate: int | None, *, chunk: int = 8192) -> Iterator[SlowSource]:
    """Serve ``root`` on 127.0.0.1 (a free port) until the block ends."""
    source = SlowSource(root, rate, chunk)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.source = source
    source.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield source
    finally:
        source.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
