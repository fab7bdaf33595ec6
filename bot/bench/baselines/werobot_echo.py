"""Baseline (b): a WeRoBot echo bot, run by the benchmark under gunicorn with one sync worker::

    gunicorn -w 1 -k sync -b 127.0.0.1:8091 bot.bench.baselines.werobot_echo:app

The account comes from the environment (see the package docstring). Sessions are off (WeRoBot's
default would keep them in SQLite): an echo needs none, and it keeps WeRoBot as fast as it gets.
"""

from __future__ import annotations

from typing import Any

from werobot import WeRoBot

from bot.bench.baselines import account

_token, _aes_key, _app_id = account()
robot = WeRoBot(token=_token, encoding_aes_key=_aes_key, app_id=_app_id, SESSION_STORAGE=False)


@robot.text  # type: ignore[untyped-decorator]
def echo(message: Any) -> str:
    return str(message.content)


app = robot.wsgi
