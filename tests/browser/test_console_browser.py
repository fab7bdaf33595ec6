"""A school day in a real browser: an administrator uploads the roster, a teacher signs in from WeChat
and sends a notice, a parent opens the card and confirms on the H5 page, the teacher's page shows it.
Then what must not work does not: a forged form token, a teacher looking at another class."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from playwright.async_api import expect

from bot.demo_data import DEMO_SCHOOL
from bot.demo_data import path as demo_file
from bot.roster.store import RosterStore

from .conftest import ADMIN, PASSWORD, System, screenshot

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
             "Mobile Safari/537.36 MicroMessenger/8.0.50.2701(0x28003237) NetType/WIFI Language/zh_CN")  # fmt: skip
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


async def bind_parent(system: System, code: str, name: str, proof: str) -> str:
    """A parent binds in the chat (through the emulator): class code, child's name, last 4 of the id, relation."""
    [parent] = await system.emulator.client.create_followers(1)
    for text in (code, name, proof, "妈妈"):
        reply = await system.emulator.client.send_text(parent, text)
    assert "绑定成功" in (reply.text or ""), reply.text
    return str(parent)


async def card_of(system: System, openid: str) -> dict[str, Any]:
    for _ in range(200):
        cards = (await system.emulator.client.inbox(openid))["template"]
        if cards:
            return dict(cards[-1])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no card reached {openid}")


