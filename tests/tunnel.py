"""A forward proxy for tests: answers ``CONNECT host:port`` by tunnelling to one loopback port.

With ``HTTPS_PROXY`` pointing at it, a client that believes it talks to
``management.chinacloudapi.cn`` (say) reaches the loopback ARM (bench/server.py, whose trustme
certificate then also names that host), so a named cloud's real hostnames are exercised end to
end without a network. ``targets`` records every CONNECT target; bounded like the ARM server: it
stops when its ``with`` block exits or after ``max_seconds``.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Tunnel:
    def __init__(self, target_port: int, max_seconds: float = 300.0) -> None:
        self.target_port = target_port
        self.targets: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._deadline = threading.Timer(max_seconds, self._stop.set)
        self._deadline.daemon = True
        self._thread = threading.Thread(target=self._accept, name="test-tunnel", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            with self._lock:
                self.targets[target] += 1
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
                if rest:
                    upstream.sendall(rest)
                back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                back.start()
                _pipe(client, upstream)
                back.join(timeout=5)

    def start(self) -> Tunnel:
        self._thread.start()
        self._deadline.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._deadline.cancel()
        with suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextmanager
def tunnel(target_port: int) -> Iterator[Tunnel]:
    proxy = Tunnel(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
