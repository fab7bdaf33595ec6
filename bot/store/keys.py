"""Every Redis key name SafeBell uses, in one place.

Keys that are used together in one command or script share a hash tag (the part in braces), so the
same code runs on Redis Cluster: per user (``{u:<openid>}``), per WeChat app (``{wx:<appid>}``).
Later capabilities add their keys here, never inline.
"""

from __future__ import annotations

PREFIX = "sb"


# -- per user (one WeChat follower): conversation state, its lock, retry dedupe ---------------
def user_tag(openid: str) -> str:
    return f"{PREFIX}:{{u:{openid}}}"


def chat_state(openid: str) -> str:
    """JSON ``{"s": state | null, "d": {...}}``: the conversation state and its data, one key so one read."""
    return f"{user_tag(openid)}:st"


def chat_lock(openid: str) -> str:
    return f"{user_tag(openid)}:lk"


def dedupe(openid: str, msg_key: str) -> str:
    """The first answer to a callback, kept for WeChat's retries (MsgId or CreateTime+event)."""
    return f"{user_tag(openid)}:dd:{msg_key}"


def identity(openid: str) -> str:
    """Who this user is (children bound, classes taught): a short string, loaded with the state."""
    return f"{user_tag(openid)}:who"


def bind_failures(openid: str) -> str:
    """Wrong binding proofs in the current hour (expires an hour after the first)."""
    return f"{user_tag(openid)}:bindfail"


def cs_window(openid: str) -> str:
    """When the user last wrote to us / last sent an event: gates customer-service messages."""
    return f"{user_tag(openid)}:cs"


# -- roster: per school ({s:<school>}), plus small global indexes --------------------------------
def school_tag(school: str) -> str:
    return f"{PREFIX}:{{s:{school}}}"


def school_meta(school: str) -> str:
    """Hash: name, district, region, proof kind, approval flag."""
    return f"{school_tag(school)}:meta"


def school_classes(school: str) -> str:
    """Hash: class id → "code|class-teacher openid"."""
    return f"{school_tag(school)}:classes"


def class_students(school: str, class_id: str) -> str:
    """Hash: student id → "name|status" (a for active, l for left)."""
    return f"{school_tag(school)}:c:{class_id}"


def class_guardians(school: str, class_id: str) -> str:
    """Hash: student id → "openid:r,openid:r" (r = relation letter)."""
    return f"{school_tag(school)}:c:{class_id}:g"


def class_phones(school: str, class_id: str) -> str:
    """Hash: student id → masked guardian phone, only when the school supplied one."""
    return f"{school_tag(school)}:c:{class_id}:p"


def school_teachers(school: str) -> str:
    """Hash: teacher openid → "class:role,class:role"."""
    return f"{school_tag(school)}:teachers"


def pending_bindings(school: str) -> str:
    """Hash: "class/student/openid" → "relation|time": bindings waiting for the class teacher."""
    return f"{school_tag(school)}:pending"


def schools() -> str:
    """Hash: school id → "district|region|name" (1,300 entries for a city)."""
    return f"{PREFIX}:schools"


def class_codes() -> str:
    """Hash: short class code → "school/class" (what a parent types or a QR scene carries)."""
    return f"{PREFIX}:classcodes"


def teacher_invite(code: str) -> str:
    """Hash: school, classes, role; expires."""
    return f"{PREFIX}:tinvite:{code}"


# -- per WeChat app: the shared access_token ------------------------------------------------
def wx_tag(app_id: str) -> str:
    return f"{PREFIX}:{{wx:{app_id}}}"


def access_token(app_id: str) -> str:
    return f"{wx_tag(app_id)}:token"


def access_token_lock(app_id: str) -> str:
    return f"{wx_tag(app_id)}:token:lock"


def access_token_forced(app_id: str) -> str:
    """Time of the last ``force_refresh``: WeChat allows one per 30 s and 20 a day."""
    return f"{wx_tag(app_id)}:token:forced"


# -- notices: per notice ({n:<id>}) --------------------------------------------------------------
def notice_tag(notice_id: str) -> str:
    return f"{PREFIX}:{{n:{notice_id}}}"


def notice(notice_id: str) -> str:
    """Hash: the notice itself (title, body, audience, mode, …) and its planning figures."""
    return f"{notice_tag(notice_id)}:meta"


