"""``bot bench NAME [--json] [options]`` and ``bot bench --list``; registered through ``bot.cli.EXTRA_COMMANDS``.

The benchmark's own options are parsed by the benchmark (``bot bench NAME --help``), so building
``bot``'s parser never imports a benchmark.
"""

from __future__ import annotations

import argparse

from bot.config import Config


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark (bot bench --list)",
        description="Run a benchmark: a table, or with --json one JSON object. "
        "Options after NAME belong to the benchmark (bot bench NAME --help).",
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    from bot.bench.core import listing, run

    if args.list or not args.name:
        print(listing())
        return 0 if args.list else 2
    return run(args.name, list(args.options))
