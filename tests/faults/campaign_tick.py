"""One campaign tick at an explicit time, as ``bot scheduler`` runs it every minute, in a process of
its own that a fault test can stop and kill -9 wherever it likes.

    python tests/faults/campaign_tick.py NOW     (configured by BOT__ variables, like bot scheduler)
"""

from __future__ import annotations

import asyncio
import sys

from bot.campaigns.runner import build_runner
from bot.config import load_config
from bot.store.redis import connect


async def tick(now: float) -> None:
    cfg = load_config()
    redis = connect(cfg.redis.url)
    try:
        report = await build_runner(redis, cfg).tick(now)
        print(f"fired {len(report.fired)} missed {len(report.missed)} failed {len(report.failed)}", flush=True)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(tick(float(sys.argv[1])))
