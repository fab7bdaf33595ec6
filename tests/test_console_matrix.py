"""The authorization matrix: every console route, as anonymous, a teacher of another class, the class
teacher, a subject teacher of the class, the school administrator and the district administrator.

Each case says what each of the six may get: ``ok`` (the page, or the action done: 200/303 to its
result), ``login`` (sent to the login page), ``deny`` (403), ``gone`` (404: a notice outside one's
scope is not even said to exist), ``invalid`` (422: the form is refused as "you may not address
this audience"), ``wechat`` (sent to WeChat's OAuth) or ``bad`` (400). One test checks that every
route the console registers is in this table, the public ones (signing in, the stylesheet) included,
so a new page cannot be added without deciding who may see it.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from test_console_world import (
    CLASS,
    CSRF,
    MUM,
    NEWCOMER,
    OTHER_SCHOOL,
    PASSWORD,
    ROLES,
    SCHOOL,
    Browser,
    World,
    world,
)

from bot.roster.model import Who
from bot.store import keys

__all__ = ["world"]

OK, LOGIN, DENY, GONE, INVALID, WECHAT, BAD = "ok", "login", "deny", "gone", "invalid", "wechat", "bad"


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route as registered (resource.canonical, under /console)
    path: str  # the path requested ({notice} is filled in)
    expect: tuple[str, str, str, str, str, str]  # for ROLES: anonymous, teacher33, teacher32, subject32, sadmin, dadmin
    form: Callable[[World], Awaitable[Any]] | None = None


async def notice_form(world: World) -> dict[str, str]:
    return {"title": "明天雨天路滑", "sender": "三年级（2）班", "body": "请提醒孩子注意安全。", "mode": "confirm",
            "audience": f"c:{SCHOOL}/{CLASS}", "key": "matrix-key-0001"}  # fmt: skip


async def admin_notice_form(world: World) -> dict[str, str]:
    return {**(await notice_form(world)), "audience": f"s:{SCHOOL}", "class_id": CLASS}


async def school_notice_form(world: World) -> dict[str, str]:
    return {**(await notice_form(world)), "audience": f"s:{SCHOOL}"}


async def login_form(world: World) -> dict[str, str]:
    return {"username": "dadmin", "password": PASSWORD, "next": "/console"}


async def campaign_form(world: World) -> dict[str, str]:
    return {"id": f"matrix-{secrets.token_hex(3)}", "name": "放学安全", "anchor": "date", "date": "12-01",
            "at": "16:00", "title": "放学路上注意安全", "body": "请提醒孩子放学路上注意安全。", "mode": "none",
            "schools": SCHOOL}  # fmt: skip


async def switch_form(world: World) -> dict[str, str]:
    return {"campaign": "drowning", "on": "0", "school": SCHOOL}


async def upload_form(world: World) -> aiohttp.FormData:
    data = aiohttp.FormData()
    csv = "学校,年级,班级,学生姓名,学号\nt-s1,3,2,王小明,20260301\nt-s1,3,2,李小红,20260302\nt-s1,3,3,赵小刚,20260399\n"
    data.add_field("file", io.BytesIO(csv.encode()), filename="roster.csv", content_type="text/csv")
    data.add_field("dry_run", "1")
    return data


async def decide_form(world: World) -> dict[str, str]:
    return {"school": SCHOOL, "class": CLASS, "student": "20260302", "openid": NEWCOMER, "decision": "approve"}


async def remove_form(world: World) -> dict[str, str]:
    return {"school": SCHOOL, "class": CLASS, "student": "20260301", "openid": MUM}


N = "{notice}"
CLASS_32_QUERY = f"school={SCHOOL}&class={CLASS}"
ALL = (LOGIN, OK, OK, OK, OK, OK)
CLASS_32 = (LOGIN, DENY, OK, OK, OK, OK)  # looking at the class 3-2: not its neighbour's teacher
MANAGE_32 = (LOGIN, DENY, OK, DENY, OK, OK)  # deciding on 3-2's bindings: its class teacher, not a subject teacher
WRITERS = (LOGIN, OK, OK, DENY, OK, OK)  # a subject teacher leads no class: nothing to address a notice to
NOTICE_32 = (LOGIN, GONE, OK, OK, OK, OK)  # a notice to 3-2
NAMES_32 = (LOGIN, GONE, OK, DENY, DENY, DENY)  # who has not confirmed, by name: the class teacher only
ADMINS = (LOGIN, DENY, DENY, DENY, OK, OK)
SEND_32 = (LOGIN, INVALID, OK, INVALID, OK, OK)
ADMIN_SEND = (LOGIN, INVALID, INVALID, INVALID, OK, OK)  # a whole school: administrators only
DISTRICT = (LOGIN, DENY, DENY, DENY, DENY, OK)

CASES = [
    Case("GET", "/console", "/console", ALL),
    Case("GET", "/console/", "/console/", ALL),
    Case("GET", "/console/", f"/console/?school={SCHOOL}&class={CLASS}", CLASS_32),
    Case("GET", "/console/", f"/console/?school={SCHOOL}", ADMINS),
    Case("GET", "/console/", "/console/?school=t-x1", (LOGIN, DENY, DENY, DENY, DENY, DENY)),  # another district
    Case("GET", "/console/notices", "/console/notices", ALL),
    Case("GET", "/console/notices", f"/console/notices?school={SCHOOL}&class={CLASS}", CLASS_32),
    Case("GET", "/console/notices/new", "/console/notices/new", WRITERS),
    Case("POST", "/console/notices/edit", "/console/notices/edit", ALL, notice_form),
    # Writing to class 3-2, as a teacher picks it or as an administrator does: the other class's teacher is refused.
    Case("POST", "/console/notices/preview", "/console/notices/preview", SEND_32, notice_form),
    Case("POST", "/console/notices/preview", "/console/notices/preview", SEND_32, admin_notice_form),
    Case("POST", "/console/notices/send", "/console/notices/send", SEND_32, notice_form),
    Case("POST", "/console/notices/send", "/console/notices/send", SEND_32, admin_notice_form),
    Case("POST", "/console/notices/send", "/console/notices/send", ADMIN_SEND, school_notice_form),
    Case("GET", "/console/notices/{id}", f"/console/notices/{N}", NOTICE_32),
    Case("GET", "/console/notices/{id}/status.json", f"/console/notices/{N}/status.json", NOTICE_32),
    Case("GET", "/console/notices/{id}/missing", f"/console/notices/{N}/missing?{CLASS_32_QUERY}", NOTICE_32),
    # The page answers everyone who may view the class (names for its class teacher, counts for the rest:
    # test_only_the_class_teacher_sees_who_has_not_confirmed_by_name); the CSV is names only.
    Case("GET", "/console/notices/{id}/missing.csv", f"/console/notices/{N}/missing.csv?{CLASS_32_QUERY}", NAMES_32),
    Case("GET", "/console/notices/{id}/report.csv", f"/console/notices/{N}/report.csv", NOTICE_32),
    Case("GET", "/console/roster", "/console/roster", ALL),
    Case("GET", "/console/roster", "/console/roster?school=t-s2", DISTRICT),
    Case("POST", "/console/roster/upload", "/console/roster/upload", ADMINS, upload_form),
    Case("GET", "/console/roster/codes", f"/console/roster/codes?school={SCHOOL}&class={CLASS}", CLASS_32),
    Case("GET", "/console/roster/qr/{school}/{class}", f"/console/roster/qr/{SCHOOL}/{CLASS}", CLASS_32),
    Case("GET", "/console/roster/bindings", f"/console/roster/bindings?school={SCHOOL}&class={CLASS}", CLASS_32),
    Case("POST", "/console/roster/bindings/decide", "/console/roster/bindings/decide", MANAGE_32, decide_form),
    Case("POST", "/console/roster/bindings/remove", "/console/roster/bindings/remove", MANAGE_32, remove_form),
    Case("GET", "/console/campaigns", "/console/campaigns", ADMINS),
    Case("GET", "/console/campaigns", f"/console/campaigns?school={OTHER_SCHOOL}", DISTRICT),
    Case("GET", "/console/campaigns/calendar", "/console/campaigns/calendar", ADMINS),
    Case("GET", "/console/campaigns/new", "/console/campaigns/new", ADMINS),
    Case("GET", "/console/campaigns/{id}/edit", "/console/campaigns/district-walk/edit", DISTRICT),
    Case("POST", "/console/campaigns/save", "/console/campaigns/save", ADMINS, campaign_form),
    Case("POST", "/console/campaigns/switch", "/console/campaigns/switch", ADMINS, switch_form),
    Case("GET", "/console/lessons", "/console/lessons", ALL),
    Case("GET", "/console/lessons", f"/console/lessons?{CLASS_32_QUERY}", CLASS_32),
    Case("GET", "/console/lessons/{id}", "/console/lessons/drowning-g1-3", ALL),
    Case("GET", "/console/lessons/rates", "/console/lessons/rates", ALL),
    Case("GET", "/console/lessons/rates", f"/console/lessons/rates?{CLASS_32_QUERY}", CLASS_32),
    Case("GET", "/console/alerts", "/console/alerts", ADMINS),
    Case("GET", "/console/audit", "/console/audit", ALL),
    Case("GET", "/console/audit.csv", "/console/audit.csv", ALL),
    Case("POST", "/console/logout", "/console/logout", (LOGIN,) * 6, None),  # everyone ends at the login page
    # Public on purpose: signing in, and the stylesheet and script. The signed-in go on to the console.
    Case("GET", "/console/login", "/console/login", (OK,) * 6),
    Case("GET", "/console/static/{name}", "/console/static/console.css", (OK,) * 6),
    Case("GET", "/console/login/wechat", "/console/login/wechat", (WECHAT,) * 6),
    Case("GET", "/console/oauth/callback", "/console/oauth/callback?code=abc&state=forged", (BAD,) * 6),
    # The right password, but without the login page's own token: nobody is signed in (login CSRF).
    Case("POST", "/console/login", "/console/login", (DENY,) * 6, login_form),
]


def classify(status: int, location: str) -> str:
    if status in (302, 303) and location.startswith("/console/login"):
        return LOGIN
    if status == 302 and "/connect/oauth2/authorize?" in location:
        return WECHAT
    if status == 401:
        return LOGIN
    if status in (200, 303):
        return OK
    return {400: BAD, 403: DENY, 404: GONE, 422: INVALID}.get(status, f"status {status}")


async def _request(world: World, b: Browser, case: Case, path: str) -> tuple[int, str]:
    if case.method == "GET":
        status, _, resp = await b.get(path)
        return status, resp.headers.get("Location", "")
    token = ""
    if b.cookie("sb_c"):
        page = await b.get("/console/notices")
        found = CSRF.search(page[1])
        token = found.group(1) if found else ""
    form = await case.form(world) if case.form else {}
    if isinstance(form, aiohttp.FormData):
        form.add_field("csrf", token)
    else:
        form = {**form, "csrf": token}
    status, _, resp = await b.post(path, form)
    return status, resp.headers.get("Location", "")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.path}" for c in CASES])
async def test_each_console_route_answers_each_role_as_the_matrix_says(world: World, case: Case) -> None:
    notice = await world.notice()
    await world.campaign("district-walk")
    path = case.path.replace(N, notice.id)
    got = []
    for role in ROLES:
        b = await world.login(role)
        status, location = await _request(world, b, case, path)
        got.append(classify(status, location))
        assert status < 500
    assert tuple(got) == case.expect, dict(zip(ROLES, got, strict=True))


LIST_NOTE = "名单仅班主任可见"
SECRETS = ("李小红", "王小明", "20260301", "20260302")  # the class's students, by name and by school id


async def test_only_the_class_teacher_sees_who_has_not_confirmed_by_name(world: World) -> None:
    """The privacy rule: the names of non-confirming families go to that class's teacher only. A subject
    teacher of the class and the administrators see how many, and why, with a note where the list would be."""
    notice = await world.notice()
    who = Who.decode(await world.redis.get(keys.identity(MUM)))  # type: ignore[arg-type]
    assert (await world.notices.confirm(notice.id, MUM, who)).ok  # 王小明 confirmed; 李小红 not reached
    page_path = f"/console/notices/{notice.id}/missing?{CLASS_32_QUERY}"
    csv_path = f"/console/notices/{notice.id}/missing.csv?{CLASS_32_QUERY}"
    for role in ROLES:
        b = await world.login(role)
        status, page, _ = await b.get(page_path)
        csv_status, csv_text, _ = await b.get(csv_path)
        _, notice_page, _ = await b.get(f"/console/notices/{notice.id}")
        assert "王小明" not in page and "王小明" not in csv_text, role  # confirmed: on nobody's list
        if role == "teacher32":
            assert status == 200 and "未确认名单" in page and "李小红" in page and "未送达" in page, role
            assert LIST_NOTE not in page and "missing.csv" in page
            assert csv_status == 200 and "李小红" in csv_text and "not_reached" in csv_text
        elif role in ("subject32", "sadmin", "dadmin"):
            assert status == 200 and "未确认情况" in page and LIST_NOTE in page, role
            assert '未送达</span></td><td class="num">1</td>' in page, role  # the count, by reason
            assert "missing.csv" not in page, role  # no button for a file they may not have
            assert csv_status == 403 and LIST_NOTE in csv_text and "报表 CSV" in csv_text, role
        else:  # anonymous: to the login page; the other class's teacher: the notice is not theirs
            assert (status, csv_status) in ((303, 303), (302, 302), (404, 404)), (role, status, csv_status)
        if role != "teacher32":
            for secret in SECRETS:
                assert secret not in page and secret not in csv_text, (role, secret)
        for secret in SECRETS:  # the notice's own page has counts only, for everyone
            assert secret not in notice_page, (role, secret)


def test_the_matrix_covers_every_route_the_console_registers(world: World) -> None:
    registered = set()
    for route in world.console.app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        assert resource is not None
        registered.add((route.method, resource.canonical))  # the canonical path includes the /console prefix
    covered = {(c.method, c.route) for c in CASES}
    assert registered - covered == set(), "routes missing from the authorization matrix"
    assert covered - registered == set(), "matrix rows for routes the console does not have"
