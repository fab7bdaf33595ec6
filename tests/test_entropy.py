"""bot.entropy: pooled random bytes are never handed out twice, tokens never repeat, and a forked
child starts with its own pool and prefix."""

from __future__ import annotations

import os

import pytest

from bot import entropy


def test_random_bytes_are_each_handed_out_once_across_refills() -> None:
    chunks = [entropy.random_bytes(12) for _ in range(2000)]  # ~6 pools
    assert all(len(c) == 12 for c in chunks)
    assert len(set(chunks)) == len(chunks)
    assert len(entropy.random_bytes(5000)) == 5000  # more than a pool at once


def test_tokens_are_unique() -> None:
    tokens = [entropy.unique_token() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_shares_neither_pool_nor_prefix() -> None:
    entropy.random_bytes(1)  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes and token, then leave at once
        os.write(write, entropy.random_bytes(16) + entropy.unique_token().encode())
        os._exit(0)
    os.close(write)
    got = os.read(read, 1024)
    os.close(read)
    os.waitpid(pid, 0)
    child_bytes, child_token = got[:16], got[16:].decode()
    assert child_bytes != entropy.random_bytes(16)
    assert child_token[:16] != entropy.unique_token()[:16]
