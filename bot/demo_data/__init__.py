"""Sample data that ships with SafeBell: the demo district's schools and the demo school's roster.

- ``schools.csv``: the demo district (``demo-district``, calendar region ``demo``): ``demo-s1``
  平安路小学 (the demo school), ``demo-s2`` 和平街小学 (parents prove with the phone's last 4
  digits), ``demo-s3`` 向阳中学 (bindings wait for the class teacher's approval).
- ``roster.csv``: demo-s1, grades 1–6, classes 1 and 2, 20 students each (fictional names). Student
  ids are ``2026`` + grade (2 digits) + number in the grade (2 digits): ``20260321`` is the first
  student of 三年级（2）班. 王小明 (20260321, 3-2) and 王小红 (20260101, 1-1) are siblings with
  the same guardian phone, for the demo's parent with two children.
- ``bad_roster.csv``: deliberately bad rows, for the tests and the docs of the validation report.

``bot.demo_data.generate`` makes a city-sized roster for the benchmark (never committed).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

DEMO_SCHOOL = "demo-s1"


def path(name: str) -> Path:
    """The path of a sample file, e.g. ``path("roster.csv")``; FileNotFoundError if there is none."""
    p = HERE / name
    if not p.is_file():
        raise FileNotFoundError(f"no sample data file {name!r} in {HERE}")
    return p
