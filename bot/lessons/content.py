"""Lesson content: one TOML file per topic and grade band under ``templates/lessons/<topic>/<band>.toml``.

Files are validated when loaded, and every problem is reported at once (file and key named) so a
content writer fixes a whole batch in one pass instead of one error per run. The format is documented
in ``templates/lessons/README.md``; the limits below are the ones a WeChat chat message, a template
card and a lesson list can show without cutting text.

Nothing here touches the disk at import time.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

# -- vocabularies ---------------------------------------------------------------------------
TOPICS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "drowning": "防溺水",
        "traffic": "交通安全",
        "fire": "消防安全",
        "earthquake": "防震避险",
        "carbon-monoxide": "防一氧化碳中毒",
        "fireworks-ice": "烟花爆竹与冰面安全",
        "food": "食品安全",
        "anti-fraud": "防诈骗",
        "bullying": "防欺凌",
        "flood-typhoon": "防汛防台",
        "electricity": "用电安全",
        "emergency-numbers": "紧急求助电话",
    }
)
BANDS: Final[Mapping[str, str]] = MappingProxyType(
    {"k": "幼儿园", "g1-3": "1–3年级", "g4-6": "4–6年级", "g7-12": "7–12年级"}
)

QuestionKind = Literal["choice", "truefalse"]
KINDS: Final[tuple[QuestionKind, ...]] = ("choice", "truefalse")
LETTERS: Final[tuple[str, ...]] = ("A", "B", "C", "D")
TRUE: Final = "对"
FALSE: Final = "错"

# -- limits (characters are Unicode code points: one Chinese character counts as one) --------
TITLE_MAX: Final = 20  # can appear on a WeChat template card
SUMMARY_MAX: Final = 40  # one line in a lesson list
SEGMENT_MAX: Final = 300  # one chat message
SEGMENTS_MIN: Final = 2
SEGMENTS_MAX: Final = 4
QUESTIONS_MIN: Final = 5
QUESTIONS_MAX: Final = 10  # a two-minute lesson; more belongs in a second lesson
QUESTION_TEXT_MAX: Final = 120
OPTIONS_MIN: Final = 3
OPTIONS_MAX: Final = 4  # = len(LETTERS)
OPTION_MAX: Final = 40
EXPLAIN_MAX: Final = 80
SOURCE_MAX: Final = 80
MINUTES_MIN: Final = 1
MINUTES_MAX: Final = 5

_LESSON_KEYS: Final = frozenset(
    {"id", "topic", "band", "title", "summary", "season", "minutes", "segments", "questions"}
)
_SEGMENT_KEYS: Final = frozenset({"text"})
_QUESTION_KEYS: Final = frozenset({"id", "kind", "text", "options", "answer", "explain", "source"})
_ID_RE: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LINE_BREAKS: Final = ("\n", "\r", "\u2028", "\u2029")


class LessonError(ValueError):
    """One or more problems in lesson content; each line names the file and the key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in lesson content:\n" + "\n".join(self.problems)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    kind: QuestionKind
    text: str
    options: tuple[str, ...]  # empty for true/false
    answer: str  # "A".."D" for choice, "对"/"错" for true/false
    explain: str
    source: str

    @property
    def accepted(self) -> tuple[str, ...]:
        """The normalized replies that count as an answer: ("A", "B", "C") or ("对", "错")."""
        if self.kind == "truefalse":
            return (TRUE, FALSE)
        return LETTERS[: len(self.options)]

    def check(self, reply: str) -> bool | None:
        """True/False for a right/wrong answer; None if the reply is not an answer to this question."""
        normalized = normalize_answer(reply)
        if normalized is None or normalized not in self.accepted:
            return None
        return normalized == self.answer


@dataclass(frozen=True, slots=True)
class Lesson:
    id: str
    topic: str
    band: str
    title: str
    summary: str
    season: tuple[int, ...]  # months, ascending; empty = all year
    minutes: int
    segments: tuple[str, ...]
    questions: tuple[Question, ...]
    path: str

    @property
    def topic_name(self) -> str:
        return TOPICS[self.topic]

    @property
    def band_label(self) -> str:
        return BANDS[self.band]

    @property
    def all_year(self) -> bool:
        return not self.season

    def peaks_in(self, month: int) -> bool:
        """Whether ``month`` is one of this risk's peak months (never true for an all-year lesson)."""
        return month in self.season


