"""The roster in the console: classes and their binding figures, roster upload, printable class codes
and QR codes, and bindings to approve or remove.

An upload goes through the importer exactly as ``bot import roster`` does (``parse_roster`` →
``validate`` → ``apply``); rows naming a school outside the uploader's scope are rejected as unknown
(so the report tells nothing about other schools). The report lists every rejected row by the row
number Excel shows. Approving and removing bindings are the chat's class-teacher actions, with the
same messages to the family.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web

from bot.console.scope import (
    CLASS_RE,
    SCHOOL_RE,
    classes_in_scope,
    may_approve_class,
    may_manage_class,
    may_manage_school,
    may_view,
    schools_in_scope,
)
from bot.console.views import slots
from bot.console.web import CONSOLE, FORM, PREFIX, Console, Viewer, forbidden, message, not_found, redirect
from bot.delivery.outbox import enqueue_text
from bot.roster.chat import SCENE_PREFIX, directory, forget_directory
from bot.roster.importer import ImportFileError, Report, apply, parse_roster, validate
from bot.roster.model import ACTIVE, RELATIONS, ChildRef, class_label, decode_links
from bot.store import keys
from bot.store.redis import hgetall
from bot.wechat.errors import WeChatError
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

SHOWN_REJECTIONS = 500
QR_CACHE = 512
QR_TYPES = ("image/jpeg", "image/png", "image/gif", "image/svg+xml")
_qr_images: dict[str, tuple[str, bytes]] = {}


async def _district(c: Console, school: str) -> str:
    return (await directory(c.roster)).districts.get(school, "")


# -- overview -------------------------------------------------------------------------------------------
async def _class_rows(c: Console, school: str, class_ids: list[str]) -> list[dict[str, Any]]:
    infos = await c.roster.classes(school)
    pending = await hgetall(c.redis, keys.pending_bindings(school))
    waiting: dict[str, int] = {}
    for field in pending:
        cid = field.split("/", 1)[0]
        waiting[cid] = waiting.get(cid, 0) + 1
    async with c.redis.pipeline(transaction=False) as pipe:
        for cid in class_ids:
            pipe.hvals(keys.class_students(school, cid))
            pipe.hlen(keys.class_guardians(school, cid))
        replies = await pipe.execute()
    rows = []
    for i, cid in enumerate(class_ids):
        students = sum(1 for v in replies[2 * i] if v.endswith("|" + ACTIVE))
        info = infos.get(cid)
        rows.append({"class_id": cid, "label": class_label(cid), "code": info.code if info else "",
                     "teacher": bool(info and info.teacher), "students": students, "bound": int(replies[2 * i + 1]),
                     "pending": waiting.get(cid, 0)})  # fmt: skip
    return rows


async def roster_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    schools = await schools_in_scope(c, viewer)
    school = request.query.get("school", "")
    if not school and len(schools) == 1:
        school = schools[0][0]
    rows: list[dict[str, Any]] = []
    name = ""
    if school:
        if not SCHOOL_RE.match(school) or school not in dict(schools):
            return forbidden(viewer)
        name = dict(schools)[school]
        rows = await _class_rows(c, school, await classes_in_scope(c, viewer, school))
    district = await _district(c, school) if school else viewer.subject.district
    may_upload = viewer.is_admin and (
        may_manage_school(viewer.subject, district, school) if school else viewer.subject.role == "district_admin"
    )
    return c.page(viewer, "roster.html", nav="roster", title="名单与绑定", schools=schools, school=school,
                  school_name=name, rows=rows, may_upload=may_upload)  # fmt: skip


# -- upload ---------------------------------------------------------------------------------------------
async def upload(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    if not viewer.is_admin:
        return forbidden(viewer)
    form = request[FORM]
    filename, data = form.files.get("file", ("", b""))
    if not data:
        return message(400, "没有文件", "请选择一个 CSV 或 XLSX 名单文件再上传。", viewer=viewer)
    all_schools = await c.roster.schools()
    mine = {sid: s for sid, s in all_schools.items() if may_manage_school(viewer.subject, s.district, sid)}
    dry_run, partial = form.get("dry_run") == "1", form.get("partial") == "1"
    try:
        parsed = await asyncio.to_thread(parse_roster, data, filename or "upload.csv")
        report: Report = await asyncio.to_thread(validate, parsed, mine)
    except ImportFileError as exc:
        return _unreadable(c, viewer, str(exc), filename, dry_run, partial)
    except Exception:  # a file the importer should have refused plainly: a page, never a 500
        log.exception("roster upload %r by %s could not be read", filename[:80], viewer.subject.name)
        return _unreadable(c, viewer, "这个文件的内容无法识别：请用 Excel 另存为 .xlsx 或“CSV UTF-8”后再上传", filename,
                           dry_run, partial)  # fmt: skip
    result = None
    if not dry_run and (report.ok or partial):
        result = await apply(c.redis, report, partial=partial)
        forget_directory()
        slots.forget()
        schools = sorted({row.school for row in report.rows})
        summary = (
            f"{len(report.rows)} 行：新增{result.added}，更新{result.updated}，转班{result.moved}，"
            f"离校{result.left}，新班级{result.classes_created}；拒绝{len(report.rejected)} 行"
        )
        school = schools[0] if len(schools) == 1 else ""
        await c.record(viewer, "roster.import", school=school, target=filename[:80], summary=summary)
    status = 200 if report.ok or result is not None else 422
    return c.page(viewer, "upload.html", nav="roster", status=status, title="名单导入", error="", report=report,
                  result=result, filename=filename, dry_run=dry_run, partial=partial,
                  shown=report.rejected[:SHOWN_REJECTIONS])  # fmt: skip


def _unreadable(c: Console, viewer: Viewer, error: str, filename: str, dry_run: bool, partial: bool) -> web.Response:
    return c.page(viewer, "upload.html", nav="roster", status=400, title="名单导入", error=error, report=None,
                  result=None, filename=filename, dry_run=dry_run, partial=partial, shown=[])  # fmt: skip


# -- class codes and QR codes -------------------------------------------------------------------------------
async def codes(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    school, only = request.query.get("school", ""), request.query.get("class", "")
    if not SCHOOL_RE.match(school) or (only and not CLASS_RE.match(only)):
        return not_found(viewer)
    names = (await directory(c.roster)).names
    if school not in names:
        return not_found(viewer)
    allowed = await classes_in_scope(c, viewer, school)
    if only:
        if only not in allowed:
            return forbidden(viewer)
        allowed = [only]
    if not allowed:
        return forbidden(viewer)
    infos = await c.roster.classes(school)
    cards = [{"class_id": cid, "label": class_label(cid), "code": infos[cid].code} for cid in allowed if cid in infos]
    return c.page(viewer, "codes.html", nav="roster", title="班级码", school=school, school_name=names[school],
                  cards=cards, account=c.config.account.name)  # fmt: skip


async def _ticket(c: Console, school: str, class_id: str, code: str) -> str:
    """The class's permanent QR ticket, made once (WeChat keeps up to 100,000 permanent codes)."""
    key = keys.class_qr_tickets(school)
    ticket = await c.redis.hget(key, class_id)
    if ticket:
        return str(ticket)
    qr = await c.ctx.api.create_qrcode(f"{SCENE_PREFIX}{code}")
    await c.redis.hset(key, class_id, qr.ticket)
    return qr.ticket


