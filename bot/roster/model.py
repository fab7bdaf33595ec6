"""Who is who: districts, schools, classes, students, guardians, teachers, and their compact encodings.

Students carry only what the school gives and we need: a name (to let a parent prove the link and a
teacher read a list), the school's own student id, grade and class. Guardians carry an openid and a
relation; a phone only if the school supplies it, and then only masked (``138****1234``), which is
enough for a "last 4 digits" proof and useless to a thief.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Relation of a guardian to a student: one letter in Redis (keeps a two-guardian link list inside
# Redis' compact 64-byte encoding), a word for people.
RELATIONS: dict[str, str] = {"f": "爸爸", "m": "妈妈", "g": "祖辈", "o": "其他监护人"}
RELATION_WORDS: dict[str, str] = {
    "爸爸": "f", "父亲": "f", "爸": "f",
    "妈妈": "m", "母亲": "m", "妈": "m",
    "爷爷": "g", "奶奶": "g", "外公": "g", "外婆": "g", "姥姥": "g", "姥爷": "g", "祖辈": "g",
    "其他": "o", "其他监护人": "o", "监护人": "o", "家长": "o",
}  # fmt: skip

ACTIVE = "a"
LEFT = "l"

_CN_DIGITS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_KINDERGARTEN = {"幼儿园", "学前", "小班", "中班", "大班", "k", "kg", "0"}
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class RosterError(ValueError):
    """Bad roster data; the message says what and where."""


def clean(text: str) -> str:
    """NFKC (full-width digits and letters to half-width), trimmed, inner whitespace removed."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(text)))


def _cn_number(text: str) -> int | None:
    if text.isdecimal() and text.isascii():
        return int(text)
    if text in _CN_DIGITS:
        return _CN_DIGITS[text]
    if len(text) == 2 and text[0] == "十" and text[1] in _CN_DIGITS:
        return 10 + _CN_DIGITS[text[1]]
    return None


def parse_grade(raw: str) -> int:
    """School grade as a number: 0 kindergarten, 1–6 primary, 7–9 junior (初一–初三), 10–12 senior (高一–高三)."""
    t = clean(raw).lower()
    if t in _KINDERGARTEN:
        return 0
    m = re.fullmatch(r"(初|高)([一二三123])", t)
    if m:
        n = _cn_number(m.group(2))
        assert n is not None
        return (6 if m.group(1) == "初" else 9) + n
    t = t.removesuffix("年级")
    n = _cn_number(t)
    if n is None or not 0 <= n <= 12:
        raise RosterError(f"unknown grade {raw!r} (use 1–12, 三年级, 初一, 高二 or 幼儿园)")
    return n


def grade_label(grade: int) -> str:
    if grade == 0:
        return "幼儿园"
    if grade <= 6:
        return f"{'一二三四五六'[grade - 1]}年级"
    if grade <= 9:
        return f"初{'一二三'[grade - 7]}"
    return f"高{'一二三'[grade - 10]}"


def parse_class(raw: str) -> str:
    """The class within a grade: "2", "2班", "（2）班" → "2"; other names kept short ("实验班")."""
    t = clean(raw).strip("()（）")
    t = t.removesuffix("班").strip("()（）")
    n = _cn_number(t)
    if n is not None:
        return str(n)
    if not t or len(t) > 8 or "/" in t or "|" in t:
        raise RosterError(f"unknown class {raw!r}")
    return t


def class_id(grade: int, klass: str) -> str:
    return f"{grade}-{klass}"


def class_label(cid: str) -> str:
    grade, _, klass = cid.partition("-")
    suffix = f"（{klass}）班" if klass.isdigit() else klass
    return f"{grade_label(int(grade))}{suffix}"


def grade_of(cid: str) -> int:
    return int(cid.partition("-")[0])


def check_id(kind: str, value: str) -> str:
    v = clean(value)
    if not _ID_RE.match(v):
        raise RosterError(f"{kind} {value!r} must be 1–32 letters, digits, '-', '_' or '.'")
    return v


