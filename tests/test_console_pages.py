"""The console's pages at work: writing and sending a notice, its live figures, the non-confirmers, exports,
the dashboard's charts, roster upload, class codes, bindings, the audit log, and never a 5xx."""

from __future__ import annotations

import csv
import io
import json
import re

import aiohttp
import openpyxl
from test_console_world import (
    AUNT,
    CLASS,
    DAD,
    MUM,
    NEWCOMER,
    SCHOOL,
    TEACHER_WX,
    Browser,
    World,
    world,
)

from bot.console.audit import AuditFilter
from bot.roster.authz import Scope
from bot.roster.model import Who
from bot.store import keys
from bot.wechat.protocol import mask_openid

__all__ = ["world"]

FORM = {"sender": "三年级（2）班", "body": "周五下午放学后请准时接孩子。\n不要让孩子独自去河边。", "mode": "confirm",
        "audience": f"c:{SCHOOL}/{CLASS}"}  # fmt: skip


async def send(b: Browser, **fields: str) -> tuple[int, str, str]:
    """Preview, then send what the preview carries; (status, final page, notice id)."""
    token = await b.csrf()
    form = {**FORM, "title": "周五放学安全提醒", **fields, "csrf": token}
    status, page, _ = await b.post("/console/notices/preview", form)
    if status != 200:
        return status, page, ""
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    hidden = {k: v.replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
              for k, v in hidden.items()}  # fmt: skip
    status, _, resp = await b.post("/console/notices/send", hidden)
    location = resp.headers.get("Location", "")
    nid = location.split("/notices/")[1].split("?")[0] if "/notices/" in location else ""
    status, text, _ = await b.get(location) if location else (status, "", None)
    return status, text, nid


async def test_a_teacher_writes_previews_and_sends_a_notice_to_their_class(world: World) -> None:
    b = await world.login("teacher32")
    status, form, _ = await b.get("/console/notices/new")
    assert status == 200 and 'data-max="20"' in form and "三年级（2）班" in form
    status, page, nid = await send(b)
    assert status == 200 and nid and "已发送" in page and "周五放学安全提醒" in page
    notice = await world.notices.get(nid)
    assert notice is not None and notice.draft.audience == (Scope("d1", SCHOOL, None, CLASS),)
    assert notice.draft.created_by == "console:teacher32"
    records = await world.redis.hgetall(keys.notice_records(nid))
    assert {MUM, DAD, AUNT} <= set(records)  # planned: one card per guardian
    [entry] = await world.console.audit.entries(["d1"], lambda e: True, AuditFilter(action="notice.send"))
    assert entry.actor == "console:teacher32" and entry.target == nid and "周五放学安全提醒" in entry.summary
    assert entry.classes == (CLASS,) and entry.school == SCHOOL


async def test_the_preview_shows_the_card_and_the_parents_page_before_anything_is_sent(world: World) -> None:
    b = await world.login("teacher32")
    status, page, _ = await b.post("/console/notices/preview", {**FORM, "title": "雨天路滑", "csrf": await b.csrf()})
    assert status == 200
    assert "微信卡片" in page and "请点开查看并确认" in page  # the card's action, as the worker sends it
    assert 'sandbox=""' in page and "srcdoc=" in page and "我已阅读并确认" in page  # the H5 page, escaped in srcdoc
    assert "1 个班级，2 名学生" in page and "将发给 <b>4</b> 位家长，共 4 张卡片" in page and "额度不足" not in page
    assert await world.redis.zcard(keys.notices_by_time()) == 0


