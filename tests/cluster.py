"""Start a local 3-master Redis Cluster from the same redis-server binary the embedded server uses.

    python -m tests.cluster start DIR   → prints the REDIS_URL to use (…?cluster=true)
    python -m tests.cluster stop DIR

`make test-cluster` runs the integration tests against it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bot.store.embedded import find_redis_server


def _free_port() -> int:
    # cluster bus ports are port + 10000: pick ports whose bus port is free too
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _cli() -> str:
    server = find_redis_server()
    cli = Path(server).with_name("redis-cli")
    if cli.exists():
        return str(cli)
    found = shutil.which("redis-cli")
    if not found:
        raise SystemExit("redis-cli not found next to redis-server nor on PATH")
    return found


def start(root: Path, masters: int = 3) -> str:
    root.mkdir(parents=True, exist_ok=True)
    server = find_redis_server()
    ports = []
    for _ in range(masters):
        port = _free_port()
        node = root / str(port)
        node.mkdir(exist_ok=True)
        subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(node / "nodes.conf"), "--dir", str(node), "--appendonly", "no",
             "--save", "", "--daemonize", "no", "--pidfile", str(node / "redis.pid"),
             "--logfile", str(node / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        ports.append(port)
    for port in ports:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                time.sleep(0.05)
    subprocess.run(
        [_cli(), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0", "--cluster-yes"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = subprocess.run([_cli(), "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True).stdout
        if "cluster_state:ok" in out:
            break
        time.sleep(0.1)
    (root / "ports").write_text(" ".join(map(str, ports)))
    return f"redis://127.0.0.1:{ports[0]}/0?cluster=true"


def stop(root: Path) -> None:
    for pidfile in root.glob("*/redis.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    action, folder = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        print(start(folder))
    else:
        stop(folder)
