"""Where a learner is in a lesson, and what each student has achieved: both in Redis.

Three kinds of record (key names in ``bot/store/keys.py``):

- **Progress**, per learner (one guardian with one child), under the guardian's hash tag: a small
  JSON document (lesson, phase, position, answers so far, the notice it came from). It outlives the
  conversation state on purpose: another command, 「暂停」 or 「取消」 clears the chat state, and
  「学习」 then resumes from here. It expires 7 days after the last step.
- **Results**, per student, under the school's hash tag: one field per lesson taken,
  ``started|finished|best|passed_at`` (epoch seconds; best score in %, -1 before the first finished
  quiz), plus ``m:<topic>``: the ids of the questions the student last missed on that topic (for the
  spaced review). Per student, not per class, so results follow a child who changes class. Whichever
  guardian does the lesson, the results are the child's; both guardians write through Lua, so two of
  them finishing at once cannot lose a best score.
- **Completions**, per notice and per campaign: a lesson attached to a notice, done after it, is
  recorded against that notice (and its campaign): ``best|passed_at|finished|lesson`` per student.

Nothing here knows about chat messages.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, cast

from bot.lessons.content import BANDS, TOPICS
from bot.notices.model import PROGRESS, SENT, Record
from bot.roster.authz import Scope
from bot.store import keys
from bot.store.autopipeline import Script, bulk
from bot.store.redis import Redis, get, hgetall

PASS_MARK: Final = 0.8  # the default of [lessons] pass_mark: the share of right answers that passes
PROGRESS_TTL: Final = 7 * 86400  # a lesson left half-way can be resumed for a week
MISSED_MAX: Final = 10  # question ids kept per student and topic for the review (oldest dropped)
LINK_DAYS: Final = 7  # a notice with a lesson offers it first for this long after it was sent
LINK_SCAN: Final = 50  # recent notices looked at for an attached lesson

Phase = Literal["review", "seg", "quiz", "done"]
PHASES: Final[tuple[Phase, ...]] = ("review", "seg", "quiz", "done")

# A lesson was started: set "started", keep the rest. KEYS: results. ARGV: lesson, now.
_START = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local rest = cur and string.match(cur, '^[^|]*|(.*)$') or '0|-1|0'
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. rest)
return 1
"""

# The missed-question set of one topic: drop what was answered right, append what was missed,
# keep the newest ARGV limit. Shared by _FINISH and _REVIEWED.
_UPDATE_MISSED = """
local function update_missed(key, fld, right, wrong, limit)
  local drop, seen, kept = {}, {}, {}
  for id in string.gmatch(right, '[^,]+') do drop[id] = true end
  for id in string.gmatch(redis.call('HGET', key, fld) or '', '[^,]+') do
    if not drop[id] and not seen[id] then table.insert(kept, id); seen[id] = true end
  end
  for id in string.gmatch(wrong, '[^,]+') do
    if not seen[id] then table.insert(kept, id); seen[id] = true end
  end
  while #kept > limit do table.remove(kept, 1) end
  if #kept == 0 then redis.call('HDEL', key, fld) else redis.call('HSET', key, fld, table.concat(kept, ',')) end
end
"""

# A quiz was finished. KEYS: results. ARGV: lesson, now, score %, passed 1/0, missed field,
# right ids, wrong ids (comma-separated), limit. Returns the best score.
_FINISH = (
    _UPDATE_MISSED
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local s, f, b, p = string.match(cur, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
if not s or s == '0' then s = ARGV[2] end
local best = tonumber(b) or -1
local pct = tonumber(ARGV[3])
if pct > best then best = pct end
if ARGV[4] == '1' then p = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], s .. '|' .. ARGV[2] .. '|' .. best .. '|' .. (p or '0'))
update_missed(KEYS[1], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]))
return best
"""
)

# Review questions answered. KEYS: results. ARGV: missed field, right ids, wrong ids, limit.
_REVIEWED = (
    _UPDATE_MISSED
    + """
