"""`bot send notice` and `bot report notice` as real processes on the configured Redis."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from test_notices_api import openid_of, seed

from bot.config import Config
from bot.notices.report import REPORT_COLUMNS
from bot.notices.service import NoticeService
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.web.tokens import TokenStore


def bot(redis_url: str, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    clean |= {"BOT__REDIS__URL": redis_url, **env}
    command = [sys.executable, "-m", "bot", *args]
    return subprocess.run(command, env=clean, input=stdin, capture_output=True, text=True, timeout=30, check=False)


QUESTION = ["--question", "有人落水怎么办？", "--option", "自己下水", "--option", "呼救找大人"]
SEND = ["send", "notice", "--title", "防溺水安全提醒", "--sender", "平安路小学", "--body", "请提醒孩子不私自下水。"]


@pytest.fixture
async def roster(redis: Redis) -> RosterStore:
    return await seed(redis)


async def test_send_notice_plans_and_a_repeated_key_sends_nothing_new(roster: RosterStore, redis_url: str) -> None:
    args = [*SEND, "--school", "s1", "--class", "3-1", "--as-admin", "school:s1", "--key", "weekly-1"]
    first = bot(redis_url, *args)
    assert first.returncode == 0, first.stderr
    assert "students targeted" in first.stdout and "created" in first.stdout
    again = bot(redis_url, *args)
    assert again.returncode == 0 and "already exists" in again.stdout
    assert await roster.r.zcard(keys.notices_by_time()) == 1


async def test_send_notice_shows_the_quota_warning(roster: RosterStore, redis_url: str) -> None:
    done = bot(redis_url, *SEND, "--district", "d1", "--as-admin", "district:d1", BOT__WECHAT__TEMPLATE_QUOTA="3")
    assert done.returncode == 0, done.stderr
    # planned in quiet hours (a night run), the cards start tomorrow and the texts say so
    assert re.search(r"warning: (今日|明日)模板消息额度不足", done.stdout)
    assert re.search(r"cards (today|tomorrow)", done.stdout)


async def test_a_dry_run_shows_the_reach_and_the_quota_and_sends_nothing(roster: RosterStore, redis_url: str) -> None:
    done = bot(redis_url, *SEND, "--district", "d1", "--as-admin", "district:d1", "--dry-run",
               BOT__WECHAT__TEMPLATE_QUOTA="3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "nothing sent" in done.stdout and re.search(r"template quota left (today|tomorrow): 3 of 3", done.stdout)
    assert "guardians reachable" in done.stdout and re.search(r"warning: (今日|明日)模板消息额度不足", done.stdout)
    assert await roster.r.zcard(keys.notices_by_time()) == 0
    assert await roster.r.keys("*quota*") == []


async def test_a_notice_may_set_its_own_reminders(roster: RosterStore, redis_url: str, config: Config) -> None:
    args = [*SEND, "--school", "s1", "--as-admin", "school:s1", "--reminders", "1,3,6", "--no-teacher-list"]
    done = bot(redis_url, *args)
    assert done.returncode == 0, done.stderr
    [nid] = await roster.r.zrange(keys.notices_by_time(), 0, -1)
    notice = await NoticeService(roster.r, config, roster).get(nid)
    assert notice is not None
    followup = notice.draft.followup
    assert followup.after_hours == (1, 3, 6) and not followup.teacher_list
    assert followup.window == (config.notices.reminder_window_start, config.notices.reminder_window_end)
    bad = bot(redis_url, *SEND, "--school", "s1", "--as-admin", "school:s1", "--reminders", "2,soon")
    assert bad.returncode == 2 and bad.stderr.startswith("reminders:")
    bad = bot(redis_url, *SEND, "--school", "s1", "--as-admin", "school:s1", "--reminder-window", "8-20")
    assert bad.returncode == 2 and bad.stderr.startswith("reminder-window:")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--title", "一" * 21, "--school", "s1", "--as-admin", "school:s1"], "title:"),
        (["--school", "nope", "--as-admin", "school:s1"], "school:"),
        (["--school", "s1", "--class", "9-9", "--as-admin", "school:s1"], "class:"),
        (["--school", "s2", "--as-admin", "school:s1"], "audience:"),
        (["--school", "s1", "--deadline", "2000-01-01 08:00", "--as-admin", "school:s1"], "deadline:"),
        (["--school", "s1", *QUESTION, "--answer", "3", "--as-admin", "school:s1"], "answer:"),
        (["--school", "s1", "--as-token", "sbt_wrong"], "as-token:"),
        (["--school", "s1", "--as-admin", "teacher:x"], "as-admin:"),
    ],
)
async def test_a_bad_value_exits_2_naming_it(roster: RosterStore, redis_url: str, extra: list[str], field: str) -> None:
    done = bot(redis_url, *SEND, *extra)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(field) and "Traceback" not in done.stderr
    assert await roster.r.zcard(keys.notices_by_time()) == 0


async def test_send_as_a_token_from_stdin_and_report_with_csv(
    roster: RosterStore, redis: Redis, redis_url: str, config: Config, tmp_path: Path
) -> None:
    token, _ = await TokenStore(redis).create("ops", "school_admin", "d1", "s1")
    args = [*SEND, "--school", "s1", "--mode", "understand", *QUESTION, "--answer", "2", "--urgent", "--as-token", "-"]
    sent = bot(redis_url, *args, stdin=token + "\n")
    assert sent.returncode == 0, sent.stderr
    [nid] = cast(list[str], await redis.zrange(keys.notices_by_time(), 0, -1))
    service = NoticeService(redis, config, roster)
    notice = await service.get(nid)
    assert notice is not None and notice.draft.urgent and notice.draft.question is not None
    assert notice.draft.question.answer == 1 and notice.draft.created_by == "token:ops"
    await service.confirm(nid, openid_of("s1a"), await roster.who(openid_of("s1a")), answer=1)

    out = tmp_path / "report.csv"
    report = bot(redis_url, "report", "notice", nid, "--csv", str(out))
    assert report.returncode == 0, report.stderr
    assert "三年级（1）班" in report.stdout and "全部合计" in report.stdout and "1 (20%)" in report.stdout
    rows = list(csv.DictReader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert list(rows[0]) == list(REPORT_COLUMNS) and rows[-1]["confirmed"] == "1"

    # one class's non-confirmers: counted by reason; by name only when the operator asks with --names
    # (names are for the class teacher only)
    counts = bot(redis_url, "report", "notice", nid, "--school", "s1", "--class", "3-1", "--missing")
    assert counts.returncode == 0, counts.stderr
    assert "2 student(s) without a confirmation" in counts.stdout and "未绑定 (no_guardian): 1" in counts.stdout
    assert "--names" in counts.stdout and not any(n in counts.stdout for n in ("张伟", "李小红", "王小明"))
    missing_csv = tmp_path / "missing.csv"
    refused = bot(redis_url, "report", "notice", nid, "--school", "s1", "--class", "3-1",
                  "--missing-csv", str(missing_csv))  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.startswith("missing-csv:") and "--names" in refused.stderr
    assert not missing_csv.exists()
    one = bot(redis_url, "report", "notice", nid, "--school", "s1", "--class", "3-1", "--missing", "--names",
              "--missing-csv", str(missing_csv))  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert "张伟" in one.stdout and "未绑定" in one.stdout and "王小明" not in one.stdout
    assert "张伟" in missing_csv.read_text(encoding="utf-8-sig")
    assert bot(redis_url, "report", "notice", nid, "--names").returncode == 2  # names of what?

    assert bot(redis_url, "report", "notice", "nope").returncode == 1
    assert bot(redis_url, "report", "notice", nid, "--school", "s9").returncode == 1
    assert bot(redis_url, "report", "notice", nid, "--class", "3-1").returncode == 2
