"""Binding parents and teachers through the emulator: real signed callbacks, real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import create_app
from bot.config import Config
from bot.roster import chat as roster_chat
from bot.roster.model import School, Who
from bot.roster.store import ClassInfo, RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.emulator import EmulatorClient

SCHOOL = "t-s1"
CLASS = "3-2"
OTHER_CLASS = "3-3"
STUDENTS = {"20260301": "王小明", "20260302": "李小红", "20260303": "张伟"}


@dataclass
class World:
    em: EmulatorClient
    store: RosterStore
    redis: Redis
    info: ClassInfo
    other: ClassInfo
    config: Config

    async def say(self, openid: str, text: str) -> str:
        result = await self.em.send_text(openid, text)
        assert result.status == 200, result
        return result.text or ""

    async def who(self, openid: str) -> Who:
        return await self.store.who(openid)


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    roster_chat.forget_directory()
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", "d1", "demo"))
    info = await store.ensure_class(SCHOOL, CLASS)
    other = await store.ensure_class(SCHOOL, OTHER_CLASS)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={sid: f"{n}|a" for sid, n in STUDENTS.items()})
    await redis.hset(keys.class_students(SCHOOL, OTHER_CLASS), mapping={"20260399": "王小明|a"})
    server = await aiohttp_server(create_app(config, redis))
    await emulator.client.configure(callback_url=str(server.make_url("/wechat")))
    yield World(emulator.client, store, redis, info, other, config)
    roster_chat.forget_directory()


async def bind(w: World, openid: str, code: str, name: str, proof: str, relation: str = "妈妈") -> str:
    assert "姓名" in await w.say(openid, code)
    assert "后4位" in await w.say(openid, name)
    assert "您是孩子的" in await w.say(openid, proof)
    return await w.say(openid, relation)


async def test_a_parent_binds_by_scanning_the_class_qr_code(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    result = await world.em.scan(parent, f"bind:{world.info.code}")
    assert "姓名" in (result.text or "")
    assert "后4位" in await world.say(parent, "王小明")
    assert "您是孩子的" in await world.say(parent, "0301")
    reply = await world.say(parent, "爸爸")
    assert "绑定成功" in reply and "王小明" in reply
    who = await world.who(parent)
    assert [(c.school, c.class_id, c.student, c.relation) for c in who.children] == [(SCHOOL, CLASS, "20260301", "f")]
    links = await world.store.guardians(SCHOOL, CLASS)
    assert [(g.openid, g.relation) for g in links["20260301"]] == [(parent, "f")]


async def test_a_parent_binds_by_sending_the_class_code_in_any_case(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    reply = await bind(world, parent, world.info.code.lower(), "李小红", "0302", "妈妈")
    assert "绑定成功" in reply
    assert (await world.who(parent)).children[0].student == "20260302"


async def test_a_same_name_child_in_another_class_is_told_apart_by_the_class_code(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    assert "绑定成功" in await bind(world, parent, world.other.code, "王小明", "0399")
    assert (await world.who(parent)).children[0].class_id == OTHER_CLASS


async def test_an_unknown_code_gets_a_kind_hint(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    assert "没有找到班级码" in await world.say(parent, "ZZZ9ZZ")


async def test_five_wrong_proofs_in_an_hour_pause_binding_for_that_hour(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    await world.say(parent, world.info.code)
    replies = []
    for _ in range(5):
        await world.say(parent, "王小明")
        replies.append(await world.say(parent, "9999"))
    assert "还可以试4次" in replies[0] and "还可以试1次" in replies[3]
    assert "暂停一小时" in replies[4]
    # even the right answer is refused now, and nothing was bound
    assert "暂停一小时" in await world.say(parent, world.info.code)
    assert "暂停一小时" in await world.say(parent, "绑定")
    assert not (await world.who(parent)).children
    ttl = await world.redis.ttl(keys.bind_failures(parent))
    assert 0 < ttl <= world.config.roster.bind_failure_window


async def test_unbinding_does_not_lift_a_pause(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    assert "绑定成功" in await bind(world, parent, world.info.code, "王小明", "0301")
    await world.say(parent, world.info.code)  # now guessing at another child
    for _ in range(5):
        await world.say(parent, "李小红")
        last = await world.say(parent, "9999")
    assert "暂停一小时" in last
    assert "确定解除" in await world.say(parent, "解绑")
    assert "个人信息已全部删除" in await world.say(parent, "确定")
    assert not await world.redis.exists(keys.identity(parent), keys.chat_state(parent))
    # the count of wrong proofs outlives the unbinding (it expires with its hour), so unbinding and
    # binding one's own child again does not buy five more guesses
    assert "暂停一小时" in await world.say(parent, world.info.code)
    assert "暂停一小时" in await world.say(parent, "绑定")


async def test_a_wrong_name_and_a_wrong_proof_look_the_same_to_the_parent(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    await world.say(parent, world.info.code)
    await world.say(parent, "不存在的名字")
    wrong_name = await world.say(parent, "0301")
    await world.say(parent, "王小明")
    wrong_proof = await world.say(parent, "0000")
    assert wrong_name.replace("4", "3") == wrong_proof.replace("4", "3")


async def test_one_parent_two_children_and_one_child_two_guardians(world: World) -> None:
    mum, dad = await world.em.create_followers(2)
    assert "绑定成功" in await bind(world, mum, world.info.code, "王小明", "0301", "妈妈")
    assert "绑定成功" in await bind(world, mum, world.info.code, "张伟", "0303", "妈妈")
    assert "绑定成功" in await bind(world, dad, world.info.code, "王小明", "0301", "爸爸")
    assert {c.student for c in (await world.who(mum)).children} == {"20260301", "20260303"}
    links = await world.store.guardians(SCHOOL, CLASS)
    assert {(g.openid, g.relation) for g in links["20260301"]} == {(mum, "m"), (dad, "f")}
    listing = await world.say(mum, "我的孩子")
    assert "王小明" in listing and "张伟" in listing


async def test_unbinding_the_last_child_deletes_the_guardians_data(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    await bind(world, parent, world.info.code, "王小明", "0301")
    assert "确定解除" in await world.say(parent, "解绑")
    reply = await world.say(parent, "确定")
    assert "已解除" in reply and "个人信息已全部删除" in reply
    assert not await world.redis.exists(keys.identity(parent), keys.chat_state(parent), keys.bind_failures(parent))
    assert "20260301" not in await world.store.guardians(SCHOOL, CLASS)


async def test_unbinding_one_of_two_children_keeps_the_other(world: World) -> None:
    [parent] = await world.em.create_followers(1)
    await bind(world, parent, world.info.code, "王小明", "0301")
    await bind(world, parent, world.info.code, "张伟", "0303")
    assert "请回复序号" in await world.say(parent, "解绑")
    assert "张伟" in await world.say(parent, "2")
    reply = await world.say(parent, "确定")
    assert "已解除" in reply and "个人信息" not in reply
    assert [c.student for c in (await world.who(parent)).children] == ["20260301"]


async def test_a_teacher_binds_with_an_invite_lists_bindings_and_removes_a_wrong_one(world: World) -> None:
    teacher, parent, stranger = await world.em.create_followers(3)
    await bind(world, parent, world.info.code, "王小明", "0301", "爸爸")
    code = await world.store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    reply = await world.say(teacher, code.lower())
    assert "平安路小学" in reply and "班主任" in reply
    assert (await world.store.class_info(SCHOOL, CLASS)).teacher == teacher  # type: ignore[union-attr]
    assert "邀请码无效" in await world.say(stranger, code)  # an invite works once

    listing = await world.say(teacher, "家长名单")
    assert "1/3" in listing and "1. 王小明：爸爸" in listing and "李小红" in listing  # 李小红 is not bound yet
    assert "仅供班主任" in await world.say(stranger, "家长名单")
    assert "没有这个序号" in await world.say(stranger, "移除 1")

    assert "已移除" in await world.say(teacher, "移除 1")
    assert not (await world.who(parent)).children
    outbox = [fields for _, fields in await world.redis.xrange(keys.outbox())]
    assert {"k": "cs_text", "to": parent, "text": outbox[-1]["text"]} == outbox[-1] and "移除" in outbox[-1]["text"]


async def test_a_teacher_gets_the_class_qr_code_and_a_parent_who_scans_it_binds(world: World) -> None:
    teacher, parent = await world.em.create_followers(2)
    await world.say(teacher, await world.store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600))
    reply = await world.say(teacher, "班级码")
    assert f"班级码 {world.info.code}" in reply and "showqrcode?ticket=" in reply
    [qr] = [q for q in await world.em.qrcodes() if q["scene"] == f"bind:{world.info.code}"]
    assert qr["ticket"] in reply  # the code the teacher prints is the one WeChat made for that scene
    result = await world.em.scan(parent, qr["scene"])
    assert "姓名" in (result.text or "")
    assert "后4位" in await world.say(parent, "张伟")
    assert "您是孩子的" in await world.say(parent, "0303")
    assert "绑定成功" in await world.say(parent, "祖辈")
    assert (await world.who(parent)).children[0].student == "20260303"


async def test_with_approval_on_a_binding_waits_for_the_class_teacher(world: World) -> None:
    await world.store.put_school(School(SCHOOL, "平安路小学", "d1", "demo"), approval=True)
    teacher, parent = await world.em.create_followers(2)
    code = await world.store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    await world.say(teacher, code)
    assert "班主任确认后" in await bind(world, parent, world.info.code, "李小红", "0302")
    assert not (await world.who(parent)).children
    pending = await world.say(teacher, "审核")
    assert "1. 三年级（2）班 李小红：妈妈" in pending
    assert "已同意" in await world.say(teacher, "同意 1")
    assert (await world.who(parent)).children[0].student == "20260302"
    assert "没有这个序号" in await world.say(teacher, "同意 1")  # decided once


async def test_the_menu_is_created_at_start_when_configured(
    config: Config, redis: Redis, emulator: Any, aiohttp_server: Any
) -> None:
    config.wechat.menu_on_start = True
    await aiohttp_server(create_app(config, redis))
    menu = await emulator.client.menu()
    assert menu is not None
    names = [b["name"] for b in menu["button"]] + [s["name"] for b in menu["button"] for s in b.get("sub_button", [])]
    assert {"绑定孩子", "我的孩子", "待确认通知", "安全课堂", "帮助"} <= set(names)  # binding, notices, lessons, help
