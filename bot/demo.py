"""``bot demo``: the whole system in one process on embedded defaults, and a scripted walkthrough.

It starts a real Redis server (embedded), the WeChat emulator, the bot's web app, a worker and the
scheduler, then plays simulated parents through the emulator: every step is a real signed,
encrypted callback or a real API call. ``--once`` runs the walkthrough and exits 0 only if every
step passed; without it the system keeps running for you to explore until Ctrl-C.

The walkthrough grows with each capability: add a step with ``@step("…")``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot import clock
from bot.app import create_app
from bot.config import Config
from bot.console.demo_page import with_demo
from bot.delivery.outbox import enqueue_text
from bot.demo_data import DEMO_SCHOOL
from bot.notices.model import card_text as card_title
from bot.scheduler import build_scheduler
from bot.serve import build_worker, start_site, wait_for_signal
from bot.store.embedded import EmbeddedRedis
from bot.store.redis import Redis, connect
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient, create_emulator_app
from bot.wechat.emulator.follower import build_callback, text_message

log = logging.getLogger(__name__)


@dataclass
class Demo:
    config: Config
    redis: Redis
    api: WeChatAPI
    emulator: EmulatorClient
    http: aiohttp.ClientSession
    bot_url: str
    parents: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    teacher: str = ""


Step = Callable[[Demo], Awaitable[str | None]]
STEPS: list[tuple[str, Step]] = []


def step(title: str) -> Callable[[Step], Step]:
    def register(func: Step) -> Step:
        STEPS.append((title, func))
        return func

    return register


class StepFailed(AssertionError):
    pass


def expect(condition: object, message: str) -> None:
    if not condition:
        raise StepFailed(message)


# -- the walkthrough --------------------------------------------------------------------------
@step("the bot is up and Redis answers")
async def bot_is_ready(demo: Demo) -> str:
    async with demo.http.get(f"{demo.bot_url}/readyz") as resp:
        expect(resp.status == 200, f"/readyz answered {resp.status}")
    return "GET /healthz, /readyz: ok"


@step("three parents follow the account and are welcomed")
async def parents_follow(demo: Demo) -> str:
    demo.parents = await demo.emulator.create_followers(3)
    for openid in demo.parents:
        result = await demo.emulator.send_event(openid, "subscribe")
        content = result.text or ""
        expect("欢迎" in content, f"no welcome, got {content!r}")
    return f"first reply: {content.splitlines()[0]}"


@step("a parent asks 帮助 and sees what the bot can do")
async def parent_asks_help(demo: Demo) -> str:
    result = await demo.emulator.send_text(demo.parents[0], "帮助")
    content = result.text or ""
    expect(demo.config.account.name in content, f"unexpected help: {content!r}")
    return f"{len(content.splitlines())} lines, answered in {result.elapsed_ms:.0f} ms"


@step("WeChat retries one message three times: one answer, handled once")
async def retries_are_deduplicated(demo: Demo) -> str:
    msg_id = secrets.randbelow(10**15) + 10**15
    results = await asyncio.gather(*(demo.emulator.send_text(demo.parents[1], "帮助", msg_id=msg_id) for _ in range(3)))
    contents = {r.text for r in results}
    expect(len(contents) == 1, f"different answers to one message: {contents}")
    return "3 deliveries of MsgId → 1 identical reply"


@step("a message the bot does not understand gets a kind hint")
async def fallback(demo: Demo) -> str:
    result = await demo.emulator.send_text(demo.parents[2], "今天天气怎么样")
    content = result.text or ""
    expect("帮助" in content, f"no hint to 帮助: {content!r}")
    return content.splitlines()[0]


@step("a forged callback is refused before it touches anything")
async def forged_callback(demo: Demo) -> str:
    params, body = build_callback(demo.config.wechat, text_message("gh_demo", demo.parents[0], "hi"))
    params["msg_signature"] = "0" * 40
    async with demo.http.post(f"{demo.bot_url}/wechat", params=params, data=body) as resp:
        expect(resp.status == 403, f"forged callback got {resp.status}")
    return "403"


@step("the worker sends a customer-service message from the outbox")
async def worker_delivers(demo: Demo) -> str:
    openid = demo.parents[0]
    await enqueue_text(demo.redis, openid, "这是一条来自平安铃的测试消息。")
    for _ in range(100):
        inbox = await demo.emulator.inbox(openid)
        if inbox.get("custom"):
            return "delivered through the emulator's message/custom/send"
        await asyncio.sleep(0.05)
    raise StepFailed("the customer-service message did not arrive")


@step("every process shares one access_token")
async def one_token(demo: Demo) -> str:
    other = WeChatAPI(demo.config.wechat, demo.redis)
    try:
        await asyncio.gather(
            *(other.user_info(p) for p in demo.parents), *(demo.api.user_info(p) for p in demo.parents)
        )
    finally:
        await other.close()
    stats = await demo.emulator.stats()
    fetched = int(stats.get("token_fetches", {}).get("stable", 0)) + int(
        stats.get("token_fetches", {}).get("classic", 0)
    )
    expect(fetched == 1, f"{fetched} token fetches")
    return "1 token fetch for worker, scheduler, serve and a second client"


@step("the demo school's roster is imported (re-importing changes nothing)")
async def import_roster(demo: Demo) -> str:
    from bot.demo_data import path
    from bot.roster.chat import forget_directory
    from bot.roster.importer import apply, apply_schools, parse_roster, parse_schools, validate
    from bot.roster.store import RosterStore

    await apply_schools(demo.redis, parse_schools(path("schools.csv")))
    report = validate(parse_roster(path("roster.csv")), await RosterStore(demo.redis).schools())
    await apply(demo.redis, report)
    again = await apply(demo.redis, validate(parse_roster(path("roster.csv")), await RosterStore(demo.redis).schools()))
    expect(again.changes == 0, f"re-import changed {again.changes} rows")
    forget_directory()
    return f"{report.total} students, {len(report.rejected)} rejected rows; re-import: 0 changes"


async def _class(demo: Demo, class_id: str) -> Any:
    from bot.roster.store import RosterStore

    info = await RosterStore(demo.redis).class_info(DEMO_SCHOOL, class_id)
    expect(info is not None, f"no class {class_id}")
    return info


@step("a class teacher joins with an invite code")
async def teacher_joins(demo: Demo) -> str:
    from bot.roster.store import RosterStore

    [demo.teacher] = await demo.emulator.create_followers(1)
    code = await RosterStore(demo.redis).create_teacher_invite(DEMO_SCHOOL, ["3-2"], "c", 3600)
    reply = (await demo.emulator.send_text(demo.teacher, code)).text or ""
    expect("班主任" in reply, f"unexpected: {reply!r}")
    return reply.splitlines()[0]


@step("parents bind: by QR scan (one wrong proof first), by class code, and one parent with two children")
async def parents_bind(demo: Demo) -> str:
    klass, first = await _class(demo, "3-2"), await _class(demo, "1-1")
    demo.families = await demo.emulator.create_followers(3)
    a, b, c = demo.families
    script = [
        (a, None, "王小明", "0000"), (a, None, "王小明", "0321"), (b, klass.code, "孟婧语", "0322"),
        (b, first.code, "王小红", "0101"), (c, klass.code, "付宇", "0323"),
    ]  # fmt: skip
    wrong = ""
    for openid, code, name, proof in script:
        if code is None:
            if not wrong:
                result = await demo.emulator.scan(openid, f"bind:{klass.code}")
                expect("姓名" in (result.text or ""), f"scan: {result.text!r}")
        else:
            await demo.emulator.send_text(openid, code)
        await demo.emulator.send_text(openid, name)
        reply = (await demo.emulator.send_text(openid, proof)).text or ""
        if proof == "0000":
            expect("没有对上" in reply, f"a wrong proof was accepted: {reply!r}")
            wrong = reply
            continue
        reply = (await demo.emulator.send_text(openid, "妈妈")).text or ""
        expect("绑定成功" in reply, f"{name}: {reply!r}")
    mine = (await demo.emulator.send_text(b, "我的孩子")).text or ""
    expect("王小红" in mine and "孟婧语" in mine, f"two children: {mine!r}")
    return "wrong proof: " + wrong.splitlines()[0]


@step("the teacher sends a class notice from the chat, with a question to check it was understood")
async def teacher_sends(demo: Demo) -> str:
    t = demo.teacher
    for text in ["发通知", "周末防溺水提醒", "周末请看护好孩子：不去河边、水库、池塘玩水；不独自游泳。", "3",
                 "孩子可以和同学结伴去河边玩水吗？", "可以 不可以", "2", "2"]:  # fmt: skip
        await demo.emulator.send_text(t, text)
    reply = (await demo.emulator.send_text(t, "发送")).text or ""
    expect("已发送" in reply, f"not sent: {reply!r}")
    for _ in range(200):
        got = [len((await demo.emulator.inbox(o))["template"]) for o in demo.families]
        if all(got):
            return reply.splitlines()[0]
        await asyncio.sleep(0.05)
    raise StepFailed(f"cards arrived: {got}")


async def _open_page(demo: Demo, openid: str, url: str) -> tuple[aiohttp.ClientSession, str, str]:
    """Play the parent's phone: the card's link, WeChat's silent OAuth (the emulator), our page."""
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with browser.get(url, allow_redirects=False) as resp:
        authorize = resp.headers["Location"].partition("#")[0]
    async with browser.get(authorize + f"&emulator_openid={openid}", allow_redirects=False) as resp:
        callback = resp.headers["Location"]
    async with browser.get(callback) as resp:
        return browser, str(resp.url), await resp.text()


