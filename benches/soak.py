#!/usr/bin/env python3
"""Soak: a node under steady mixed load for a long time (default 30 min),
with everything a long-lived production node meets at once. Reports RSS,
open fds and errors every 10 s, and judges the run at the end.

    benches/soak.sh                       # 30 minutes, then a verdict
    benches/soak.sh --minutes 3           # a short one
    benches/soak.sh --json soak.jsonl --plot soak.png

Run through soak.sh, which builds the release binaries and provides a
Python with grpcio. One node (2 shards, --memory 256MiB, defaults
otherwise) and, beside it:
  main     shardcache-loadtest in open loop over 16 connections at 80 % of
           the peak it measured first (closed loop 16 x 1, same workload,
           with the churn below running): 70 % Gets, 30 %
           Sets of 10..4096-byte values with a 30 s TTL over 1M keys, Zipf
           0.9 (2 GB of distinct data, so the store evicts all the time and
           TTLs expire)
  churn    grpcio clients that each open a connection, make 20 calls
           (Delete, Set with a random TTL, Get) and close it, 50 times a second
  bad      1 in 1000 of all calls malformed, in turn: a Get whose message is
           not protobuf, an empty key, a 5000-byte key, a value over
           --max-value, an unknown method, and (on a raw socket) an HTTP/2
           HEADERS frame on stream 0, which must end in GOAWAY

Verdict (exit 1 when any fails):
  - RSS after the warm-up (the first 3 minutes, or 10 % of a shorter run)
    stays within +-5 % of its mean;
  - zero unexpected errors: every main and churn call OK (a Get miss is
    OK), every malformed call gets the status its kind must get;
  - open fds return to their count before the load, once it stops.
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import grpc

from benchutil import free_port, paced, rss_mib, wait_accepting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(ROOT, "target/release/shardcache")
LOAD = os.path.join(ROOT, "target/release/shardcache-loadtest")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIB = 1 << 20
MAX_VALUE = 1 << 20
WORKLOAD = ["--get-ratio", "0.7", "--keys", "1000000", "--zipf", "0.9", "--value-size",
            "10..4096", "--ttl-ms", "30000"]


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pb_request(key=b"", value=b"", ttl_ms=0, group=b""):
    """cache.Request by hand: group=1, key=2, value=3, ttl_ms=4."""
    def field(n, b):
        return bytes([n << 3 | 2]) + varint(len(b)) + b
    out = b""
    if group:
        out += field(1, group)
    if key:
        out += field(2, key)
    if value:
        out += field(3, value)
    if ttl_ms:
        out += bytes([4 << 3]) + varint(ttl_ms)
    return out


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.connections = 0
        self.malformed = 0
        self.unexpected = []

    def add(self, calls=0, connections=0, malformed=0, unexpected=None):
        with self.lock:
            self.calls += calls
            self.connections += connections
            self.malformed += malformed
            if unexpected and len(self.unexpected) < 50:
                self.unexpected.append(unexpected)


def unary(channel, method):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def churn(target, stop, counts, per_second=50):
    """Connections that live for 20 calls each."""
    rng = random.Random(1)
    for _ in paced(per_second, stop):
        ch = grpc.insecure_channel(target)
        try:
            get, put, delete = (unary(ch, f"/cache.Cache/{m}") for m in ("Get", "Set", "Delete"))
            for _ in range(20):
                key = b"k%015d" % rng.randrange(1_000_000)
                op = rng.random()
                try:
                    if op < 0.4:
                        delete(pb_request(key), timeout=5)
                    elif op < 0.7:
                        put(pb_request(key, b"c" * rng.randrange(1, 2048), rng.choice([0, 100, 5000])),
                            timeout=5)
                    else:
                        get(pb_request(key), timeout=5)
                except grpc.RpcError as e:
                    counts.add(unexpected=f"churn: {e.code()} {e.details()}")
                counts.add(calls=1)
        finally:
            ch.close()
        counts.add(connections=1)


def goaway_for_headers_on_stream_0(addr):
    """A HEADERS frame on stream 0 is a connection error: GOAWAY."""
    s = socket.create_connection(addr, timeout=5)
    try:
        s.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                  + b"\x00\x00\x01\x01\x05\x00\x00\x00\x00\x82")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        # Walk the frames the server sent.
        i = 0
        while i + 9 <= len(data):
            length = int.from_bytes(data[i:i + 3], "big")
            if data[i + 3] == 7:
                return True
            i += 9 + length
        return False
    finally:
        s.close()


def malformed(target, addr, stop, counts, per_second):
    kinds = [
        ("/cache.Cache/Get", b"\xff\xff\xff", {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL}),
        ("/cache.Cache/Get", pb_request(b""), {grpc.StatusCode.INVALID_ARGUMENT}),
        ("/cache.Cache/Get", pb_request(b"k" * 5000), {grpc.StatusCode.INVALID_ARGUMENT}),
        ("/cache.Cache/Set", pb_request(b"big", b"v" * (MAX_VALUE + 1)),
         {grpc.StatusCode.RESOURCE_EXHAUSTED}),
        ("/cache.Cache/Nope", pb_request(b"k"), {grpc.StatusCode.UNIMPLEMENTED}),
        ("goaway", None, None),
    ]
    ch = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 8 * MIB)])
    n = 0
    for _ in paced(per_second, stop):
        method, msg, want = kinds[n % len(kinds)]
        n += 1
        if method == "goaway":
            try:
                ok = goaway_for_headers_on_stream_0(addr)
            except OSError as e:
                ok = False
                counts.add(unexpected=f"malformed goaway: {e}")
            if not ok:
                counts.add(unexpected="malformed: no GOAWAY for HEADERS on stream 0")
        else:
            try:
                unary(ch, method)(msg, timeout=5)
                counts.add(unexpected=f"malformed {method} {msg[:8]!r}: answered OK")
            except grpc.RpcError as e:
                if e.code() not in want:
                    counts.add(unexpected=f"malformed {method} {msg[:8]!r}: {e.code()} {e.details()}")
        counts.add(malformed=1)
    ch.close()


def loadtest(port, *args, timeout=None):
    argv = [LOAD, "--target", f"127.0.0.1:{port}", "--no-progress", "--json", *WORKLOAD, *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"loadtest exited {p.returncode}: {p.stderr[-1000:]}")
    return json.loads(p.stdout)


def plot(samples, warm_s, path):
    data = path + ".dat"
    with open(data, "w") as f:
        for s in samples:
            f.write(f"{s['t_s'] / 60:.2f} {s['rss_mib']:.1f} {s['fds']}\n")
    script = f"""set terminal pngcairo size 900,420
