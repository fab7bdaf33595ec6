"""Erasing a guardian and the retention period: personal data goes, totals stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bot.config import Config
from bot.notices.model import Draft
from bot.notices.service import NoticeService
from bot.privacy import erase_guardian, retention_sweep
from bot.roster.authz import Scope, Subject
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis

SCHOOL, CLASS = "p-s1", "2-1"
MUM, DAD = "oPrivacyMum00000000000000001", "oPrivacyDad00000000000000001"
ADMIN = Subject("school_admin", school=SCHOOL, district="d1")


async def _world(redis: Redis, config: Config) -> tuple[RosterStore, NoticeService, str]:
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "隐私小学", "d1", "demo"))
    await store.ensure_class(SCHOOL, CLASS)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={"s1": "王小明|a", "s2": "李小红|a"})
    await store.bind_guardian(MUM, Student(SCHOOL, "s1", "王小明", CLASS), "m")
    await store.bind_guardian(DAD, Student(SCHOOL, "s2", "李小红", CLASS), "f")
    notices = NoticeService(redis, config, store)
    draft = Draft(title="测试", body="正文", audience=(Scope("d1", SCHOOL),), sender="隐私小学", created_by=MUM)
    notice, _, _ = await notices.submit(draft, ADMIN, now=1_000_000.0)
    await notices.confirm(notice.id, MUM, await store.who(MUM))
    return store, notices, notice.id


async def test_erasing_a_guardian_removes_links_records_and_their_name_on_confirmations(
    redis: Redis, config: Config
) -> None:
    store, _notices, nid = await _world(redis, config)
    done = await erase_guardian(redis, MUM)
    assert done.children_unlinked == 1 and done.notice_records == 1 and done.confirmations_blanked == 1
    assert not await redis.exists(keys.identity(MUM))
    assert MUM not in json.dumps(await redis.hgetall(keys.notice_records(nid)))
    confirmations = await redis.hgetall(keys.notice_confirmations(nid))
    assert list(confirmations) == [f"{SCHOOL}/s1"] and MUM not in confirmations[f"{SCHOOL}/s1"]
    assert "s1" not in await store.guardians(SCHOOL, CLASS)
    assert (await store.who(DAD)).children  # nobody else is touched


async def test_retention_keeps_only_the_totals_of_old_notices(redis: Redis, config: Config) -> None:
    _, _notices, nid = await _world(redis, config)
    config.privacy.retention_days = 30
    assert await retention_sweep(redis, config, now=1_000_000.0 + 10 * 86400) == 0
    assert await retention_sweep(redis, config, now=1_000_000.0 + 31 * 86400) == 1
    assert not await redis.exists(keys.notice_records(nid), keys.notice_confirmations(nid))
    meta = await redis.hgetall(keys.notice(nid))
    assert json.loads(meta["summary"])["confirmed"] == 1 and MUM not in meta["created_by"]
    assert await retention_sweep(redis, config, now=1_000_000.0 + 32 * 86400) == 0  # once


async def test_retention_deletes_quiz_results_nobody_touched_for_the_period(redis: Redis, config: Config) -> None:
    from bot.lessons.progress import LessonStore

    await _world(redis, config)
    lessons = LessonStore(redis)
    await lessons.finished(SCHOOL, "s1", "drowning-g1-3", right=["a"], wrong=["b"], score_pct=50, passed=False, now=1e6)
    await lessons.finished(SCHOOL, "s2", "drowning-g1-3", right=["a"], wrong=[], score_pct=100, passed=True, now=5e6)
    config.privacy.retention_days = 30
    await retention_sweep(redis, config, now=1e6 + 31 * 86400)
    assert not await redis.exists(keys.lesson_results(SCHOOL, "s1"))
    assert await redis.exists(keys.lesson_results(SCHOOL, "s2"))


async def test_erasing_a_guardian_deletes_their_lesson_progress_and_bindings_waiting_for_approval(
    redis: Redis, config: Config
) -> None:
    store, _notices, _nid = await _world(redis, config)
    await redis.set(keys.lesson_progress(MUM, SCHOOL, "s1"), "step", ex=3600)
    await store.add_pending(MUM, Student(SCHOOL, "s2", "李小红", CLASS), "m")
    await store.add_pending(DAD, Student(SCHOOL, "s1", "王小明", CLASS), "f")
    done = await erase_guardian(redis, MUM)
    assert done.other == 1  # the binding that was waiting
    assert not await redis.exists(keys.lesson_progress(MUM, SCHOOL, "s1"))
    assert [p[2] for p in await store.pending(SCHOOL, [CLASS])] == [DAD]  # nobody else's request is touched


async def test_erasing_a_guardian_who_also_teaches_keeps_their_classes(redis: Redis, config: Config) -> None:
    store, _notices, _nid = await _world(redis, config)
    code = await store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    assert await store.redeem_teacher_invite(code, MUM) is not None
    await erase_guardian(redis, MUM)
    who = await store.who(MUM)
    assert not who.children and [t.class_id for t in who.teaches] == [CLASS]  # a parent's data only


def bot(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    env["BOT__REDIS__URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_bot_privacy_erase_guardian_erases_and_prints_a_masked_summary(
    redis: Redis, config: Config, redis_url: str
) -> None:
    store, _notices, nid = await _world(redis, config)
    done = bot(redis_url, "privacy", "erase", "--guardian", MUM)
    assert done.returncode == 0, done.stderr
    assert "unlinked from 1 children" in done.stdout and "1 notice records deleted" in done.stdout
    assert MUM not in done.stdout + done.stderr  # the openid is masked in what the command prints
    assert not await redis.exists(keys.identity(MUM)) and not await redis.hexists(keys.notice_records(nid), MUM)
    assert (await store.who(DAD)).children


async def test_the_scheduler_runs_the_retention_sweep_daily_at_the_configured_time(
    redis: Redis, config: Config
) -> None:
    from bot.scheduler import build_scheduler
    from bot.wechat.client import WeChatAPI

    config.privacy.retention_at = "04:15"
    async with WeChatAPI(config.wechat, redis) as api:
        job = build_scheduler(config, redis, api).scheduler.get_job("retention")
    assert job is not None
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"], fields["day"]) == ("4", "15", "*")
