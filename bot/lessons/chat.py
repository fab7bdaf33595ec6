"""Lessons in the chat: a parent and child read a few short messages, then answer one question per
message, and get a score. Every step is a passive reply, so no customer-service quota is used.

The conversation, per learner (one guardian with one child):

    「学习」 / menu 安全课堂 ─▶ pick a child (if several) ─▶ resume an unfinished lesson
        ─▶ or start the lesson of a notice just received (its lesson attached)
        ─▶ or offer the season's lesson for the child's grade band, with a numbered topic list
    review (questions missed last time, not scored) ─▶ segments (「继续」 or any short reply)
        ─▶ questions (A/B/C/D, 对/错) with feedback ─▶ score, pass mark, 「重做」 to try again

Where the learner is lives in :class:`~bot.lessons.progress.Progress` (7 days), not only in the
chat state: any other command, 「暂停」 or 「取消」 leaves the lesson, and 「学习」 resumes it. The
chat state carries only which child is learning (``s``/``c``/``st``/``n``).

What the learner types inside a lesson is handled by *fallback* handlers: every other capability's
command still works mid-lesson (and the lesson waits), and the lesson gets only what nobody else
wanted: an answer, an acknowledgement, or a stray message that earns a gentle reminder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bot import clock
from bot.chat.router import Command, MenuKey, MsgType, Pattern, Router, State, Update
from bot.chat.state import ChatState
from bot.chat.texts import Texts
from bot.config import Config
from bot.lessons import review
from bot.lessons.content import BANDS, TOPICS, Lesson, Library, Question, band_for_grade
from bot.lessons.progress import LessonResult, LessonStore, Linked, Progress, pass_mark, score
from bot.lessons.report import build_report, rates_line, rates_short, status, term_start
from bot.roster import authz
from bot.roster.chat import directory
from bot.roster.model import Who, class_label, grade_of
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis

router = Router(name="lessons")

LESSONS_KEY: Final = "LESSONS"
START_WORDS: Final = ("学习", "安全课堂", "安全课", "学安全", "安全小课", "微课")
BEGIN_WORDS: Final = ("开始", "开始学习", "开始吧", "好", "好的", "好呀", "可以", "是", "嗯", "学", "ok", "yes")
PAUSE_WORDS: Final = ("暂停", "稍后", "稍后再学", "等会", "等会再学", "等一下", "先不学了", "不学了", "下次再学", "停")
RETRY_WORDS: Final = ("重做", "再做一次", "再来一次", "再来", "再试一次", "重试", "重新答题", "再答一次")
SWITCH_WORDS: Final = ("换一课", "换一个", "换课", "换主题", "其他主题", "换个主题")
REPORT_WORDS: Final = ("学习情况", "学习报告", "参学情况", "学习记录")

ACK_MAX: Final = 8  # while reading, any reply up to this many characters means "next"
NAMES_MAX: Final = 20  # names a teacher sees per class in the chat
REPLY_BYTES: Final = 2000  # a passive text reply is limited to about 2 KB (WECHAT.md)
ALL_KINDS: Final = ("text", "image", "voice", "video", "shortvideo", "location", "link")

RUN, CHILD, OFFER, DONE = "lesson:run", "lesson:child", "lesson:offer", "lesson:done"


@dataclass(frozen=True, slots=True)
class Kid:
    """The child a guardian is learning with, as kept in the chat state."""

    school: str
    class_id: str
    student: str
    name: str

    def data(self) -> dict[str, str]:
        return {"s": self.school, "c": self.class_id, "st": self.student, "n": self.name}

    @classmethod
    def from_state(cls, state: ChatState) -> Kid | None:
        s, c, st = state.get("s"), state.get("c"), state.get("st")
        if not (isinstance(s, str) and isinstance(c, str) and isinstance(st, str)):
            return None
        return cls(s, c, st, str(state.get("n") or ""))

    @property
    def band(self) -> str:
        try:
            return band_for_grade(grade_of(self.class_id))
        except ValueError:
            return "g1-3"


def recommend(library: Library, band: str, month: int, results: dict[str, LessonResult]) -> Lesson | None:
    """The lesson to offer: in season and not passed yet, then all-year and not passed, then in season."""
    lessons = library.for_band(band)
    in_season = [lesson for lesson in lessons if lesson.peaks_in(month)]
    all_year = [lesson for lesson in lessons if lesson.all_year]

    def not_passed(lesson: Lesson) -> bool:
        found = results.get(lesson.id)
        return found is None or not found.passed

    for group in ([x for x in in_season if not_passed(x)], [x for x in all_year if not_passed(x)], in_season, lessons):
        if group:
            # never started first, then in library order
            return sorted(group, key=lambda x: x.id in results)[0]
    return None


def topic_order(library: Library, month: int) -> list[str]:
    """Topics for the numbered list: this month's risks first, then the rest, each in TOPICS order."""
    season = {lesson.topic for lesson in library.in_season(month, all_year=False)}
    present = library.topics()
    return [t for t in present if t in season] + [t for t in present if t not in season]