set output '{path}'
set xlabel 'minutes'
set ylabel 'RSS (MiB)'
set y2label 'open fds'
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set arrow from {warm_s / 60:.2f}, graph 0 to {warm_s / 60:.2f}, graph 1 nohead dt 2
plot '{data}' using 1:2 with lines lw 2 title 'RSS', '{data}' using 1:3 axes x1y2 with lines title 'fds'
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--json", help="append every sample and the verdict as JSON lines")
    ap.add_argument("--plot", help="RSS and fds over time, as a PNG (gnuplot)")
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    warm_s = min(180, seconds // 10)

    port, http = free_port(), free_port()
    node = subprocess.Popen([NODE, "serve", "--listen", f"127.0.0.1:{port}", "--http",
                             f"127.0.0.1:{http}", "--shards", "2", "--memory", "256MiB",
                             "--max-value", f"{MAX_VALUE}", "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = open(args.json, "a") if args.json else None

    def emit(d):
        print(json.dumps(d), flush=True)
        if out:
            out.write(json.dumps(d) + "\n")
            out.flush()

    try:
        wait_accepting(port, node)
        time.sleep(0.5)
        fds_before = fds(node.pid)
        counts, stop = Counts(), threading.Event()
        target = f"127.0.0.1:{port}"
        # The peak is measured with the churning clients already running:
        # on a small machine they take CPU from the load generator too.
        churner = threading.Thread(target=churn, args=(target, stop, counts))
        churner.start()
        # Open loop sends requests one by one as they come due, so its
        # peak is a closed loop's with one call in flight per connection
        # (80 % of the 16 x 16 peak, which pipelines, is ~3x more than an
        # open loop can be served at here: it queued for seconds).
        peak = loadtest(port, "--connections", "16", "--inflight", "1", "--duration", "10s")
        rate = int(0.8 * peak["throughput"])
        malformed_rate = (rate + 50 * 20) / 1000
        emit({"peak_per_s": round(peak["throughput"]), "rate_per_s": rate,
              "malformed_per_s": malformed_rate, "fds_before": fds_before,
              "rss_before_mib": round(rss_mib(node.pid), 1)})
        main_result = {}

        def main_load():
            try:
                main_result.update(loadtest(port, "--rate", str(rate), "--connections", "16",
                                            "--duration", f"{seconds}s", timeout=seconds + 300))
            except Exception as e:  # reported in the verdict
                main_result["error"] = str(e)
        threads = [threading.Thread(target=main_load), churner,
                   threading.Thread(target=malformed,
                                    args=(target, ("127.0.0.1", port), stop, counts, malformed_rate))]
        for t in (threads[0], threads[2]):
            t.start()
        started = time.time()
        samples = []
        while True:
            time.sleep(10 - (time.time() - started) % 10)
            if not threads[0].is_alive():
                break  # the main load has ended: its connections are closing
            if node.poll() is not None:
                raise SystemExit(f"the node exited: {node.stderr.read()[-2000:]}")
            s = {"t_s": round(time.time() - started), "rss_mib": round(rss_mib(node.pid), 1),
                 "fds": fds(node.pid), "churn_calls": counts.calls,
                 "churn_connections": counts.connections, "malformed": counts.malformed,
                 "unexpected": len(counts.unexpected)}
            samples.append(s)
            emit(s)
        stop.set()
        for t in threads[1:]:
            t.join()
        # Connections close; idle ones are reaped by then at the latest.
        fds_after = None
        for _ in range(60):
            time.sleep(1)
            fds_after = fds(node.pid)
            if fds_after <= fds_before:
                break

        steady = [s["rss_mib"] for s in samples if s["t_s"] > warm_s]
        mean = sum(steady) / len(steady) if steady else 0
        spread = max(abs(r - mean) / mean for r in steady) if steady else 1
        main_errors = main_result.get("requests", 0) - main_result.get("ok", 0)
        verdict = {
            "minutes": args.minutes, "rate_per_s": rate,
            "main_requests": main_result.get("requests"), "main_errors": main_errors,
            "main_by_status": main_result.get("by_status"),
            "main_transport_errors": main_result.get("transport_errors"),
            "main_p50_us": main_result.get("p50"), "main_p99_us": main_result.get("p99"),
            "main_error": main_result.get("error"),
            "churn_calls": counts.calls, "churn_connections": counts.connections,
            "malformed": counts.malformed, "unexpected": counts.unexpected,
            "rss_mean_mib": round(mean, 1), "rss_min_mib": min(steady, default=0),
            "rss_max_mib": max(steady, default=0), "rss_spread": round(spread, 4),
            "fds_before": fds_before, "fds_after": fds_after,
        }
        checks = {
            "rss_within_5pct": spread <= 0.05,
            "no_unexpected_errors": main_errors == 0 and not counts.unexpected
            and "error" not in main_result,
            "fds_back": fds_after is not None and fds_after <= fds_before,
        }
        verdict["checks"] = checks
        verdict["pass"] = all(checks.values())
        emit(verdict)
        if args.plot:
            plot(samples, warm_s, args.plot)
        return 0 if verdict["pass"] else 1
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        if out:
            out.close()


if __name__ == "__main__":
    sys.exit(main())
