"""Logs never carry a whole openid."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from bot.config import LogConfig
from bot.logs import JsonFormatter, MaskOpenIds, mask_text, setup_logging

OPENID = "oTestParent000000000000000001"


def test_openids_are_masked_in_messages_and_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.mask")
    caplog.handler.addFilter(MaskOpenIds())
    with caplog.at_level(logging.INFO):
        logger.info("bound %s to class 3", OPENID)
        logger.info(f"inline {OPENID}")
    assert OPENID not in caplog.text
    assert "oTes…001" in caplog.text


def test_json_lines_are_valid_json_and_masked() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", (OPENID,), None)
    MaskOpenIds().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "INFO" and OPENID not in out["msg"]


def test_setup_logging_installs_the_mask() -> None:
    setup_logging(LogConfig(level="INFO", json=True))
    root = logging.getLogger()
    assert any(isinstance(f, MaskOpenIds) for h in root.handlers for f in h.filters)
    assert mask_text(f"a {OPENID} b") == "a oTes…001 b"


@pytest.mark.parametrize("as_json", [False, True])
def test_tracebacks_and_stack_dumps_are_masked_too(as_json: bool) -> None:
    setup_logging(LogConfig(level="INFO", json=as_json))
    [handler] = logging.getLogger().handlers
    try:
        raise KeyError(f"no chat state for {OPENID}")
    except KeyError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "could not answer", None, sys.exc_info())
    record.stack_info = f"Stack (most recent call last):\n  answering {OPENID}"
    line = handler.format(record)
    assert "KeyError" in line and "answering" in line
    assert OPENID not in line and "oTes…001" in line
