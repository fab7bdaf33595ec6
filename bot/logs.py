"""Logging set-up: openids masked in every record, optional JSON lines."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from bot.config import LogConfig
from bot.wechat.protocol import mask_openid

# WeChat openids are 28 characters of [A-Za-z0-9_-], starting with "o" for official accounts
# (matched loosely: a few characters either way costs nothing and catches look-alikes).
_OPENID = re.compile(r"\bo[A-Za-z0-9_-]{25,34}\b")


def mask_text(text: str) -> str:
    return _OPENID.sub(lambda m: mask_openid(m.group(0)), text)


class MaskOpenIds(logging.Filter):
    """Last line of defence: code masks openids itself, this catches what slipped through."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_text(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


class MaskedFormatter(logging.Formatter):
    """Plain lines, masked whole: the filter only sees the message, not a traceback or stack dump."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = mask_text(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(cfg: LogConfig, *, process: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskOpenIds())
    if cfg.json:
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{process} " if process else ""
        handler.setFormatter(MaskedFormatter(f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
