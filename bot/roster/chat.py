"""Binding in the chat: parents prove who their child is; teachers join with an invite and look after
their class's bindings. Every reply is short, kind, and says what to send next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bot.chat.router import Command, Event, MenuKey, Pattern, Router, State, Update
from bot.chat.state import ChatState
from bot.chat.texts import Texts
from bot.config import Config
from bot.delivery.outbox import enqueue_text
from bot.roster import authz
from bot.roster.model import RELATION_WORDS, RELATIONS, ChildRef, Who, class_label
from bot.roster.store import CODE_ALPHABET, RosterStore
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import WeChatError

router = Router(name="roster")

BIND_KEY = "BIND"
MY_KEY = "MY_CHILDREN"
SCENE_PREFIX = "bind:"
PAGE_ROWS = 20  # a passive reply is limited to about 2 KB: 20 short rows and a header fit

_CODE = f"[{CODE_ALPHABET}{CODE_ALPHABET.lower()}]"
CLASS_CODE_PATTERN = rf"(?:绑定|绑定孩子)?\s*(?=\S*\d)({_CODE}{{6}})"
INVITE_PATTERN = rf"(?:教师|老师|邀请码)?\s*([Tt](?=\S*\d){_CODE}{{7}})"


@dataclass(frozen=True, slots=True)
class Directory:
    """School names and districts, cached per process (1,300 entries; they change rarely)."""

    names: dict[str, str]
    districts: dict[str, str]
    loaded: float


_directory: Directory | None = None
DIRECTORY_TTL = 60.0


async def directory(store: RosterStore) -> Directory:
    global _directory
    if _directory is None or time.monotonic() - _directory.loaded > DIRECTORY_TTL:
        schools = await store.schools()
        _directory = Directory(
            {s.id: s.name for s in schools.values()}, {s.id: s.district for s in schools.values()}, time.monotonic()
        )
    return _directory


def forget_directory() -> None:
    """Drop the cached directory (after an import, and between tests)."""
    global _directory
    _directory = None


async def load_identity(user: Any, data: dict[str, Any]) -> None:
    """User loader: who this WeChat user is, and what they may do."""
    who = Who.decode(data.get("identity") or "")
    data["who"] = who
    districts = (await directory(data["roster"])).districts if (who.children or who.teaches) else {}
    data["subject"] = authz.Subject.from_who(user.openid, who, districts)
    user.facts["who"] = who


# -- parents: binding ---------------------------------------------------------------------------
async def _start(store: RosterStore, state: ChatState, texts: Texts, openid: str, config: Config, code: str) -> str:
    if await store.bind_failures(openid) >= config.roster.bind_max_failures:
        state.clear()
        return texts.render("roster/locked")
    info = await store.class_by_code(code)
    if info is None:
        return texts.render("roster/code_unknown", code=code.upper())
    names = (await directory(store)).names
    state.set("bind:name", s=info.school, c=info.id)
    return texts.render("roster/ask_name", school=names.get(info.school, ""), klass=class_label(info.id))


@router.handler(Event("subscribe_scan", "scan"))
async def scanned(
    update: Update, store: RosterStore, state: ChatState, texts: Texts, openid: str, config: Config
) -> str:
    scene = update.key
    if not scene.startswith(SCENE_PREFIX):
        return texts.render("welcome", account_name=config.account.name) if update.event == "subscribe_scan" else ""
    reply = await _start(store, state, texts, openid, config, scene[len(SCENE_PREFIX) :])
    if update.event == "subscribe_scan":
        return texts.render("welcome_scan", account_name=config.account.name) + "\n\n" + reply
    return reply


@router.handler(Pattern(CLASS_CODE_PATTERN))
async def code_sent(match: Any, store: RosterStore, state: ChatState, texts: Texts, openid: str, config: Config) -> str:
    return await _start(store, state, texts, openid, config, str(match.group(1)).upper())


@router.handler(Command("绑定", "绑定孩子", "绑定班级"))
@router.handler(MenuKey(BIND_KEY))
async def ask_code(store: RosterStore, texts: Texts, openid: str, config: Config) -> str:
    if await store.bind_failures(openid) >= config.roster.bind_max_failures:
        return texts.render("roster/locked")
    return texts.render("roster/ask_code")


@router.handler(State("bind:name"), Pattern(r".+"))
async def name_given(text: str, store: RosterStore, state: ChatState, texts: Texts) -> str:
    settings = await store.settings(state.get("s"))
    state.update(name=text[:20])
    state.set("bind:proof", **state.data)
    return texts.render("roster/ask_proof", proof=settings.proof)


@router.handler(State("bind:proof"), Pattern(r".+"))
async def proof_given(
    text: str, store: RosterStore, state: ChatState, texts: Texts, openid: str, config: Config, who: Who
) -> str:
    school, cid, name = state.get("s"), state.get("c"), state.get("name", "")
    student = await store.find_student(school, cid, name, text)
    if student is None:
        failures = await store.record_bind_failure(openid, config.roster.bind_failure_window)
        left = config.roster.bind_max_failures - failures
        if left <= 0:
            state.clear()
            return texts.render("roster/locked")
        state.set("bind:name", s=school, c=cid)
        return texts.render("roster/no_match", left=left)
    if any(c.school == school and c.student == student.id for c in who.children):
        state.clear()
        return texts.render("roster/my_children", children=await _describe(store, who.children))
    state.set("bind:relation", s=school, c=cid, st=student.id)
    return texts.render("roster/ask_relation")


@router.handler(State("bind:relation"), Pattern(r".+"))
async def relation_given(
    text: str, store: RosterStore, state: ChatState, texts: Texts, openid: str, redis: Redis
) -> str:
    relation = RELATION_WORDS.get(text)
    if relation is None:
        return texts.render("roster/relation_unknown")
    student = await store.student(state.get("s"), state.get("c"), state.get("st"))
    state.clear()
    if student is None:  # the roster changed under us
        return texts.render("roster/ask_code")
    names = (await directory(store)).names
    settings = await store.settings(student.school)
    if settings.approval:
        await store.add_pending(openid, student, relation)
        info = await store.class_info(student.school, student.class_id)
        if info and info.teacher:
            text_for_teacher = texts.render("roster/teacher_pending_notice", klass=class_label(student.class_id))
            await enqueue_text(redis, info.teacher, text_for_teacher)
        return texts.render("roster/pending")
    await store.bind_guardian(openid, student, relation)
    return texts.render(
        "roster/bound", child=student.name, school=names.get(student.school, ""), klass=class_label(student.class_id)
    )


# -- parents: what they have, and unbinding -----------------------------------------------------
async def _describe(store: RosterStore, children: tuple[ChildRef, ...]) -> list[dict[str, str]]:
    names = (await directory(store)).names
    out = []
    for c in children:
        s = await store.student(c.school, c.class_id, c.student)
        out.append(
            {
                "name": s.name if s else "（已离校）",
                "school": names.get(c.school, ""),
                "klass": class_label(c.class_id),
                "relation": RELATIONS.get(c.relation, "家长"),
            }
        )
    return out


@router.handler(Command("我的孩子", "我的绑定", "绑定信息"))
@router.handler(MenuKey(MY_KEY))
async def my_children(store: RosterStore, texts: Texts, who: Who) -> str:
    return texts.render("roster/my_children", children=await _describe(store, who.children))


@router.handler(Command("解绑", "解除绑定", "取消绑定"))
async def unbind_start(store: RosterStore, state: ChatState, texts: Texts, who: Who) -> str:
    if not who.children:
        return texts.render("roster/nothing_bound")
    described = await _describe(store, who.children)
    if len(who.children) == 1:
        c = who.children[0]
        state.set("unbind:confirm", s=c.school, st=c.student, name=described[0]["name"])
        return texts.render("roster/unbind_confirm", child=described[0]["name"])
    state.set("unbind:pick")
    return texts.render("roster/unbind_pick", children=described)


@router.handler(State("unbind:pick"), Pattern(r"\d{1,2}"))
async def unbind_pick(text: str, store: RosterStore, state: ChatState, texts: Texts, who: Who) -> str:
    n = int(text)
    if not 1 <= n <= len(who.children):
        return texts.render("roster/bad_number", command="解绑")
    c = who.children[n - 1]
    described = await _describe(store, (c,))
    state.set("unbind:confirm", s=c.school, st=c.student, name=described[0]["name"])
    return texts.render("roster/unbind_confirm", child=described[0]["name"])


@router.handler(State("unbind:confirm"), Command("确定", "确认", "是", "好"))
async def unbind_confirmed(store: RosterStore, state: ChatState, texts: Texts, openid: str, who: Who) -> str:
    school, sid, name = state.get("s"), state.get("st"), state.get("name", "")
    state.clear()
    child = next((c for c in who.children if c.school == school and c.student == sid), None)
    if child is None:
        return texts.render("roster/nothing_bound")
    after = await store.unbind_guardian(openid, child)
    erased = not after.children and not after.teaches
    if erased:  # nothing links this person any more: delete what we kept about them
        from bot.privacy import erase_guardian

        await erase_guardian(store.r, openid)
    return texts.render("roster/unbound", child=name, erased=erased)


# -- teachers -----------------------------------------------------------------------------------
@router.handler(Pattern(INVITE_PATTERN))
async def invite_sent(match: Any, store: RosterStore, texts: Texts, openid: str) -> str:
    refs = await store.redeem_teacher_invite(str(match.group(1)).upper(), openid)
    if refs is None:
        return texts.render("roster/invite_unknown")
    names = (await directory(store)).names
    classes = "、".join(class_label(r.class_id) + ("（班主任）" if r.role == "c" else "") for r in refs)
    settings = await store.settings(refs[0].school)
    return texts.render("roster/teacher_bound", school=names.get(refs[0].school, ""), classes=classes,
                        pending=settings.approval)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Row:
    school: str
    class_id: str
    student: str
    openid: str
    relation: str
    name: str


async def _class_rows(store: RosterStore, who: Who) -> tuple[list[dict[str, Any]], list[_Row]]:
    classes: list[dict[str, Any]] = []
    rows: list[_Row] = []
    for t in who.teaches:
        students = await store.students(t.school, t.class_id)
        links = await store.guardians(t.school, t.class_id)
        active = {sid: s for sid, s in students.items() if s.status == "a"}
        shown: list[dict[str, Any]] = []
        for sid, student in sorted(active.items(), key=lambda kv: kv[1].name):
            for link in links.get(sid, []):
                rows.append(_Row(t.school, t.class_id, sid, link.openid, link.relation, student.name))
                shown.append({"no": len(rows), "name": student.name, "relation": RELATIONS.get(link.relation, "家长")})
        classes.append(
            {
                "label": class_label(t.class_id),
                "total": len(active),
                "bound": sum(1 for sid in active if links.get(sid)),
                "missing": [
                    s.name for sid, s in sorted(active.items(), key=lambda kv: kv[1].name) if not links.get(sid)
                ],
                "rows": shown,
            }
        )
    return classes, rows


@router.handler(Command("家长名单", "绑定情况", "绑定名单"))
async def roster_list(store: RosterStore, state: ChatState, texts: Texts, who: Who) -> str:
    if not who.is_teacher:
        return texts.render("roster/not_teacher")
    classes, rows = await _class_rows(store, who)
    state.set("teacher:list", rows=[[r.school, r.class_id, r.student, r.openid] for r in rows])
    # Keep the reply inside WeChat's size limit: the first PAGE_ROWS rows; numbers stay valid.
    remaining = PAGE_ROWS
    for k in classes:
        k["rows"], remaining = k["rows"][:remaining], max(0, remaining - len(k["rows"]))
    return texts.render("roster/roster_list", classes=classes, any_rows=bool(rows))


@router.handler(Pattern(r"移除\s*(\d{1,4})"))
async def remove_binding(
    match: Any, store: RosterStore, state: ChatState, texts: Texts, subject: authz.Subject, redis: Redis
) -> str:
    rows = state.get("rows", []) if state.state == "teacher:list" else []
    n = int(match.group(1))
    if not 1 <= n <= len(rows):
        return texts.render("roster/bad_number", command="家长名单")
    school, cid, sid, guardian = rows[n - 1]
    districts = (await directory(store)).districts
    if not authz.can(subject, "manage", authz.StudentObj(districts.get(school, ""), school, cid, sid)):
        return texts.render("roster/not_teacher")
    student = await store.student(school, cid, sid)
    gwho = await store.who(guardian)
    child = next((c for c in gwho.children if c.school == school and c.student == sid), None)
    if child is not None:
        await store.unbind_guardian(guardian, child)
    relation = RELATIONS.get(child.relation if child else "o", "家长")
    child_name = student.name if student else ""
    await enqueue_text(redis, guardian, texts.render("roster/removed_notice", child=child_name))
    rows[n - 1] = ["", "", "", ""]
    state.update(rows=rows)
    return texts.render("roster/removed", name=child_name, relation=relation)


@router.handler(Command("审核", "绑定审核", "待审核"))
async def pending_list(store: RosterStore, state: ChatState, texts: Texts, who: Who) -> str:
    led = [t for t in who.teaches if t.role == "c"]
    if not led:
        return texts.render("roster/not_teacher")
    rows: list[list[str]] = []
    shown: list[dict[str, Any]] = []
    for school in sorted({t.school for t in led}):
        for cid, sid, openid, rel in await store.pending(school, [t.class_id for t in led if t.school == school]):
            student = await store.student(school, cid, sid)
            rows.append([school, cid, sid, openid, rel])
            shown.append({"no": len(rows), "klass": class_label(cid), "name": student.name if student else sid,
                          "relation": RELATIONS.get(rel, "家长")})  # fmt: skip
    state.set("teacher:pending", rows=rows)
    return texts.render("roster/pending_list", rows=shown[:PAGE_ROWS])


@router.handler(Pattern(r"(同意|拒绝)\s*(\d{1,4})"))
async def decide_pending(
    match: Any, store: RosterStore, state: ChatState, texts: Texts, subject: authz.Subject, redis: Redis
) -> str:
    rows = state.get("rows", []) if state.state == "teacher:pending" else []
    n = int(match.group(2))
    if not 1 <= n <= len(rows) or not rows[n - 1][0]:
        return texts.render("roster/bad_number", command="审核")
    school, cid, sid, openid, rel = rows[n - 1]
    districts = (await directory(store)).districts
    if not authz.can(subject, "approve", authz.StudentObj(districts.get(school, ""), school, cid, sid)):
        return texts.render("roster/not_teacher")
    rows[n - 1] = ["", "", "", "", ""]
    state.update(rows=rows)
    if not await store.resolve_pending(school, cid, sid, openid):
        return texts.render("roster/bad_number", command="审核")
    student = await store.student(school, cid, sid)
    if match.group(1) == "拒绝" or student is None:
        await enqueue_text(redis, openid, texts.render("roster/rejected_notice"))
        return texts.render("roster/rejected")
    await store.bind_guardian(openid, student, rel)
    await enqueue_text(redis, openid, texts.render("roster/approved_notice", child=student.name,
                                                   klass=class_label(cid)))  # fmt: skip
    return texts.render("roster/approved", name=student.name, relation=RELATIONS.get(rel, "家长"))


@router.handler(Command("班级码", "班级二维码", "二维码"))
async def class_codes(store: RosterStore, texts: Texts, who: Who, api: WeChatAPI) -> str:
    if not who.is_teacher:
        return texts.render("roster/ask_code")
    classes = []
    for t in who.teaches:
        info = await store.class_info(t.school, t.class_id)
        if info is None:
            continue
        try:
            qr = await api.create_qrcode(f"{SCENE_PREFIX}{info.code}")
            url = api.qrcode_image_url(qr.ticket)
        except WeChatError:
            url = "（暂时无法生成，请稍后再试）"
        classes.append({"label": class_label(t.class_id), "code": info.code, "qr": url})
    return texts.render("roster/class_codes", classes=classes)