def notice_records(notice_id: str) -> str:
    """Hash: guardian openid → delivery record "status|msgid|time|errcode"."""
    return f"{notice_tag(notice_id)}:d"


def notice_confirmations(notice_id: str) -> str:
    """Hash: "school/student" → "openid|time|k?": one confirmation per student, whoever gave it."""
    return f"{notice_tag(notice_id)}:c"


def notice_reminders(notice_id: str) -> str:
    """Hash: guardian openid → "round|status|time" of the latest reminder (only for the unconfirmed)."""
    return f"{notice_tag(notice_id)}:r"


def notice_idempotency(key: str) -> str:
    """String: the notice created with this idempotency key."""
    return f"{PREFIX}:idem:{key}"


def notices_by_time() -> str:
    """Sorted set: notice id by creation time (recent notices, reports, a parent's 确认)."""
    return f"{PREFIX}:notices"


def notices_by_school(school: str) -> str:
    """Sorted set: notices addressed to (part of) one school, by creation time."""
    return f"{school_tag(school)}:notices"


def notices_by_district(district: str) -> str:
    """Sorted set: district-wide notices, by creation time."""
    return f"{PREFIX}:{{d:{district}}}:notices"


def template_msg(msgid: str) -> str:
    """String: "notice id" for a sent card's msgid, kept until WeChat reports delivery."""
    return f"{PREFIX}:tmsg:{msgid}"


def followups() -> str:
    """Sorted set: "notice:round" by due time, swept by the scheduler."""
    return f"{PREFIX}:followups"


# -- delivery: one hash tag for the outbox and its companions (Lua moves entries between them) ----
def outbox() -> str:
    """The Redis Stream the workers read through one consumer group."""
    return f"{PREFIX}:{{ob}}:stream"


def outbox_held() -> str:
    """Sorted set: outbox entries (JSON) waiting until a time (quiet hours, quotas, caps)."""
    return f"{PREFIX}:{{ob}}:held"


def pace() -> str:
    """Hash: the global token bucket that paces template sends across all workers."""
    return f"{PREFIX}:{{ob}}:pace"


def quota_used(day: str) -> str:
    """Counter: template sends made (or planned) on ``day`` (YYYYMMDD, local time)."""
    return f"{PREFIX}:{{ob}}:quota:{day}"


def quota_exhausted(day: str) -> str:
    """Flag: WeChat answered 45009 on ``day``; sending resumes after midnight."""
    return f"{PREFIX}:{{ob}}:quota-out:{day}"


def family_cap(openid: str, day: str) -> str:
    """Set: the non-urgent cards (``notice:round``) that went out to this family on ``day``."""
    return f"{user_tag(openid)}:cards:{day}"


OUTBOX_GROUP = "workers"


# -- rate limits ----------------------------------------------------------------------------
def rate_counter(kind: str, who: str, bucket: int) -> str:
    """Counter of one client's hits in one window (expires with it)."""
    return f"{PREFIX}:rl:{kind}:{who}:{bucket}"


# -- operations ---------------------------------------------------------------------------
def heartbeat(process: str, ident: str) -> str:
    return f"{PREFIX}:hb:{process}:{ident}"


# -- API tokens: one hash tag, so creating, rotating and revoking are single transactions ----------
def api_token(token_hash: str) -> str:
    """String: the token's name, keyed by the SHA-256 of the token (the token itself is never stored).
    A rotated-out token's key expires at the end of its grace period."""
    return f"{PREFIX}:{{tok}}:h:{token_hash}"


def api_token_record(name: str) -> str:
    """Hash: role, district, school, created, last_used, hash (current), old_hash and old_until."""
    return f"{PREFIX}:{{tok}}:n:{name}"


def api_token_names() -> str:
    """Hash: token name → creation time (lists tokens without scanning keys)."""
    return f"{PREFIX}:{{tok}}:names"


# -- lessons: progress per learner ({u:<openid>}), results per student ({s:<school>}), ----------
# completions per notice ({n:<id>}) and per campaign ({cp:<id>})
def lesson_progress(openid: str, school: str, student: str) -> str:
    """JSON: where this guardian and this child are in a lesson, to resume after a break (TTL 7 days)."""
    return f"{user_tag(openid)}:lp:{school}/{student}"


