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

import aiohttp

from bot.app import create_app
from bot.config import Config
from bot.delivery.outbox import enqueue_text
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
    notes: list[str] = field(default_factory=list)


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


# -- running ----------------------------------------------------------------------------------
def demo_config(cfg: Config, *, once: bool) -> tuple[Config, str | None]:
    """Fill in what the demo needs: emulator credentials, the emulator as API base, free ports."""
    w = cfg.wechat
    w.app_id = w.app_id or "wxd3m05afebe11"
    w.app_secret = w.app_secret or secrets.token_hex(16)
    w.token = w.token or secrets.token_hex(8)
    w.aes_key = w.aes_key or base64.b64encode(secrets.token_bytes(32)).decode()[:43]
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
    bot_runner = await start_site(create_app(cfg, redis, api=api), cfg.server.host, cfg.server.port)
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
