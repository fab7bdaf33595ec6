"""Random bytes and unique tokens for the callback's hot path, without a system call each time.

``os.urandom`` is one ``getrandom`` system call per use; under load it showed as several percent of a
callback's CPU (two calls per message: the reply's 16 random characters and the user lock's token).
Here the kernel's random bytes are fetched 4 KiB at a time and handed out once each; a lock token
needs to be unique, not secret: a random per-process prefix and a counter. Both start afresh in a
forked child, so two processes never share either.
"""

from __future__ import annotations

import itertools
import os

_POOL_SIZE = 4096


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pool = b""
        self.pos = 0
        self.prefix = os.urandom(8).hex()
        self.seq = itertools.count(1)


_state = _State()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_state.reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from ``os.urandom`` (``n`` at most 4,096), each byte handed out once."""
    s = _state
    pos = s.pos
    if pos + n > len(s.pool):
        s.pool, pos = os.urandom(max(_POOL_SIZE, n)), 0
    s.pos = pos + n
    return s.pool[pos : pos + n]


def unique_token() -> str:
    """A token no other call, in this process or another, returns (lock ownership)."""
    return f"{_state.prefix}{next(_state.seq):x}"