def lesson_results(school: str, student: str) -> str:
    """Hash: lesson id → "started|finished|best|passed_at" (epoch seconds, best % or -1);
    "m:<topic>" → the question ids this student last missed on that topic ("q1,q2")."""
    return f"{school_tag(school)}:lr:{student}"


def notice_lessons(notice_id: str) -> str:
    """Hash: "school/student" → "best|passed_at|finished|lesson": the attached lesson done after this notice."""
    return f"{notice_tag(notice_id)}:lc"


def campaign_tag(campaign: str) -> str:
    return f"{PREFIX}:{{cp:{campaign}}}"


def campaign_lessons(campaign: str) -> str:
    """Hash: "school/student" → "best|passed_at|finished|lesson": the campaign's lesson, done by each student."""
    return f"{campaign_tag(campaign)}:lc"


# -- campaigns: firings (one hash tag, so the claim script touches them together), switches, ----
# admin-made campaigns, external warnings
def campaign_firing(firing_id: str) -> str:
    """Hash: one firing ("campaign:YYYY-MM-DD:district"): status (claimed/fired/missed/failed), due,
    claimed_at, by, notice, error, campaign, district, region, schools. Claimed once (Lua), kept 400 days."""
    return f"{PREFIX}:{{cf}}:f:{firing_id}"


def campaign_firings() -> str:
    """Sorted set: firing id by due time (what ``campaigns list`` and the API show as recent / missed)."""
    return f"{PREFIX}:{{cf}}:index"


def campaign_pending() -> str:
    """Sorted set: firing id by claim time, while claimed and not finished (a crashed claim is retaken)."""
    return f"{PREFIX}:{{cf}}:pending"


def campaign_last_tick() -> str:
    """String: the time up to which the campaign runner has looked (epoch seconds; only grows)."""
    return f"{PREFIX}:{{cf}}:tick"


def campaign_switches() -> str:
    """Hash: "campaign|scope" → "1" (on) / "0" (off); scope is "*", "d:<district>" or "s:<school>"."""
    return f"{PREFIX}:campaigns:switches"


def campaign_custom() -> str:
    """Hash: campaign id → JSON of an admin-made campaign (the same keys as a schedules/*.toml file)."""
    return f"{PREFIX}:campaigns:custom"


def alert(alert_id: str) -> str:
    """Hash: "first" / "last" → the warning and the answer given (JSON), "d:<district>" → what it fired
    there (JSON), "p:<district>" → when a caller of that district posted it. Kept 30 days."""
    return f"{PREFIX}:alert:{alert_id}"


def alerts() -> str:
    """Sorted set: alert id by the time it was first received (recent warnings for the console)."""
    return f"{PREFIX}:alerts"


# -- the web console: accounts, sessions, login throttling, audit log, class QR tickets ------------
def account(username: str) -> str:
    """Hash: a console account: role, district, school, classes, password hash, created, updated."""
    return f"{PREFIX}:acct:{username}"


def accounts() -> str:
    """Hash: username → "role|district|school" (lists accounts without scanning keys)."""
    return f"{PREFIX}:accts"


def console_session(session_hash: str) -> str:
    """Hash: one console session (user, kind, created, csrf nonce), keyed by the SHA-256 of its cookie;
    expires after the idle timeout (renewed on use)."""
    return f"{PREFIX}:csess:{session_hash}"


def console_user_sessions(user: str) -> str:
    """Set: the session hashes of one console user (a password change ends them all)."""
    return f"{PREFIX}:csess-of:{user}"


def login_failures(kind: str, value: str) -> str:
    """Counter: failed console logins for an account (kind "a") or a client address ("ip") in the
    current window (expires with it)."""
    return f"{PREFIX}:lfail:{kind}:{value}"


def audit_log(district: str) -> str:
    """Stream: the console's audit entries for one district (who did what to whom, when); capped."""
    return f"{PREFIX}:{{d:{district}}}:audit"


def class_qr_tickets(school: str) -> str:
    """Hash: class id → the ticket of the class's permanent WeChat QR code (made once, printed often)."""
    return f"{school_tag(school)}:qr"
