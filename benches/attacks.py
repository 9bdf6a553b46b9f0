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
    benches/attacks.py --binary B       # another build of the node (A/B)

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

HTTP/2 floods (issue 11), against a node with one shard pinned to CPU 0, the
client and the attacker on CPU 1, the attacker in SCHED_IDLE so that it
never delays the client itself: an attacker process with two threads,
each flooding one connection until the node ends it, then reconnecting,
for as long as the normal client runs; it reads what the node sends
unless the attack is about not reading:
  rapid_reset   HEADERS of a Get then RST_STREAM(CANCEL), stream after stream
  ping_flood    PINGs, reading nothing (their ACKs pile up)
  settings      empty SETTINGS frames
  empty_frames  a stream's HEADERS, then empty DATA frames on it
  continuation  HEADERS without END_HEADERS, then 1-byte CONTINUATIONs
  hpack_bomb    a 4,000-byte header entered in the dynamic table, then
                streams whose headers name it 5 times (20 KB decoded each)
  streams       streams opened 300 at a time (MAX_CONCURRENT_STREAMS is
                100), bodies never sent
  dribble       a 64 KiB value asked with an initial window of 0, then
                WINDOW_UPDATEs of 1 byte
"""

import argparse
import json
import multiprocessing
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from benchutil import free_port, rss_mib, wait_accepting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "target/release/shardcache")
LOAD = os.path.join(ROOT, "target/release/shardcache-loadtest")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIB = 1 << 20


class Node:
    def __init__(self, extra, pinned=False):
        self.pinned = pinned
        self.port, self.http = free_port(), free_port()
        shards = "1" if pinned else "2"
        args = (["taskset", "-c", "0"] if pinned else []) + [
            NODE, "--listen", f"127.0.0.1:{self.port}", "--http", f"127.0.0.1:{self.http}",
            "--shards", shards, "--memory", "256MiB", "--max-value", "1MiB"] + extra
        # A file, never a pipe: nobody reads it while the attack runs, and a
        # full pipe would stall the node.
        self.log = open(f"/tmp/attacks-node-{self.port}.log", "w")
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL)
        wait_accepting(self.port, self.proc)

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


def hpack_int(first, prefix_bits, value):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytes([first | limit])
    value -= limit
    while value >= 128:
        out += bytes([value % 128 + 128])
        value //= 128
    return out + bytes([value])


def get_stream(stream, end_stream=True):
    return h2_frame(1, 4, stream, grpc_headers(b"/cache.Cache/Get")) + h2_frame(
        0, 1 if end_stream else 0, stream, get_message(b"mid"))


def flood_rapid_reset():
    stream = 1
    while True:
        burst = b""
        for _ in range(200):
            burst += h2_frame(1, 4, stream, grpc_headers(b"/cache.Cache/Get"))
            burst += h2_frame(3, 0, stream, struct.pack(">I", 8))
            stream += 2
        yield burst


def flood_ping():
    burst = h2_frame(6, 0, 0, b"12345678") * 1000
    while True:
        yield burst


def flood_settings():
    burst = h2_frame(4, 0, 0, b"") * 500
    while True:
        yield burst


def flood_empty_frames():
    yield h2_frame(1, 4, 1, grpc_headers(b"/cache.Cache/Set"))
    burst = h2_frame(0, 0, 1, b"") * 1000
    while True:
        yield burst


def flood_continuation():
    block = grpc_headers(b"/cache.Cache/Get")
    yield h2_frame(1, 0, 1, block[:2])
    i = 2
    while True:
        yield h2_frame(9, 0, 1, block[i:i + 1] or b"\x82")
        i += 1


def flood_hpack_bomb():
    big = b"\x40" + hpack_int(0, 7, 6) + b"x-bomb" + hpack_int(0, 7, 4000) + b"b" * 4000
    block = grpc_headers(b"/cache.Cache/Get")
    yield h2_frame(1, 5, 1, block + big)
    stream = 3
    while True:
        burst = b""
        for _ in range(50):
            burst += h2_frame(1, 5, stream, block + hpack_int(0x80, 7, 62) * 5)
            stream += 2
        yield burst


def flood_streams():
    block = grpc_headers(b"/cache.Cache/Set")
    stream = 1
    while True:
        yield b"".join(h2_frame(1, 4, stream + 2 * i, block) for i in range(300))
        stream += 600


def flood_dribble():
    yield get_stream(1)
    while True:
        yield h2_frame(8, 0, 1, struct.pack(">I", 1)) * 200


class Flood:
    """An attacker process: `threads` connections at a time, each flooding
    until the node ends it, then a new one; stops on close()."""

    def __init__(self, node, bursts, read=True, settings=b"", threads=2):
        self.stop = multiprocessing.Event()
        self.conns = multiprocessing.Value("i", 0)
        self.proc = multiprocessing.Process(
            target=self.attack, args=(node.port, bursts, read, settings, threads))
        self.proc.start()

    def attack(self, port, bursts, read, settings, threads):
        # The attacker must not take the CPU the measuring client needs (2
        # cores here): it runs only when nothing else wants that core.
        os.sched_setaffinity(0, {ATTACKER_CPU})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

        def one():
            while not self.stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2)
                except OSError:
                    time.sleep(0.01)
                    continue
                with self.conns.get_lock():
                    self.conns.value += 1
                try:
                    s.sendall(PREFACE + h2_frame(4, 0, 0, settings))
                    for burst in bursts():
                        if self.stop.is_set():
                            break
                        if burst:
                            s.sendall(burst)
                        else:
                            time.sleep(0.01)
                        # Drain what has come (a socket with a timeout would
                        # wait in recv even with MSG_DONTWAIT: ask first).
                        while read and select.select([s], [], [], 0)[0]:
                            if not s.recv(1 << 20):
                                raise OSError("closed")
                except OSError:
                    pass  # ended by the node: next connection
                finally:
                    s.close()
        ts = [threading.Thread(target=one) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def close(self):
        self.stop.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


def flood(bursts, **kw):
    return lambda node: [Flood(node, bursts, **kw)]


ATTACKS = {
    "peer_get": (attack_peer_get, []),
    "bodies": (attack_bodies, []),
    "never_reads": (attack_never_reads, []),
    "idle_peers": (attack_idle_peers, ["--max-connections", "600", "--idle-timeout", "2s"]),
    "rapid_reset": (flood(flood_rapid_reset), []),
    "ping_flood": (flood(flood_ping, read=False), []),
    "settings": (flood(flood_settings), []),
    "empty_frames": (flood(flood_empty_frames), []),
    "continuation": (flood(flood_continuation), []),
    "hpack_bomb": (flood(flood_hpack_bomb), []),
    "streams": (flood(flood_streams), []),
    "dribble": (flood(flood_dribble, settings=struct.pack(">HI", 4, 0)), []),
}


# Floods cost CPU, not memory: measured with the node alone on CPU 0 (one
# shard) and the client and the attacker on CPU 1.
# Where flooding attackers run: CPU 1 (beside the normal client) by default;
# --attacker-cpu 0 puts them beside the node instead, to tell what the
# client's own CPU costs it from what the node does.
ATTACKER_CPU = 1

FLOODS = {"rapid_reset", "ping_flood", "settings", "empty_frames", "continuation", "hpack_bomb",
          "streams", "dribble"}


def normal_client(node, seconds, out):
    """shardcache-loadtest in open loop: 2,000 Gets/s over 4 connections."""
    pin = ["taskset", "-c", "1"] if node.pinned else []
    r = subprocess.run(pin + [LOAD, "--target", f"127.0.0.1:{node.port}", "--connections", "4",
                        "--rate", "2000", "--get-ratio", "1", "--keys", "1000", "--duration",
                        f"{seconds}s", "--json"], capture_output=True, text=True)
    try:
        out.update(json.loads(r.stdout))
    except json.JSONDecodeError:
        out["error"] = r.stderr.strip()[-300:]


def preload(node):
    subprocess.run([LOAD, "--target", f"127.0.0.1:{node.port}", "--keys", "1000", "--preload",
                    "--requests", "1", "--connections", "1"], capture_output=True)


def get_histogram(node):
    """The node's own Get latency histogram (gRPC), cumulative counts by
    bucket bound in µs: what the shard's event loop gave the calls."""
    counts = {}
    for le, n in re.findall(
            r'shardcache_request_duration_seconds_bucket\{[^}]*interface="grpc"[^}]*method="get"[^}]*le="([^"]+)"\} (\d+)',
            node.metrics()):
        bound = float("inf") if le == "+Inf" else float(le) * 1e6
        counts[bound] = counts.get(bound, 0) + int(n)
    return counts