async def test_the_preview_shows_the_reach_against_the_template_quota_left_today(world: World) -> None:
    world.config.wechat.template_quota = 3  # 4 guardians of 3-2: one card waits for the next day
    b = await world.login("teacher32")
    status, page, _ = await b.post("/console/notices/preview", {**FORM, "title": "雨天路滑", "csrf": await b.csrf()})
    assert status == 200 and "将发给 <b>4</b> 位家长，共 4 张卡片" in page
    # 今日, or 明日 when quiet hours hold the cards past midnight: the test runs at any hour
    assert re.search(r"[今明]日模板消息额度还剩 3/3 条", page)
    # (at night the cards start tomorrow morning, and the warning says so)
    assert re.search(r'role="alert">(今日|明日)模板消息额度不足：(今天|明天)发送3条，其余顺延：', page)
    assert "日 1条" in page
    assert "的 4 位家长吗" in page  # the send button's confirmation names the reach too
    assert await world.redis.zcard(keys.notices_by_time()) == 0  # a preview plans nothing


async def test_card_fields_over_twenty_characters_are_refused_in_plain_chinese(world: World) -> None:
    b = await world.login("teacher32")
    long_title = "请各位家长务必在本周五下午四点半之前到校接孩子回家"
    status, page, _ = await b.post("/console/notices/preview", {**FORM, "title": long_title, "csrf": await b.csrf()})
    assert status == 422 and f"最多20个字，现在{len(long_title)}个字" in page
    assert long_title in page  # the form keeps what was typed
    status, page, _ = await b.post("/console/notices/preview", {**FORM, "title": "标题", "mode": "understand",
                                                                "csrf": await b.csrf()})  # fmt: skip
    assert status == 422 and "问题" in page


async def test_pressing_send_twice_sends_once(world: World) -> None:
    b = await world.login("teacher32")
    token = await b.csrf()
    form = {**FORM, "title": "重复提交", "key": "same-key-12345", "csrf": token}
    first = await b.post("/console/notices/send", form)
    second = await b.post("/console/notices/send", form)
    assert first[0] == second[0] == 303
    assert first[2].headers["Location"].split("?")[0] == second[2].headers["Location"].split("?")[0]
    assert "flash=again" in second[2].headers["Location"]
    assert await world.redis.zcard(keys.notices_by_time()) == 1


async def test_the_notice_page_shows_live_figures_and_who_has_not_confirmed_and_why(world: World) -> None:
    notice = await world.notice()
    await world.notices.opened(notice.id, MUM)
    who = Who.decode(await world.redis.get(keys.identity(MUM)))  # type: ignore[arg-type]
    assert (await world.notices.confirm(notice.id, MUM, who)).ok
    b = await world.login("teacher32")
    status, page, _ = await b.get(f"/console/notices/{notice.id}")
    assert status == 200 and "<svg" in page and "data-poll" in page
    status, body, _ = await b.get(f"/console/notices/{notice.id}/status.json")
    funnel = json.loads(body)["funnel"]
    assert funnel["confirmed"] == 1 and funnel["targeted"] == 2 and funnel["opened"] == 1
    status, page, _ = await b.get(f"/console/notices/{notice.id}/missing?school={SCHOOL}&class={CLASS}")
    assert status == 200 and "李小红" in page and "王小明" not in page and "未送达" in page
    status, text, resp = await b.get(f"/console/notices/{notice.id}/missing.csv?school={SCHOOL}&class={CLASS}")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/csv") and text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[1][4] == "李小红" and rows[1][5] == "not_reached"
    status, text, _ = await b.get(f"/console/notices/{notice.id}/report.csv")
    assert status == 200 and "confirmed_pct" in text and "50.0" in text


async def test_the_dashboard_draws_the_confirmation_rates_and_the_funnels_as_svg(world: World) -> None:
    notice = await world.notice()
    who = Who.decode(await world.redis.get(keys.identity(MUM)))  # type: ignore[arg-type]
    await world.notices.confirm(notice.id, MUM, who)
    b = await world.login("dadmin")
    status, page, _ = await b.get("/console")
    assert status == 200 and page.count("<svg") >= 2 and "近30天确认率" in page
    assert "50%" in page  # the point's tooltip
    assert "平安路小学" in page and "幸福路小学" in page and "远方小学" not in page  # the district's schools only
    assert 'id="upcoming"' in page and 'id="lesson-rates"' in page
    status, page, _ = await b.get(f"/console/?school={SCHOOL}&class={CLASS}")
    assert status == 200 and "三年级（2）班" in page