def fits(p: Progress, lesson: Lesson, library: Library) -> bool:
    """Whether saved progress still points inside the lesson (the library may have changed since)."""
    if p.phase == "review":
        return p.index < len(p.review) and all(library.question(q) is not None for q in p.review)
    if p.phase == "seg":
        return p.index < len(lesson.segments)
    if p.phase == "quiz":
        return p.index < len(lesson.questions)
    return True


def _options(question: Question) -> list[dict[str, str]]:
    return [{"letter": "ABCD"[i], "text": o} for i, o in enumerate(question.options)]


def _expected(question: Question) -> str:
    if question.kind == "truefalse":
        return "「对」或「错」"
    letters = "ABCD"[: len(question.options)]
    return "字母 " + "、".join(letters[:-1]) + f" 或 {letters[-1]}"


class LessonChat:
    """One message's worth of lesson conversation: what the handlers share."""

    def __init__(
        self,
        openid: str,
        state: ChatState,
        texts: Texts,
        store: LessonStore,
        library: Library,
        roster: RosterStore,
        config: Config | None,
    ) -> None:
        self.openid = openid
        self.state = state
        self.texts = texts
        self.store = store
        self.library = library
        self.roster = roster
        self.config = config
        self.now = clock.now()
        self._linked: dict[str, list[Linked]] = {}  # by school: the notices of that school and its district

    def render(self, name: str, **context: Any) -> str:
        return self.texts.render(f"lessons/{name}", **context)

    # -- who is learning ---------------------------------------------------------------------
    async def kids(self, who: Who) -> list[Kid]:
        out = []
        for c in who.children:
            student = await self.roster.student(c.school, c.class_id, c.student)
            out.append(Kid(c.school, c.class_id, c.student, student.name if student else "孩子"))
        return out

    async def kid_of(self, who: Who) -> Kid | None:
        """The child of the current lesson conversation, or the only child."""
        kid = Kid.from_state(self.state)
        if kid is not None and any(c.school == kid.school and c.student == kid.student for c in who.children):
            return kid
        if len(who.children) == 1:
            return (await self.kids(who))[0]
        return None

    async def start(self, who: Who) -> str:
        if not who.children:
            return self.render("not_bound", teacher=who.is_teacher)
        kids = await self.kids(who)
        if len(kids) == 1:
            return await self.open(kids[0])
        progresses = await self.store.progress_many(self.openid, [(k.school, k.student) for k in kids])
        self.state.set(CHILD, kids=[[k.school, k.class_id, k.student, k.name] for k in kids])
        children = [
            {"name": k.name, "klass": class_label(k.class_id), "unfinished": p is not None and p.phase != "done"}
            for k, p in zip(kids, progresses, strict=True)
        ]
        return self.render("pick_child", children=children)

    async def pick_child(self, number: int, who: Who) -> str:
        rows = self.state.get("kids", [])
        if not 1 <= number <= len(rows):
            return self.render("bad_number", count=len(rows))
        kid = Kid(*rows[number - 1])
        if not any(c.school == kid.school and c.student == kid.student for c in who.children):
            return await self.start(who)  # unbound meanwhile: show the current list
        return await self.open(kid)

    # -- choosing the lesson -------------------------------------------------------------------
    async def linked_for(self, kid: Kid) -> tuple[Lesson, Linked] | None:
        """The lesson of the newest notice this guardian got for this child, unless already done."""
        district = (await directory(self.roster)).districts.get(kid.school, "")
        links = self._linked.get(kid.school)
        if links is None:
            indexes = [keys.notices_by_school(kid.school)]
            if district:
                indexes.append(keys.notices_by_district(district))
            links = self._linked[kid.school] = await self.store.linked(self.openid, self.now, indexes=indexes)
        for link in links:
            if not any(s.covers_class(district, kid.school, kid.class_id) for s in link.audience):
                continue
            lesson = self.for_band(link.lesson, kid.band)
            if lesson is not None and not await self.store.completed_after(link.notice, kid.school, kid.student):
                return lesson, link
        return None

    def for_band(self, ref: str, band: str) -> Lesson | None:
        """A notice may attach a lesson id or a topic: the child gets that topic's lesson for their band."""
        lesson = self.library.get(ref)
        topic = lesson.topic if lesson else (ref if ref in TOPICS else "")
        return self.library.for_topic_band(topic, band) or lesson

    async def open(self, kid: Kid) -> str:
        """Resume, or start a notice's lesson, or offer one."""
        progress = await self.store.progress(self.openid, kid.school, kid.student)
        lesson_now = self.library.get(progress.lesson) if progress is not None else None
        unfinished = (
            progress is not None
            and progress.phase != "done"
            and lesson_now is not None
            and fits(progress, lesson_now, self.library)
        )
        linked = await self.linked_for(kid)
        if progress is not None and unfinished:
            newer = linked is not None and linked[1].sent > progress.started and linked[1].notice != progress.notice
            if not newer:
                return self.resume(kid, progress)
        if linked is not None:
            lesson, link = linked
            return await self.begin(kid, lesson, notice=link.notice, campaign=link.campaign, linked=True)
        return await self.offer(kid)

    async def offer(self, kid: Kid) -> str:
        month = clock.local(self.now).month
        results = await self.store.results(kid.school, kid.student)
        lesson = recommend(self.library, kid.band, month, results)
        topics = topic_order(self.library, month)
        self.state.set(OFFER, **kid.data(), rec=lesson.id if lesson else "", topics=topics)
        season = {t for t in topics if any(x.topic == t and x.peaks_in(month) for x in self.library)}
        return self.render(
            "offer",
            child=kid.name,
            band=BANDS.get(kid.band, ""),
            lesson=lesson,
            topics=[{"name": TOPICS[t], "season": t in season, "done": _passed_topic(results, t)} for t in topics],
        )

    async def pick_topic(self, number: int) -> str:
        kid = Kid.from_state(self.state)
        topics = self.state.get("topics", [])
        if kid is None:
            return self.render("expired")
        if not 1 <= number <= len(topics):
            return self.render("bad_topic", count=len(topics))
        lesson = self.library.for_topic_band(topics[number - 1], kid.band)
        if lesson is None:
            return self.render("bad_topic", count=len(topics))
        return await self.begin(kid, lesson)

    async def begin_offered(self) -> str:
        kid = Kid.from_state(self.state)
        lesson = self.library.get(str(self.state.get("rec") or ""))
        if kid is None or lesson is None:
            return self.render("expired")
        return await self.begin(kid, lesson)

    # -- the lesson itself ---------------------------------------------------------------------
    async def begin(
        self, kid: Kid, lesson: Lesson, *, notice: str = "", campaign: str = "", linked: bool = False
    ) -> str:
        missed = await review.missed_for(self.store, self.library, kid.school, kid.student, lesson.topic)
        missed = missed[: review.REVIEW_MAX]
        progress = Progress(
            lesson.id,
            phase="review" if missed else "seg",
            review=[q.id for q in missed],
            notice=notice,
            campaign=campaign,
            started=self.now,
        )
        await self.store.started(kid.school, kid.student, lesson.id, self.now)
        await self.store.save_progress(self.openid, kid.school, kid.student, progress)
        self.state.set(RUN, **kid.data())
        intro = self.render("intro", lesson=lesson, child=kid.name, linked=linked, review=len(missed))
        return intro + "\n\n" + self.item(progress, lesson)

    def resume(self, kid: Kid, progress: Progress) -> str:
        lesson = self.library.get(progress.lesson)
        assert lesson is not None
        self.state.set(RUN, **kid.data())
        return self.render("resume", lesson=lesson, child=kid.name) + "\n\n" + self.item(progress, lesson)

    def item(self, p: Progress, lesson: Lesson) -> str:
        """The current segment or question."""
        if p.phase == "review":
            question = self.library.question(p.review[p.index])
            assert question is not None
            label = f"复习 {p.index + 1}/{len(p.review)}"
            return self.render(
                "question", label=label, q=question, options=_options(question), expected=_expected(question)
            )
        if p.phase == "seg":
            last = p.index + 1 == len(lesson.segments)
            return self.render(
                "segment",
                lesson=lesson,
                number=p.index + 1,
                total=len(lesson.segments),
                text=lesson.segments[p.index],
                last=last,
                questions=len(lesson.questions),
            )
        question = lesson.questions[p.index]
        label = f"第{p.index + 1}/{len(lesson.questions)}题"
        return self.render(
            "question", label=label, q=question, options=_options(question), expected=_expected(question)
        )

    async def current(self) -> tuple[Kid, Progress, Lesson] | None:
        kid = Kid.from_state(self.state)
        if kid is None:
            return None
        progress = await self.store.progress(self.openid, kid.school, kid.student)
        lesson = self.library.get(progress.lesson) if progress else None
        if progress is None or lesson is None or not fits(progress, lesson, self.library):
            return None
        return kid, progress, lesson

    async def step(self, text: str, kind: str) -> str:
        found = await self.current()
        if found is None or found[1].phase == "done":
            self.state.clear()
            return self.render("expired")
        kid, p, lesson = found
        if p.phase == "seg":
            if kind != "text" or len(text) > ACK_MAX:
                return self.render("reminder_read", last=p.index + 1 == len(lesson.segments))
            p.index += 1
            if p.index >= len(lesson.segments):
                p.phase, p.index = "quiz", 0
            await self.store.save_progress(self.openid, kid.school, kid.student, p)
            return self.item(p, lesson)
        if p.phase == "review":
            return await self._review_answer(kid, p, lesson, text)
        return await self._quiz_answer(kid, p, lesson, text)

    async def _review_answer(self, kid: Kid, p: Progress, lesson: Lesson, text: str) -> str:
        question = self.library.question(p.review[p.index]) if p.index < len(p.review) else None
        if question is None:  # the library changed under a saved review: skip to the lesson
            p.phase, p.index = "seg", 0
            await self.store.save_progress(self.openid, kid.school, kid.student, p)
            return self.item(p, lesson)
        verdict = question.check(text)
        if verdict is None:
            return self.reminder(question, p)
        await self.store.reviewed(
            kid.school,
            kid.student,
            lesson.topic,
            right=[question.id] if verdict else [],
            wrong=[] if verdict else [question.id],
        )
        if verdict:
            p.review_right.append(question.id)
        p.index += 1
        feedback = self.feedback(question, verdict)
        if p.index < len(p.review):
            await self.store.save_progress(self.openid, kid.school, kid.student, p)
            return feedback + "\n\n" + self.item(p, lesson)
        p.phase, p.index = "seg", 0
        await self.store.save_progress(self.openid, kid.school, kid.student, p)
        done = self.render("review_done", right=len(p.review_right), total=len(p.review), lesson=lesson)
        return feedback + "\n\n" + done + "\n\n" + self.item(p, lesson)

    async def _quiz_answer(self, kid: Kid, p: Progress, lesson: Lesson, text: str) -> str:
        question = lesson.questions[p.index]
        verdict = question.check(text)
        if verdict is None:
            return self.reminder(question, p)
        (p.right if verdict else p.wrong).append(question.id)
        p.index += 1
        feedback = self.feedback(question, verdict)
        if p.index < len(lesson.questions):
            await self.store.save_progress(self.openid, kid.school, kid.student, p)
            return feedback + "\n\n" + self.item(p, lesson)
        mark = pass_mark(self.config)
        pct, passed = score(len(p.right), len(lesson.questions), mark)
        best = await self.store.finished(
            kid.school, kid.student, lesson.id, right=p.right, wrong=p.wrong, score_pct=pct, passed=passed, now=self.now
        )
        if p.notice or p.campaign:
            await self.store.record_completion(
                notice=p.notice,
                campaign=p.campaign,
                school=kid.school,
                student=kid.student,
                lesson=lesson.id,
                score_pct=pct,
                passed=passed,
                now=self.now,
            )
        p.phase, p.index, p.score, p.passed = "done", 0, pct, passed
        await self.store.save_progress(self.openid, kid.school, kid.student, p)
        self.state.set(DONE, **kid.data())
        result = self.render(
            "result",
            lesson=lesson,
            child=kid.name,
            right=len(p.right),
            total=len(lesson.questions),
            score=pct,
            passed=passed,
            mark=round(mark * 100),
            best=best,
            attempt=p.attempt,
        )
        return feedback + "\n\n" + result

    def feedback(self, question: Question, right: bool) -> str:
        return self.render("feedback", right=right, q=question, answer=review.answer_text(question))

    def reminder(self, question: Question, p: Progress) -> str:
        return self.render(
            "reminder_answer",
            expected=_expected(question),
            q=question,
            options=_options(question),
            review=p.phase == "review",
        )

    async def pause(self) -> str:
        found = await self.current()
        self.state.clear()
        if found is None:
            return self.render("paused", where="")
        _kid, p, lesson = found
        if p.phase == "quiz":
            where = f"第{p.index + 1}题"
        elif p.phase == "seg":
            where = f"第{p.index + 1}段"
        else:
            where = "复习题"
        return self.render("paused", where=where, lesson=lesson)

    async def retry(self, who: Who) -> str:
        kid = await self.kid_of(who)
        if kid is None:
            return await self.start(who)
        progress = await self.store.progress(self.openid, kid.school, kid.student)
        lesson = self.library.get(progress.lesson) if progress else None
        if progress is None or lesson is None:
            return await self.open(kid)
        if progress.phase != "done":
            return self.resume(kid, progress)
        again = Progress(
            lesson.id,
            phase="quiz",
            notice=progress.notice,
            campaign=progress.campaign,
            attempt=progress.attempt + 1,
            started=self.now,
        )
        await self.store.started(kid.school, kid.student, lesson.id, self.now)
        await self.store.save_progress(self.openid, kid.school, kid.student, again)
        self.state.set(RUN, **kid.data())
        return self.render("retry", lesson=lesson) + "\n\n" + self.item(again, lesson)

    async def switch(self, who: Who) -> str:
        kid = await self.kid_of(who)
        if kid is None:
            return await self.start(who)
        await self.store.drop_progress(self.openid, kid.school, kid.student)
        return await self.offer(kid)


