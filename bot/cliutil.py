"""Small pieces the capabilities' command lines share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def report_group(sub: SubParsers, common: argparse.ArgumentParser) -> SubParsers:
    """The ``report`` command's sub-commands, shared by every capability that reports."""
    existing = sub.choices.get("report")
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    parser = sub.add_parser("report", parents=[common], help="reports: lessons, notices, ...")
    return parser.add_subparsers(dest="report", required=True, metavar="WHAT")
