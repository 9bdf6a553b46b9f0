#!/usr/bin/env python3
"""The abuse regression tests (tests/abuse.rs) at ten times their size, as a
benchmark: for each attack, the node's peak RSS while it runs, its RSS
before and after, and the latency a well-behaved client sees meanwhile
(shardcache-loadtest in open loop, beside the attack) against the same
client on the idle node.

    cargo build --release --workspace
    benches/attacks.py                  # all attacks, a markdown table
    benches/attacks.py --only peer_get  # one of them
    benches/attacks.py --json out.jsonl # also the raw figures

Attacks (each against a fresh node: 2 shards, --memory 256MiB,
--max-value 1MiB, defaults otherwise):
  peer_get      80 connections send the peer magic and pipeline 3,000 GETs
                each of a stored 1 MiB value, reading nothing (4.3 MB sent)
  bodies        20 HTTP/2 connections open 1,000 streams each: a Set whose
                gRPC prefix announces 4 MiB, 1.5 KB of body, never ended
  never_reads   40 HTTP/2 connections grant the largest windows, ask for the
                1 MiB value 2,000 times each and read nothing
  idle_peers    --max-connections 600: 500 connections send only the peer
                magic (the normal client's 4 connections are open already);
                --idle-timeout 2s
"""

import argparse
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "target/release/shardcache")
LOAD = os.path.join(ROOT, "target/release/shardcache-loadtest")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIB = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


class Node:
    def __init__(self, extra):
        self.port, self.http = free_port(), free_port()
        args = [NODE, "--listen", f"127.0.0.1:{self.port}", "--http", f"127.0.0.1:{self.http}",
                "--shards", "2", "--memory", "256MiB", "--max-value", "1MiB"] + extra
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("node did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def metrics(self):
        s = socket.create_connection(("127.0.0.1", self.http), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        return data.decode(errors="replace")


def peer_frame(kind, rid, body):
    return struct.pack(">IIB", 5 + len(body), rid, kind) + body


def peer_set(key, value):
    body = struct.pack(">IQI", 0, 0, 0) + struct.pack(">I", len(key)) + key + value
    return peer_frame(2, 1, body)


def peer_get(rid, key):
    return peer_frame(1, rid, struct.pack(">II", 0, 0) + key)


def store(node, key, value):
    s = socket.create_connection(("127.0.0.1", node.port))
    s.sendall(b"SCPEER01" + peer_set(key, value))
    reply = s.recv(64)
    assert reply[8] == 0x82, reply
    s.close()


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    # Literal header field without indexing, new name, no Huffman.
    out = b"\x00"
    for s in (name, value):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


def grpc_headers(path):
    block = b"\x83\x86"  # :method POST, :scheme http
    for n, v in ((b":path", path), (b":authority", b"x"), (b"content-type", b"application/grpc"),
                 (b"te", b"trailers")):
        block += hpack_literal(n, v)
    return block


def get_message(key):
    msg = b"\x12" + bytes([len(key)]) + key  # Request.key = 2
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def open_h2(node, settings=b""):
    s = socket.create_connection(("127.0.0.1", node.port))
    s.sendall(PREFACE + h2_frame(4, 0, 0, settings))
    return s


def send_all(socks_and_bytes):
    def one(s, b):
        s.settimeout(10)
        try:
            s.sendall(b)
        except OSError:
            pass  # the node stopped reading: that is the point
    ts = [threading.Thread(target=one, args=sb) for sb in socks_and_bytes]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def attack_peer_get(node):
    frames = b"SCPEER01" + b"".join(peer_get(i, b"big") for i in range(3000))
    socks = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(80)]
    send_all([(s, frames) for s in socks])
    return socks


def attack_bodies(node):
    socks, work = [], []
    block = grpc_headers(b"/cache.Cache/Set")
    body = b"\x00" + struct.pack(">I", 4 << 20) + b"A" * 1500
    for _ in range(20):
        s = open_h2(node)
        burst = b"".join(h2_frame(1, 4, 2 * i + 1, block) + h2_frame(0, 0, 2 * i + 1, body)
                         for i in range(1000))
        socks.append(s)
        work.append((s, burst))
    send_all(work)
    return socks


def attack_never_reads(node):
    socks, work = [], []
    settings = struct.pack(">HI", 4, 0x7FFFFFFF)
    block = grpc_headers(b"/cache.Cache/Get")
    msg = get_message(b"big")
    for _ in range(40):
        s = open_h2(node, settings)
        burst = h2_frame(8, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535))
        burst += b"".join(h2_frame(1, 4, 2 * i + 1, block) + h2_frame(0, 1, 2 * i + 1, msg)
                          for i in range(2000))
        socks.append(s)
        work.append((s, burst))
    send_all(work)
    return socks


