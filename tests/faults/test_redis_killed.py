"""kill -9 Redis (AOF, appendfsync everysec) during a burst of parents confirming, restart it from the
same directory: every confirmation that was answered 已确认 is still there.

Real processes: ``bot serve`` (configured only by the environment) and ``redis-server``; parents are
signed, encrypted WeChat callbacks (safe mode) replying 确认 to a planned notice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fault_support import DISTRICT, district_admin, district_draft, poll, serving, tail, terminate

from bot.bench.procs import bench_config, free_port
from bot.bench.roster import openid as new_openid
from bot.notices.model import CONFIRMED
from bot.notices.service import NoticeService
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.embedded import EmbeddedRedis
from bot.store.redis import connect
from bot.wechat.emulator import follower
from bot.wechat.emulator.follower import account_id, build_callback, read_reply

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SCHOOL = "fault-s1"
PARENTS = 600
CLASS_SIZE = 40
SENDERS = 24  # requests in flight
KILL_AFTER = PARENTS // 3  # confirmations answered before Redis is killed
OUTAGE = 1.5  # seconds Redis stays down
ATTEMPTS = 30


async def test_every_confirmation_answered_before_redis_was_killed_is_there_after_the_restart(
    short_dir: Path, figures: Any
) -> None:
    server = EmbeddedRedis(short_dir / "redis", appendonly=True)  # appendfsync everysec
    server.start()
    r = connect(server.url)
    serve = None
    try:
        rng = random.Random(7)
        store = RosterStore(r)
        await store.put_school(School(SCHOOL, "平安路小学", DISTRICT, "demo"))
        student_of: dict[str, str] = {}
        for i in range(PARENTS):
            cid = f"{1 + (i // CLASS_SIZE) % 6}-{1 + i // (CLASS_SIZE * 6)}"
            if i % CLASS_SIZE == 0:
                await store.ensure_class(SCHOOL, cid)
            sid = f"2026{i:05d}"
            await r.hset(keys.class_students(SCHOOL, cid), sid, "学生|a")
            openid = new_openid(rng)
            await store.bind_guardian(openid, Student(SCHOOL, sid, "学生", cid), "m")
            student_of[openid] = sid

        cfg = bench_config(server.url, free_port())
        cfg.server.host, cfg.server.port = "127.0.0.1", free_port()
        cfg.wechat.menu_on_start = False
        cfg.chat.lock_ttl = 2.0  # a lock taken just before the kill survives in the AOF: keep it short
        notice, plan, _ = await NoticeService(r, cfg, store).submit(district_draft(), district_admin())
        assert plan is not None and plan.reachable == PARENTS
        log = short_dir / "serve.log"
        serve = serving(cfg, log)

        url = f"http://127.0.0.1:{cfg.server.port}/wechat"
        to = account_id(cfg.wechat)
        outcomes: Counter[str] = Counter()
        answered: dict[str, float] = {}  # openid → when the 已确认 answer arrived
        killed_at = restarted_at = 0.0
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        for openid in student_of:
            queue.put_nowait((openid, 0))

        async def reply_to(http: aiohttp.ClientSession, openid: str) -> str:
            params, body = build_callback(cfg.wechat, follower.text_message(to, openid, "确认"))
            async with http.post(url, params=params, data=body) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    return f"http_{resp.status}"
            parsed = follower.parse_reply(read_reply(cfg.wechat, raw))
            text = str(parsed.get("content", "")) if parsed else ""
            if "已确认" in text:
                return "confirmed"
            if "系统有点忙" in text:
                return "busy"
            if "没有需要确认" in text:
                return "already"  # confirmed by an answer that came too late to be seen
            return "late" if parsed is None else "other"

        async def parent_sender(http: aiohttp.ClientSession) -> None:
            while True:
                openid, attempt = await queue.get()
                try:
                    outcome = await reply_to(http, openid)
                except (aiohttp.ClientError, TimeoutError):
                    outcome = "no_answer"
                outcomes[outcome] += 1
                if outcome == "confirmed":
                    answered[openid] = time.monotonic()
                elif outcome != "already" and attempt < ATTEMPTS:
                    await asyncio.sleep(0.1)
                    queue.put_nowait((openid, attempt + 1))  # the parent tries again, as asked
                queue.task_done()

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            senders = [asyncio.create_task(parent_sender(http)) for _ in range(SENDERS)]
            try:

                async def enough() -> bool:
                    return len(answered) >= KILL_AFTER

                await poll(enough, limit=30, every=0.005)
                server.kill()
                killed_at = time.monotonic()
                await asyncio.sleep(OUTAGE)
                await asyncio.to_thread(server.start)
                restarted_at = time.monotonic()
                await asyncio.wait_for(queue.join(), 90)
            finally:
                for t in senders:
                    t.cancel()

        terminate(serve)
        serve = None
        before_kill = [o for o, at in answered.items() if at < killed_at]
        confirmations = await r.hgetall(keys.notice_confirmations(notice.id))
        records = await r.hmget(keys.notice_records(notice.id), list(answered))
        present = [
            o
            for o, rec in zip(answered, records, strict=True)
            if str(confirmations.get(f"{SCHOOL}/{student_of[o]}", "")).startswith(o + "|")
            and str(rec or "").startswith(CONFIRMED + "|")
        ]
        confirmed_in_the_end = len(confirmations)
        figures(
            f"redis kill -9 after {len(before_kill)} confirmations, down {restarted_at - killed_at:.1f} s: "
            f"confirmations answered {len(answered)} ({len(before_kill)} before the kill), "
            f"present after restart {len(present)}, lost {len(answered) - len(present)}; "
            f"replies {dict(outcomes)}; students confirmed {confirmed_in_the_end}/{PARENTS}"
        )
        assert before_kill, "Redis was killed before any confirmation was answered"
        assert len(present) == len(answered), f"lost: {sorted(set(answered) - set(present))[:5]}"
        assert not [k for k in outcomes if k.startswith("http_5")], outcomes
        assert confirmed_in_the_end == PARENTS, f"{PARENTS - confirmed_in_the_end} never confirmed\n{tail(log)}"
    finally:
        if serve is not None:
            terminate(serve)
        await r.aclose()
        server.stop()
