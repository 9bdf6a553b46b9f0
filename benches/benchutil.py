"""Helpers shared by the Python benchmarks in benches/ (imported from the
script's own folder): free ports, a process's RSS, waiting for a node."""

import re
import socket
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def wait_accepting(port, proc, within=20):
    """Waits until 127.0.0.1:port accepts; SystemExit if `proc` exits first
    or it takes longer than `within` seconds."""
    deadline = time.time() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"the node on port {port} did not start")
            time.sleep(0.05)


def paced(per_second, stop):
    """Yields `per_second` times a second, on schedule, until `stop` is set."""
    next_at = time.time()
    while not stop.is_set():
        next_at += 1 / per_second
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
        yield
