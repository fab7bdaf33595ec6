"""Helpers the fault tests share: child processes we can kill -9, a Redis of their own, and the
bench's synthetic district (``seed_guardians``) and notice.

The children get their configuration as ``BOT__`` variables (``bot.bench.procs.env``), like a
deployment would; each writes its stderr to a file next to the test's data, quoted when a test fails.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.bench.notices import DISTRICT  # where seed_guardians puts its schools
from bot.bench.procs import env, wait_for_port
from bot.config import Config
from bot.notices.model import HELD, QUEUED, SENDING, UNCERTAIN, Draft, Record
from bot.roster.authz import Scope, Subject
from bot.store import keys
from bot.store.redis import Redis

UNFINISHED = (QUEUED, SENDING, HELD)  # a card not sent yet, maybe sent, or held for later


async def poll(check: Callable[[], Awaitable[object]], *, limit: float, every: float = 0.05) -> bool:
    """Call ``check`` every ``every`` seconds until it is true (True) or ``limit`` seconds pass (False)."""
    deadline = time.monotonic() + limit
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


def bot_process(cfg: Config, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m bot ARGS`` configured only by the environment; stderr into ``log``."""
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *args], env=env(cfg), stdout=subprocess.DEVNULL, stderr=err
        )


def serving(cfg: Config, log: Path) -> subprocess.Popen[bytes]:
    proc = bot_process(cfg, "serve", log=log)
    try:
        wait_for_port(cfg.server.port, proc)
    except RuntimeError:
        proc.kill()
        raise AssertionError(f"bot serve did not start:\n{tail(log)}") from None
    return proc


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill9(proc)


def tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def district_draft(**kw: Any) -> Draft:
    base: dict[str, Any] = {"title": "周末防溺水提醒", "body": "请看护好孩子，不去河边玩水。",
                            "audience": (Scope(DISTRICT),), "sender": "教育局", "mode": "confirm"}  # fmt: skip
    return Draft(**{**base, **kw})


def district_admin() -> Subject:
    return Subject("district_admin", district=DISTRICT)


async def record_statuses(r: Redis, notice_id: str) -> dict[str, str]:
    """openid → record status of one notice."""
    out: dict[str, str] = {}
    async for openid, raw in r.hscan_iter(keys.notice_records(notice_id), count=5000):
        rec = Record.decode(str(raw))
        if rec is not None:
            out[str(openid)] = rec.status
    return out


async def unfinished(r: Redis, notice_id: str) -> int:
    return sum(s in UNFINISHED for s in (await record_statuses(r, notice_id)).values())


def card_figures(people: list[str], counts: dict[str, int], statuses: dict[str, str]) -> dict[str, int]:
    """Cards the emulator delivered to these guardians: sent, missing, doubled; records left uncertain."""
    return {
        "sent": sum(counts.get(o, 0) for o in people),
        "missing": sum(1 for o in people if counts.get(o, 0) == 0),
        "doubled": sum(1 for o in people if counts.get(o, 0) > 1),
        "uncertain": sum(1 for s in statuses.values() if s == UNCERTAIN),
        "unfinished": sum(1 for s in statuses.values() if s in UNFINISHED),
    }