# -- loading --------------------------------------------------------------------------------
class _Problems:
    """Collects ``<file>: <key>: <message>`` lines instead of stopping at the first."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{self.shown}: {key}: {message}")


def _shown(path: Path) -> str:
    """The path as a reader wants it in an error: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(
    table: Mapping[str, Any],
    name: str,
    key: str,
    problems: _Problems,
    *,
    max_len: int,
    one_line: bool = True,
) -> str:
    """A required non-empty string field, stripped; "" after reporting a problem."""
    if name not in table:
        problems.add(key, "missing")
        return ""
    return _string(table[name], key, problems, max_len=max_len, one_line=one_line)


def _string(value: object, key: str, problems: _Problems, *, max_len: int, one_line: bool = True) -> str:
    if not isinstance(value, str):
        problems.add(key, f"must be a string, not {type(value).__name__}")
        return ""
    text = value.strip()
    if not text:
        problems.add(key, "is empty")
        return ""
    if one_line and any(mark in text for mark in _LINE_BREAKS):
        problems.add(key, "must be one line (no line breaks)")
    if len(text) > max_len:
        problems.add(key, f"{len(text)} characters, at most {max_len}")
    return text


def _unknown_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str, problems: _Problems) -> None:
    for name in table:
        if name not in allowed:
            problems.add(f"{where}{name}", "unknown key")


def _parse_question(raw: object, key: str, lesson_id: str, problems: _Problems) -> Question | None:
    if not isinstance(raw, dict):
        problems.add(key, "must be a table ([[questions]])")
        return None
    _unknown_keys(raw, _QUESTION_KEYS, f"{key}.", problems)
    before = len(problems.items)

    qid = _text(raw, "id", f"{key}.id", problems, max_len=80)
    if qid:
        if not _ID_RE.fullmatch(qid):
            problems.add(f"{key}.id", f"{qid!r} must be lower-case letters, digits and hyphens")
        elif lesson_id and not qid.startswith(f"{lesson_id}-"):
            problems.add(f"{key}.id", f"{qid!r} must start with the lesson id {lesson_id + '-'!r}")

    kind_raw = raw.get("kind")
    kind: QuestionKind | None = None
    if kind_raw is None:
        problems.add(f"{key}.kind", "missing")
    elif kind_raw == "choice" or kind_raw == "truefalse":
        kind = kind_raw
    else:
        problems.add(f"{key}.kind", f"{kind_raw!r} is not one of {', '.join(KINDS)}")

    text = _text(raw, "text", f"{key}.text", problems, max_len=QUESTION_TEXT_MAX)
    explain = _text(raw, "explain", f"{key}.explain", problems, max_len=EXPLAIN_MAX)
    source = _text(raw, "source", f"{key}.source", problems, max_len=SOURCE_MAX)

    options: list[str] = []
    raw_options = raw.get("options")
    if kind == "truefalse":
        if raw_options:
            problems.add(f"{key}.options", "a truefalse question has no options")
    elif kind == "choice":
        if raw_options is None:
            problems.add(f"{key}.options", "missing (a choice question needs 3–4 options)")
        elif not isinstance(raw_options, list):
            problems.add(f"{key}.options", f"must be a list of strings, not {type(raw_options).__name__}")
        else:
            if not OPTIONS_MIN <= len(raw_options) <= OPTIONS_MAX:
                problems.add(f"{key}.options", f"{len(raw_options)} options, need {OPTIONS_MIN}–{OPTIONS_MAX}")
            for j, option in enumerate(raw_options):
                options.append(_string(option, f"{key}.options[{j}]", problems, max_len=OPTION_MAX))
            seen: set[str] = set()
            for j, option in enumerate(options):
                if option and option in seen:
                    problems.add(f"{key}.options[{j}]", f"{option!r} appears twice")
                seen.add(option)

    answer_raw = raw.get("answer")
    answer = ""
    if answer_raw is None:
        problems.add(f"{key}.answer", "missing")
    elif not isinstance(answer_raw, str):
        problems.add(f"{key}.answer", f"must be a string, not {type(answer_raw).__name__}")
    elif kind == "truefalse":
        if answer_raw in (TRUE, FALSE):
            answer = answer_raw
        else:
            problems.add(f"{key}.answer", f"{answer_raw!r} is not {TRUE!r} or {FALSE!r}")
    elif kind == "choice" and isinstance(raw_options, list) and raw_options:
        letters = LETTERS[: min(len(raw_options), len(LETTERS))]
        if answer_raw in letters:
            answer = answer_raw
        else:
            problems.add(f"{key}.answer", f"{answer_raw!r} is not one of {letters[0]}–{letters[-1]}")

    if kind is None or len(problems.items) > before:
        return None
    return Question(id=qid, kind=kind, text=text, options=tuple(options), answer=answer, explain=explain, source=source)


