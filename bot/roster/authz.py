"""Who may do what, decided in one place.

Every feature asks ``can(subject, action, obj)`` before it shows or changes anything. Subjects are
a parent (by the children bound to their openid), a teacher (by the classes they teach; a class
teacher 班主任 may manage the class, a subject teacher only look), a school administrator and a
district administrator (console accounts), or nobody. Objects are a student, a class, a school, a
district, a notice (by its audience) and a report (by its scope).

The rules, briefly:
- parent: view and confirm for their own children only; never a class list or a report.
- teacher: view students, class and reports of classes they teach; the class teacher also manages
  bindings, approves them and sends (non-urgent) notices to that class.
- school admin: everything inside the school, urgent notices included (but confirming: families only;
  and the names of who has not confirmed: the class teacher only, below).
- district admin: everything inside the district (likewise).

Who has not confirmed a notice, by name (``list_missing`` on a class): that class's class teacher
(班主任, role "c") only. The product's privacy rule is "reminders are private, lists go only to that
class's teacher", so a subject teacher of the class, a school admin and a district admin, who may
all *view* the class, see how many students are not confirmed and why (counts by reason), never who.
Every place that shows the names asks :func:`may_list_missing`: the console's missing page and CSV,
the JSON API's ``/missing``, the chat's 未确认, and the H5 class list opened from the teacher's card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bot.roster.model import Who, grade_of

Action = Literal["view", "confirm", "manage", "approve", "send", "send_urgent", "list_missing"]
ACTIONS: tuple[Action, ...] = ("view", "confirm", "manage", "approve", "send", "send_urgent", "list_missing")
Role = Literal["anonymous", "parent", "teacher", "school_admin", "district_admin"]


@dataclass(frozen=True, slots=True)
class Subject:
    role: Role
    who: Who = field(default_factory=Who)
    school: str = ""  # school admin's school
    district: str = ""  # district admin's district (and a school admin's, for reports)
    name: str = ""  # openid or console user, for the audit log
    # school → district for the schools of the user's children and classes (a parent may see a
    # district-wide notice only if a child's school is in that district)
    districts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_who(cls, openid: str, who: Who, districts: Mapping[str, str]) -> Subject:
        """A WeChat user: teacher if they teach anything (they may also be a parent)."""
        mine = {c.school for c in who.children} | {t.school for t in who.teaches}
        known = {s: districts[s] for s in mine if s in districts}
        if who.is_teacher:
            return cls("teacher", who, name=openid, districts=known)
        if who.is_guardian:
            return cls("parent", who, name=openid, districts=known)
        return cls("anonymous", who, name=openid, districts=known)


ANONYMOUS = Subject("anonymous")


@dataclass(frozen=True, slots=True)
class StudentObj:
    district: str
    school: str
    class_id: str
    student: str


@dataclass(frozen=True, slots=True)
class ClassObj:
    district: str
    school: str
    class_id: str


@dataclass(frozen=True, slots=True)
class SchoolObj:
    district: str
    school: str


@dataclass(frozen=True, slots=True)
class DistrictObj:
    district: str


@dataclass(frozen=True, slots=True)
class Scope:
    """One part of an audience: a whole district, a school, a grade of a school, or a class."""

    district: str
    school: str = ""  # "" = the whole district
    grade: int | None = None  # None = every grade
    class_id: str = ""  # "" = every class of the grade/school

    def covers_class(self, district: str, school: str, class_id: str) -> bool:
        if self.district != district:
            return False
        if self.school and self.school != school:
            return False
        if self.grade is not None and grade_of(class_id) != self.grade:
            return False
        return not self.class_id or self.class_id == class_id


@dataclass(frozen=True, slots=True)
class NoticeObj:
    audience: tuple[Scope, ...]
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class ReportObj:
    scope: Scope


Obj = StudentObj | ClassObj | SchoolObj | DistrictObj | NoticeObj | ReportObj


def can(subject: Subject, action: Action, obj: Obj) -> bool:
    if subject.role == "anonymous":
        return False
    if action == "confirm":  # only a family confirms, never on someone's behalf
        return _parent_can(subject, action, obj)
    if action == "list_missing":  # names of families who have not confirmed: the class teacher only
        led = _classes_of_teacher(subject, class_teacher=True) if subject.role == "teacher" else set()
        return isinstance(obj, ClassObj) and (obj.school, obj.class_id) in led
    if subject.role == "district_admin":
        return _district_of(obj) == {subject.district}
    if subject.role == "school_admin":
        return _schools_of(obj) == {(subject.district, subject.school)} if subject.school else False
    if subject.role == "teacher":
        return _teacher_can(subject, action, obj) or _parent_can(subject, action, obj)
    return _parent_can(subject, action, obj)


def may_list_missing(subject: Subject, district: str, school: str, class_id: str) -> bool:
    """Whether ``subject`` may see, by name, the class's students whose families have not confirmed.

    Everyone else who may view the class gets counts by reason in its place."""
    return can(subject, "list_missing", ClassObj(district, school, class_id))


def _district_of(obj: Obj) -> set[str]:
    if isinstance(obj, NoticeObj):
        return {s.district for s in obj.audience} or {""}
    if isinstance(obj, ReportObj):
        return {obj.scope.district}
    return {obj.district}


def _schools_of(obj: Obj) -> set[tuple[str, str]]:
    """The (district, school) pairs an object lies in; a district-wide object has school ""."""
    if isinstance(obj, NoticeObj):
        return {(s.district, s.school) for s in obj.audience} or {("", "")}
    if isinstance(obj, ReportObj):
        return {(obj.scope.district, obj.scope.school)}
    if isinstance(obj, DistrictObj):
        return {(obj.district, "")}
    return {(obj.district, obj.school)}


def _classes_of_teacher(subject: Subject, *, class_teacher: bool) -> set[tuple[str, str]]:
    return {(t.school, t.class_id) for t in subject.who.teaches if t.role == "c" or not class_teacher}


def _teacher_can(subject: Subject, action: Action, obj: Obj) -> bool:
    taught = _classes_of_teacher(subject, class_teacher=False)
    led = _classes_of_teacher(subject, class_teacher=True)
    if isinstance(obj, StudentObj | ClassObj):
        key = (obj.school, obj.class_id)
        if action == "view":
            return key in taught
        if action in ("manage", "approve"):
            return key in led
        return False
    if isinstance(obj, NoticeObj):
        classes = {(s.school, s.class_id) for s in obj.audience}
        if not obj.audience or any(not s.school or not s.class_id for s in obj.audience):
            return False  # teachers address classes, not whole grades or schools
        if action == "view":
            return classes <= taught
        if action == "send":
            return not obj.urgent and classes <= led
        return False
    if isinstance(obj, ReportObj):
        s = obj.scope
        return action == "view" and bool(s.school and s.class_id) and (s.school, s.class_id) in taught
    return False


def _parent_can(subject: Subject, action: Action, obj: Obj) -> bool:
    children = subject.who.children
    if isinstance(obj, StudentObj):
        mine = any(c.school == obj.school and c.student == obj.student for c in children)
        return mine and action in ("view", "confirm")
    if isinstance(obj, NoticeObj):
        # A parent may see and confirm a notice addressed to one of their children's classes.
        return action in ("view", "confirm") and any(
            scope.covers_class(subject.districts.get(c.school, ""), c.school, c.class_id)
            for scope in obj.audience
            for c in children
        )
    return False