@step("a parent opens the card, answers wrongly, sees the right answer, then confirms")
async def parent_confirms_on_page(demo: Demo) -> str:
    import re

    a = demo.families[0]
    [card] = (await demo.emulator.inbox(a))["template"]
    browser, url, page = await _open_page(demo, a, card["url"])
    try:
        expect("防溺水" in page and "王小明" in page, "the page does not show the notice")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        expect(csrf is not None, "no form on the page")
        assert csrf is not None
        form = url.split("?")[0] + "/confirm"
        async with browser.post(form, data={"csrf": csrf.group(1), "answer": "0"}) as resp:
            wrong = await resp.text()
        expect("不可以" in wrong, "the right answer was not shown")
        csrf = re.search(r'name="csrf" value="([^"]+)"', wrong)
        assert csrf is not None
        async with browser.post(form, data={"csrf": csrf.group(1), "answer": "1"}) as resp:
            done = await resp.text()
        expect("已确认" in done, "not confirmed")
    finally:
        await browser.close()
    return "page → wrong answer → right answer shown → confirmed"


@step("another parent confirms by replying 确认 in the chat")
async def parent_confirms_in_chat(demo: Demo) -> str:
    b = demo.families[1]
    question = (await demo.emulator.send_text(b, "确认")).text or ""
    expect("小问题" in question, f"no question: {question!r}")
    reply = (await demo.emulator.send_text(b, "B")).text or ""
    expect("已确认" in reply, f"not confirmed: {reply!r}")
    return reply