def server_p99(before, after):
    """The bucket bound (µs) under which 99 % of the Gets between two
    snapshots finished, as the node measured them (HEADERS to response)."""
    delta = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    total = delta.get(float("inf"), 0)
    if not total:
        return None
    for bound in sorted(delta):
        if delta[bound] >= 0.99 * total:
            return bound
    return None


def run(name):
    attack, extra = ATTACKS[name]
    node = Node(extra, pinned=name in FLOODS)
    try:
        store(node, b"big", b"x" * (MIB - 64))
        store(node, b"mid", b"m" * (64 << 10))
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
        hist_before = get_histogram(node)
        client = threading.Thread(target=normal_client, args=(node, 6, during))
        client.start()
        time.sleep(0.5)
        started = time.time()
        socks = attack(node)
        client.join()
        hist_after = get_histogram(node)
        attack_s = time.time() - started
        for s in socks:
            s.close()
        attack_conns = sum(s.conns.value for s in socks if isinstance(s, Flood))
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
            "during_server_p99_le_us": server_p99(hist_before, hist_after),
            "during_ok": during.get("ok"),
            "during_requests": during.get("requests"),
            "during_error": during.get("error"),
            "during_status": during.get("by_status"),
            "during_transport": during.get("transport_errors"),
            "guards": {k: int(v) for k, v in guards.items() if v != "0"},
            "attack_connections": attack_conns,
        }
    finally:
        node.stop()


