"""`bot bench roster-import` and `bot bench memory` at a small size: they run and print the documented JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from bot.bench.core import Figure, at_most, exactly, render
from bot.paths import ROOT

pytestmark = pytest.mark.slow


def bench(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "bench", *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout  # exactly one JSON object on stdout
    result: dict[str, Any] = json.loads(done.stdout)
    assert set(result) == {"bench", "machine", "figures"}
    assert {"cpu", "cores", "memory_gib", "python", "redis", "platform"} <= set(result["machine"])
    assert result["machine"]["redis"]  # the bench started its own Redis and says which
    for name, figure in result["figures"].items():
        assert set(figure) == {"value", "unit", "target", "met"}, name
        assert isinstance(figure["value"], int | float) and isinstance(figure["unit"], str)
        assert (figure["target"] is None) == (figure["met"] is None), name
    return result


def test_roster_import_bench_imports_and_reimports_without_writes() -> None:
    result = bench("roster-import", "--schools", "20", "--students", "5000")
    figures = result["figures"]
    assert result["bench"] == "roster-import"
    assert figures["rows"]["value"] == 5000
    assert figures["import_seconds"]["target"] == "≤ 60 s" and figures["import_seconds"]["met"] is True
    assert figures["reimport_changes"] == {"value": 0, "unit": "changes", "target": "= 0 changes", "met": True}
    assert figures["reimport_redis_writes"]["value"] == 0
    assert figures["peak_rss"]["value"] > 0


def test_memory_bench_reports_bytes_per_guardian_within_target() -> None:
    result = bench("memory", "--guardians", "2000")
    figures = result["figures"]
    assert figures["guardians"]["value"] == 2000
    assert figures["links"]["value"] == 2200  # 10 % of guardians have two children
    per = figures["bytes_per_guardian"]
    assert per["target"] == "≤ 400 B" and per["met"] is True and 0 < per["value"] <= 400
    parts = figures["roster_bytes_per_guardian"]["value"] + figures["binding_bytes_per_guardian"]["value"]
    assert abs(parts - per["value"]) < 1
    assert figures["compact_class_hashes"]["value"] == 100


def test_figures_render_as_a_table_and_targets_say_whether_met() -> None:
    assert at_most(61.0, "s", 60) == Figure(61.0, "s", "≤ 60 s", False)
    assert exactly(0, "writes", 0).met is True
    table = render(
        {
            "bench": "x",
            "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1.0, "python": "3.11", "redis": None},
            "figures": {"import_seconds": at_most(61.0, "s", 60).to_json()},
        }
    )
    assert "import_seconds" in table and "≤ 60 s" in table and "NO" in table