async def upload(b: Browser, content: bytes, filename: str, **flags: str) -> tuple[int, str]:
    data = aiohttp.FormData()
    data.add_field("csrf", await b.csrf())
    data.add_field("file", io.BytesIO(content), filename=filename)
    for k, v in flags.items():
        data.add_field(k, v)
    status, text, _ = await b.post("/console/roster/upload", data)
    return status, text


async def test_a_roster_upload_with_a_bad_row_names_the_row_and_writes_nothing(world: World) -> None:
    b = await world.login("sadmin")
    content = ("学校,年级,班级,学生姓名,学号\nt-s1,三年级,2,王小明,20260301\nt-s1,三年级,2,李小红,20260302\n"
               "t-s1,三年级,2,新同学,\nt-s1,四年级,1,周小新,20260401\n").encode()  # fmt: skip
    status, page = await upload(b, content, "roster.csv")
    assert status == 422 and '<td class="num">4</td>' in page and "没有导入" in page
    assert await world.store.class_info(SCHOOL, "4-1") is None
    status, page = await upload(b, content, "roster.csv", partial="1")
    assert status == 200 and "已导入" in page
    assert (await world.store.students(SCHOOL, "4-1"))["20260401"].name == "周小新"
    status, page, _ = await b.get("/console/audit?action=roster.import")
    assert "roster.csv" in page and "新增1" in page


async def test_an_xlsx_roster_is_read_and_a_school_outside_the_scope_is_refused(world: World) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["学校", "年级", "班级", "姓名", "学号"], ["t-s1", 3, 2, "王小明", "20260301"],
                ["t-s1", 3, 2, "李小红", "20260302"], ["t-s1", 3, 3, "赵小刚", "20260399"],
                ["t-s2", 1, 1, "钱小多", "20260101"]):  # fmt: skip
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    b = await world.login("sadmin")
    status, page = await upload(b, out.getvalue(), "roster.xlsx", dry_run="1")
    assert status == 422 and '<td class="num">5</td>' in page and "t-s2" in page  # not this admin's school
    b = await world.login("dadmin")
    status, page = await upload(b, out.getvalue(), "roster.xlsx", dry_run="1")
    assert status == 200 and "检查完成" in page and "4 行无误" in page


async def test_an_unreadable_file_gets_a_plain_answer(world: World) -> None:
    b = await world.login("sadmin")
    status, page = await upload(b, b"\xd0\xcf\x11\xe0 old excel", "roster.xls")
    assert status == 400 and "文件无法读取" in page and ".xls" in page


async def test_class_codes_print_with_the_qr_code_served_from_here(world: World) -> None:
    b = await world.login("teacher32")
    info = await world.store.class_info(SCHOOL, CLASS)
    assert info is not None
    status, page, _ = await b.get(f"/console/roster/codes?school={SCHOOL}&class={CLASS}")
    assert status == 200 and info.code in page and f"/console/roster/qr/{SCHOOL}/{CLASS}" in page
    status, body, resp = await b.get(f"/console/roster/qr/{SCHOOL}/{CLASS}")
    assert status == 200 and resp.headers["Content-Type"].startswith("image/") and "<svg" in body
    assert f"bind:{info.code}" in body  # the emulator draws the scene the code carries
    assert await world.redis.hget(keys.class_qr_tickets(SCHOOL), CLASS)  # made once, kept