def ratio(r):
    if not r["idle_p99_us"] or not r["during_p99_us"]:
        return "-"
    return f"{r['during_p99_us'] / r['idle_p99_us']:.1f}x"


def main():
    global NODE, ATTACKER_CPU
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", choices=sorted(ATTACKS))
    ap.add_argument("--json")
    ap.add_argument("--binary", default=NODE, help="the node binary (default: target/release/shardcache)")
    ap.add_argument("--attacker-cpu", type=int, default=1, choices=[0, 1],
                    help="the CPU flooding attackers run on (SCHED_IDLE either way)")
    a = ap.parse_args()
    NODE = a.binary
    ATTACKER_CPU = a.attacker_cpu
    for b in (NODE, LOAD):
        if not os.path.exists(b):
            raise SystemExit(f"{b} missing: cargo build --release --workspace")
    rows = [run(n) for n in (a.only or list(ATTACKS))]
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print("| attack | RSS before MiB | peak MiB | after MiB | normal client p99 idle / during µs (ratio) | node's own Get p99 during, µs (bucket) | its requests ok | attacker connections | guard events |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ok = f"{r['during_ok']}/{r['during_requests']}" if r["during_ok"] is not None else r["during_error"]
        g = ", ".join(f"{k} {v}" for k, v in sorted(r["guards"].items()))
        print(f"| {r['attack']} | {r['rss_before_mib']} | {r['rss_peak_mib']} | {r['rss_after_mib']} | "
              f"{r['idle_p99_us']} / {r['during_p99_us']} ({ratio(r)}) | "
              f"≤ {r['during_server_p99_le_us'] or '-'} | {ok} | "
              f"{r['attack_connections'] or ''} | {g} |")


if __name__ == "__main__":
    sys.exit(main())
