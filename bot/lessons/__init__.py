"""Lessons and quizzes: short safety lessons per topic and grade band, answered in the chat.

The content lives in ``templates/lessons/<topic>/<band>.toml``; ``content`` loads and validates it.
``chat`` is the conversation, ``progress`` the records in Redis, ``review`` the spaced review,
``report`` the rates (``cli``: ``bot report lessons``; ``api``: ``GET /api/lessons/report``).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from bot.lessons.content import (
    BANDS,
    TOPICS,
    Lesson,
    LessonError,
    Library,
    Question,
    band_for_grade,
    load_lesson,
    load_library,
    normalize_answer,
)

if TYPE_CHECKING:
    from bot.app import AppContext

__all__ = [
    "BANDS",
    "TOPICS",
    "Lesson",
    "LessonError",
    "Library",
    "Question",
    "band_for_grade",
    "library",
    "load_lesson",
    "load_library",
    "normalize_answer",
    "setup",
]


@cache
def library() -> Library:
    """The shipped library, loaded and validated once per process (on first use, never at import)."""
    from bot import paths

    return load_library(paths.LESSONS)


def setup(ctx: AppContext) -> None:
    """Register lessons: the chat flow, the menu entry, help lines, the JSON API, and the services
    ``lesson_store`` / ``lesson_library`` (also in ``ctx.services`` for other capabilities)."""
    from bot.lessons import api, chat
    from bot.lessons.progress import LessonStore

    lessons = library()
    store = LessonStore(ctx.redis)
    ctx.services["lesson_store"] = store
    ctx.services["lesson_library"] = lessons
    ctx.engine.provide(lesson_store=store, lesson_library=lessons)
    ctx.router.include(chat.router)
    ctx.help_items.append("回复「学习」和孩子一起上两分钟安全课，答题检验学习效果")
    ctx.help_items.append("老师：回复「学习情况」查看本班参学率、参考率和合格率")
    ctx.menu.append({"type": "click", "name": "安全课堂", "key": chat.LESSONS_KEY})
    api.register(ctx.app, ctx.redis, ctx.services["roster"])