def _unavailable() -> web.Response:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 200">'
        '<rect width="200" height="200" fill="#f2f3f5"/>'
        '<text x="100" y="104" font-size="14" text-anchor="middle" fill="#646a73">二维码暂不可用</text></svg>'
    )
    return web.Response(text=svg, status=503, content_type="image/svg+xml", headers={"Cache-Control": "no-store"})


async def qr_image(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """The class's QR code image, fetched from WeChat once and served from here (the page's CSP
    allows images from this site only, and the print page works without reaching WeChat again)."""
    c = request.config_dict[CONSOLE]
    school, cid = request.match_info["school"], request.match_info["class"]
    if not SCHOOL_RE.match(school) or not CLASS_RE.match(cid):
        return not_found(viewer)
    if not may_view(viewer.subject, await _district(c, school), school, cid):
        return forbidden(viewer)
    info = await c.roster.class_info(school, cid)
    if info is None:
        return not_found(viewer)
    cached = _qr_images.get(f"{school}/{cid}/{info.code}")
    if cached is None:
        try:
            ticket = await _ticket(c, school, cid, info.code)
            cached = await _fetch(c, c.ctx.api.qrcode_image_url(ticket))
        except (WeChatError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("QR code of %s/%s unavailable: %s", school, cid, type(exc).__name__)
            return _unavailable()
        if cached is None:
            return _unavailable()
        if len(_qr_images) >= QR_CACHE:
            _qr_images.clear()
        _qr_images[f"{school}/{cid}/{info.code}"] = cached
    content_type, body = cached
    return web.Response(body=body, content_type=content_type, headers={
        "Cache-Control": "private, max-age=86400", "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff"})  # fmt: skip


async def _fetch(c: Console, url: str) -> tuple[str, bytes] | None:
    if c.http is None or c.http.closed:
        c.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    async with c.http.get(url) as resp:
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if resp.status != 200 or content_type not in QR_TYPES:
            return None
        body = b""  # to the end (read(n) gives what has arrived so far): at most 1 MiB
        while len(body) <= 1024 * 1024 and (chunk := await resp.content.read(1024 * 1024 + 1 - len(body))):
            body += chunk
        return (content_type, body) if len(body) <= 1024 * 1024 else None


# -- bindings ---------------------------------------------------------------------------------------------
async def _class_from(c: Console, viewer: Viewer, school: str, cid: str) -> str | None:
    """The class's district if the viewer may view it (None otherwise, or when it does not exist)."""
    if not SCHOOL_RE.match(school) or not CLASS_RE.match(cid):
        return None
    district = await _district(c, school)
    if not district or not may_view(viewer.subject, district, school, cid):
        return None
    if await c.roster.class_info(school, cid) is None:
        return None
    return district


async def bindings(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    school, cid = request.query.get("school", ""), request.query.get("class", "")
    district = await _class_from(c, viewer, school, cid)
    if district is None:
        return forbidden(viewer)
    students = await c.roster.students(school, cid)
    links = await c.roster.guardians(school, cid)
    active = sorted((s for s in students.values() if s.status == ACTIVE), key=lambda s: s.name)
    names = (await directory(c.roster)).names
    may_manage = may_manage_class(viewer.subject, district, school, cid)
    if not may_manage:
        # A subject teacher: bindings are the class teacher's to run, and who has (not) bound, with
        # which WeChat, is a list of families like who has not confirmed: counts only.
        waiting = sum(1 for _cid, sid, _o, _r in await c.roster.pending(school, [cid]) if sid in students)
        bound_students = sum(1 for s in active if links.get(s.id))
        return c.page(viewer, "bindings.html", nav="roster", title=f"{class_label(cid)} 绑定", school=school,
                      class_id=cid, school_name=names.get(school, school), total=len(active),
                      bound_count=bound_students, waiting=waiting, names_hidden=True, flash="")  # fmt: skip
    pending = []
    for _cid, sid, openid, rel in await c.roster.pending(school, [cid]):
        student = students.get(sid)
        pending.append({"student": sid, "name": student.name if student else sid, "openid": openid,
                        "masked": mask_openid(openid), "relation": RELATIONS.get(rel, "家长")})  # fmt: skip
    bound, unbound = [], []
    for s in active:
        mine = links.get(s.id, [])
        if not mine:
            unbound.append(s.name)
        for link in mine:
            bound.append({"student": s.id, "name": s.name, "openid": link.openid, "masked": mask_openid(link.openid),
                          "relation": RELATIONS.get(link.relation, "家长")})  # fmt: skip
    return c.page(
        viewer, "bindings.html", nav="roster", title=f"{class_label(cid)} 绑定", school=school, class_id=cid,
        school_name=names.get(school, school), pending=pending, bound=bound, unbound=unbound, total=len(active),
        bound_count=len(active) - len(unbound), may_approve=may_approve_class(viewer.subject, district, school, cid),
        may_manage=may_manage, names_hidden=False, flash=request.query.get("flash", ""),
    )  # fmt: skip


async def decide(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    form = request[FORM]
    school, cid, sid, openid = (form.get(k) for k in ("school", "class", "student", "openid"))
    district = await _class_from(c, viewer, school, cid)
    if district is None or not may_approve_class(viewer.subject, district, school, cid):
        return forbidden(viewer)
    back = f"{PREFIX}/roster/bindings?school={school}&class={cid}"
    pending = {(p[1], p[2]): p[3] for p in await c.roster.pending(school, [cid])}
    relation = pending.get((sid, openid))
    if relation is None or not await c.roster.resolve_pending(school, cid, sid, openid):
        return redirect(back + "&flash=gone")
    student = await c.roster.student(school, cid, sid)
    texts = c.ctx.texts
    approve = form.get("decision") == "approve" and student is not None
    if approve and student is not None:
        await c.roster.bind_guardian(openid, student, relation)
        text = texts.render("roster/approved_notice", child=student.name, klass=class_label(cid))
        await enqueue_text(c.redis, openid, text)
    else:
        await enqueue_text(c.redis, openid, texts.render("roster/rejected_notice"))
    summary = f"{class_label(cid)} 学号{sid} 的{RELATIONS.get(relation, '家长')}（{mask_openid(openid)}）"
    action = "binding.approve" if approve else "binding.reject"
    await c.record(viewer, action, district=district, school=school, classes=(cid,), target=sid, summary=summary)
    return redirect(back + ("&flash=approved" if approve else "&flash=rejected"))


async def remove(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    form = request[FORM]
    school, cid, sid, openid = (form.get(k) for k in ("school", "class", "student", "openid"))
    district = await _class_from(c, viewer, school, cid)
    if district is None or not may_manage_class(viewer.subject, district, school, cid):
        return forbidden(viewer)
    back = f"{PREFIX}/roster/bindings?school={school}&class={cid}"
    links = decode_links(await c.redis.hget(keys.class_guardians(school, cid), sid))  # type: ignore[arg-type]
    link = next((g for g in links if g.openid == openid), None)
    if link is None:
        return redirect(back + "&flash=gone")
    student = await c.roster.student(school, cid, sid)
    await c.roster.unbind_guardian(openid, ChildRef(school, cid, sid, link.relation))
    child = student.name if student else ""
    await enqueue_text(c.redis, openid, c.ctx.texts.render("roster/removed_notice", child=child))
    summary = f"{class_label(cid)} 学号{sid} 的{RELATIONS.get(link.relation, '家长')}（{mask_openid(openid)}）"
    await c.record(viewer, "binding.remove", district=district, school=school, classes=(cid,), target=sid,
                   summary=summary)  # fmt: skip
    return redirect(back + "&flash=removed")


def register(c: Console) -> None:
    c.get("/roster", roster_page)
    c.post("/roster/upload", upload, upload=True)
    c.get("/roster/codes", codes)
    c.get("/roster/qr/{school}/{class}", qr_image)
    c.get("/roster/bindings", bindings)
    c.post("/roster/bindings/decide", decide)
    c.post("/roster/bindings/remove", remove)
