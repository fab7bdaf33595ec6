"""What every account does: welcome a new follower, list what the bot can do, cancel, fall back."""

from __future__ import annotations

from bot.chat.router import MsgType, Router
from bot.chat.state import ChatState
from bot.chat.texts import Texts
from bot.config import Config

# Included first: these words work in every conversation state.
commands = Router(name="basic.commands")
# Included last: what nobody else handled.
fallbacks = Router(name="basic.fallbacks")

HELP_KEY = "HELP"


@commands.event("subscribe")
async def welcome(texts: Texts, config: Config) -> str:
    return texts.render("welcome", account_name=config.account.name)


@commands.command("帮助", "help", "?", "菜单", "功能")
@commands.menu(HELP_KEY)
async def show_help(texts: Texts, config: Config, help_items: list[str]) -> str:
    return texts.render("help", account_name=config.account.name, features=help_items)


@commands.command("取消", "退出", "cancel")
async def cancel(state: ChatState, texts: Texts) -> str:
    state.clear()
    return texts.render("cancelled")


@fallbacks.fallback(MsgType("text", "image", "voice", "video", "shortvideo", "location", "link"))
async def not_understood(texts: Texts) -> str:
    return texts.render("fallback")