@step("reminders go privately to the family who has not confirmed, then the teacher gets the list")
async def follow_up(demo: Demo) -> str:
    from bot.notices.followup import sweep
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    notices = NoticeService(demo.redis, demo.config, RosterStore(demo.redis))
    now = time.time()
    rounds = 0
    for hours in (2.1, 24.1, 25.5):  # time runs faster in the demo
        at = now + hours * 3600
        if clock.local(at).strftime("%H:%M") == "23:59":  # the one minute outside the demo's reminder window
            at += 60
        rounds += await sweep(notices, now=at)
    expect(rounds == 3, f"{rounds} follow-up rounds ran")
    a, b, c = demo.families
    for _ in range(200):
        counts = [len((await demo.emulator.inbox(o))["template"]) for o in (a, b, c, demo.teacher)]
        if counts == [1, 1, 3, 1]:
            break
        await asyncio.sleep(0.05)
    expect(counts == [1, 1, 3, 1], f"cards per family and teacher: {counts}")
    missing = (await demo.emulator.send_text(demo.teacher, "未确认")).text or ""
    expect("付宇" in missing and "王小明" not in missing, f"teacher's list: {missing!r}")
    return "2 reminders to 付宇's family only; teacher: " + missing.splitlines()[1]


@step("a parent and child take a two-minute lesson in the chat; the class's three rates")
async def lesson(demo: Demo) -> str:
    from bot.lessons import library
    from bot.lessons.progress import LessonStore
    from bot.lessons.report import build_report, rates_line
    from bot.roster.store import RosterStore

    c = demo.families[2]  # 付宇's family
    first = (await demo.emulator.send_text(c, "学习")).text or ""
    expect("开始" in first, f"no lesson offered: {first!r}")
    reply = (await demo.emulator.send_text(c, "开始")).text or ""
    progress = await LessonStore(demo.redis).progress(c, DEMO_SCHOOL, "20260323")
    expect(progress is not None, "no lesson in progress")
    assert progress is not None
    lesson = library().get(progress.lesson)
    expect(lesson is not None, f"unknown lesson {progress.lesson}")
    assert lesson is not None
    for _ in range(len(lesson.segments)):
        if any(q.text[:8] in reply for q in lesson.questions):
            break
        reply = (await demo.emulator.send_text(c, "继续")).text or ""
    for q in lesson.questions:
        reply = (await demo.emulator.send_text(c, q.answer)).text or ""
    expect("分" in reply or "通过" in reply or "合格" in reply, f"no score: {reply!r}")
    report = await build_report(demo.redis, RosterStore(demo.redis), school=DEMO_SCHOOL, class_id="3-2")
    score = next((line for line in reply.splitlines() if "分" in line), reply.splitlines()[0])
    return f"{lesson.title}: {score}\n        三年级（2）班 {rates_line(report.totals)}"