async def test_the_class_teacher_approves_and_removes_bindings_and_the_family_is_told(world: World) -> None:
    b = await world.login("teacher32")
    status, page, _ = await b.get(f"/console/roster/bindings?school={SCHOOL}&class={CLASS}")
    assert status == 200 and "待审核" in page and "同意" in page
    form = {"school": SCHOOL, "class": CLASS, "student": "20260302", "openid": NEWCOMER, "decision": "approve",
            "csrf": await b.csrf()}  # fmt: skip
    status, _, resp = await b.post("/console/roster/bindings/decide", form)
    assert status == 303 and "flash=approved" in resp.headers["Location"]
    assert any(c.student == "20260302" for c in Who.decode(await world.redis.get(keys.identity(NEWCOMER))).children)  # type: ignore[arg-type]
    status, _, resp = await b.post("/console/roster/bindings/decide", form)  # again: nothing left to decide
    assert "flash=gone" in resp.headers["Location"]
    form = {"school": SCHOOL, "class": CLASS, "student": "20260301", "openid": DAD, "csrf": await b.csrf()}
    status, _, resp = await b.post("/console/roster/bindings/remove", form)
    assert status == 303 and "flash=removed" in resp.headers["Location"]
    assert DAD not in (await world.redis.hget(keys.class_guardians(SCHOOL, CLASS), "20260301") or "")
    outbox = await world.redis.xlen(keys.outbox())
    assert outbox == 2  # two private messages: approved, removed
    entries = await world.console.audit.entries(["d1"], lambda e: True, AuditFilter(action="binding"))
    assert {e.action for e in entries} == {"binding.approve", "binding.remove"}


async def test_a_subject_teacher_sees_how_many_families_are_bound_never_who(world: World) -> None:
    """Bindings are the class teacher's to run: a subject teacher of the class gets the counts, no
    student or family names, no masked WeChat ids, and nothing to approve or remove."""
    b = await world.login("subject32")
    status, page, _ = await b.get(f"/console/roster/bindings?school={SCHOOL}&class={CLASS}")
    assert status == 200
    assert "学生 2 人，已绑定 2 人" in page and "待审核的申请 1 条" in page and "家长名单仅班主任可见" in page
    for name in ("王小明", "李小红", NEWCOMER[:4], "同意", "移除"):
        assert name not in page
    teacher = await world.login("teacher32")
    status, page, _ = await teacher.get(f"/console/roster/bindings?school={SCHOOL}&class={CLASS}")
    assert status == 200 and "王小明" in page and "李小红" in page and "家长名单仅班主任可见" not in page


async def test_the_audit_log_filters_exports_and_shows_each_reader_only_their_part(world: World) -> None:
    t32 = await world.login("teacher32")
    await send(t32, title="三二班通知")
    t33 = await world.login("teacher33")
    await send(t33, title="三三班通知", audience=f"c:{SCHOOL}/3-3", sender="三年级（3）班")
    status, page, _ = await t32.get("/console/audit?action=notice.send")
    assert status == 200 and "三二班通知" in page and "三三班通知" not in page
    admin = await world.login("sadmin")
    status, page, _ = await admin.get("/console/audit?action=notice.send")
    assert "三二班通知" in page and "三三班通知" in page
    status, page, _ = await admin.get("/console/audit?actor=teacher33")
    assert "三三班通知" in page and "三二班通知" not in page
    status, text, _ = await admin.get("/console/audit.csv?action=notice")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0][:2] == ["time", "action"] and len(rows) == 3
    far = await world.login("faradmin")
    status, page, _ = await far.get("/console/audit")
    assert "三二班通知" not in page and "三三班通知" not in page  # another district


async def test_the_audit_export_masks_a_wechat_teachers_openid(world: World) -> None:
    teacher = await world.wechat_login(TEACHER_WX)  # a WeChat sign-in is written to the audit log
    assert (await teacher.get("/console"))[0] == 200
    admin = await world.login("sadmin")
    status, text, _ = await admin.get("/console/audit.csv?action=login")
    assert status == 200 and TEACHER_WX not in text
    actors = {row[3] for row in csv.reader(io.StringIO(text.lstrip("\ufeff")))}
    assert mask_openid(TEACHER_WX) in actors and "console:sadmin" in actors  # accounts keep their names


