"""The one ``bot`` command: ``serve``, ``worker``, ``scheduler``, ``emulator``, ``demo``.

Configuration errors end the program with exit code 2 and one line naming the key and its source;
operators never see a traceback for something they can fix in the config.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from bot.bench.cli import add_commands as _bench_commands
from bot.campaigns.admin import add_commands as _campaign_commands
from bot.config import Config, ConfigError, load_config
from bot.console.cli import add_commands as _console_commands
from bot.lessons.cli import add_commands as _lesson_commands
from bot.logs import setup_logging
from bot.notices.cli import add_commands as _notice_commands
from bot.privacy import add_commands as _privacy_commands
from bot.roster.cli import add_commands as _roster_commands
from bot.store.embedded import EmbeddedRedisError
from bot.web.tokens import add_commands as _token_commands

Command = Callable[[Config, argparse.Namespace], int]
# Later capabilities add their sub-commands here (import, send, report, campaigns, bench, ...).
EXTRA_COMMANDS: list[
    Callable[[argparse._SubParsersAction[argparse.ArgumentParser], argparse.ArgumentParser], None]
] = []
EXTRA_COMMANDS += [_roster_commands, _bench_commands]  # import, teacher, classes; bench
EXTRA_COMMANDS += [_notice_commands, _token_commands]  # send notice, report notice; admin token
EXTRA_COMMANDS += [_lesson_commands]  # report lessons (joins the report group notices created)
EXTRA_COMMANDS += [_campaign_commands]  # campaigns list|preview|enable|disable|render|save|remove|check
EXTRA_COMMANDS += [_console_commands]  # admin create|passwd|list (console accounts; after admin token)
EXTRA_COMMANDS += [_privacy_commands]  # privacy erase|retention


def _cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from bot.serve import run_serve

    workers = args.workers if args.workers is not None else cfg.server.workers
    return run_serve(cfg, workers, child=args.child)


def _cmd_worker(cfg: Config, args: argparse.Namespace) -> int:
    from bot.serve import run_worker

    return run_worker(cfg, burst=args.burst)


def _cmd_scheduler(cfg: Config, args: argparse.Namespace) -> int:
    from bot.scheduler import run_scheduler

    return run_scheduler(cfg)


def _cmd_emulator(cfg: Config, args: argparse.Namespace) -> int:
    from bot.wechat.emulator import run_emulator

    if args.port is not None:
        cfg.emulator.port = args.port
    asyncio.run(run_emulator(cfg))
    return 0


def _cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return run_demo(cfg, once=args.once)


def build_parser() -> argparse.ArgumentParser:
    help_config = "TOML config file (default: $BOT_CONFIG, else built-in defaults)"
    parser = argparse.ArgumentParser(
        prog="bot",
        description="SafeBell (平安铃): safety messaging for a school's WeChat official account.",
    )
    parser.add_argument("--config", "-c", metavar="PATH", help=help_config)
    # Sub-commands accept --config too; SUPPRESS keeps one given before the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="PATH", default=argparse.SUPPRESS, help=help_config)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="answer WeChat callbacks, H5 pages, console, API")
    p.add_argument("--workers", type=int, default=None, help="processes sharing the port (default: server.workers)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", parents=[common], help="send what is in the outbox")
    p.add_argument("--burst", action="store_true", help="drain the outbox and exit")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("scheduler", parents=[common], help="run periodic work: campaigns, follow-ups, token")
    p.set_defaults(func=_cmd_scheduler)

    p = sub.add_parser("emulator", parents=[common], help="run the local WeChat emulator")
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=_cmd_emulator)

    p = sub.add_parser("demo", parents=[common], help="everything in one go on embedded defaults")
    p.add_argument("--once", action="store_true", help="run the walkthrough and exit (0 = every step passed)")
    p.set_defaults(func=_cmd_demo)

    for add in EXTRA_COMMANDS:
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        setup_logging(cfg.log, process=args.command)
        code: int = args.func(cfg, args)
        return code
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except EmbeddedRedisError as exc:
        print(f"redis: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