def _parse(data: Mapping[str, Any], path: Path, problems: _Problems) -> Lesson | None:
    _unknown_keys(data, _LESSON_KEYS, "", problems)
    before = len(problems.items)

    topic = _text(data, "topic", "topic", problems, max_len=40)
    if topic and topic not in TOPICS:
        problems.add("topic", f"{topic!r} is not one of {', '.join(TOPICS)}")
    band = _text(data, "band", "band", problems, max_len=10)
    if band and band not in BANDS:
        problems.add("band", f"{band!r} is not one of {', '.join(BANDS)}")
    lesson_id = _text(data, "id", "id", problems, max_len=60)
    if lesson_id and topic and band and lesson_id != f"{topic}-{band}":
        problems.add("id", f"{lesson_id!r} must be {topic + '-' + band!r} (topic-band)")

    title = _text(data, "title", "title", problems, max_len=TITLE_MAX)
    summary = _text(data, "summary", "summary", problems, max_len=SUMMARY_MAX)

    season: list[int] = []
    raw_season = data.get("season")
    if raw_season is None:
        problems.add("season", "missing (use [] for all year)")
    elif not isinstance(raw_season, list):
        problems.add("season", f"must be a list of months, not {type(raw_season).__name__}")
    else:
        for j, month in enumerate(raw_season):
            if not _is_int(month) or not 1 <= month <= 12:
                problems.add(f"season[{j}]", f"{month!r} is not a month 1–12")
            elif month in season:
                problems.add(f"season[{j}]", f"month {month} appears twice")
            else:
                season.append(month)

    minutes = data.get("minutes")
    whole_minutes = minutes if isinstance(minutes, int) else 0
    if minutes is None:
        problems.add("minutes", "missing")
    elif not _is_int(minutes) or not MINUTES_MIN <= minutes <= MINUTES_MAX:
        problems.add("minutes", f"{minutes!r} is not a whole number {MINUTES_MIN}–{MINUTES_MAX}")

    segments: list[str] = []
    raw_segments = data.get("segments")
    if not isinstance(raw_segments, list):
        problems.add("segments", "missing ([[segments]] tables)" if raw_segments is None else "must be tables")
    else:
        if not SEGMENTS_MIN <= len(raw_segments) <= SEGMENTS_MAX:
            problems.add("segments", f"{len(raw_segments)} segments, need {SEGMENTS_MIN}–{SEGMENTS_MAX}")
        for j, raw in enumerate(raw_segments):
            if not isinstance(raw, dict):
                problems.add(f"segments[{j}]", "must be a table ([[segments]])")
                continue
            _unknown_keys(raw, _SEGMENT_KEYS, f"segments[{j}].", problems)
            segments.append(_text(raw, "text", f"segments[{j}].text", problems, max_len=SEGMENT_MAX, one_line=False))

    questions: list[Question] = []
    raw_questions = data.get("questions")
    if not isinstance(raw_questions, list):
        problems.add("questions", "missing ([[questions]] tables)" if raw_questions is None else "must be tables")
    else:
        if not QUESTIONS_MIN <= len(raw_questions) <= QUESTIONS_MAX:
            problems.add("questions", f"{len(raw_questions)} questions, need {QUESTIONS_MIN}–{QUESTIONS_MAX}")
        seen: dict[str, int] = {}
        for j, raw in enumerate(raw_questions):
            # Checked on the raw id, so a duplicate is reported even when either question has other faults.
            qid = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(qid, str) and qid.strip():
                if qid.strip() in seen:
                    problems.add(
                        f"questions[{j}].id", f"{qid.strip()!r} already used by questions[{seen[qid.strip()]}]"
                    )
                seen.setdefault(qid.strip(), j)
            question = _parse_question(raw, f"questions[{j}]", lesson_id, problems)
            if question is None:
                continue
            questions.append(question)

    if len(problems.items) > before:
        return None
    return Lesson(
        id=lesson_id,
        topic=topic,
        band=band,
        title=title,
        summary=summary,
        season=tuple(sorted(season)),
        minutes=whole_minutes,
        segments=tuple(segments),
        questions=tuple(questions),
        path=str(path),
    )