async def test_nothing_a_visitor_types_gives_a_5xx(world: World) -> None:
    notice = await world.notice()
    b = await world.login("sadmin")
    paths = [
        "/console/?school=%00&class=%ff", "/console/?school=t-s1&class=" + "9" * 500, "/console/?class=3-2",
        "/console/notices/" + "z" * 300, "/console/notices/../../etc/passwd", f"/console/notices/{notice.id}?school=x",
        f"/console/notices/{notice.id}/missing?school=t-s1&class=9-9", f"/console/notices/{notice.id}/missing",
        "/console/notices?days=-1&school=<script>", "/console/roster?school='%20OR%201=1", "/console/roster/codes",
        "/console/roster/qr/t-s1/..", "/console/roster/qr/zz/1-1", "/console/roster/bindings?school=t-s1",
        "/console/audit?since=yesterday&until=2026-13-45&action=%%", "/console/static/../../bot/app.py",
        "/console/nothing-here", "/console/login?next=%0d%0aSet-Cookie:x",
        "/console/oauth/callback?state=" + "a" * 5000,
    ]  # fmt: skip
    for path in paths:
        status, text, _ = await b.get(path)
        assert status < 500, (path, status, text[:200])
        assert "Traceback" not in text
    token = await b.csrf()
    posts = [("/console/notices/preview", {"csrf": token}), ("/console/notices/send", {"csrf": token, "mode": "???"}),
             ("/console/roster/bindings/decide", {"csrf": token, "school": "<x>"}),
             ("/console/roster/bindings/remove", {"csrf": token, "class": "3-2"}),
             ("/console/notices/preview", {"csrf": token, **FORM, "title": "t", "deadline": "not a date"}),
             ("/console/notices/preview", {"csrf": token, **FORM, "title": "t", "deadline": "1999-01-01T00:00"}),
             ("/console/notices/preview", {"csrf": token, **FORM, "title": "t", "audience": "s:nowhere"}),
             ("/console/notices/preview", {"csrf": token, **FORM, "title": "t", "mode": "understand", "q_text": "?",
                                           "q_opt1": "a", "q_answer": "9"})]  # fmt: skip
    for path, form in posts:
        status, text, _ = await b.post(path, form)
        assert status < 500 and "Traceback" not in text, (path, status, text[:300])
    async with b.http.post(world.base + "/console/roster/upload", data=b"--x\r\nbroken",
                           headers={"Content-Type": "multipart/form-data; boundary=x"}) as resp:  # fmt: skip
        assert resp.status < 500
    async with b.http.post(world.base + "/console/notices/preview", data=b"a=" + b"x" * 200_000,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:  # fmt: skip
        assert resp.status == 413


async def test_pages_carry_a_strict_content_security_policy_and_are_never_cached(world: World) -> None:
    b = await world.login("sadmin")
    for path in ("/console", "/console/notices", "/console/roster", "/console/audit", "/console/login"):
        _, _, resp = await b.get(path)
        policy = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Frame-Options"] == "DENY"
    status, css, resp = await b.get("/console/static/console.css")
    assert status == 200 and "@media print" in css and resp.headers["Content-Type"].startswith("text/css")


async def test_a_file_the_importer_chokes_on_gets_a_plain_answer_not_a_500(world: World) -> None:
    b = await world.login("sadmin")
    huge_cell = ("学校,年级,班级,学生姓名,学号\n" + "t-s1,3,2," + "名" * 140_000 + ",1\n").encode()  # 420 KB upload
    for content, name in ((b"\xff\xfe\x00", "odd-utf16.csv"), (b"PK\x03\x04" + b"\x00" * 64, "damaged.xlsx"),
                          (huge_cell, "big.csv")):  # fmt: skip
        status, page = await upload(b, content, name)
        assert status == 400 and "文件无法读取" in page, name
