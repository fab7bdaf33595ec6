"""A notice: what a teacher or a campaign says to families, how it must be confirmed, and its records.

The WeChat card is short (each field ≤ 20 characters, no line breaks; WeChat refuses anything else
with 47003), so the full text lives on our H5 page. Checks here turn what would be a 47003 from
WeChat into a clear error for the sender before anything is planned.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bot.roster.authz import Scope

Mode = Literal["none", "confirm", "understand"]
MODES: tuple[Mode, ...] = ("none", "confirm", "understand")

CARD_FIELD_MAX = 20
BODY_MAX = 5000
QUESTION_MAX = 100
OPTION_MAX = 40

# Delivery record status letters (one per guardian per notice). Order matters for the funnel:
# a later letter implies the earlier steps happened.
QUEUED = "q"  # planned, not sent yet
HELD = "h"  # waiting: quiet hours, daily quota or the family's daily cap
SENDING = "p"  # handed to WeChat, answer not recorded yet (a crash here is resolved by reclaim)
SENT = "s"  # WeChat accepted it (msgid known)
DELIVERED = "d"  # TEMPLATESENDJOBFINISH success
OPENED = "o"  # the guardian opened our page
CONFIRMED = "c"
UNDERSTOOD = "k"  # confirmed and answered the question right
BLOCKED = "b"  # TEMPLATESENDJOBFINISH failed:user block
UNREACHABLE = "u"  # 43004: not following any more
FAILED = "f"  # refused for another reason (errcode kept)
UNCERTAIN = "x"  # a crash left it unknown past WeChat's dedupe window: never resent, never doubled

PROGRESS = {QUEUED: 0, HELD: 0, SENDING: 1, SENT: 2, DELIVERED: 3, OPENED: 4, CONFIRMED: 5, UNDERSTOOD: 6}
TERMINAL_FAILURES = {BLOCKED, UNREACHABLE, FAILED, UNCERTAIN}


class NoticeError(ValueError):
    """A notice that cannot be sent as given; ``field`` names what to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Private reminders to guardians who have not confirmed, then a list for the class teacher."""

    after_hours: tuple[float, ...] = ()  # empty = the deployment's defaults (notices.reminder_hours)
    window: tuple[str, str] = ("", "")  # reminders only go out inside this local time window; empty = default
    teacher_list: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"after_hours": list(self.after_hours), "window": list(self.window), "teacher_list": self.teacher_list}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FollowUp:
        if not data:
            return cls()
        hours = tuple(float(h) for h in data.get("after_hours", ()))
        window = data.get("window", ("", ""))
        return cls(hours, (str(window[0]), str(window[1])), bool(data.get("teacher_list", True)))


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    options: tuple[str, ...]
    answer: int  # index into options


@dataclass(frozen=True, slots=True)
class Draft:
    """What a sender provides. ``validate()`` raises NoticeError naming the field to fix."""

    title: str
    body: str
    audience: tuple[Scope, ...]
    sender: str  # shown on the card: the school or class name (≤ 20)
    mode: Mode = "confirm"
    question: Question | None = None
    deadline: float = 0.0  # epoch seconds; 0 = no deadline
    urgent: bool = False
    followup: FollowUp = field(default_factory=FollowUp)
    lesson: str = ""  # an attached lesson id
    campaign: str = ""  # set when a campaign created it
    created_by: str = ""  # openid or console user (for the audit log)

    def validate(self) -> Draft:
        check_card_field("title", self.title)
        check_card_field("sender", self.sender)
        if not self.body.strip():
            raise NoticeError("body", "the full text is empty")
        if len(self.body) > BODY_MAX:
            raise NoticeError("body", f"is {len(self.body)} characters; at most {BODY_MAX}")
        if not self.audience:
            raise NoticeError("audience", "no classes, grades, schools or district chosen")
        if self.mode not in MODES:
            raise NoticeError("mode", f"must be one of {', '.join(MODES)}")
        if self.mode == "understand":
            q = self.question
            if q is None:
                raise NoticeError("question", "understand mode needs a question with options and the right answer")
            if not q.text.strip() or len(q.text) > QUESTION_MAX:
                raise NoticeError("question", f"the question must be 1–{QUESTION_MAX} characters")
            if not 2 <= len(q.options) <= 4 or any(not o.strip() or len(o) > OPTION_MAX for o in q.options):
                raise NoticeError("question", f"give 2–4 options of 1–{OPTION_MAX} characters")
            if not 0 <= q.answer < len(q.options):
                raise NoticeError("question", "the right answer must be one of the options")
        if any(h <= 0 for h in self.followup.after_hours):
            raise NoticeError("followup", "reminder times must be after the notice")
        return self


_LINE_BREAK = re.compile(r"[\r\n\u2028\u2029]")


def check_card_field(name: str, value: str) -> None:
    """A WeChat template value: 1–20 characters, one line. (WeChat answers 47003 otherwise.)"""
    if not value or not value.strip():
        raise NoticeError(name, "is empty")
    if _LINE_BREAK.search(value):
        raise NoticeError(name, "must be one line (the card shows no line breaks)")
    if len(value) > CARD_FIELD_MAX:
        raise NoticeError(name, f"is {len(value)} characters; the card allows at most {CARD_FIELD_MAX}")


def card_text(value: str) -> str:
    """Squeeze a value into a card field: one line, ≤ 20 characters (for texts we generate)."""
    one_line = _LINE_BREAK.sub(" ", value).strip()
    return one_line if len(one_line) <= CARD_FIELD_MAX else one_line[: CARD_FIELD_MAX - 1] + "…"


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    draft: Draft
    created: float
    status: str = "planning"  # planning → sending → done

    def to_redis(self) -> dict[str, str]:
        d = self.draft
        return {
            "id": self.id,
            "title": d.title,
            "body": d.body,
            "sender": d.sender,
            "mode": d.mode,
            "question": json.dumps(asdict(d.question), ensure_ascii=False) if d.question else "",
            "deadline": repr(d.deadline),
            "urgent": "1" if d.urgent else "0",
            "followup": json.dumps(d.followup.to_json()),
            "audience": json.dumps([asdict(s) for s in d.audience]),
            "lesson": d.lesson,
            "campaign": d.campaign,
            "created_by": d.created_by,
            "created": repr(self.created),
            "status": self.status,
        }

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Notice:
        q = json.loads(raw["question"]) if raw.get("question") else None
        draft = Draft(
            title=raw["title"],
            body=raw["body"],
            sender=raw["sender"],
            audience=tuple(Scope(**s) for s in json.loads(raw["audience"])),
            mode=raw["mode"],  # type: ignore[arg-type]
            question=Question(q["text"], tuple(q["options"]), int(q["answer"])) if q else None,
            deadline=float(raw.get("deadline") or 0),
            urgent=raw.get("urgent") == "1",
            followup=FollowUp.from_json(json.loads(raw.get("followup") or "{}")),
            lesson=raw.get("lesson", ""),
            campaign=raw.get("campaign", ""),
            created_by=raw.get("created_by", ""),
        )
        return cls(raw["id"], draft, float(raw.get("created") or 0), raw.get("status", "planning"))


@dataclass(frozen=True, slots=True)
class Record:
    """One guardian's delivery record: ``status|msgid|time|errcode`` in Redis (≈ 20 bytes)."""

    status: str
    msgid: str = ""
    at: int = 0
    code: str = ""

    def encode(self) -> str:
        return f"{self.status}|{self.msgid}|{self.at}|{self.code}"

    @classmethod
    def decode(cls, raw: str | None) -> Record | None:
        if not raw:
            return None
        parts = raw.split("|")
        parts += [""] * (4 - len(parts))
        return cls(parts[0], parts[1], int(parts[2] or 0), parts[3])
