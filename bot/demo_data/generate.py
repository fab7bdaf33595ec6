"""A city-sized roster for the benchmarks: deterministic, fictional, written in a few seconds.

``generate_city(folder)`` writes ``schools.csv`` and ``roster.csv`` for 1,300 schools and 500,000
students (~15,000 classes of ~33): 70 % primary schools (grades 1–6), 20 % junior (初一–初三), 10 %
senior (高一–高三), grade and class written the many ways schools write them, about one row in five
with a guardian phone. The same seed gives the same files. Files go to a temporary folder and are
never committed.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔向汤"
)
GIVEN = (
    "子梓浩宇轩涵欣怡一诺思雨晨泽博文佳琪梦瑶嘉俊杰雅婷明睿若可馨悦辰逸航昊然安宁乐心语彤妍萱铭煜皓天旭阳宸奕凯"
    "瑞锦书楠诗雪月晴哲鑫磊涛斌婧璐静慧丽芳伟强军洋勇艳娜敏霞小云海鹏飞亮"
)
DISTRICTS = ("城东区", "城西区", "城南区", "城北区", "高新区", "滨江区", "江北区", "开发区", "临湖区", "山前区",
             "新城区", "老城区")  # fmt: skip
CLASS_SIZE = 33
ROSTER_HEADER = ["学校代码", "年级", "班级", "学生姓名", "学号", "家长手机"]
SCHOOLS_HEADER = ["学校代码", "学校名称", "区县", "地区", "验证方式", "需审核"]

_CN = "一二三四五六"


def student_name(rng: random.Random) -> str:
    given = rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(SURNAMES) + given


def school_id(i: int) -> str:
    return f"c{i:04d}"


def _kind(i: int) -> tuple[str, list[int]]:
    k = i % 10
    if k < 7:
        return "小学", list(range(1, 7))
    if k < 9:
        return "初级中学", list(range(7, 10))
    return "高级中学", list(range(10, 13))


def _grade_text(grade: int, style: int) -> str:
    if style == 0:
        return str(grade)
    if grade <= 6:
        return f"{_CN[grade - 1]}年级"
    return f"{'初' if grade <= 9 else '高'}{_CN[(grade - 7) % 3]}"


def generate_city_schools(path: str | Path, schools: int = 1300, seed: int = 0) -> Path:
    """The schools file for :func:`generate_city_roster` (ids ``c0000``…, region ``city``)."""
    rng = random.Random(seed)
    out = Path(path)
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(SCHOOLS_HEADER)
        for i in range(schools):
            kind, _ = _kind(i)
            district = DISTRICTS[i % len(DISTRICTS)]
            proof = "phone4" if rng.random() < 0.1 else "sid4"
            w.writerow([school_id(i), f"{district}第{i // len(DISTRICTS) + 1}{kind}", district, "city", proof, "否"])
    return out


def generate_city_roster(path: str | Path, schools: int = 1300, students: int = 500_000, seed: int = 0) -> Path:
    """A roster of ``students`` spread evenly over ``schools`` (see the module docstring)."""
    rng = random.Random(seed)
    out = Path(path)
    names = [student_name(rng) for _ in range(4096)]  # a pool: drawing per row would double the time
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROSTER_HEADER)
        per_school, extra = divmod(students, schools)
        for i in range(schools):
            n = per_school + (1 if i < extra else 0)
            if n == 0:
                continue
            _, grades = _kind(i)
            per_grade = max(1, round(n / len(grades) / CLASS_SIZE))
            slots = [(g, c) for g in grades for c in range(1, per_grade + 1)]
            style = i % 3
            sid = school_id(i)
            rows = []
            for j in range(n):
                grade, klass = slots[j * len(slots) // n]
                phone = f"1{rng.randrange(3_000_000_000, 9_999_999_999)}" if rng.random() < 0.2 else ""
                rows.append(
                    [
                        sid,
                        _grade_text(grade, style),
                        f"{klass}班" if style == 1 else str(klass),
                        names[rng.getrandbits(12)],
                        f"{2026 - grade + 1}{j:05d}",
                        phone,
                    ]
                )
            w.writerows(rows)
    return out


def generate_city(folder: str | Path, schools: int = 1300, students: int = 500_000, seed: int = 0) -> tuple[Path, Path]:
    """``schools.csv`` and ``roster.csv`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return (
        generate_city_schools(folder / "schools.csv", schools, seed),
        generate_city_roster(folder / "roster.csv", schools, students, seed),
    )