def attack_idle_peers(node):
    socks = []
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", node.port))
        s.sendall(b"SCPEER01")
        socks.append(s)
    return socks


ATTACKS = {
    "peer_get": (attack_peer_get, []),
    "bodies": (attack_bodies, []),
    "never_reads": (attack_never_reads, []),
    "idle_peers": (attack_idle_peers, ["--max-connections", "600", "--idle-timeout", "2s"]),
}


def normal_client(node, seconds, out):
    """shardcache-loadtest in open loop: 2,000 Gets/s over 4 connections."""
    r = subprocess.run([LOAD, "--target", f"127.0.0.1:{node.port}", "--connections", "4",
                        "--rate", "2000", "--get-ratio", "1", "--keys", "1000", "--duration",
                        f"{seconds}s", "--json"], capture_output=True, text=True)
    try:
        out.update(json.loads(r.stdout))
    except json.JSONDecodeError:
        out["error"] = r.stderr.strip()[-300:]


def preload(node):
    subprocess.run([LOAD, "--target", f"127.0.0.1:{node.port}", "--keys", "1000", "--preload",
                    "--requests", "1", "--connections", "1"], capture_output=True)


def run(name):
    attack, extra = ATTACKS[name]
    node = Node(extra)
    try:
        store(node, b"big", b"x" * (MIB - 64))
        preload(node)
        idle = {}
        normal_client(node, 3, idle)
        time.sleep(0.5)
        before = rss_mib(node.proc.pid)
        during, peak, stop = {}, [before], threading.Event()

        def sample():
            while not stop.is_set():
                peak.append(rss_mib(node.proc.pid))
                time.sleep(0.02)
        sampler = threading.Thread(target=sample)
        sampler.start()
        client = threading.Thread(target=normal_client, args=(node, 6, during))
        client.start()
        time.sleep(0.5)
        started = time.time()
        socks = attack(node)
        client.join()
        attack_s = time.time() - started
        for s in socks:
            s.close()
        time.sleep(3)
        stop.set()
        sampler.join()
        after = rss_mib(node.proc.pid)
        guards = dict(re.findall(r'shardcache_guard_events_total\{event="(\w+)"\} (\d+)', node.metrics()))
        return {
            "attack": name,
            "rss_before_mib": round(before, 1),
            "rss_peak_mib": round(max(peak), 1),
            "rss_after_mib": round(after, 1),
            "attack_s": round(attack_s, 2),
            "idle_p99_us": idle.get("p99"),
            "during_p99_us": during.get("p99"),
            "during_ok": during.get("ok"),
            "during_requests": during.get("requests"),
            "during_error": during.get("error"),
            "during_status": during.get("by_status"),
            "during_transport": during.get("transport_errors"),
            "guards": {k: int(v) for k, v in guards.items() if v != "0"},
        }
    finally:
        node.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", choices=sorted(ATTACKS))
    ap.add_argument("--json")
    a = ap.parse_args()
    for b in (NODE, LOAD):
        if not os.path.exists(b):
            raise SystemExit(f"{b} missing: cargo build --release --workspace")
    rows = [run(n) for n in (a.only or list(ATTACKS))]
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print("| attack | RSS before MiB | peak MiB | after MiB | normal client p99 idle / during µs | its requests ok | guard events |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ok = f"{r['during_ok']}/{r['during_requests']}" if r["during_ok"] is not None else r["during_error"]
        g = ", ".join(f"{k} {v}" for k, v in sorted(r["guards"].items()))
        print(f"| {r['attack']} | {r['rss_before_mib']} | {r['rss_peak_mib']} | {r['rss_after_mib']} | "
              f"{r['idle_p99_us']} / {r['during_p99_us']} | {ok} | {g} |")


if __name__ == "__main__":
    sys.exit(main())