def _fit_reply(texts: Texts, rows: list[dict[str, Any]], since: str) -> str:
    """A teacher's report inside one passive reply: drop names, then topic lines, then classes if needed."""
    reply = texts.render("lessons/teacher_report", classes=rows, since=since)
    for trim in ("names", "topics", "classes"):
        if len(reply.encode()) <= REPLY_BYTES:
            break
        for row in rows:
            if trim == "names":
                row["more"], row["not_started"] = row["more"] + len(row["not_started"]), []
            elif trim == "topics":
                row["topics"] = []
        if trim == "classes":
            while len(rows) > 1 and len(reply.encode()) > REPLY_BYTES:
                rows = rows[:-1]
                reply = texts.render("lessons/teacher_report", classes=rows, since=since, cut=True)
        else:
            reply = texts.render("lessons/teacher_report", classes=rows, since=since)
    return reply


def _passed_topic(results: dict[str, LessonResult], topic: str) -> bool:
    return status(results, topic)[2]


def _chat(data: dict[str, Any]) -> LessonChat:
    """The lesson conversation of this message (handlers take the engine's whole context)."""
    d = data
    return LessonChat(d["openid"], d["state"], d["texts"], d["lesson_store"], d["lesson_library"], d["roster"],
                      d["config"])  # fmt: skip