async def test_a_notice_goes_from_the_console_to_a_parents_phone_and_the_confirmation_comes_back(
    system: System,
) -> None:
    # -- an administrator signs in and uploads the school's roster -----------------------------------
    admin = await system.page("admin", **DESKTOP)
    await admin.goto(system.base + "/console")
    assert "/console/login" in admin.url
    await screenshot(admin, "console-login")
    await admin.fill("input[name=username]", ADMIN)
    await admin.fill("input[name=password]", PASSWORD)
    await admin.click("button[type=submit]")
    await admin.wait_for_url(re.compile(r"/console$"))
    assert await admin.locator("h1").first.inner_text() == "平安路小学"
    await admin.goto(system.base + "/console/roster")
    await admin.set_input_files("input[name=file]", str(demo_file("roster.csv")))
    await admin.click("form[action='/console/roster/upload'] button[type=submit]")
    await admin.wait_for_selector("text=已导入")
    assert await admin.locator(".figures dd").first.inner_text() == "240"  # new students
    await screenshot(admin, "console-roster-upload")
    await admin.goto(system.base + f"/console/roster?school={DEMO_SCHOOL}")
    await screenshot(admin, "console-roster")

    # -- the class teacher and two families join in the chat ----------------------------------------
    store = RosterStore(system.redis)
    invite = await store.create_teacher_invite(DEMO_SCHOOL, ["3-2"], "c", 3600)
    [teacher] = await system.emulator.client.create_followers(1)
    assert "班主任" in ((await system.emulator.client.send_text(teacher, invite)).text or "")
    info = await store.class_info(DEMO_SCHOOL, "3-2")
    assert info is not None
    mum = await bind_parent(system, info.code, "王小明", "0321")
    await bind_parent(system, info.code, "孟婧语", "0322")

    # -- the teacher opens the console inside WeChat: OAuth, no password --------------------------
    tpage = await system.page("teacher", user_agent=WECHAT_UA, **PHONE)
    await tpage.goto(f"{system.emulator.url}/_emulator/browse?openid={teacher}&next={system.base}/console")
    await tpage.wait_for_url(re.compile(r"/console$"))
    assert "三年级（2）班老师（微信）" in await tpage.locator(".who").inner_text()
    await screenshot(tpage, "console-teacher-dashboard-empty")

    # -- writes a notice: the card-length counter warns, the preview shows the card and the page ------
    await tpage.goto(system.base + "/console/notices/new")
    await tpage.fill("input[name=title]", "请各位家长务必在本周五下午四点半之前到校接孩子回家")
    assert await tpage.locator("input[name=title] + .count").get_attribute("class") == "count over"
    await tpage.fill("input[name=title]", "周末防溺水安全提醒")
    assert (await tpage.locator("input[name=title] + .count").inner_text()).startswith("9 / 20")
    body = "周末请看护好孩子：不去河边、水库、池塘玩水；不独自游泳。\n发现同伴落水，大声呼救，不要手拉手下水。"
    await tpage.fill("textarea[name=body]", body)
    await tpage.check("input[name=mode][value=confirm]")
    await screenshot(tpage, "console-notice-form")
    await tpage.click("button:has-text('预览')")
    await tpage.wait_for_selector("text=微信卡片")
    frame = tpage.frame_locator("iframe.h5")
    assert "周末防溺水安全提醒" in await frame.locator("h1").inner_text()
    await screenshot(tpage, "console-notice-preview")
    tpage.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await tpage.click("button:has-text('确认发送')")
    await tpage.wait_for_selector("text=已发送")
    notice_url = tpage.url.split("?")[0]

    # -- a parent taps the card in WeChat and confirms on the page ---------------------------------
    card = await card_of(system, mum)
    ppage = await system.page("parent", user_agent=WECHAT_UA, **PHONE)
    await ppage.goto(f"{system.emulator.url}/_emulator/browse?openid={mum}&next={card['url']}")
    await ppage.wait_for_selector("text=我已阅读并确认")
    assert "王小明" in await ppage.content()
    await screenshot(ppage, "h5-notice")
    await ppage.click("text=我已阅读并确认")
    await ppage.wait_for_selector("text=您已确认")
    await screenshot(ppage, "h5-confirmed")

    # -- the teacher's notice page updates by itself; the dashboard shows the confirmation ------------
    await tpage.goto(notice_url)
    await expect(tpage.locator("[data-k=confirmed]")).to_have_text("1", timeout=15_000)  # live: no reload
    await screenshot(tpage, "console-notice-status")
    await tpage.goto(system.base + "/console")
    funnel = await tpage.locator(".funnel").first.inner_text()
    assert "周末防溺水安全提醒" in funnel and "1 · 50%" in await tpage.locator(".funnel svg").first.inner_html()
    await screenshot(tpage, "console-teacher-dashboard")
    missing = tpage.locator("a:has-text('人 ›')").first
    await tpage.goto(notice_url)
    await tpage.locator("a:has-text('人 ›')").first.click()
    await tpage.wait_for_selector("text=未确认名单")
    assert "孟婧语" in await tpage.content() and missing is not None
    await screenshot(tpage, "console-missing")

    # -- the administrator sees how many have not confirmed and why, but the names are the class teacher's
    await admin.goto(notice_url)
    await admin.locator("a:has-text('人 ›')").first.click()
    await admin.wait_for_selector("text=未确认情况")
    assert "名单仅班主任可见" in await admin.content() and "孟婧语" not in await admin.content()
    assert await admin.locator("a:has-text('导出 CSV')").count() == 0
    await screenshot(admin, "console-missing-counts")

    # -- the administrator sees it in the school's dashboard and the audit log -----------------------
    await admin.goto(system.base + "/console")
    await screenshot(admin, "console-dashboard")
    await admin.goto(system.base + "/console/audit")
    assert "发送通知" in await admin.content() and "周末防溺水安全提醒" in await admin.content()
    await screenshot(admin, "console-audit")
    await admin.goto(system.base + f"/console/roster/bindings?school={DEMO_SCHOOL}&class=3-2")
    await screenshot(admin, "console-bindings")
    await admin.goto(system.base + f"/console/roster/codes?school={DEMO_SCHOOL}&class=3-2")
    await admin.wait_for_load_state("networkidle")
    assert await admin.locator(".code-card img").evaluate("img => img.naturalWidth > 0")
    await screenshot(admin, "console-class-codes")
    await admin.emulate_media(media="print")
    await screenshot(admin, "console-class-codes-print")
    await admin.emulate_media(media="screen")

    # -- the school's campaigns, their 60-day calendar, lessons and warnings --------------------------
    pages = {"/console/campaigns": "console-campaigns", "/console/campaigns/calendar": "console-calendar",
             "/console/campaigns/new": "console-campaign-form", "/console/lessons": "console-lessons",
             "/console/lessons/drowning-g4-6": "console-lesson", "/console/alerts": "console-alerts"}  # fmt: skip
    for path, name in pages.items():
        response = await admin.goto(system.base + path)
        assert response is not None and response.status == 200, path
        await screenshot(admin, name)


