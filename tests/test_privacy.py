"""Erasing a guardian and the retention period: personal data goes, totals stay."""

from __future__ import annotations

import json

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