# -- handlers: ordinary (specific words or states) ---------------------------------------------------
@router.handler(Command(*REPORT_WORDS))
async def learning_report(
    openid: str,
    who: Who,
    subject: authz.Subject,
    texts: Texts,
    roster: RosterStore,
    redis: Redis,
    lesson_store: LessonStore,
    lesson_library: Library,
) -> str:
    """Teachers: their own classes' rates this term and who has not started. Parents: their own children."""
    now = clock.now()
    month = clock.local(now).month
    season = [
        t for t in topic_order(lesson_library, month) if any(x.topic == t and x.peaks_in(month) for x in lesson_library)
    ]
    if who.is_teacher:
        districts = (await directory(roster)).districts
        classes = [
            (t.school, t.class_id)
            for t in who.teaches
            if authz.can(
                subject,
                "view",
                authz.ReportObj(authz.Scope(districts.get(t.school, ""), t.school, class_id=t.class_id)),
            )
        ]
        if not classes:
            return texts.render("lessons/not_teacher")
        since = term_start(now)
        rows = []
        for school, class_id in classes:
            report = await build_report(redis, roster, classes=[(school, class_id)], since=since, names=True)
            for c in report.classes:
                topics = [{"name": TOPICS[t], "line": rates_short(report.by_topic[t])} for t in season]
                rows.append(
                    {
                        "label": c.label,
                        "line": rates_line(c.rates),
                        "topics": topics,
                        "not_started": c.not_started[:NAMES_MAX],
                        "more": max(0, len(c.not_started) - NAMES_MAX),
                    }
                )
        since_text = f"{clock.local(since).month}月{clock.local(since).day}日"
        return _fit_reply(texts, rows, since_text)
    if not who.children:
        return texts.render("lessons/not_bound", teacher=False)
    chat = LessonChat(openid, ChatState(), texts, lesson_store, lesson_library, roster, None)
    children = []
    for kid in await chat.kids(who):
        results = await lesson_store.results(kid.school, kid.student)
        children.append(
            {
                "name": kid.name,
                "started": sum(1 for r in results.values() if r.started or r.finished),
                "finished": sum(1 for r in results.values() if r.finished),
                "passed": sum(1 for r in results.values() if r.passed),
                "season": [TOPICS[t] for t in season if not _passed_topic(results, t)],
            }
        )
    return texts.render("lessons/parent_report", children=children)


