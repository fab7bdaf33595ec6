"""External warnings and the campaigns JSON API, through the real app with API tokens and a real Redis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from bot import clock
from bot.app import create_app
from bot.campaigns.calendar import Calendar
from bot.campaigns.rules import shanghai
from bot.config import Config
from bot.notices.service import NoticeService
from bot.paths import ROOT
from bot.roster.authz import Scope
from bot.roster.model import School
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.web.tokens import TokenStore

# district d1: s1, s2 (region demo), s4 (region shanghai); district d2: s3 (region demo)
SCHOOLS = [School("s1", "平安路小学", "d1", "demo"), School("s2", "和平小学", "d1", "demo"),
           School("s4", "浦江小学", "d1", "shanghai"), School("s3", "远方小学", "d2", "demo")]  # fmt: skip


@dataclass
class World:
    client: Any
    redis: Redis
    notices: NoticeService
    tokens: dict[str, str]

    async def call(self, method: str, path: str, who: str | None = "district", **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        return resp.status, json.loads(await resp.text())

    async def notice_count(self) -> int:
        return int(await self.redis.zcard(keys.notices_by_time()))


@pytest.fixture
async def world(config: Config, redis: Redis, aiohttp_client: Any) -> World:
    roster = RosterStore(redis)
    for school in SCHOOLS:
        await roster.put_school(school)
        await roster.ensure_class(school.id, "3-1")
        await redis.hset(keys.class_students(school.id, "3-1"), mapping={f"{school.id}-1": "王小明|a"})
    tokens = TokenStore(redis)
    issued = {
        "district": (await tokens.create("d1-admin", "district_admin", "d1"))[0],
        "school": (await tokens.create("s1-admin", "school_admin", "d1", "s1"))[0],
        "far": (await tokens.create("d2-admin", "district_admin", "d2"))[0],
    }
    client = await aiohttp_client(create_app(config, redis))
    return World(client, redis, NoticeService(redis, config, roster), issued)


def warning(**changes: Any) -> dict[str, Any]:
    until = datetime.now(shanghai()) + timedelta(hours=6)
    return {"type": "rainstorm", "level": "orange", "regions": ["demo"], "valid_until": until.isoformat(), **changes}


# -- POST /api/alerts ----------------------------------------------------------------------------------------
async def test_an_alert_fires_once_for_the_right_schools_only(world: World) -> None:
    body = warning(id="cma-2026-0720-001")
    status, first = await world.call("POST", "/api/alerts", json=body)
    assert status == 201 and first["status"] == "fired" and first["urgent"] is True
    [fired] = first["fired"]
    assert fired["district"] == "d1" and fired["schools"] == ["s1", "s2"]  # not s4 (shanghai), not s3 (district d2)
    notice = await world.notices.get(fired["notice"])
    assert notice is not None and notice.draft.urgent and notice.draft.campaign == "alert-rainstorm"
    assert notice.draft.audience == (Scope("d1", "s1"), Scope("d1", "s2"))
    assert notice.draft.title == "橙色暴雨预警：请注意安全" and "暴雨橙色预警" in notice.draft.body

    status, again = await world.call("POST", "/api/alerts", json=body)
    assert status == 200 and again["status"] == "duplicate" and again["fired"][0]["notice"] == fired["notice"]
    assert await world.notice_count() == 1

    status, listed = await world.call("GET", "/api/alerts")
    assert status == 200 and listed["alerts"][0]["alert"]["id"] == "cma-2026-0720-001"
    assert listed["alerts"][0]["fired"][0]["notice"] == fired["notice"]
    status, far = await world.call("GET", "/api/alerts", who="far")
    assert far["alerts"] == []  # district d2 sees nothing of d1's


async def test_the_same_warning_without_an_id_is_recognised_by_its_content(world: World) -> None:
    body = warning()
    assert (await world.call("POST", "/api/alerts", json=body))[1]["status"] == "fired"
    assert (await world.call("POST", "/api/alerts", json={**body, "regions": ["demo", "demo"]}))[1][
        "status"
    ] == "duplicate"
    later = (datetime.fromisoformat(body["valid_until"]) + timedelta(hours=3)).isoformat()
    assert (await world.call("POST", "/api/alerts", json={**body, "valid_until": later}))[1]["status"] == "fired"
    assert await world.notice_count() == 2


async def test_a_school_admin_warning_reaches_their_school_only(world: World) -> None:
    status, result = await world.call("POST", "/api/alerts", who="school", json=warning(type="typhoon", level="blue"))
    assert status == 201 and result["fired"][0]["schools"] == ["s1"] and result["urgent"] is False


async def test_levels_and_types_that_are_not_mapped_are_recorded_not_sent(world: World) -> None:
    status, blue = await world.call("POST", "/api/alerts", json=warning(level="blue"))
    assert status == 200 and blue["status"] == "ignored" and "levels" in blue["reason"]
    status, unknown = await world.call("POST", "/api/alerts", json=warning(type="sandstorm"))
    assert status == 200 and unknown["status"] == "ignored"
    status, nowhere = await world.call("POST", "/api/alerts", json=warning(regions=["beijing"]))
    assert nowhere["status"] == "no_schools"
    assert await world.notice_count() == 0
    assert len((await world.call("GET", "/api/alerts"))[1]["alerts"]) == 3


async def test_a_switched_off_campaign_is_not_fired_by_a_warning(world: World) -> None:
    status, _ = await world.call("POST", "/api/campaigns/alert-rainstorm/disable", json={"school": "s2"})
    assert status == 200
    _, result = await world.call("POST", "/api/alerts", json=warning())
    assert result["fired"][0]["schools"] == ["s1"]


async def test_warnings_are_checked_and_need_a_token(world: World) -> None:
    assert (await world.call("POST", "/api/alerts", who=None, json=warning()))[0] == 401
    past = (datetime.now(shanghai()) - timedelta(hours=1)).isoformat()
    for body, field in [(warning(valid_until=past), "valid_until"), (warning(level="purple"), "level"),
                        (warning(regions=[]), "regions"), (warning(colour="red"), "colour"),
                        (warning(id="no spaces"), "id")]:  # fmt: skip
        status, error = await world.call("POST", "/api/alerts", json=body)
        assert status == 422 and error["error"]["field"] == field


# -- the campaigns API -------------------------------------------------------------------------------------------
async def test_campaigns_are_listed_with_their_state_in_the_callers_scope(world: World) -> None:
    status, data = await world.call("GET", "/api/campaigns")
    assert status == 200
    by_id = {c["id"]: c for c in data["campaigns"]}
    assert by_id["drowning"]["state"] == "on" and by_id["drowning"]["schools"] == 3 and by_id["drowning"]["next"]
    assert by_id["flood-peak"]["schools"] == 2  # s4 is in shanghai, not flood-prone
    assert by_id["alert-rainstorm"]["alert_only"] and by_id["alert-rainstorm"]["next"] is None
    # Every year of the next 366 days whose holidays are computed is named (which years depends on today
    # and on the installed chinesecalendar: never on a year written here).
    today = clock.local(clock.now()).date()
    computed = Calendar.load(ROOT).unofficial_years(range(today.year, today.year + 2))
    for year in computed:
        assert any(f"{year}:" in w and "not published" in w for w in data["warnings"]), (year, data["warnings"])


async def test_enable_and_disable_per_district_and_per_school(world: World) -> None:
    status, off = await world.call("POST", "/api/campaigns/drowning/disable", json={"school": "s2"})
    assert status == 200 and off["state"] == "partial" and off["schools_on"] == 2 and off["scope"] == "s:s2"
    status, _ = await world.call("POST", "/api/campaigns/drowning/disable", who="school", json={"school": "s2"})
    assert status == 403  # a school admin acts on their own school only
    status, mine = await world.call("POST", "/api/campaigns/drowning/disable", who="school")
    assert status == 200 and mine["scope"] == "s:s1"
    status, district = await world.call("POST", "/api/campaigns/drowning/enable")
    assert district["scope"] == "d:d1"
    status, _ = await world.call("POST", "/api/campaigns/drowning/disable", json={"school": "s3"})
    assert status == 403  # another district's school
    status, _ = await world.call("POST", "/api/campaigns/nope/disable")
    assert status == 404


async def test_preview_lists_the_next_firings_for_a_school_in_scope(world: World) -> None:
    status, data = await world.call("GET", "/api/campaigns/preview?days=60&school=s1")
    assert status == 200 and data["firings"]
    first = data["firings"][0]
    assert first["schools"][0] == "s1" and first["students"] == 1 and len(first["title"]) <= 20 and first["body"]
    assert (await world.call("GET", "/api/campaigns/preview?school=s3"))[0] == 403
    assert (await world.call("GET", "/api/campaigns/preview?days=1000"))[0] == 422


async def test_render_shows_a_campaign_as_a_school_in_scope_gets_it(world: World) -> None:
    status, one = await world.call("GET", "/api/campaigns/holiday-safety/render?school=s1&date=2026-12-31")
    assert status == 200 and one["scheduled"] and one["at"] == "2026-12-31T16:00:00+08:00"
    assert one["title"] == "元旦假期安全提醒" and one["sender"] == "平安路小学" and "一氧化碳" in one["body"]
    assert one["lesson"] == "carbon-monoxide" and one["mode"] == "none" and one["question"] is None
    status, mine = await world.call("GET", "/api/campaigns/disaster-reduction/render?date=2027-05-12", who="school")
    assert status == 200 and mine["school"] == "s1" and mine["title"] == "5·12全国防灾减灾日"
    assert mine["mode"] == "understand" and mine["question"]["answer"] == 1
    status, nearest = await world.call("GET", "/api/campaigns/drowning/render?date=2026-01-05")
    assert status == 200 and nearest["scheduled"] is False  # no drowning reminder that day: shown as if sent
    status, alert = await world.call("GET", "/api/campaigns/alert-rainstorm/render")
    assert status == 200 and "暴雨" in alert["title"]  # a warnings-only campaign: a sample warning
    assert (await world.call("GET", "/api/campaigns/drowning/render?school=s3"))[0] == 403  # another district
    assert (await world.call("GET", "/api/campaigns/drowning/render?school=s2", who="school"))[0] == 403
    assert (await world.call("GET", "/api/campaigns/flood-peak/render?school=s4"))[0] == 422  # not flood-prone
    assert (await world.call("GET", "/api/campaigns/drowning/render?date=May"))[0] == 422
    assert (await world.call("GET", "/api/campaigns/nope/render"))[0] == 404
    assert (await world.call("GET", "/api/campaigns/drowning/render", who=None))[0] == 401


async def test_admins_create_and_edit_their_own_campaigns_with_the_file_format(world: World) -> None:
    today = clock.local(clock.now()).date() + timedelta(days=3)
    what: dict[str, Any] = {"title": "骑车安全提醒", "body": "未满12周岁不在道路上骑自行车。", "lesson": "traffic"}
    doc: dict[str, Any] = {"id": "d1-bikes", "name": "骑车安全", "when": {"date": f"{today:%m-%d}", "at": "16:00"},
                           "who": {"schools": ["s1"]}, "what": what}  # fmt: skip
    status, created = await world.call("POST", "/api/campaigns", json=doc)
    assert status == 201 and created["created"]
    status, edited = await world.call("POST", "/api/campaigns", json={**doc, "name": "骑车出行安全"})
    assert status == 200 and not edited["created"]
    _, preview = await world.call("GET", "/api/campaigns/preview?days=5&campaign=d1-bikes")
    assert [f["schools"] for f in preview["firings"]] == [["s1"]]
    assert (await world.call("POST", "/api/campaigns", who="far", json=doc))[0] == 403
    status, error = await world.call("POST", "/api/campaigns", json={**doc, "what": {**what, "lesson": "x"}})
    assert status == 422 and error["error"]["field"] == "what.lesson"
    status, error = await world.call("POST", "/api/campaigns", json={**doc, "when": {"before": "holliday"}})
    assert status == 422 and error["error"]["field"] == "when.before"
    assert (await world.call("POST", "/api/campaigns", json={**doc, "id": "drowning"}))[0] == 409
    status, error = await world.call("POST", "/api/campaigns", json={**doc, "who": {"schools": ["s3"]}})
    assert status == 422 and error["error"]["field"] == "who.schools"
    _, listed = await world.call("GET", "/api/campaigns")
    assert {c["id"]: c["editable"] for c in listed["campaigns"]}["d1-bikes"] is True
    _, far = await world.call("GET", "/api/campaigns", who="far")
    assert "d1-bikes" not in {c["id"] for c in far["campaigns"]}
