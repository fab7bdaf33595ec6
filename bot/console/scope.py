"""What part of the city a page is about (:class:`Place`), and whether the viewer may look at it.

A place is a district, a school, a class, or "my classes" (a teacher's own). It comes from the
``?school=&class=`` of the URL; :func:`place_for` answers None when the viewer may not view it, and
every check is ``authz.can(subject, "view", ReportObj(...))``: the console never decides on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from bot.roster.authz import ClassObj, ReportObj, SchoolObj, Scope, Subject, can
from bot.roster.chat import directory
from bot.roster.model import class_label, grade_of

if TYPE_CHECKING:
    from bot.console.web import Console, Viewer
    from bot.roster.chat import Directory

SCHOOL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
CLASS_RE = re.compile(r"^\d{1,2}-[^/|,;:\s]{1,8}$")


def class_order(cid: str) -> tuple[int, int, str]:
    try:
        grade = grade_of(cid)
    except ValueError:
        return 99, 0, cid
    rest = cid.partition("-")[2]
    return grade, int(rest) if rest.isdigit() else 999, rest


@dataclass(frozen=True)
class Place:
    kind: str  # "district" | "school" | "class" | "mine"
    district: str
    school: str = ""
    class_id: str = ""
    label: str = ""
    classes: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # "mine": (school, class)

    @property
    def key(self) -> str:
        mine = ",".join(sorted(f"{s}/{c}" for s, c in self.classes))
        return f"{self.kind}|{self.district}|{self.school}|{self.class_id}|{mine}"

    def covers(self, school: str, class_id: str, district: str) -> bool:
        if self.kind == "class":
            return (school, class_id) == (self.school, self.class_id)
        if self.kind == "school":
            return school == self.school
        if self.kind == "mine":
            return (school, class_id) in self.classes
        return district == self.district

    @property
    def schools(self) -> set[str]:
        if self.kind == "mine":
            return {s for s, _ in self.classes}
        return {self.school} if self.school else set()

    def query(self) -> str:
        if self.kind == "class":
            return urlencode({"school": self.school, "class": self.class_id})
        if self.kind == "school":
            return urlencode({"school": self.school})
        return ""


def may_view(subject: Subject, district: str, school: str = "", class_id: str = "") -> bool:
    return can(subject, "view", ReportObj(Scope(district, school, class_id=class_id)))


def may_manage_class(subject: Subject, district: str, school: str, class_id: str) -> bool:
    return can(subject, "manage", ClassObj(district, school, class_id))


def may_approve_class(subject: Subject, district: str, school: str, class_id: str) -> bool:
    return can(subject, "approve", ClassObj(district, school, class_id))


def may_manage_school(subject: Subject, district: str, school: str) -> bool:
    return can(subject, "manage", SchoolObj(district, school))


def taught(subject: Subject) -> list[tuple[str, str]]:
    return sorted({(t.school, t.class_id) for t in subject.who.teaches}, key=lambda sc: (sc[0], class_order(sc[1])))


async def schools_in_scope(c: Console, viewer: Viewer) -> list[tuple[str, str]]:
    """(school id, name) of the schools the viewer may look into, by name."""
    d = await directory(c.roster)
    s = viewer.subject
    if s.role == "district_admin":
        ids = [sid for sid, district in d.districts.items() if district == s.district]
    elif s.role == "school_admin":
        ids = [s.school] if d.districts.get(s.school) == s.district else []
    else:
        ids = sorted({school for school, _ in taught(s)})
    return sorted(((sid, d.names.get(sid, sid)) for sid in ids), key=lambda x: (x[1], x[0]))


async def classes_in_scope(c: Console, viewer: Viewer, school: str) -> list[str]:
    """The classes of ``school`` the viewer may view (a teacher: their own), in grade order."""
    d = await directory(c.roster)
    district = d.districts.get(school, "")
    if viewer.subject.role == "teacher":
        ids = [cid for s, cid in taught(viewer.subject) if s == school]
    else:
        ids = list(await c.roster.classes(school))
    return sorted((cid for cid in ids if may_view(viewer.subject, district, school, cid)), key=class_order)


async def place_for(c: Console, viewer: Viewer, school: str, class_id: str) -> Place | None:
    """The place named by ``?school=&class=`` if the viewer may view it; their default place when empty."""
    d = await directory(c.roster)
    s = viewer.subject
    if class_id and not school:
        return None
    if school:
        if not SCHOOL_RE.match(school) or (class_id and not CLASS_RE.match(class_id)):
            return None
        district = d.districts.get(school)
        if district is None or not may_view(s, district, school, class_id):
            return None
        name = d.names.get(school, school)
        if class_id:
            if class_id not in await c.roster.classes(school):
                return None
            return Place("class", district, school, class_id, f"{name} {class_label(class_id)}")
        return Place("school", district, school, label=name)
    return default_place(s, d)


def default_place(s: Subject, d: Directory) -> Place:
    if s.role == "district_admin":
        return Place("district", s.district, label=f"{s.district}（全区）")
    if s.role == "school_admin":
        return Place("school", s.district, s.school, label=d.names.get(s.school, s.school))
    mine = taught(s)
    if len(mine) == 1:
        school, cid = mine[0]
        label = f"{d.names.get(school, school)} {class_label(cid)}"
        return Place("class", d.districts.get(school, ""), school, cid, label)
    district = d.districts.get(mine[0][0], "") if mine else ""
    return Place("mine", district, label="我的班级", classes=frozenset(mine))