async def test_a_forged_form_token_is_refused_and_nothing_is_sent(system: System) -> None:
    page = await system.page("admin", **DESKTOP)
    await page.goto(system.base + "/console/login")
    await page.fill("input[name=username]", ADMIN)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/console$"))
    await page.goto(system.base + "/console/notices/new")
    await page.fill("input[name=title]", "测试通知")
    await page.fill("textarea[name=body]", "正文")
    form_token = page.locator("form[action='/console/notices/preview'] input[name=csrf]")
    await form_token.evaluate("input => { input.value = 'forged-token-0000000000000000000000000000'; }")
    async with page.expect_response(lambda r: r.url.endswith("/console/notices/preview")) as answer:
        await page.click("button:has-text('预览')")
    assert (await answer.value).status == 403
    await page.wait_for_selector("text=页面已过期")
    await screenshot(page, "console-csrf-refused")
    assert await system.redis.zcard("sb:notices") == 0


async def test_a_teacher_cannot_open_another_class(system: System) -> None:
    from bot.roster.importer import apply, parse_roster, validate

    store = RosterStore(system.redis)
    await apply(system.redis, validate(parse_roster(demo_file("roster.csv")), await store.schools()))
    invite = await store.create_teacher_invite(DEMO_SCHOOL, ["3-2"], "c", 3600)
    [teacher] = await system.emulator.client.create_followers(1)
    await system.emulator.client.send_text(teacher, invite)
    page = await system.page("teacher", user_agent=WECHAT_UA, **PHONE)
    await page.goto(f"{system.emulator.url}/_emulator/browse?openid={teacher}&next={system.base}/console")
    await page.wait_for_url(re.compile(r"/console$"))
    s = DEMO_SCHOOL
    for path in (f"/console/?school={s}&class=3-1", f"/console/roster/bindings?school={s}&class=1-1",
                 f"/console/notices?school={s}", f"/console/roster/codes?school={s}&class=6-2"):  # fmt: skip
        response = await page.goto(system.base + path)
        assert response is not None and response.status == 403, path
        assert "没有权限" in await page.content()
    await screenshot(page, "console-forbidden")


async def test_a_visitor_plays_a_parent_on_the_demo_page_and_the_teachers_figures_change(system: System) -> None:
    from bot.roster.importer import apply, parse_roster, validate

    store = RosterStore(system.redis)
    await apply(system.redis, validate(parse_roster(demo_file("roster.csv")), await store.schools()))
    invite = await store.create_teacher_invite(DEMO_SCHOOL, ["3-2"], "c", 3600)
    [teacher] = await system.emulator.client.create_followers(1)
    await system.emulator.client.send_text(teacher, invite)
    info = await store.class_info(DEMO_SCHOOL, "3-2")
    assert info is not None
    for name, proof in (("王小明", "0321"), ("孟婧语", "0322"), ("付宇", "0323")):
        await bind_parent(system, info.code, name, proof)
    page = await system.page("visitor", viewport={"width": 1440, "height": 1000})
    await page.goto(system.base + "/demo")
    await page.select_option("select[name=preset]", "understand")
    await page.click("button:has-text('发送给全班家长')")
    await page.wait_for_selector("text=班主任已发出通知")
    await expect(page.locator(".phone").first.locator("text=详情 ›")).to_be_visible(timeout=15_000)  # the page reloads
    await page.locator(".phone").first.locator("text=详情 ›").click()
    await page.wait_for_selector("iframe.in-phone")
    assert "绿灯闪烁" in await page.frame_locator("iframe.in-phone").locator("body").inner_text()
    await page.locator(".phone").first.locator("button:has-text('停下等下一个绿灯')").click()
    await expect(page.locator("[data-k=confirmed]")).to_have_text("1", timeout=10_000)
    second = page.locator(".phone").nth(1)
    await second.locator("input[name=text]").fill("帮助")
    await second.locator("button:has-text('发送')").click()
    newest = page.locator(".phone").nth(1).locator(".bubble.bot").first  # the phone lists its newest message first
    await expect(newest).to_contain_text("取消", timeout=10_000)
    await screenshot(page, "demo")
