"""The WeChat emulator: stands in for WeChat's servers in the demo, the tests and the benchmarks.

* :func:`create_emulator_app` / :func:`run_emulator`: the aiohttp app (WeChat's API + control API);
* :class:`EmulatorClient`: the typed client of its control API;
* :mod:`bot.wechat.emulator.follower`: pure functions that build signed callbacks and read replies.
"""

from bot.wechat.emulator.app import create_emulator_app, run_emulator
from bot.wechat.emulator.client import CallbackResult, EmulatorClient, EmulatorControlError

__all__ = ["CallbackResult", "EmulatorClient", "EmulatorControlError", "create_emulator_app", "run_emulator"]
