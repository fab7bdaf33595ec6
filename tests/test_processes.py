"""Real processes: `bot serve` configured only by BOT__ variables, `--workers 2`, the worker, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.config import Config
from bot.delivery.outbox import enqueue_text
from bot.delivery.worker import Worker, WorkerContext
from bot.paths import ROOT
from bot.store import keys
from bot.store.embedded import EmbeddedRedis
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import follower
from bot.wechat.emulator.follower import build_callback, build_verification, read_reply

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(config: Config, port: int, mode: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    return {
        **clean,
        "BOT__WECHAT__TOKEN": config.wechat.token,
        "BOT__WECHAT__AES_KEY": config.wechat.aes_key,
        "BOT__WECHAT__APP_ID": config.wechat.app_id,
        "BOT__WECHAT__APP_SECRET": config.wechat.app_secret,
        "BOT__WECHAT__ENCRYPT_MODE": mode,
        "BOT__WECHAT__API_BASE": config.wechat.api_base,
        "BOT__SERVER__HOST": "127.0.0.1",
        "BOT__SERVER__PORT": str(port),
        "BOT__REDIS__URL": config.redis.url,
    }


def wait_until_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bot exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else b''!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("bot did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve(config: Config, mode: str, workers: int = 1) -> Iterator[str]:
    """`bot serve` in its own process, configured only through BOT__ variables."""
    port = free_port()
    args = [sys.executable, "-m", "bot", "serve"] + (["--workers", str(workers)] if workers > 1 else [])
    proc = subprocess.Popen(args, env=env_for(config, port, mode), cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_until_up(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.mark.parametrize("mode", ["safe", "plain"])
async def test_serve_configured_only_by_environment_answers_verification_and_messages(
    config: Config, redis: Redis, emulator: object, mode: str
) -> None:
    from test_callback import OPENID, _all_kinds

    config.wechat.encrypt_mode = mode  # type: ignore[assignment]
    assert config.wechat.api_base == emulator.url  # type: ignore[attr-defined]  # the emulator is WeChat's API
    with serve(config, mode) as base:
        async with aiohttp.ClientSession() as http:
            params = build_verification(config.wechat, "echo-123")
            async with http.get(f"{base}/wechat", params=params) as resp:
                assert resp.status == 200 and await resp.text() == "echo-123"
            xml = follower.text_message("gh_x", "oProc0000000000000000000000001", "帮助")
            p, body = build_callback(config.wechat, xml)
            async with http.post(f"{base}/wechat", params=p, data=body) as resp:
                assert resp.status == 200
                raw = await resp.text()
            if mode == "safe":  # decrypted exactly as wechatpy's users would
                doc = xmltodict.parse(raw)["xml"]
                crypto = WeChatCrypto(config.wechat.token, config.wechat.aes_key, config.wechat.app_id)
                raw = crypto.decrypt_message(raw, doc["MsgSignature"], doc["TimeStamp"], doc["Nonce"])
            assert "平安铃" in xmltodict.parse(raw)["xml"]["Content"]
            # every message and event type WeChat sends: a 200 and a valid reply or "success"
            for kind, xml in _all_kinds():
                p, body = build_callback(config.wechat, xml)
                async with http.post(f"{base}/wechat", params=p, data=body) as resp:
                    assert resp.status == 200, kind
                    plain = read_reply(config.wechat, await resp.read())  # raises if WeChat would not take it
                if plain not in ("", "success"):
                    reply = follower.parse_reply(plain)
                    assert reply is not None and reply["to"] == OPENID, kind


async def test_serve_with_two_workers_answers_on_one_port_from_two_processes(config: Config, redis: Redis) -> None:
    pids: set[int] = set()
    with serve(config, "safe", workers=2) as base:
        # The port answers as soon as the first child listens: keep asking until both have answered.
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            # A fresh connection each time, so the kernel spreads them across the processes.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                xml = follower.text_message("gh_x", "oProc0000000000000000000000002", "帮助")
                p, body = build_callback(config.wechat, xml)
                async with http.post(f"{base}/wechat", params=p, data=body) as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/healthz") as resp:
                    pids.add(int((await resp.json())["pid"]))
            await asyncio.sleep(0.02)
    assert len(pids) == 2


async def test_worker_sends_outbox_jobs_and_a_crashed_workers_jobs_are_reclaimed(
    config: Config, redis: Redis, emulator: object
) -> None:
    from bot.wechat.emulator import EmulatorClient

    em: EmulatorClient = emulator.client  # type: ignore[attr-defined]
    [openid] = await em.create_followers(1)
    await em.send_text(openid, "你好")  # opens the customer-service window, like a real parent would
    config.worker.reclaim_idle = 0.2
    api = WeChatAPI(config.wechat, redis)
    try:
        # a worker that read a job and died before acknowledging it
        dead = Worker(WorkerContext(config, redis, api), name="dead")
        await dead.ensure_group()
        await enqueue_text(redis, openid, "第一条")
        await redis.xreadgroup(keys.OUTBOX_GROUP, "dead", {keys.outbox(): ">"}, count=10)
        await enqueue_text(redis, openid, "第二条")
        await asyncio.sleep(0.3)
        live = Worker(WorkerContext(config, redis, api), name="live")
        done = await live.run(burst=True)
    finally:
        await api.close()
    assert done == 2
    inbox = await em.inbox(openid)
    assert sorted(m["content"] for m in inbox["custom"]) == ["第一条", "第二条"]
    assert await redis.xlen(keys.outbox()) == 0


def test_embedded_redis_keeps_an_append_only_file_and_stops_cleanly(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r")
    url = server.start()
    assert url.startswith("unix://")
    import redis as sync_redis

    client = sync_redis.Redis.from_url(url)
    client.set("k", "v")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()
    server.stop()
    assert any((tmp_path / "r").rglob("*.aof*"))
    # a restart finds the data again
    again = EmbeddedRedis(tmp_path / "r")
    client = sync_redis.Redis.from_url(again.start())
    assert client.get("k") == b"v"
    client.close()
    again.stop()


def test_demo_once_runs_the_walkthrough_and_exits_0() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--once"],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All steps passed" in result.stdout and "✗" not in result.stdout
