#!/usr/bin/env python3
"""Recording TCP proxy for the fuzz seed corpora (docs/fuzzing.md).

Listens on --listen, forwards every connection to --upstream, and writes
what each side sent, per connection, to OUT/NNNN-PREFIX.c2s and .s2c, where
PREFIX is --tag (e.g. h2load, grpcio). Stops after --seconds. Loopback only.

usage: record.py --listen 127.0.0.1:7100 --upstream 127.0.0.1:7101 \
                 --out DIR --tag NAME [--seconds 60]
"""

import argparse
import itertools
import os
import socket
import threading
import time


def pump(src, dst, sink):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            sink.append(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def handle(client, upstream, out, name):
    host, port = upstream.rsplit(":", 1)
    server = socket.create_connection((host, int(port)))
    c2s, s2c = [], []
    a = threading.Thread(target=pump, args=(client, server, c2s))
    b = threading.Thread(target=pump, args=(server, client, s2c))
    a.start()
    b.start()
    a.join()
    b.join()
    client.close()
    server.close()
    for suffix, parts in (("c2s", c2s), ("s2c", s2c)):
        with open(os.path.join(out, f"{name}.{suffix}"), "wb") as f:
            f.write(b"".join(parts))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--seconds", type=float, default=60)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    host, port = a.listen.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(64)
    ls.settimeout(0.2)
    counter = itertools.count()
    deadline = time.monotonic() + a.seconds
    threads = []
    while time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        name = f"{a.tag}-{next(counter):04d}"
        t = threading.Thread(target=handle, args=(c, a.upstream, a.out, name), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=2)


if __name__ == "__main__":
    main()