update_missed(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
"""
)

# Completion of an attached lesson, best score kept. KEYS: completions. ARGV: "school/student",
# score %, passed 1/0, now, lesson.
_COMPLETE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local b, p = string.match(cur, '^([^|]*)|([^|]*)|')
local best = tonumber(b) or -1
local pct = tonumber(ARGV[2])
if pct > best then best = pct end
if not p or p == '' or p == '0' then p = (ARGV[3] == '1') and ARGV[4] or '0' end
redis.call('HSET', KEYS[1], ARGV[1], best .. '|' .. p .. '|' .. ARGV[4] .. '|' .. ARGV[5])
return best
"""


def pass_mark(config: object | None = None) -> float:
    """``config.lessons.pass_mark`` once the config has it, else :data:`PASS_MARK`."""
    value = getattr(getattr(config, "lessons", None), "pass_mark", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    return PASS_MARK


def score(right: int, total: int, mark: float = PASS_MARK) -> tuple[int, bool]:
    """(score in %, passed). Passing needs at least ``ceil(mark × total)`` right answers, so 4 of 5 pass 80%."""
    if total <= 0:
        return 0, False
    needed = math.ceil(mark * total - 1e-9)
    return round(100 * right / total), right >= needed


@functools.lru_cache(maxsize=4096)  # a few dozen lesson ids, asked for per result in every report
def topic_of(lesson_id: str) -> str:
    """The topic of a lesson id (``topic-band``); "" when it is not one."""
    for band in BANDS:
        if lesson_id.endswith(f"-{band}"):
            topic = lesson_id[: -len(band) - 1]
            return topic if topic in TOPICS else ""
    return ""


def missed_field(topic: str) -> str:
    return f"m:{topic}"


@dataclass(slots=True)
class Progress:
    """One learner's place in one lesson. ``index`` counts within the phase."""

    lesson: str
    phase: Phase = "seg"
    index: int = 0
    review: list[str] = field(default_factory=list)  # question ids to review before the segments
    review_right: list[str] = field(default_factory=list)
    right: list[str] = field(default_factory=list)  # this attempt's quiz
    wrong: list[str] = field(default_factory=list)
    notice: str = ""  # the notice (and campaign) this lesson was started from
    campaign: str = ""
    attempt: int = 1
    started: float = 0.0
    score: int = -1  # when done
    passed: bool = False

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | None) -> Progress | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            progress = cls(**data)
        except (ValueError, TypeError):
            return None  # an older or damaged record: start again rather than fail
        if progress.phase not in PHASES or not isinstance(progress.index, int):
            return None
        return progress

    @property
    def answered(self) -> int:
        return len(self.right) + len(self.wrong)


@dataclass(frozen=True, slots=True)
class LessonResult:
    lesson: str
    started: int = 0
    finished: int = 0
    best: int = -1  # % ; -1 = no quiz finished yet
    passed_at: int = 0

    @property
    def topic(self) -> str:
        return topic_of(self.lesson)

    @property
    def passed(self) -> bool:
        return self.passed_at > 0

    @classmethod
    def decode(cls, lesson: str, raw: str) -> LessonResult:
        parts = [*raw.split("|"), "", "", ""][:4]
        try:
            return cls(lesson, int(parts[0] or 0), int(parts[1] or 0), int(parts[2] or -1), int(parts[3] or 0))
        except ValueError:
            return cls(lesson)


@dataclass(frozen=True, slots=True)
class Completion:
    """A student's completion of the lesson attached to a notice or campaign."""

    best: int
    passed_at: int
    finished: int
    lesson: str

    @property
    def passed(self) -> bool:
        return self.passed_at > 0

    @classmethod
    def decode(cls, raw: str) -> Completion:
        parts = [*raw.split("|"), "", "", ""][:4]
        try:
            return cls(int(parts[0] or -1), int(parts[1] or 0), int(parts[2] or 0), parts[3])
        except ValueError:
            return cls(-1, 0, 0, parts[3])


@dataclass(frozen=True, slots=True)
class Linked:
    """A recent notice this guardian received with a lesson attached."""

    notice: str
    campaign: str
    lesson: str  # a lesson id or a topic id, as the sender attached it
    audience: tuple[Scope, ...]
    sent: float


# The lesson results of many students of one school in one call: most students of a city have none,
# and a pipeline of HGETALLs costs the client ~15 µs per command to pack and parse even when empty.
# KEYS: lesson_results of each student (one school: one hash tag).  Returns {i, {field, value...}, ...}
# for the non-empty ones (i: 1-based position in KEYS).
_RESULTS_MANY = """
local out = {}
for i, k in ipairs(KEYS) do
  local h = redis.call('HGETALL', k)
  if #h > 0 then
    out[#out + 1] = i
    out[#out + 1] = h
  end
end
return out
"""


_RESULTS_MANY_SCRIPT = Script(_RESULTS_MANY)


def _results(raw: dict[str, str]) -> dict[str, LessonResult]:
    return {f: LessonResult.decode(f, v) for f, v in raw.items() if not f.startswith("m:")}


class LessonStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._reviewed = redis.register_script(_REVIEWED)
        self._complete = redis.register_script(_COMPLETE)

    # -- progress (per learner) ------------------------------------------------------------
    async def progress(self, openid: str, school: str, student: str) -> Progress | None:
        return Progress.decode(await get(self.r, keys.lesson_progress(openid, school, student)))

    async def progress_many(self, openid: str, children: Sequence[tuple[str, str]]) -> list[Progress | None]:
        if not children:
            return []
        raws = await self.r.mget([keys.lesson_progress(openid, s, st) for s, st in children])
        return [Progress.decode(cast(str | None, raw)) for raw in raws]

    async def save_progress(self, openid: str, school: str, student: str, progress: Progress) -> None:
        await self.r.set(keys.lesson_progress(openid, school, student), progress.encode(), ex=PROGRESS_TTL)

    async def drop_progress(self, openid: str, school: str, student: str) -> None:
        await self.r.delete(keys.lesson_progress(openid, school, student))

    # -- results (per student) -------------------------------------------------------------
    async def started(self, school: str, student: str, lesson: str, now: float) -> None:
        await self._start(keys=[keys.lesson_results(school, student)], args=[lesson, int(now)])

    async def finished(
        self,
        school: str,
        student: str,
        lesson: str,
        *,
        right: Sequence[str],
        wrong: Sequence[str],
        score_pct: int,
        passed: bool,
        now: float,
    ) -> int:
        """Record a finished quiz; returns the student's best score on this lesson."""
        best = await self._finish(
            keys=[keys.lesson_results(school, student)],
            args=[
                lesson,
                int(now),
                score_pct,
                "1" if passed else "0",
                missed_field(topic_of(lesson)),
                ",".join(right),
                ",".join(wrong),
                MISSED_MAX,
            ],
        )
        return int(best)

    async def reviewed(
        self, school: str, student: str, topic: str, *, right: Sequence[str], wrong: Sequence[str]
    ) -> None:
        """Review answers: a question answered right leaves the missed set; one missed again stays."""
        await self._reviewed(
            keys=[keys.lesson_results(school, student)],
            args=[missed_field(topic), ",".join(right), ",".join(wrong), MISSED_MAX],
        )

    async def missed(self, school: str, student: str, topic: str) -> list[str]:
        raw = await self.r.hget(keys.lesson_results(school, student), missed_field(topic))
        return [q for q in str(raw or "").split(",") if q]

    async def missed_many(self, school: str, students: Sequence[str], topic: str) -> dict[str, list[str]]:
        """Missed question ids of many students of one school (one pipelined round trip)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for sid in students:
                pipe.hget(keys.lesson_results(school, sid), missed_field(topic))
            raws = await pipe.execute()
        return {sid: [q for q in str(raw or "").split(",") if q] for sid, raw in zip(students, raws, strict=True)}

    async def results(self, school: str, student: str) -> dict[str, LessonResult]:
        return _results(await hgetall(self.r, keys.lesson_results(school, student)))

    async def results_many(
        self, school: str, students: Sequence[str], *, chunk: int = 1000
    ) -> dict[str, dict[str, LessonResult]]:
        """The lesson results of those of many students of one school who have any (most of a city
        has none: absent), one script call per chunk, on the bulk connection (hiredis packs the
        keys in C: redis-py's per-argument encoding was most of a district report's time)."""
        out: dict[str, dict[str, LessonResult]] = {}
        prefix = keys.lesson_results(school, "")
        pipe = bulk(self.r)
        for i in range(0, len(students), chunk):
            part = students[i : i + chunk]
            found: list[Any] = await pipe.run(_RESULTS_MANY_SCRIPT, [prefix + sid for sid in part], [])
            for j in range(0, len(found), 2):
                flat: list[str] = found[j + 1]
                out[part[int(found[j]) - 1]] = _results(dict(zip(flat[::2], flat[1::2], strict=True)))
        return out

    # -- completions against a notice or campaign ------------------------------------------
    async def record_completion(
        self,
        *,
        notice: str,
        campaign: str,
        school: str,
        student: str,
        lesson: str,
        score_pct: int,
        passed: bool,
        now: float,
    ) -> None:
        args: list[str | int] = [f"{school}/{student}", score_pct, "1" if passed else "0", int(now), lesson]
        if notice:
            await self._complete(keys=[keys.notice_lessons(notice)], args=args)
        if campaign:
            await self._complete(keys=[keys.campaign_lessons(campaign)], args=args)

    async def notice_completions(self, notice_id: str) -> dict[str, Completion]:
        """ "school/student" → completion of the lesson attached to this notice."""
        raw = await hgetall(self.r, keys.notice_lessons(notice_id))
        return {k: Completion.decode(v) for k, v in raw.items()}

    async def campaign_completions(self, campaign: str) -> dict[str, Completion]:
        raw = await hgetall(self.r, keys.campaign_lessons(campaign))
        return {k: Completion.decode(v) for k, v in raw.items()}

    async def completed_after(self, notice_id: str, school: str, student: str) -> bool:
        return bool(await self.r.hexists(keys.notice_lessons(notice_id), f"{school}/{student}"))

    # -- notices with a lesson attached ----------------------------------------------------
    async def linked(
        self, openid: str, now: float, *, days: float = LINK_DAYS, indexes: Sequence[str] = ()
    ) -> list[Linked]:
        """Recent notices (newest first) with a lesson that this guardian was sent.

        ``indexes`` are the notice lists to look in: the child's school's and district's
        (``notices_by_school`` / ``notices_by_district``), so that a city's other notices never push
        this family's out of the :data:`LINK_SCAN` looked at; default the city-wide ``notices_by_time``.
        Reads the notices' own records (``notice_records``, ``notice``): a guardian counts as having
        received a notice once WeChat accepted its card.
        """
        found: dict[str, float] = {}
        for index in indexes or (keys.notices_by_time(),):
            rows = cast(
                list[tuple[str, float]],
                await self.r.zrevrangebyscore(
                    index, now + 60, now - days * 86400, start=0, num=LINK_SCAN, withscores=True
                ),
            )
            for nid, created in rows:
                found[nid] = created
        ids = sorted(found, key=lambda nid: found[nid], reverse=True)[:LINK_SCAN]
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for nid in ids:
                pipe.hget(keys.notice_records(nid), openid)
            records = await pipe.execute()
        mine = [
            nid
            for nid, raw in zip(ids, records, strict=True)
            if (rec := Record.decode(raw)) is not None and PROGRESS.get(rec.status, -1) >= PROGRESS[SENT]
        ]
        if not mine:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for nid in mine:
                pipe.hmget(keys.notice(nid), ["lesson", "campaign", "audience", "created"])
            metas: list[list[Any]] = await pipe.execute()
        out: list[Linked] = []
        for nid, (lesson, campaign, audience, created) in zip(mine, metas, strict=True):
            if not lesson:
                continue
            try:
                scopes = tuple(Scope(**s) for s in json.loads(audience or "[]"))
            except (ValueError, TypeError):
                continue
            out.append(Linked(nid, str(campaign or ""), str(lesson), scopes, float(created or 0)))
        return out
