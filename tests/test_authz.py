"""The authorization matrix: every role against every object kind and every action."""

from __future__ import annotations

import itertools

import pytest

from bot.roster.authz import (
    ACTIONS,
    ANONYMOUS,
    ClassObj,
    DistrictObj,
    NoticeObj,
    Obj,
    ReportObj,
    SchoolObj,
    Scope,
    StudentObj,
    Subject,
    can,
    may_list_missing,
)
from bot.roster.model import ChildRef, TeachRef, Who

D, D2 = "d1", "d2"
S, S2, S3 = "s1", "s2", "s3"  # s1, s2 in d1; s3 in d2
X, Y, Z = "3-1", "3-2", "3-1"  # X, Y in s1; Z in s2
DISTRICTS = {S: D, S2: D, S3: D2}

OBJECTS: dict[str, Obj] = {
    "student a (s1 X)": StudentObj(D, S, X, "a"),
    "student b (s1 Y)": StudentObj(D, S, Y, "b"),
    "student z (s2 Z)": StudentObj(D, S2, Z, "z"),
    "student w (d2)": StudentObj(D2, S3, "1-1", "w"),
    "class X": ClassObj(D, S, X),
    "class Y": ClassObj(D, S, Y),
    "class in d2": ClassObj(D2, S3, "1-1"),
    "school s1": SchoolObj(D, S),
    "school s2": SchoolObj(D, S2),
    "district d1": DistrictObj(D),
    "district d2": DistrictObj(D2),
    "notice to X": NoticeObj((Scope(D, S, 3, X),)),
    "urgent notice to X": NoticeObj((Scope(D, S, 3, X),), urgent=True),
    "notice to Y": NoticeObj((Scope(D, S, 3, Y),)),
    "notice to grade 3 of s1": NoticeObj((Scope(D, S, 3),)),
    "notice to s1": NoticeObj((Scope(D, S),)),
    "notice to d1": NoticeObj((Scope(D),)),
    "notice to d2": NoticeObj((Scope(D2),)),
    "report X": ReportObj(Scope(D, S, 3, X)),
    "report s1": ReportObj(Scope(D, S)),
    "report d1": ReportObj(Scope(D)),
}

SUBJECTS: dict[str, Subject] = {
    "anonymous": ANONYMOUS,
    "parent of a": Subject.from_who("oA", Who(children=(ChildRef(S, X, "a", "m"),)), DISTRICTS),
    "class teacher of X": Subject.from_who("oT", Who(teaches=(TeachRef(S, X, "c"),)), DISTRICTS),
    "subject teacher of X": Subject.from_who("oU", Who(teaches=(TeachRef(S, X, "s"),)), DISTRICTS),
    "class teacher of Y": Subject.from_who("oV", Who(teaches=(TeachRef(S, Y, "c"),)), DISTRICTS),
    "school admin s1": Subject("school_admin", school=S, district=D),
    "school admin s2": Subject("school_admin", school=S2, district=D),
    "district admin d1": Subject("district_admin", district=D),
    "district admin d2": Subject("district_admin", district=D2),
}

# Administrators may do everything in their scope but confirm (families only) and see, by name, who has
# not confirmed (list_missing: the class teacher only; administrators get the counts).
ALL_BUT_CONFIRM = {"view", "manage", "approve", "send", "send_urgent"}
PARENT_NOTICES = ["notice to X", "urgent notice to X", "notice to grade 3 of s1", "notice to s1", "notice to d1"]

ALLOWED: dict[str, dict[str, set[str]]] = {
    "anonymous": {},
    "parent of a": {"student a (s1 X)": {"view", "confirm"}, **{n: {"view", "confirm"} for n in PARENT_NOTICES}},
    "class teacher of X": {
        "student a (s1 X)": {"view", "manage", "approve"},
        "class X": {"view", "manage", "approve", "list_missing"},
        "notice to X": {"view", "send"},
        "urgent notice to X": {"view"},
        "report X": {"view"},
    },
    "subject teacher of X": {
        "student a (s1 X)": {"view"},
        "class X": {"view"},
        "notice to X": {"view"},
        "urgent notice to X": {"view"},
        "report X": {"view"},
    },
    "class teacher of Y": {
        "student b (s1 Y)": {"view", "manage", "approve"},
        "class Y": {"view", "manage", "approve", "list_missing"},
        "notice to Y": {"view", "send"},
    },
    "school admin s1": {
        name: ALL_BUT_CONFIRM
        for name in [
            "student a (s1 X)",
            "student b (s1 Y)",
            "class X",
            "class Y",
            "school s1",
            "notice to X",
            "urgent notice to X",
            "notice to Y",
            "notice to grade 3 of s1",
            "notice to s1",
            "report X",
            "report s1",
        ]
    },
    "school admin s2": {"student z (s2 Z)": ALL_BUT_CONFIRM, "school s2": ALL_BUT_CONFIRM},
    "district admin d1": {
        name: ALL_BUT_CONFIRM for name, obj in OBJECTS.items() if "d2" not in name and name != "student w (d2)"
    },
    "district admin d2": {
        "student w (d2)": ALL_BUT_CONFIRM,
        "class in d2": ALL_BUT_CONFIRM,
        "district d2": ALL_BUT_CONFIRM,
        "notice to d2": ALL_BUT_CONFIRM,
    },
}


@pytest.mark.parametrize(("subject_name", "object_name"), list(itertools.product(SUBJECTS, OBJECTS)))
def test_authorization_matrix(subject_name: str, object_name: str) -> None:
    subject, obj = SUBJECTS[subject_name], OBJECTS[object_name]
    allowed = ALLOWED[subject_name].get(object_name, set())
    got = {action for action in ACTIONS if can(subject, action, obj)}
    assert got == allowed, f"{subject_name} on {object_name}"


def test_the_matrix_covers_every_role_and_object_kind() -> None:
    roles = {s.role for s in SUBJECTS.values()}
    assert roles == {"anonymous", "parent", "teacher", "school_admin", "district_admin"}
    kinds = {type(o) for o in OBJECTS.values()}
    assert kinds == {StudentObj, ClassObj, SchoolObj, DistrictObj, NoticeObj, ReportObj}


def test_a_parent_who_is_also_a_teacher_keeps_both_rights() -> None:
    both = Subject.from_who("oP", Who(children=(ChildRef(S, Y, "b", "f"),), teaches=(TeachRef(S, X, "c"),)), DISTRICTS)
    assert can(both, "confirm", OBJECTS["notice to Y"])
    assert can(both, "send", OBJECTS["notice to X"])
    assert not can(both, "send", OBJECTS["notice to Y"])


def test_only_the_class_teacher_may_list_who_has_not_confirmed() -> None:
    """The names of non-confirming families go to that class's 班主任; everyone else who may view
    the class (a subject teacher, the school's and the district's administrators) gets counts."""
    for name, subject in SUBJECTS.items():
        assert may_list_missing(subject, D, S, X) == (name == "class teacher of X"), name
        assert may_list_missing(subject, D, S, Y) == (name == "class teacher of Y"), name
    viewers = ["class teacher of X", "subject teacher of X", "school admin s1", "district admin d1"]
    assert [n for n in SUBJECTS if can(SUBJECTS[n], "view", OBJECTS["class X"])] == viewers
    both = Subject.from_who("oP", Who(children=(ChildRef(S, X, "a", "m"),), teaches=(TeachRef(S, Y, "s"),)), DISTRICTS)
    assert not may_list_missing(both, D, S, X) and not may_list_missing(both, D, S, Y)  # a parent, a subject teacher
