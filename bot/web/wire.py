"""A small, complete HTTP answer written to the connection in one piece.

``web.Response`` is general: it keeps its headers in a multidict, settles the content type, length,
chunking, compression, cookies and keep-alive in ``prepare()``, runs the ``on_response_prepare``
signal, serialises the headers, then writes them and the body through the payload writer. For a
WeChat callback's answer (a status, a content type, a body of a few hundred bytes) that is ~8 % of
the callback's CPU. :class:`WireResponse` builds the same bytes directly and writes them with one
``writer.write()``.

It is only for answers nothing else gets to touch: ``bot.serve`` hands POSTs to the callback path
straight to the callback, past the router, the middlewares and the signals. Should a header or a
cookie be set on one all the same, it is written the general way (``tests/test_serve_site.py``).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

TEXT = "text/plain; charset=utf-8"
XML = "application/xml; charset=utf-8"

_STATUS_LINES: dict[tuple[int, int], bytes] = {}  # (minor version, status) -> "HTTP/1.x 200 OK\r\n"
_date_second = -1
_date_line = b""


def _status_line(minor: int, status: int) -> bytes:
    line = _STATUS_LINES.get((minor, status))
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[(minor, status)] = f"HTTP/1.{minor} {status} {phrase}\r\n".encode("ascii")
    return line


def _date() -> bytes:
    """The ``Date`` header line, formatted once a second."""
    global _date_second, _date_line
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date_second = second
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
    return _date_line


class WireResponse(web.StreamResponse):
    """``web.Response(status=status, body=body, content_type=...)``, written in one piece."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__(status=status)
        self._wire_type = content_type
        self._wire_body = body

    @property
    def body(self) -> bytes:
        return self._wire_body

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:
            return self._payload_writer
        status = self.status
        if self._headers or self._cookies or request.method == "HEAD" or status < 200 or status in (204, 304):
            return await self._prepare_generally(request)
        self._req = request
        writer = self._payload_writer = request.writer
        version = request.version
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        if keep_alive:
            connection = b"Connection: keep-alive\r\n" if version == HttpVersion10 else b""
        else:
            connection = b"Connection: close\r\n" if version == HttpVersion11 else b""
        body = self._wire_body
        head = b"%bContent-Type: %b\r\nContent-Length: %d\r\n%b%b\r\n" % (
            _status_line(version.minor if version.major == 1 else 1, status),
            self._wire_type.encode("latin-1"),
            len(body),
            _date(),
            connection,
        )
        await writer.write(head + body)
        self._eof_sent = True  # everything is out: write_eof() has nothing left to do
        self._body_length = len(body)
        self._req = None
        self._payload_writer = None
        return writer

    async def _prepare_generally(self, request: BaseRequest) -> AbstractStreamWriter | None:
        self.content_type = self._wire_type.partition(";")[0]
        if "charset=" in self._wire_type:
            self.charset = self._wire_type.rpartition("charset=")[2]
        self.content_length = len(self._wire_body)
        writer = await super().prepare(request)
        if self._wire_body and not (request.method == "HEAD" or self.status < 200 or self.status in (204, 304)):
            await self.write(self._wire_body)
        return writer
