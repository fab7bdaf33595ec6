"""Lessons and quizzes: short safety lessons per topic and grade band, answered in the chat.

The content lives in ``templates/lessons/<topic>/<band>.toml``; ``content`` loads and validates it.
"""

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

__all__ = [
    "BANDS",
    "TOPICS",
    "Lesson",
    "LessonError",
    "Library",
    "Question",
    "band_for_grade",
    "load_lesson",
    "load_library",
    "normalize_answer",
]