def _load(path: Path, problems: _Problems) -> Lesson | None:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        problems.add("<toml>", str(exc))
        return None
    except OSError as exc:
        problems.add("<file>", exc.strerror or str(exc))
        return None
    return _parse(data, path, problems)


def load_lesson(path: Path | str) -> Lesson:
    """Read and validate one lesson file; LessonError lists every problem in it."""
    path = Path(path)
    problems = _Problems(_shown(path))
    lesson = _load(path, problems)
    if problems.items or lesson is None:
        raise LessonError(problems.items)
    return lesson


def load_library(root: Path | str) -> Library:
    """Load every ``<topic>/<band>.toml`` under ``root``; LessonError lists every problem in every file."""
    root = Path(root)
    if not root.is_dir():
        raise LessonError([f"{_shown(root)}: <dir>: not a directory"])
    lessons: list[Lesson] = []
    all_problems: list[str] = []
    for path in sorted(root.rglob("*.toml")):
        problems = _Problems(_shown(path))
        rel = path.relative_to(root).parts
        if len(rel) != 2 or rel[0] not in TOPICS or path.stem not in BANDS:
            problems.add("<path>", "lesson files live at <topic>/<band>.toml with a known topic and band")
        lesson = _load(path, problems)
        if lesson is not None and len(rel) == 2 and (lesson.topic, lesson.band) != (rel[0], path.stem):
            problems.add("id", f"{lesson.id!r} does not match its place {rel[0]}/{path.stem}.toml")
        all_problems.extend(problems.items)
        if lesson is not None:
            lessons.append(lesson)
    all_problems.extend(_duplicates(lessons))
    if all_problems:
        raise LessonError(all_problems)
    return Library(lessons)


def _duplicates(lessons: Iterable[Lesson]) -> list[str]:
    """Lesson and question ids must be unique across files: quiz results are stored by question id."""
    problems: list[str] = []
    lesson_at: dict[str, str] = {}
    question_at: dict[str, str] = {}
    for lesson in lessons:
        shown = _shown(Path(lesson.path))
        if lesson.id in lesson_at:
            problems.append(f"{shown}: id: {lesson.id!r} also used in {lesson_at[lesson.id]}")
        lesson_at.setdefault(lesson.id, shown)
        for j, question in enumerate(lesson.questions):
            if question.id in question_at and question_at[question.id] != shown:
                problems.append(f"{shown}: questions[{j}].id: {question.id!r} also used in {question_at[question.id]}")
            question_at.setdefault(question.id, shown)
    return problems


class Library:
    """All lessons, in topic order then band order, with lookups by id, topic/band and month."""

    def __init__(self, lessons: Iterable[Lesson]) -> None:
        items = list(lessons)
        problems = _duplicates(items)
        if problems:
            raise LessonError(problems)
        topic_rank = {topic: i for i, topic in enumerate(TOPICS)}
        band_rank = {band: i for i, band in enumerate(BANDS)}
        items.sort(key=lambda lesson: (topic_rank.get(lesson.topic, 99), band_rank.get(lesson.band, 99), lesson.id))
        self._lessons: tuple[Lesson, ...] = tuple(items)
        self._by_id: dict[str, Lesson] = {lesson.id: lesson for lesson in items}
        self._by_question: dict[str, tuple[Lesson, Question]] = {
            question.id: (lesson, question) for lesson in items for question in lesson.questions
        }

    def __len__(self) -> int:
        return len(self._lessons)

    def __iter__(self) -> Iterator[Lesson]:
        return iter(self._lessons)

    def get(self, lesson_id: str) -> Lesson | None:
        return self._by_id.get(lesson_id)

    def for_topic_band(self, topic: str, band: str) -> Lesson | None:
        return self._by_id.get(f"{topic}-{band}")

    def for_band(self, band: str) -> list[Lesson]:
        return [lesson for lesson in self._lessons if lesson.band == band]

    def topics(self) -> list[str]:
        """Topic ids that have at least one lesson, in TOPICS order."""
        present = {lesson.topic for lesson in self._lessons}
        return [topic for topic in TOPICS if topic in present]

    def in_season(self, month: int, *, all_year: bool = True) -> list[Lesson]:
        """Lessons whose risk peaks in ``month``, plus (unless ``all_year=False``) the all-year ones."""
        if not _is_int(month) or not 1 <= month <= 12:
            raise ValueError(f"month must be 1–12, not {month!r}")
        return [lesson for lesson in self._lessons if lesson.peaks_in(month) or (all_year and lesson.all_year)]

    def question(self, question_id: str) -> Question | None:
        found = self._by_question.get(question_id)
        return found[1] if found else None

    def lesson_of(self, question_id: str) -> Lesson | None:
        found = self._by_question.get(question_id)
        return found[0] if found else None

    def missing(self) -> list[tuple[str, str]]:
        """(topic, band) pairs with no lesson: a complete library has none."""
        return [(t, b) for t in TOPICS for b in BANDS if f"{t}-{b}" not in self._by_id]