@step("the safety calendar: what goes out in the next 60 days, and one campaign fired to the demo school")
async def campaigns(demo: Demo) -> str:
    from bot.campaigns.admin import format_preview
    from bot.campaigns.runner import build_runner

    runner = build_runner(demo.redis, demo.config)
    preview = await runner.preview(60, school=DEMO_SCHOOL)
    expect(preview.entries, "nothing planned in the next 60 days")
    lines = format_preview(preview, brief=True)
    entry = preview.entries[0]
    report = await runner.fire_early(entry.firing)
    expect(report.fired and report.notices, f"not fired: {report}")
    parent = demo.families[0]
    for _ in range(200):
        cards = (await demo.emulator.inbox(parent))["template"]
        if any(c["data"].get("thing1") == card_title(entry.rendered.title) for c in cards):
            break
        await asyncio.sleep(0.05)
    else:
        raise StepFailed("the campaign's card did not reach the demo school's parents")
    shown = "\n        ".join(lines[1:6])
    return f"{lines[0]}\n        {shown}\n        fired now: 【{entry.rendered.title}】 → the demo school's families"


# -- running ----------------------------------------------------------------------------------
def demo_config(cfg: Config, *, once: bool) -> tuple[Config, str | None]:
    """Fill in what the demo needs: emulator credentials, the emulator as API base, free ports."""
    w = cfg.wechat
    w.app_id = w.app_id or "wxd3m05afebe11"
    w.app_secret = w.app_secret or secrets.token_hex(16)
    w.token = w.token or secrets.token_hex(8)
    w.aes_key = w.aes_key or base64.b64encode(secrets.token_bytes(32)).decode()[:43]
    # The demo runs at any hour: no quiet hours, reminders whenever the walkthrough fires them.
    cfg.delivery.quiet_start = cfg.delivery.quiet_end = "00:00"
    cfg.notices.reminder_window_start, cfg.notices.reminder_window_end = "00:00", "23:59"
    tmpdir = None
    if once:
        # A run of its own: fresh Redis data, ports nobody else uses (a `make demo` may be running).
        tmpdir = tempfile.mkdtemp(prefix="safebell-demo-")
        cfg.redis.url = ""
        cfg.redis.data_dir = f"{tmpdir}/redis"
        cfg.server.port = _free_port()
        cfg.emulator.port = _free_port()
    emulator = cfg.emulator_base_url()
    w.api_base = emulator
    w.oauth_base = emulator
    cfg.emulator.callback_url = f"{cfg.server.base_url()}/wechat"
    return cfg, tmpdir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def walkthrough(demo: Demo, out: Callable[[str], None]) -> bool:
    ok = True
    for i, (title, func) in enumerate(STEPS, 1):
        started = time.monotonic()
        try:
            detail = await func(demo)
        except Exception as exc:  # a failed step is reported, and the walkthrough goes on
            ok = False
            out(f"  ✗ {i:2d}. {title}\n        {type(exc).__name__}: {exc}")
            continue
        ms = (time.monotonic() - started) * 1000
        out(f"  ✓ {i:2d}. {title}  ({ms:.0f} ms)" + (f"\n        {detail}" if detail else ""))
    return ok


