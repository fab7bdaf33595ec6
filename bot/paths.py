"""Where the project's non-code files live (templates/, schedules/), relative to the source tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
MESSAGES = TEMPLATES / "messages"
WEB_TEMPLATES = TEMPLATES / "web"
LESSONS = TEMPLATES / "lessons"
SCHEDULES = ROOT / "schedules"
