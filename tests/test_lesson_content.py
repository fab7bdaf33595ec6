"""The shipped lesson files, and the loader that guards them.

Two halves: every file under templates/lessons/ must load through the real validator and follow the
content rules in /work/shared/SAFETY_CONTENT.md (no unverified facts, no invented numbers); and the
validator itself, fed small bad files, must name the file and the key of every problem at once.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from bot.lessons.content import (
    BANDS,
    EXPLAIN_MAX,
    OPTION_MAX,
    QUESTION_TEXT_MAX,
    SEGMENT_MAX,
    SUMMARY_MAX,
    TITLE_MAX,
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

ROOT = Path(__file__).resolve().parent.parent / "templates" / "lessons"

# Peak months from SAFETY_CONTENT ("When the risk is"); fire = fire-safety month + Spring Festival,
# traffic = the months school terms start. Everything else is all year.
SEASONS = {
    "drowning": (5, 6, 7, 8, 9),
    "carbon-monoxide": (1, 2, 3, 11, 12),
    "fireworks-ice": (1, 2, 12),
    "flood-typhoon": (6, 7, 8, 9),
    "fire": (1, 2, 11),
    "traffic": (2, 3, 9),
}

NEGATIONS = ("不", "别", "勿", "禁止", "并非", "千万")
# Terms a lesson may only mention to say "don't" / "not": 112 and 911 are not emergency numbers in
# mainland China; human chains and jumping in to rescue are exactly what the Ministry warns against.
ONLY_NEGATED = ("112", "911", "手拉手", "人链", "下水救", "下水施救", "跳下去", "跳下水")
# Real numbers from SAFETY_CONTENT; anything else in a taught text would be invented.
KNOWN_NUMBERS = {"110", "119", "120", "122", "12395", "96110", "12355", "112", "911", "2021"}
KNOWN_PERCENTAGES = {"37.62%", "38%", "80%", "60%", "70%"}  # 38% = 37.62% rounded, in a quiz option


@pytest.fixture(scope="module")
def library() -> Library:
    return load_library(ROOT)


def taught_texts(lesson: Lesson) -> list[str]:
    """What a lesson asserts as true: segments, explanations, true statements, right choices."""
    texts = list(lesson.segments)
    for q in lesson.questions:
        texts.append(q.explain)
        if q.kind == "truefalse" and q.answer == "对":
            texts.append(q.text)
        if q.kind == "choice":
            texts.append(q.text + " " + q.options["ABCD".index(q.answer)])
    return texts


def every_text(lesson: Lesson) -> list[str]:
    texts = [lesson.title, lesson.summary, *lesson.segments]
    for q in lesson.questions:
        texts += [q.text, q.explain, *q.options]
    return texts


# -- the shipped content -------------------------------------------------------------------
def test_library_has_every_topic_for_every_band(library: Library) -> None:
    assert library.missing() == []
    assert len(library) == len(TOPICS) * len(BANDS) == 48
    assert library.topics() == list(TOPICS)
    for lesson in library:
        assert lesson.path.endswith(f"{lesson.topic}/{lesson.band}.toml")


def test_every_lesson_respects_the_limits(library: Library) -> None:
    for lesson in library:
        assert len(lesson.title) <= TITLE_MAX and len(lesson.summary) <= SUMMARY_MAX, lesson.id
        assert 2 <= len(lesson.segments) <= 4 and all(len(s) <= SEGMENT_MAX for s in lesson.segments)
        assert len(lesson.questions) >= 5, lesson.id
        assert lesson.minutes == 2
        for q in lesson.questions:
            assert q.id.startswith(lesson.id + "-q"), q.id
            assert len(q.text) <= QUESTION_TEXT_MAX and len(q.explain) <= EXPLAIN_MAX, q.id
            assert "\n" not in q.explain and q.source.strip(), q.id
            assert all(len(o) <= OPTION_MAX for o in q.options), q.id
            assert q.answer in q.accepted, q.id
            if q.kind == "choice":
                assert 3 <= len(q.options) <= 4, q.id
            else:
                assert q.options == (), q.id


def test_question_ids_are_unique_across_the_library(library: Library) -> None:
    ids = [q.id for lesson in library for q in lesson.questions]
    assert len(ids) == len(set(ids))
    assert all(library.question(qid) is not None for qid in ids)


def test_seasons_follow_the_facts_and_agree_across_bands(library: Library) -> None:
    for lesson in library:
        assert lesson.season == SEASONS.get(lesson.topic, ()), lesson.id


def test_forbidden_claims_appear_only_as_donts(library: Library) -> None:
    for lesson in library:
        for text in taught_texts(lesson):
            for term in ONLY_NEGATED:
                if term in text:
                    assert any(n in text for n in NEGATIONS), f"{lesson.id}: {term!r} taught in {text!r}"


def test_no_lesson_mentions_the_unverified_front_seat_rule(library: Library) -> None:
    for lesson in library:
        for text in every_text(lesson):
            assert "副驾" not in text, lesson.id
            assert not re.search(r"12\s*(岁|周岁).*前排|前排.*12\s*(岁|周岁)", text), lesson.id


def test_taught_numbers_and_statistics_come_from_the_facts(library: Library) -> None:
    for lesson in library:
        for text in taught_texts(lesson):
            for number in re.findall(r"(?<![\d.])\d{3,5}(?![\d.%])", text):
                assert number in KNOWN_NUMBERS, f"{lesson.id}: unknown number {number} in {text!r}"
            for pct in re.findall(r"\d+(?:\.\d+)?%", text):
                assert pct in KNOWN_PERCENTAGES, f"{lesson.id}: unsourced statistic {pct} in {text!r}"


def test_senior_lessons_carry_the_laws_and_numbers(library: Library) -> None:
    required = {
        "drowning-g7-12": ["37.62%", "六不", "12395"],
        "traffic-g7-12": ["第72条", "16周岁", "80%", "60%–70%", "第18条"],
        "carbon-monoxide-g7-12": ["12月", "120"],
        "emergency-numbers-g7-12": ["12395", "96110", "12355"],
        "flood-typhoon-g7-12": ["7月16日", "70%"],
    }
    for lesson_id, needles in required.items():
        lesson = library.get(lesson_id)
        assert lesson is not None
        text = "\n".join(every_text(lesson))
        for needle in needles:
            assert needle in text, f"{lesson_id} lost {needle!r}"


def test_kindergarten_lessons_are_read_with_a_parent_and_mostly_true_false(library: Library) -> None:
    for lesson in library.for_band("k"):
        assert lesson.segments[0].startswith("请和孩子一起读"), lesson.id
        assert sum(q.kind == "truefalse" for q in lesson.questions) >= 3, lesson.id


def test_right_answers_are_spread_over_positions(library: Library) -> None:
    letters: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    for lesson in library:
        choice = [q.answer for q in lesson.questions if q.kind == "choice"]
        if len(choice) >= 2:
            assert len(set(choice)) > 1, f"{lesson.id}: every right answer is {choice[0]}"
        letters.update(choice)
        verdicts.update(q.answer for q in lesson.questions if q.kind == "truefalse")
    total = sum(letters.values())
    for letter in "ABC":
        assert 0.15 <= letters[letter] / total <= 0.40, letters
    assert 0.4 <= verdicts["对"] / sum(verdicts.values()) <= 0.6, verdicts


def test_library_lookups(library: Library) -> None:
    lesson = library.for_topic_band("drowning", "g4-6")
    assert lesson is not None and lesson is library.get("drowning-g4-6")
    assert lesson.topic_name == "防溺水" and lesson.band_label == "4–6年级"
    assert library.get("nope") is None and library.for_topic_band("fire", "g13") is None
    first = lesson.questions[0]
    assert library.question(first.id) is first and library.lesson_of(first.id) is lesson
    july = library.in_season(7, all_year=False)
    assert {x.topic for x in july} == {"drowning", "flood-typhoon"}
    assert len(library.in_season(7)) == len(july) + 4 * (len(TOPICS) - len(SEASONS))
    assert [x.id for x in library][:2] == ["drowning-k", "drowning-g1-3"]
    with pytest.raises(ValueError):
        library.in_season(13)


# -- the validator ---------------------------------------------------------------------------
def question(n: int, kind: str = "choice", answer: str = "B", options: str = '["甲", "乙", "丙"]') -> str:
    opts = f"options = {options}\n" if kind == "choice" else ""
    return (
        f'[[questions]]\nid = "fire-g4-6-q{n}"\nkind = "{kind}"\ntext = "问题{n}"\n{opts}'
        f'answer = "{answer}"\nexplain = "解释{n}"\nsource = "SAFETY_CONTENT: 火灾逃生"\n\n'
    )


GOOD = (
    'id = "fire-g4-6"\ntopic = "fire"\nband = "g4-6"\ntitle = "火灾逃生"\nsummary = "捂鼻弯腰走楼梯"\n'
    "season = [11, 1, 2]\nminutes = 2\n\n"
    '[[segments]]\ntext = """\n第一段。\n第二行。\n"""\n\n[[segments]]\ntext = "第二段。"\n\n'
    + question(1)
    + question(2, "truefalse", "对")
    + question(3, answer="C")
    + question(4, "truefalse", "错")
    + question(5, answer="D", options='["甲", "乙", "丙", "丁"]')
)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(LessonError) as info:
        load_lesson(path)
    return info.value.problems


def test_a_valid_lesson_loads_into_typed_records(tmp_path: Path) -> None:
    lesson = load_lesson(write(tmp_path, "fire/g4-6.toml", GOOD))
    assert lesson.id == "fire-g4-6" and lesson.season == (1, 2, 11)
    assert lesson.segments == ("第一段。\n第二行。", "第二段。")
    assert [q.answer for q in lesson.questions] == ["B", "对", "C", "错", "D"]
    q1 = lesson.questions[0]
    assert q1 == Question("fire-g4-6-q1", "choice", "问题1", ("甲", "乙", "丙"), "B", "解释1", q1.source)
    assert q1.accepted == ("A", "B", "C")
    assert q1.check(" ｂ ") is True and q1.check("选A") is False
    assert q1.check("D") is None and q1.check("对") is None and q1.check("你好") is None
    assert lesson.questions[1].check("√") is True and lesson.questions[1].check("B") is None


def test_a_wrong_answer_letter_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "fire/g4-6.toml", GOOD.replace('answer = "C"', 'answer = "E"'))
    assert problems_of(path) == (f"{path}: questions[2].answer: 'E' is not one of A–C",)
    with pytest.raises(LessonError, match=r"g4-6\.toml: questions\[2\]\.answer"):
        load_lesson(path)


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('title = "火灾逃生"', 'title = "' + "长" * (TITLE_MAX + 1) + '"')
        .replace('text = "第二段。"', 'text = "' + "字" * (SEGMENT_MAX + 1) + '"')
        .replace('explain = "解释1"', 'explain = "第一行\\n第二行"')
        .replace('answer = "对"', 'answer = "是"')
        .replace(
            'source = "SAFETY_CONTENT: 火灾逃生"\n\n[[questions]]\nid = "fire-g4-6-q4"',
            'source = ""\n\n[[questions]]\nid = "fire-g4-6-q4"',
        )
        .replace("minutes = 2", "minutes = 2\nexplanation = 1")
        .replace('id = "fire-g4-6-q5"', 'id = "fire-g4-6-q1"')
        .replace("season = [11, 1, 2]", "season = [11, 13, 11]")
    )
    path = write(tmp_path, "fire/g4-6.toml", bad)
    problems = problems_of(path)
    keys = [p.split(": ")[1] for p in problems]
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert set(keys) == {
        "title",
        "segments[1].text",
        "questions[0].explain",
        "questions[1].answer",
        "questions[2].source",
        "explanation",
        "questions[4].id",
        "season[1]",
        "season[2]",
    }, problems


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (('topic = "fire"', 'topic = "fires"'), "topic", "is not one of"),
        (('band = "g4-6"', 'band = "g5"'), "band", "is not one of"),
        (('id = "fire-g4-6"\n', 'id = "fire-g1-3"\n'), "id", "must be 'fire-g4-6'"),
        (('kind = "truefalse"', 'kind = "yesno"'), "questions[1].kind", "is not one of"),
        (('options = ["甲", "乙", "丙"]', 'options = ["甲", "乙"]'), "questions[0].options", "need 3–4"),
        (('options = ["甲", "乙", "丙"]', 'options = ["甲", "乙", "乙"]'), "questions[0].options[2]", "twice"),
        (('answer = "对"', 'answer = "对"\noptions = ["对", "错", "不知道"]'), "questions[1].options", "no options"),
        (("minutes = 2", 'minutes = "2"'), "minutes", "whole number"),
        (("season = [11, 1, 2]\n", ""), "season", "missing"),
        (('summary = "捂鼻弯腰走楼梯"', 'summary = """两行\n摘要"""'), "summary", "one line"),
        (('text = "问题1"', 'text = "' + "问" * (QUESTION_TEXT_MAX + 1) + '"'), "questions[0].text", "at most"),
        (('id = "fire-g4-6-q3"', 'id = "drowning-k-q3"'), "questions[2].id", "must start with"),
    ],
)
def test_each_rule_is_checked(tmp_path: Path, change: tuple[str, str], key: str, message: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, "fire/g4-6.toml", GOOD.replace(old, new, 1))
    matching = [p for p in problems_of(path) if p.startswith(f"{path}: {key}: ")]
    assert matching and message in matching[0], problems_of(path)


def test_too_few_questions_and_segments_are_reported(tmp_path: Path) -> None:
    cut = GOOD[: GOOD.index('[[questions]]\nid = "fire-g4-6-q5"')]
    cut = cut.replace('[[segments]]\ntext = "第二段。"\n', "")
    problems = problems_of(write(tmp_path, "fire/g4-6.toml", cut))
    assert any(": questions: 4 questions, need 5" in p for p in problems)
    assert any(": segments: 1 segments, need 2" in p for p in problems)


def test_the_library_reports_problems_in_every_file(tmp_path: Path) -> None:
    write(tmp_path, "fire/g4-6.toml", GOOD.replace('answer = "C"', 'answer = "E"'))
    write(tmp_path, "fire/k.toml", GOOD)  # says fire-g4-6 but lives at fire/k.toml
    write(tmp_path, "traffic/g1-3.toml", 'id = "traffic-g1-3"\ntitle = [')
    write(tmp_path, "fire/notes.toml", GOOD)
    with pytest.raises(LessonError) as info:
        load_library(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{len(info.value.problems)} problems")
    assert "fire/g4-6.toml: questions[2].answer:" in text
    assert "fire/k.toml: id: 'fire-g4-6' does not match its place fire/k.toml" in text
    assert "traffic/g1-3.toml: <toml>:" in text
    assert "fire/notes.toml: <path>:" in text


def test_duplicate_lessons_and_question_ids_are_refused(tmp_path: Path) -> None:
    lesson = load_lesson(write(tmp_path, "a/fire/g4-6.toml", GOOD))
    twin = load_lesson(write(tmp_path, "b/fire/g4-6.toml", GOOD))
    with pytest.raises(LessonError) as info:
        Library([lesson, twin])
    assert any("id: 'fire-g4-6' also used in" in p for p in info.value.problems)
    assert any("questions[0].id: 'fire-g4-6-q1' also used in" in p for p in info.value.problems)
    library = load_library(tmp_path / "a")
    assert len(library) == 1 and library.missing() != []


# -- grades and replies ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("grade", "band"),
    [
        (0, "k"),
        ("幼儿园", "k"),
        ("K", "k"),
        ("k", "k"),
        ("大班", "k"),
        (1, "g1-3"),
        (3, "g1-3"),
        ("三年级", "g1-3"),
        ("小学二年级", "g1-3"),
        (" 2 ", "g1-3"),
        (4, "g4-6"),
        ("六年级", "g4-6"),
        ("５年级", "g4-6"),
        (7, "g7-12"),
        ("初一", "g7-12"),
        ("七年级", "g7-12"),
        ("初中三年级", "g7-12"),
        ("高一", "g7-12"),
        ("十二年级", "g7-12"),
        (12, "g7-12"),
    ],
)
def test_band_for_grade(grade: int | str, band: str) -> None:
    assert band_for_grade(grade) == band


@pytest.mark.parametrize("grade", [-1, 13, "13", "高四", "初零", "大学", "", True])
def test_band_for_grade_refuses_what_is_not_a_school_grade(grade: int | str) -> None:
    with pytest.raises(ValueError):
        band_for_grade(grade)


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("A", "A"),
        ("b", "B"),
        ("Ｃ", "C"),
        ("ｄ", "D"),
        ("  a  ", "A"),
        ("B。", "B"),
        ("（c）", "C"),
        ("选A", "A"),
        ("选 b", "B"),
        ("我选Ｄ！", "D"),
        ("答案：C", "C"),
        ("对", "对"),
        ("错", "错"),
        ("√", "对"),
        ("×", "错"),
        ("正确", "对"),
        ("错误", "错"),
        ("不对", "错"),
        ("T", "对"),
        ("f", "错"),
        ("对！", "对"),
    ],
)
def test_normalize_answer_accepts_what_people_type(reply: str, answer: str) -> None:
    assert normalize_answer(reply) == answer


@pytest.mark.parametrize("reply", ["", "   ", "E", "AB", "选", "你好", "对吗", "1", "。"])
def test_normalize_answer_refuses_what_is_not_an_answer(reply: str) -> None:
    assert normalize_answer(reply) is None
