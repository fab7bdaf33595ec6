"""Processes a benchmark starts: a config for them, ``bot serve``, the emulator, CPU accounting.

Shared by the notice benchmarks (``fanout``, ``chaos-worker``), ``webhook`` and ``ack-burst``. A child
gets its configuration as ``BOT__`` environment variables (:func:`env`), never a file to clean up.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

# The sections a child process needs; every field of each is passed.
_SECTIONS = ("account", "wechat", "server", "redis", "chat", "emulator", "delivery", "worker", "log")


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries only the result)."""
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(redis_url: str, emulator_port: int) -> Config:
    """A config for an account made up for this run: fresh token and AES key, the emulator as WeChat."""
    from bot.config import Config

    cfg = Config(source="bench")
    w = cfg.wechat
    w.app_id, w.app_secret, w.token = "wxbench0000000001", secrets.token_hex(16), secrets.token_hex(8)
    w.aes_key = base64.b64encode(secrets.token_bytes(32)).decode()[:43]
    w.api_base = w.oauth_base = f"http://127.0.0.1:{emulator_port}"
    w.template_quota = 10_000_000
    w.api_timeout = 10.0
    cfg.server.rate_per_ip = 0  # a load generator is one client asking as fast as it can
    cfg.wechat.rate_per_openid = 0
    cfg.redis.url = redis_url
    cfg.emulator.port = emulator_port
    cfg.emulator.daily_quota = 10_000_000
    cfg.emulator.push_events = False
    cfg.delivery.quiet_start = cfg.delivery.quiet_end = "00:00"
    cfg.delivery.family_daily_cap = 0
    cfg.log.level = "WARNING"
    return cfg


def env(cfg: Config) -> dict[str, str]:
    """The config as BOT__ variables, for child processes (the parent's own BOT* variables dropped)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    for section in _SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, list):
                value = ",".join(map(str, value))
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[f"BOT__{section.upper()}__{f.name.upper()}"] = str(value)
    return out


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


@contextlib.contextmanager
def process(
    argv: Sequence[str], *, port: int, environ: dict[str, str] | None = None, quiet: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv``, wait until it listens on ``port``, yield it, then stop it (TERM, then KILL)."""
    proc = subprocess.Popen(
        list(argv), env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def emulator_process(cfg: Config) -> Iterator[subprocess.Popen[bytes]]:
    """``bot emulator`` on ``cfg.emulator.port`` (a process of its own: it must not share our event loop)."""
    with process([sys.executable, "-m", "bot", "emulator"], port=cfg.emulator.port, environ=env(cfg)) as proc:
        yield proc


@contextlib.contextmanager
def serve_process(cfg: Config, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """``bot serve --workers N`` on ``cfg.server.port``, configured only by the environment."""
    argv = [sys.executable, "-m", "bot", "serve", "--workers", str(workers)]
    with process(argv, port=cfg.server.port, environ=env(cfg), quiet=False) as proc:
        if workers > 1:
            _wait_for_children(proc.pid, workers)
        yield proc


def _wait_for_children(pid: int, n: int, timeout: float = 30.0) -> None:
    """Each of ``bot serve --workers N``'s children listens once it has started: wait for all N."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(pid)
        if len(kids) >= n and all(_listening(k) for k in kids):
            return
        time.sleep(0.1)
    raise RuntimeError(f"bot serve did not start {n} processes in {timeout:.0f} s")


def _listening(pid: int) -> bool:
    """Whether ``pid`` has a listening TCP socket (its inode appears in /proc/net/tcp* in state 0A)."""
    try:
        fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    inodes = {f[8:-1] for f in fds if f.startswith("socket:[")}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    return True
    return False


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out += [int(x) for x in f.read().split()]
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def redis_pid(info: dict[str, object]) -> int:
    """The pid in ``INFO server`` (the embedded server is a child process we can account CPU to)."""
    try:
        return int(str(info.get("process_id", 0)))
    except ValueError:
        return 0


def pin(pids: Sequence[int], cpus: set[int] | None) -> None:
    """Run these processes (every thread of each) on ``cpus`` only; None: on every CPU again."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = cpus or set(range(os.cpu_count() or 1))
    for pid in pids:
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            threads = [pid]
        for tid in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