@router.handler(Command(*START_WORDS))
@router.handler(MenuKey(LESSONS_KEY))
async def start(**data: Any) -> str:
    return await _chat(data).start(data["who"])


@router.handler(State(RUN, OFFER, CHILD), Command(*PAUSE_WORDS))
async def pause(**data: Any) -> str:
    return await _chat(data).pause()


@router.handler(Command(*RETRY_WORDS))
async def retry(**data: Any) -> str:
    return await _chat(data).retry(data["who"])


@router.handler(State(DONE, RUN, OFFER, CHILD), Command(*SWITCH_WORDS))
async def switch(**data: Any) -> str:
    return await _chat(data).switch(data["who"])


@router.handler(State(CHILD), Pattern(r"\d{1,2}"))
async def child_picked(**data: Any) -> str:
    return await _chat(data).pick_child(int(data["text"]), data["who"])


@router.handler(State(OFFER), Command(*BEGIN_WORDS))
async def offered_begun(**data: Any) -> str:
    return await _chat(data).begin_offered()


@router.handler(State(OFFER), Pattern(r"\d{1,2}"))
async def topic_picked(**data: Any) -> str:
    return await _chat(data).pick_topic(int(data["text"]))


# -- handlers: fallbacks (only what no other capability wanted) --------------------------------------
@router.fallback(State(RUN), MsgType(*ALL_KINDS))
async def lesson_step(**data: Any) -> str:
    update: Update = data["update"]
    return await _chat(data).step(update.text, update.kind)


@router.fallback(State(CHILD), MsgType(*ALL_KINDS))
async def child_reminder(state: ChatState, texts: Texts) -> str:
    return texts.render("lessons/bad_number", count=len(state.get("kids", [])))


@router.fallback(State(OFFER), MsgType(*ALL_KINDS))
async def offer_reminder(state: ChatState, texts: Texts) -> str:
    return texts.render("lessons/bad_topic", count=len(state.get("topics", [])))


@router.fallback(State(DONE), MsgType("text"))
async def done_reminder(state: ChatState, texts: Texts) -> str:
    state.clear()  # one hint, then the chat is back to normal
    return texts.render("lessons/done_hint")