# -- grades ---------------------------------------------------------------------------------
_KINDERGARTEN: Final = frozenset({"K", "KG", "幼儿园", "学前", "学前班", "托班", "小班", "中班", "大班"})
_CN_DIGITS: Final = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_NUM: Final = r"(\d{1,2}|十[一二]?|[一二三四五六七八九])"
_GRADE_PATTERNS: Final[tuple[tuple[re.Pattern[str], int, int], ...]] = (
    # (pattern, offset, highest number allowed before the offset)
    (re.compile(rf"(?:G|GRADE)?{_NUM}(?:年级)?"), 0, 12),
    (re.compile(rf"小学?{_NUM}(?:年级)?"), 0, 6),
    (re.compile(rf"初中?{_NUM}(?:年级)?"), 6, 4),  # 初四 exists where middle school has four years
    (re.compile(rf"高中?{_NUM}(?:年级)?"), 9, 3),
)


def _cn_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text.startswith("十"):
        return 10 + (_CN_DIGITS[text[1]] if len(text) > 1 else 0)
    return _CN_DIGITS[text]


def _grade_number(grade: int | str) -> int:
    if isinstance(grade, bool) or not isinstance(grade, int | str):
        raise ValueError(f"not a school grade: {grade!r}")
    if isinstance(grade, int):
        if 0 <= grade <= 12:
            return grade
        raise ValueError(f"school grade must be 0 (kindergarten) to 12, not {grade}")
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", grade)).upper()
    if text in _KINDERGARTEN or text.startswith("幼儿园"):
        return 0
    for pattern, offset, highest in _GRADE_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            number = _cn_number(match.group(1))
            if (number >= 1 or (offset == 0 and number == 0)) and number <= highest:
                return offset + number
    raise ValueError(f"not a school grade: {grade!r}")


def band_for_grade(grade: int | str) -> str:
    """The band id for a school grade: 0/"K"/"幼儿园" → "k", then 1–3, 4–6, 7–12.

    Chinese forms work too: "三年级", "七年级", "初一" (→ 7), "高一" (→ 10). Raises ValueError otherwise.
    """
    number = _grade_number(grade)
    if number == 0:
        return "k"
    if number <= 3:
        return "g1-3"
    if number <= 6:
        return "g4-6"
    return "g7-12"


# -- replies --------------------------------------------------------------------------------
_ANSWER_PREFIXES: Final = ("我的答案是", "答案是", "我选择", "答案", "选择", "我选", "选项", "选", "答")
_TRUE_WORDS: Final = frozenset({"对", "对的", "是对的", "正确", "√", "✓", "✔", "✅", "T", "TRUE"})
_FALSE_WORDS: Final = frozenset(
    {"错", "错的", "是错的", "错误", "不对", "不正确", "×", "✗", "✘", "❌", "X", "F", "FALSE"}
)


def _strip_punctuation(text: str) -> str:
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return text[start:end]


def normalize_answer(text: str) -> str | None:
    """A chat reply as "A".."D", "对" or "错"; None when it is not recognisably an answer.

    Accepts any case, full-width letters, spaces, surrounding punctuation, "选B" / "答案：B", and
    对/错, 正确/错误, √/×, T/F for true/false.
    """
    cleaned = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))
    cleaned = _strip_punctuation(cleaned)
    for prefix in _ANSWER_PREFIXES:
        if cleaned.startswith(prefix) and len(cleaned) > len(prefix):
            cleaned = _strip_punctuation(cleaned[len(prefix) :])
            break
    cleaned = cleaned.upper()
    if len(cleaned) == 1 and cleaned in LETTERS:
        return cleaned
    if cleaned in _TRUE_WORDS:
        return TRUE
    if cleaned in _FALSE_WORDS:
        return FALSE
    return None