async def _run(cfg: Config, *, once: bool) -> int:
    redis = connect(cfg.redis.url)
    api = WeChatAPI(cfg.wechat, redis)
    emulator_runner = await start_site(create_emulator_app(cfg), cfg.emulator.host, cfg.emulator.port)
    bot_runner = await start_site(with_demo(create_app(cfg, redis, api=api)), cfg.server.host, cfg.server.port)
    worker = build_worker(cfg, redis, api, name="demo-worker")
    worker_task = asyncio.create_task(worker.run())
    sched = build_scheduler(cfg, redis, api)
    sched.scheduler.start()
    http = aiohttp.ClientSession()
    bot_url = cfg.server.base_url()
    emulator = EmulatorClient(cfg.emulator_base_url(), http)
    demo = Demo(cfg, redis, api, emulator, http, bot_url)

    def out(line: str) -> None:
        print(line, flush=True)

    out(f"\nSafeBell demo ({cfg.account.name})")
    out(f"  play a parent: {bot_url}/demo   console: {bot_url}/console")
    out(f"  bot:       {bot_url}/wechat   (health: {bot_url}/healthz, metrics: {bot_url}/metrics)")
    out(f"  emulator:  {cfg.emulator_base_url()}/_emulator/stats")
    out(f"  redis:     {cfg.redis.url}\n")
    out("Walkthrough:")
    try:
        ok = await walkthrough(demo, out)
        out("\nAll steps passed." if ok else "\nSome steps FAILED (see ✗ above).")
        if not once:
            out("The system keeps running: try the URLs above. Ctrl-C stops it.")
            await wait_for_signal()
        return 0 if ok else 1
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker_task, 5)
        sched.scheduler.shutdown(wait=False)
        await http.close()
        await bot_runner.cleanup()
        await emulator_runner.cleanup()
        await api.close()
        await redis.aclose()


def run_demo(cfg: Config, *, once: bool) -> int:
    cfg, tmpdir = demo_config(cfg, once=once)
    for name, host, port in (
        ("server", cfg.server.host, cfg.server.port),
        ("emulator", cfg.emulator.host, cfg.emulator.port),
    ):
        if not _port_free(host, port):
            print(
                f"port {port} is taken: set {name}.port in a config file or BOT__{name.upper()}__PORT", file=sys.stderr
            )
            return 2
    server: EmbeddedRedis | None = None
    if not cfg.redis.url:
        server = EmbeddedRedis(cfg.redis.data_dir, binary=cfg.redis.server_binary)
        cfg.redis.url = server.start()
    try:
        return asyncio.run(_run(cfg, once=once))
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
