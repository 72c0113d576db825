"""Start and stop a real Azurite (blob, queue, table) for the tests.

Azurite comes from ``node_modules/.bin/azurite`` (``npm ci`` installs the version pinned in
package.json) or from ``AZURITE_BIN``. It listens on three free loopback ports chosen here:
``--tablePort 0`` would not report the port it picked. A missing Azurite is a failure, not a
skip: CI installs it, and a silently skipped storage suite proves nothing.

``start_azurite()`` keeps everything in memory. ``start_azurite(location=dir)`` persists to
``dir`` so a test can ``stop()`` and ``start()`` it again (same ports, same data) to simulate a
storage outage. Never stop the session-wide instance: other tests share it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# The emulator's documented, public well-known key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0

# Called before every start (tests/conftest.py sets it: a test that starts Azurite without the
# ``azurite`` marker fails there and then).
before_start: Callable[[], None] | None = None


class AzuriteError(RuntimeError):
    """Azurite is missing or would not start; the message says what to do."""


def find_azurite() -> str:
    configured = os.environ.get("AZURITE_BIN")
    if configured:
        if not os.access(configured, os.X_OK):
            raise AzuriteError(f"AZURITE_BIN={configured} is not an executable file")
        return configured
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    raise AzuriteError(
        f"Azurite not found at {local}. Run `npm ci` (or `npm install`) in {REPO}, "
        "or set AZURITE_BIN to an azurite executable."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def unique_name(prefix: str = "t") -> str:
    """A fresh name valid both as a table name and as a queue name (lower-case alphanumerics)."""
    if not (prefix.isascii() and prefix.isalnum() and prefix[:1].isalpha() and prefix.islower()):
        raise ValueError(f"prefix {prefix!r}: lower-case letters and digits, starting with a letter")
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


class Azurite:
    """One Azurite process (restartable on the same ports)."""

    def __init__(self, binary: str, location: Path | None = None) -> None:
        self.binary = binary
        self.location = location
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        # In-memory mode still wants a working directory; keep it out of the repository.
        self._workdir = location or Path(tempfile.mkdtemp(prefix="azurite-"))
        self._log = self._workdir / "azurite.log"
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------------
    def endpoint(self, service: str) -> str:
        port = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}[service]
        return f"http://{HOST}:{port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint('blob')};QueueEndpoint={self.endpoint('queue')};"
            f"TableEndpoint={self.endpoint('table')};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        command = [self.binary, "--silent", "--skipApiVersionCheck", "--disableTelemetry"]
        # Azurite refuses --inMemoryPersistence together with --location.
        command += ["--location", str(self.location)] if self.location else ["--inMemoryPersistence"]
        for service, port in (
            ("blob", self.blob_port),
            ("queue", self.queue_port),
            ("table", self.table_port),
        ):
            command += [f"--{service}Host", HOST, f"--{service}Port", str(port)]
        return command

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        if self.running:
            return
        if before_start is not None:
            before_start()
        with self._log.open("ab") as log:
            # A session of its own, so stop() can signal node and anything it spawned.
            self._process = subprocess.Popen(
                self._command(),
                cwd=self._workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_listening(timeout)

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = (self.blob_port, self.queue_port, self.table_port)
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AzuriteError(f"Azurite exited with code {self._process.returncode}:\n{self._log_tail()}")
            if all(_port_open(p) for p in ports):
                return
            time.sleep(0.1)
        self.stop()
        raise AzuriteError(f"Azurite did not listen on {ports} within {timeout:.0f}s:\n{self._log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_TIMEOUT)

    def close(self) -> None:
        """Stop, and remove the scratch directory of an in-memory instance."""
        self.stop()
        if self.location is None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_azurite(location: Path | str | None = None, binary: str | None = None, attempts: int = 3) -> Azurite:
    """Start Azurite and wait for its three sockets; in memory unless ``location`` is given.

    Retries with fresh ports a few times: a port picked free here can be taken by another
    process before Azurite binds it.
    """
    binary = binary or find_azurite()
    where = Path(location) if location is not None else None
    if where is not None:
        where.mkdir(parents=True, exist_ok=True)
    error: AzuriteError | None = None
    for _ in range(attempts):
        server = Azurite(binary, where)
        try:
            server.start()
        except AzuriteError as exc:
            server.close()
            error = exc
            continue
        atexit.register(server.stop)  # belt and braces if the test run is interrupted
        return server
    assert error is not None
    raise error