def mask_phone(raw: str) -> str:
    digits = re.sub(r"\D", "", clean(raw))
    if len(digits) < 7:
        raise RosterError(f"phone {raw!r} is too short")
    return f"{digits[:3]}****{digits[-4:]}"


@dataclass(frozen=True, slots=True)
class School:
    id: str
    name: str
    district: str
    region: str


@dataclass(frozen=True, slots=True)
class Student:
    school: str
    id: str
    name: str
    class_id: str
    status: str = ACTIVE

    def encode(self) -> str:
        return f"{self.name}|{self.status}"

    @classmethod
    def decode(cls, school: str, class_id: str, sid: str, raw: str) -> Student:
        name, _, status = raw.partition("|")
        return cls(school, sid, name, class_id, status or ACTIVE)


@dataclass(frozen=True, slots=True)
class GuardianLink:
    """One guardian of one student: how the student's record lists them."""

    openid: str
    relation: str


def encode_links(links: list[GuardianLink]) -> str:
    return ",".join(f"{g.openid}:{g.relation}" for g in links)


def decode_links(raw: str | None) -> list[GuardianLink]:
    out: list[GuardianLink] = []
    for part in (raw or "").split(","):
        if part:
            openid, _, rel = part.rpartition(":")
            out.append(GuardianLink(openid, rel or "o"))
    return out


@dataclass(frozen=True, slots=True)
class ChildRef:
    """A guardian's link to a child, as kept on the guardian's side (``who`` record)."""

    school: str
    class_id: str
    student: str
    relation: str


@dataclass(frozen=True, slots=True)
class TeachRef:
    """A teacher's class: role ``c`` class teacher (班主任) or ``s`` subject teacher."""

    school: str
    class_id: str
    role: str


@dataclass(frozen=True, slots=True)
class Who:
    """Everything the bot needs to know about a WeChat user, in one small Redis string.

    ``g:S/C/ID/r;…`` children, ``t:S/C/role;…`` classes taught. Loaded with the conversation state
    in the same round trip as every message.
    """

    children: tuple[ChildRef, ...] = ()
    teaches: tuple[TeachRef, ...] = ()

    def encode(self) -> str:
        parts = [f"g:{c.school}/{c.class_id}/{c.student}/{c.relation}" for c in self.children]
        parts += [f"t:{t.school}/{t.class_id}/{t.role}" for t in self.teaches]
        return ";".join(parts)

    @classmethod
    def decode(cls, raw: str | None) -> Who:
        children: list[ChildRef] = []
        teaches: list[TeachRef] = []
        for part in (raw or "").split(";"):
            kind, _, rest = part.partition(":")
            fields = rest.split("/")
            if kind == "g" and len(fields) == 4:
                children.append(ChildRef(*fields))
            elif kind == "t" and len(fields) == 3:
                teaches.append(TeachRef(*fields))
        return cls(tuple(children), tuple(teaches))

    @property
    def is_guardian(self) -> bool:
        return bool(self.children)

    @property
    def is_teacher(self) -> bool:
        return bool(self.teaches)

    def with_child(self, ref: ChildRef) -> Who:
        kept = tuple(c for c in self.children if (c.school, c.student) != (ref.school, ref.student))
        return Who((*kept, ref), self.teaches)

    def without_child(self, school: str, student: str) -> Who:
        return Who(tuple(c for c in self.children if (c.school, c.student) != (school, student)), self.teaches)

    def with_class(self, ref: TeachRef) -> Who:
        kept = tuple(t for t in self.teaches if (t.school, t.class_id) != (ref.school, ref.class_id))
        return Who(self.children, (*kept, ref))

    def without_class(self, school: str, cid: str) -> Who:
        return Who(self.children, tuple(t for t in self.teaches if (t.school, t.class_id) != (school, cid)))
