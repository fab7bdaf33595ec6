"""Spaced review: the questions a student missed come back later.

Twice: at the start of the student's next lesson on that topic (before its segments, not scored; a
right answer takes the question off the list), and in the reminder before the next season of that
risk, where a campaign adds :func:`review_line` to what it sends a guardian.

How a campaign reminder uses it (from the campaigns side)::

    from bot.lessons.review import review_lines
    lines = await review_lines(store, library, [(school, student, child_name), ...], "drowning")
    text = base_text + ("\\n" + lines[(school, student)] if (school, student) in lines else "")

A line is one sentence (no line break, at most :data:`LINE_MAX` characters): it fits a
customer-service text, the H5 page, or (squeezed with ``bot.notices.model.card_text``) a card field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bot.lessons.content import TOPICS, Library, Question
from bot.lessons.progress import LessonStore

REVIEW_MAX: Final = 3  # review questions before a lesson: the whole lesson stays about two minutes
LINE_MAX: Final = 120


async def missed_for(store: LessonStore, library: Library, school: str, student: str, topic: str) -> list[Question]:
    """The questions this student last missed on ``topic``, oldest first (ids no longer in the library are skipped)."""
    return [q for qid in await store.missed(school, student, topic) if (q := library.question(qid)) is not None]


def answer_text(question: Question) -> str:
    """The right answer as a learner reads it: "B（空的塑料水桶）" or "「错」"."""
    if question.kind == "truefalse":
        return f"「{question.answer}」"
    index = "ABCD".index(question.answer)
    return f"{question.answer}（{question.options[index]}）"


def line_for(questions: Sequence[Question], topic: str, child: str = "") -> str | None:
    """One sentence for a reminder: how many were missed and the first one's lesson, or None."""
    if not questions:
        return None
    who = child or "孩子"
    line = f"复习：{who}上次有{len(questions)}道{TOPICS.get(topic, '')}题没答对。记住：{questions[0].explain}"
    tail = "回复「学习」做复习题。"
    if len(line) + len(tail) > LINE_MAX:
        line = line[: LINE_MAX - len(tail) - 1] + "…"
    return line + tail


async def review_line(
    store: LessonStore, library: Library, school: str, student: str, topic: str, *, child: str = ""
) -> str | None:
    """The one-line review for one student before the season of ``topic``; None if nothing was missed."""
    return line_for(await missed_for(store, library, school, student, topic), topic, child)


async def review_lines(
    store: LessonStore, library: Library, students: Sequence[tuple[str, str, str]], topic: str
) -> dict[tuple[str, str], str]:
    """Review lines for many (school, student, child name) at once; only students with something to review."""
    by_school: dict[str, list[tuple[str, str]]] = {}
    for school, sid, name in students:
        by_school.setdefault(school, []).append((sid, name))
    out: dict[tuple[str, str], str] = {}
    for school, members in by_school.items():
        missed = await store.missed_many(school, [sid for sid, _ in members], topic)
        for sid, name in members:
            questions = [q for qid in missed.get(sid, []) if (q := library.question(qid)) is not None]
            line = line_for(questions, topic, name)
            if line:
                out[(school, sid)] = line
    return out
