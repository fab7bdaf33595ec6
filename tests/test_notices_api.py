"""The notices JSON API: bearer tokens, the error format, idempotent creation, scoped reports and CSV.

Real Redis, the real app (``create_app``), confirmations through ``NoticeService.confirm``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from bot import clock
from bot.app import CONTEXT_KEY, create_app
from bot.config import Config
from bot.notices import report
from bot.notices.report import MISSING_COLUMNS, REPORT_COLUMNS
from bot.notices.service import NoticeService
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.web.tokens import TokenStore

# district d1: s1 (two classes), s2 (one class); district d2: s3
STUDENTS = {
    ("s1", "3-1"): {"s1a": "王小明", "s1b": "李小红", "s1c": "张伟"},
    ("s1", "3-2"): {"s1d": "赵敏", "s1e": "钱多"},
    ("s2", "3-1"): {"s2a": "孙悟", "s2b": "周正"},
    ("s3", "1-1"): {"s3a": "吴用"},
}
SCHOOLS = [
    School("s1", "平安路小学", "d1", "r"),
    School("s2", "和平小学", "d1", "r"),
    School("s3", "远方小学", "d2", "r"),
]
UNBOUND = {"s1c", "s2b"}  # nobody has bound these students yet


def openid_of(sid: str) -> str:
    return f"oTEST{sid}".ljust(28, "x")


async def seed(redis: Redis) -> RosterStore:
    """Schools, classes, students; one guardian per student except UNBOUND."""
    store = RosterStore(redis)
    for each in SCHOOLS:
        await store.put_school(each)
    for (school, cid), students in STUDENTS.items():
        await store.ensure_class(school, cid)
        await redis.hset(keys.class_students(school, cid), mapping={sid: f"{n}|a" for sid, n in students.items()})
        for sid, name in students.items():
            if sid not in UNBOUND:
                await store.bind_guardian(openid_of(sid), Student(school, sid, name, cid), "m")
    return store


@dataclass
class World:
    client: Any
    redis: Redis
    roster: RosterStore
    notices: NoticeService
    tokens: dict[str, str]  # district (d1), school (s1), far (s3 in d2)

    async def call(self, method: str, path: str, who: str | None = "district", **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        text = await resp.text()
        return resp.status, json.loads(text) if resp.content_type == "application/json" else text


@pytest.fixture
async def world(config: Config, redis: Redis, aiohttp_client: Any) -> World:
    roster = await seed(redis)
    store = TokenStore(redis)
    tokens = {
        "district": (await store.create("district-d1", "district_admin", "d1"))[0],
        "school": (await store.create("school-s1", "school_admin", "d1", "s1"))[0],
        "far": (await store.create("school-s3", "school_admin", "d2", "s3"))[0],
    }
    app = create_app(config, redis)
    client = await aiohttp_client(app)
    return World(client, redis, roster, app[CONTEXT_KEY].services["notices"], tokens)


def notice_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "防溺水安全提醒",
        "sender": "平安路小学",
        "body": "夏季将至，请家长提醒孩子不私自下水游泳。",
        "audience": [{"district": "d1", "school": "s1"}],
        "mode": "confirm",
    }
    body.update(changes)
    return body


# -- authentication and the error format -----------------------------------------------------------
async def test_no_token_or_a_bad_token_is_401_with_a_json_error(world: World) -> None:
    status, body = await world.call("GET", "/api/notices", who=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    for header in ("Bearer sbt_not-a-real-token", "Basic abc", "Bearer ", "Bearer " + "x" * 5000):
        status, body = await world.call("GET", "/api/notices", who=None, headers={"Authorization": header})
        assert status == 401, header
        assert set(body["error"]) >= {"code", "message"}


async def test_unknown_api_paths_are_json_404_but_only_after_authentication(world: World) -> None:
    assert (await world.call("GET", "/api/nothing-here", who=None))[0] == 401
    status, body = await world.call("GET", "/api/nothing-here")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await world.call("GET", "/api/notices/doesnotexist")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_a_school_admin_may_not_send_to_another_school_403(world: World) -> None:
    audience = [{"district": "d1", "school": "s2"}]
    status, body = await world.call("POST", "/api/notices", "school", json=notice_body(audience=audience))
    assert status == 403 and body["error"]["field"] == "audience"
    status, _ = await world.call("POST", "/api/notices", "school", json=notice_body(audience=[{"district": "d1"}]))
    assert status == 403
    assert await world.redis.zcard(keys.notices_by_time()) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": "这是一个超过二十个字的通知标题用来测试卡片字段长度"}, "title"),
        ({"sender": "平安路小学\n三年级"}, "sender"),
        ({"body": ""}, "body"),
        ({"mode": "maybe"}, "mode"),
        ({"mode": "understand"}, "question"),
        ({"mode": "understand", "question": {"text": "Q?", "options": ["A", "B"], "answer": 2}}, "question"),
        ({"question": {"text": "Q?", "options": ["A", "B"], "answer": 0}}, "question"),
        ({"deadline": "2000-01-01 08:00"}, "deadline"),
        ({"deadline": "tomorrow"}, "deadline"),
        ({"deadline": 10**400}, "deadline"),
        ({"deadline": "0001-01-01T00:00+08:00"}, "deadline"),
        ({"urgent": "yes"}, "urgent"),
        ({"audience": []}, "audience"),
        ({"audience": [{"district": "d1", "school": "nope"}]}, "audience[0].school"),
        ({"audience": [{"district": "d1", "school": "s1", "class_id": "9-9"}]}, "audience[0].class_id"),
        ({"audience": [{"district": "d1", "school": "s1", "grade": 99}]}, "audience[0].grade"),
        ({"followup": {"after_hours": [-1]}}, "followup"),
        ({"colour": "red"}, "colour"),
        ({"idempotency_key": " padded "}, "idempotency_key"),
    ],
)
async def test_a_bad_value_is_422_naming_the_field(world: World, change: dict[str, Any], field: str) -> None:
    status, body = await world.call("POST", "/api/notices", "district", json=notice_body(**change))
    assert status == 422, body
    assert body["error"]["field"] == field and body["error"]["code"] == "invalid" and body["error"]["message"]
    assert await world.redis.zcard(keys.notices_by_time()) == 0


async def test_a_card_field_over_20_characters_is_a_clear_error_not_a_wechat_47003(world: World) -> None:
    status, body = await world.call("POST", "/api/notices", "school", json=notice_body(title="一" * 21))
    assert status == 422 and body["error"]["field"] == "title" and "20" in body["error"]["message"]


async def test_bad_bodies_are_4xx_never_5xx(world: World) -> None:
    post = world.client.post
    auth = {"Authorization": f"Bearer {world.tokens['school']}"}
    cases = [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"[" * 50000 + b"]" * 50000, "application/json", 413),
        (b"[" * 20000 + b"]" * 20000, "application/json", 400),
        (b'{"title": "x"}', "text/plain", 415),
        (b"\xff\xfe", "application/json", 400),
        (json.dumps(notice_body(body="长" * 30000)).encode(), "application/json", 413),
    ]
    for data, ctype, expected in cases:
        resp = await post("/api/notices", data=data, headers={**auth, "Content-Type": ctype})
        assert resp.status == expected, (data[:20], await resp.text())
        assert (await resp.json())["error"]["code"]


# -- creating ------------------------------------------------------------------------------------
async def test_creating_a_notice_returns_201_with_the_plan(world: World) -> None:
    deadline = clock.local(clock.now() + 2 * 86400).replace(second=0, microsecond=0).isoformat()
    status, body = await world.call("POST", "/api/notices", "school", json=notice_body(deadline=deadline))
    assert status == 201, body
    plan = body["plan"]
    assert plan["targeted"] == 5 and plan["reachable"] == 4 and plan["without_guardian"] == 1
    assert plan["today"] == 4 and plan["later"] == [] and plan["warning"] == ""
    assert body["notice"]["deadline"] == deadline
    assert body["created"] is True
    stored = await world.notices.get(body["notice"]["id"])
    assert stored is not None and stored.draft.created_by == "token:school-s1"


async def test_one_idempotency_key_gives_one_notice(world: World) -> None:
    first = await world.call("POST", "/api/notices", "school", json=notice_body(), headers={"Idempotency-Key": "k-1"})
    again = await world.call("POST", "/api/notices", "school", json=notice_body(idempotency_key="k-1"))
    assert first[0] == 201 and again[0] == 200
    assert again[1]["notice"]["id"] == first[1]["notice"]["id"] and again[1]["plan"] is None
    assert await world.redis.zcard(keys.notices_by_time()) == 1
    # keys are per caller: the district admin's "k-1" is another notice, not the school's
    other = await world.call("POST", "/api/notices", "district", json=notice_body(idempotency_key="k-1"))
    assert other[0] == 201 and other[1]["notice"]["id"] != first[1]["notice"]["id"]


async def test_a_day_over_the_template_quota_is_spread_with_a_warning(world: World, config: Config) -> None:
    config.wechat.template_quota = 3
    status, body = await world.call("POST", "/api/notices", "district", json=notice_body(audience=[{"district": "d1"}]))
    assert status == 201
    plan = body["plan"]
    assert plan["reachable"] == 5 and plan["today"] == 3
    assert [d["cards"] for d in plan["later"]] == [2] and "额度" in plan["warning"]


async def test_an_estimate_shows_the_reach_against_the_quota_left_and_writes_nothing(
    world: World, config: Config
) -> None:
    config.wechat.template_quota = 4
    district = notice_body(audience=[{"district": "d1"}])
    status, body = await world.call("POST", "/api/notices/estimate", "district", json=district)
    assert status == 200, body
    estimate = body["estimate"]
    assert estimate["reachable"] == 5 and estimate["targeted"] == 7 and estimate["without_guardian"] == 2
    assert estimate["quota"] == 4 and estimate["quota_left"] == 4 and estimate["today"] == 4
    assert [d["cards"] for d in estimate["later"]] == [1] and "额度" in estimate["warning"]
    assert await world.redis.zcard(keys.notices_by_time()) == 0 and not await world.redis.keys("*quota*")
    # the same checks as sending: a school admin may not estimate a district notice; bad fields are 422
    assert (await world.call("POST", "/api/notices/estimate", "school", json=district))[0] == 403
    status, body = await world.call("POST", "/api/notices/estimate", "school", json=notice_body(title="一" * 21))
    assert status == 422 and body["error"]["field"] == "title"
    # after a notice to s1 (4 guardians) is sent, the estimate counts what is left: nothing today
    assert (await world.call("POST", "/api/notices", "school", json=notice_body()))[0] == 201
    status, body = await world.call("POST", "/api/notices/estimate", "district", json=district)
    estimate = body["estimate"]
    assert estimate["quota_left"] == 0 and estimate["today"] == 0 and [d["cards"] for d in estimate["later"]] == [4, 1]


# -- reports -------------------------------------------------------------------------------------
async def district_notice(world: World) -> str:
    question = {"text": "孩子遇到有人落水应该怎么做？", "options": ["自己下水救", "大声呼救找大人"], "answer": 1}
    status, body = await world.call(
        "POST", "/api/notices", json=notice_body(audience=[{"district": "d1"}], mode="understand", question=question)
    )
    assert status == 201, body
    nid: str = body["notice"]["id"]
    # s1a answers right, s1d wrongly (confirmed, not understood), s2a only opens the page
    for sid, answer in (("s1a", 1), ("s1d", 0)):
        who = await world.roster.who(openid_of(sid))
        await world.notices.confirm(nid, openid_of(sid), who, answer=answer)
    await world.notices.opened(nid, openid_of("s2a"))
    return nid


async def test_the_report_has_the_funnel_per_class_school_and_total(world: World) -> None:
    nid = await district_notice(world)
    status, body = await world.call("GET", f"/api/notices/{nid}/report")
    assert status == 200, body
    totals = body["totals"]
    assert (totals["targeted"], totals["reachable"], totals["confirmed"], totals["understood"]) == (7, 5, 2, 1)
    assert totals["opened"] == 3 and totals["missing"] == 5  # a confirmation implies the page was opened
    assert totals["percent"]["confirmed"] == round(100 * 2 / 7, 1)
    assert [(s["school"], s["funnel"]["targeted"]) for s in body["schools"]] == [("s1", 5), ("s2", 2)]
    by_class = {(c["school"], c["class_id"]): c for c in body["classes"]}
    assert set(by_class) == {("s1", "3-1"), ("s1", "3-2"), ("s2", "3-1")}
    assert by_class[("s1", "3-1")]["missing"]["no_guardian"] == 1
    assert by_class[("s2", "3-1")]["missing"]["not_confirmed"] == 1  # opened, not confirmed
    assert "王小明" not in json.dumps(body, ensure_ascii=False)  # names only in the missing list

    status, notice = await world.call("GET", f"/api/notices/{nid}")
    assert status == 200 and notice["funnel"]["confirmed"] == 2 and notice["notice"]["body"]


async def test_the_report_csv_has_the_documented_columns_and_no_names_or_openids(world: World) -> None:
    nid = await district_notice(world)
    status, text = await world.call("GET", f"/api/notices/{nid}/report?format=csv")
    assert status == 200 and text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert [r["level"] for r in rows] == ["class", "class", "class", "school", "school", "total"]
    total = rows[-1]
    assert (total["targeted"], total["confirmed"], total["understood"], total["missing_no_guardian"]) == (
        "7", "2", "1", "2",
    )  # fmt: skip
    assert "oTEST" not in text and "王小明" not in text


async def test_the_missing_list_gives_admin_tokens_counts_by_reason_and_no_names(world: World) -> None:
    """API tokens act as school or district administrators: they may view the class, so they get how many
    students are not confirmed and why, but the names go only to the class teacher (authz.list_missing)."""
    nid = await district_notice(world)
    for who in ("district", "school"):
        status, body = await world.call("GET", f"/api/notices/{nid}/missing?school=s1&class=3-1", who)
        assert status == 200, body
        assert (body["school"], body["class_id"], body["count"], body["names_shown"]) == ("s1", "3-1", 2, False)
        assert body["by_reason"]["not_reached"] == 1 and body["by_reason"]["no_guardian"] == 1
        assert body["note"] == "名单仅班主任可见" and "missing" not in body
        text = json.dumps(body, ensure_ascii=False)
        assert not any(secret in text for secret in ("李小红", "张伟", "王小明", "s1b", "s1c", "oTEST")), who
        status, error = await world.call("GET", f"/api/notices/{nid}/missing?school=s1&class=3-1&format=csv", who)
        assert status == 403 and error["error"]["code"] == "forbidden" and "class teacher" in error["error"]["message"]
        assert "李小红" not in json.dumps(error, ensure_ascii=False)
    assert (await world.call("GET", f"/api/notices/{nid}/missing?school=s1"))[0] == 422
    assert (await world.call("GET", f"/api/notices/{nid}/missing?school=s1&class=9-9"))[0] == 404


async def test_the_class_teachers_form_of_the_missing_list_names_students_and_reasons(world: World) -> None:
    """What the API answers when ``may_list_missing`` holds (no token is a class teacher today; the chat,
    the console and the H5 list are theirs): each student by id, name and reason, as in the CSV."""
    nid = await district_notice(world)
    notice = await world.notices.get(nid)
    assert notice is not None
    [one] = await world.notices.class_reports(notice, classes=[("s1", "3-1")])
    body = report.missing_json(one, names=True)
    assert body["names_shown"] is True and body["count"] == 2 and "note" not in body
    missing = {m["student_id"]: (m["name"], m["reason"], m["reason_label"]) for m in body["missing"]}
    assert missing == {"s1b": ("李小红", "not_reached", "未送达"), "s1c": ("张伟", "no_guardian", "未绑定")}
    rows = list(csv.DictReader(io.StringIO(report.missing_csv([one]).lstrip("\ufeff"))))
    assert list(rows[0]) == list(MISSING_COLUMNS) and {r["name"] for r in rows} == {"李小红", "张伟"}
    assert "oTEST" not in json.dumps(body) + report.missing_csv([one])


async def test_a_school_admin_sees_only_their_school_in_a_district_notice(world: World) -> None:
    nid = await district_notice(world)
    status, body = await world.call("GET", f"/api/notices/{nid}/report", "school")
    assert status == 200
    assert {c["school"] for c in body["classes"]} == {"s1"} and [s["school"] for s in body["schools"]] == ["s1"]
    assert body["totals"]["targeted"] == 5 and body["totals"]["confirmed"] == 2
    status, notice = await world.call("GET", f"/api/notices/{nid}", "school")
    assert status == 200 and notice["funnel"]["targeted"] == 5
    assert (await world.call("GET", f"/api/notices/{nid}/report?school=s2", "school"))[0] == 403
    assert (await world.call("GET", f"/api/notices/{nid}/missing?school=s2&class=3-1", "school"))[0] == 403
    assert (await world.call("GET", f"/api/notices/{nid}/missing?school=s1&class=3-2", "school"))[0] == 200
    # another district sees nothing of it
    assert (await world.call("GET", f"/api/notices/{nid}", "far"))[0] == 403
    assert (await world.call("GET", f"/api/notices/{nid}/report", "far"))[0] == 403


async def test_the_list_shows_recent_notices_the_caller_may_see(world: World) -> None:
    nid = await district_notice(world)
    _, mine = await world.call("POST", "/api/notices", "school", json=notice_body(title="本校通知"))
    status, body = await world.call("GET", "/api/notices", "school")
    assert status == 200 and [n["id"] for n in body["notices"]] == [mine["notice"]["id"], nid]
    assert "body" not in body["notices"][0]
    assert (await world.call("GET", "/api/notices", "far"))[1]["notices"] == []
    status, body = await world.call("GET", "/api/notices?since=2099-01-01T00:00:00")
    assert status == 200 and body["notices"] == []
    assert (await world.call("GET", "/api/notices?limit=0"))[0] == 422
    for since in ("yesterday", "9" * 400, "0001-01-01T00:00+08:00"):
        assert (await world.call("GET", f"/api/notices?since={since}"))[0] == 422


async def test_a_wrong_method_is_a_json_405(world: World) -> None:
    status, body = await world.call("DELETE", "/api/notices")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_failure_is_a_json_500_without_a_traceback_nor_the_token_in_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await world.redis.hset(keys.notice("broken"), mapping={"id": "broken", "title": "t", "audience": "{not json"})
    status, body = await world.call("GET", "/api/notices/broken")
    assert status == 500 and body == {"error": {"code": "internal", "message": "internal error (logged)"}}
    assert "api GET /api/notices/broken failed" in caplog.text
    assert all(token not in caplog.text for token in world.tokens.values())
