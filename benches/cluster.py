#!/usr/bin/env python3
"""Cluster benchmarks of docs/benchmarks.md, measured side by side in one run.

1. The cost of a hop: one node, then three nodes (static --peers) with the
   load sent to one of them, keys uniform over the ring (so 2/3 of the
   requests are forwarded). Every server process runs on CPU 0, the load
   generator on CPU 1: both set-ups get one core of server CPU, and ops per
   server CPU-second compares them.
2. The hot cache: three nodes, Zipfian reads (s = 0.99) over 1M keys sent
   through all three, with the hot cache (--hot-fraction 0.125) and without
   (0): throughput, p99, and how the work spreads over the nodes (requests
   answered by each node's main store, i.e. as the key's owner, and by its
   hot copies), from each node's /metrics.

3. The routing client: three nodes with two shards each (--shard-ports),
   Gets over 100k keys through a stock tonic client (16 channels spread
   over the three nodes: 2/3 of the calls are forwarded, half of the rest
   cross a core) and through shardcache-client (every call on its owner's
   owner shard), the same tasks and load tool otherwise (shardcache-loadtest
   --client tonic|sharded). Reports Gets per server CPU-second, and the
   forwards and hand-offs the nodes counted.

Each point runs --reps times, set-ups interleaved; medians are reported.
Writes target/cluster-bench/{results.jsonl,report.md} and prints the report.

    benches/cluster.py [--reps 3] [--duration 5] [--quick]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target/release/shardcache")
LOAD = os.path.join(ROOT, "target/release/shardcache-loadtest")
OUT = os.path.join(ROOT, "target/cluster-bench")
SERVER_CPU, LOAD_CPU = "0", "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Node:
    def __init__(self, port, http, peers, extra, shards=1):
        args = [
            "taskset", "-c", SERVER_CPU, SERVER, "serve",
            "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http}",
            "--shards", str(shards), "--memory", "512MiB", "--node-id", f"n{port}",
        ]
        if peers:
            args += ["--peers", ",".join(peers)]
        args += extra
        self.addr = f"127.0.0.1:{port}"
        self.http = http
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.time() + 20
        for line in self.proc.stderr:
            if "http gateway listening on" in line:
                break
            if time.time() > deadline:
                raise RuntimeError(f"node {port} did not start")
        else:
            raise RuntimeError(f"node {port} exited: {self.proc.returncode}")
        # Keep draining stderr so the node never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def metrics(self):
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{self.http}/metrics", timeout=10
        ).read().decode()
        out = {}
        for line in body.splitlines():
            m = re.match(r"^(shardcache_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
        return out

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_nodes(n, extra):
    ports = [(free_port(), free_port()) for _ in range(n)]
    peers = [f"127.0.0.1:{p}" for p, _ in ports] if n > 1 else []
    return [Node(p, h, peers, extra) for p, h in ports]


def loadtest(targets, args, duration):
    cmd = [
        "taskset", "-c", LOAD_CPU, LOAD, "--target", ",".join(targets),
        "--json", "--no-progress",
    ] + (["--duration", f"{duration}s"] if duration else []) + args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"loadtest failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def preload(targets, args):
    """Sets every key once, before (and outside) the measured run."""
    shape = [a for a in args if a != "--preload"]
    loadtest(targets, shape + ["--preload"], 0.2)


def measure(nodes, targets, args, duration):
    """One measured run: loadtest result, server CPU-seconds over the run,
    and per-node metric deltas. The keys are loaded first, unmeasured."""
    if "--preload" in args:
        preload(targets, args)
        args = [a for a in args if a != "--preload"]
    before = [n.metrics() for n in nodes]
    cpu0 = sum(n.cpu() for n in nodes)
    res = loadtest(targets, args, duration)
    cpu1 = sum(n.cpu() for n in nodes)
    after = [n.metrics() for n in nodes]
    deltas = [
        {k: a.get(k, 0) - b.get(k, 0) for k in a}
        for a, b in zip(after, before)
    ]
    errors = res["requests"] - res["ok"]
    return {
        "throughput": res["throughput"],
        "p50_us": res["p50"],
        "p99_us": res["p99"],
        "errors": errors,
        "hit_ratio": res["hit_ratio"],
        "server_cpu_s": cpu1 - cpu0,
        "duration_s": res["duration_s"],
        "nodes": deltas,
    }


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def hop_cost(reps, duration, results):
    """Single node vs three nodes, load on one node."""
    base = [
        "--keys", "100000", "--key-size", "16", "--value-size", "64",
        "--get-ratio", "0.9", "--preload",
    ]
    shapes = {
        "closed 16x16": ["--connections", "16", "--inflight", "16"],
        "open 30k/s": ["--connections", "16", "--rate", "30000"],
    }
    rows = []
    for rep in range(reps):
        for setup, n in (("1 node", 1), ("3 nodes, load on one", 3)):
            nodes = start_nodes(n, [])
            try:
                for shape, sargs in shapes.items():
                    r = measure(nodes, [nodes[0].addr], base + sargs, duration)
                    r.update(bench="hop", setup=setup, shape=shape, rep=rep)
                    results.append(r)
                    rows.append(r)
            finally:
                for node in nodes:
                    node.stop()
    lines = [
        "| set-up | load | ops/s | p50 µs | p99 µs | server CPU-s per s | ops per server CPU-s | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in shapes:
        for setup in ("1 node", "3 nodes, load on one"):
            rs = [r for r in rows if r["shape"] == shape and r["setup"] == setup]
            cpu = statistics.median(r["server_cpu_s"] / r["duration_s"] for r in rs)
            per_cpu = statistics.median(r["throughput"] * r["duration_s"] / max(r["server_cpu_s"], 1e-9) for r in rs)
            lines.append(
                f"| {setup} | {shape} | {median(rs, 'throughput'):,.0f} | {median(rs, 'p50_us'):,.0f} | "
                f"{median(rs, 'p99_us'):,.0f} | {cpu:.2f} | {per_cpu:,.0f} | {sum(r['errors'] for r in rs)} |"
            )
    return "\n".join(lines)


def hot_cache(reps, duration, keys, results):
    """Zipfian reads through all three nodes, with and without hot copies."""
    base = [
        "--keys", str(keys), "--key-size", "16", "--value-size", "64",
        "--get-ratio", "1", "--zipf", "0.99", "--preload",
    ]
    shapes = {
        "closed 12x16": ["--connections", "12", "--inflight", "16"],
        "open 50k/s": ["--connections", "12", "--rate", "50000"],
    }
    rows = []
    setups = (("hot cache 1/8", ["--hot-fraction", "0.125"]), ("no hot cache", ["--hot-fraction", "0"]))
    for rep in range(reps):
        for setup, extra in setups:
            nodes = start_nodes(3, extra)
            try:
                for shape, sargs in shapes.items():
                    r = measure(nodes, [n.addr for n in nodes], base + sargs, duration)
                    r.update(bench="hot", setup=setup, shape=shape, rep=rep)
                    results.append(r)
                    rows.append(r)
            finally:
                for node in nodes:
                    node.stop()
    lines = [
        "| set-up | load | ops/s | p50 µs | p99 µs | server CPU-s per s | ops per server CPU-s | "
        "answered by the key's owner: least / most loaded node | answered by hot copies | errors |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for shape in shapes:
        for setup, _ in setups:
            rs = [r for r in rows if r["setup"] == setup and r["shape"] == shape]
            shares = []
            hot = []
            for r in rs:
                served = [
                    d.get("shardcache_store_hits_total", 0) + d.get("shardcache_store_misses_total", 0)
                    for d in r["nodes"]
                ]
                hot_hits = sum(d.get("shardcache_hot_hits_total", 0) for d in r["nodes"])
                total = max(sum(served) + hot_hits, 1)
                shares.append((min(served) / total, max(served) / total))
                hot.append(hot_hits / total)
            lo = statistics.median(x[0] for x in shares)
            hi = statistics.median(x[1] for x in shares)
            cpu = statistics.median(r["server_cpu_s"] / r["duration_s"] for r in rs)
            per_cpu = statistics.median(
                r["throughput"] * r["duration_s"] / max(r["server_cpu_s"], 1e-9) for r in rs
            )
            lines.append(
                f"| {setup} | {shape} | {median(rs, 'throughput'):,.0f} | {median(rs, 'p50_us'):,.0f} | "
                f"{median(rs, 'p99_us'):,.0f} | {cpu:.2f} | {per_cpu:,.0f} | {lo:.0%} / {hi:.0%} | "
                f"{statistics.median(hot):.0%} | {sum(r['errors'] for r in rs)} |"
            )
    return "\n".join(lines)


def free_ports(n):
    """A base port with n free ports from it."""
    for _ in range(200):
        base = free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def routing_client(reps, duration, results):
    """Three nodes x two shards: Gets through tonic vs shardcache-client."""
    base = [
        "--keys", "100000", "--key-size", "16", "--value-size", "64",
        "--get-ratio", "1", "--connections", "16", "--inflight", "8", "--threads", "1",
    ]
    setups = (("stock tonic client, any node", "tonic"), ("shardcache-client", "sharded"))
    rows = []
    for rep in range(reps):
        ports = [(free_port(), free_port()) for _ in range(3)]
        peers = [f"127.0.0.1:{p}" for p, _ in ports]
        # Six shard threads share CPU 0: none may spin waiting for work.
        nodes = [
            Node(p, h, peers, ["--shard-ports", str(free_ports(2)), "--spin-before-park", "0"], shards=2)
            for p, h in ports
        ]
        try:
            targets = [n.addr for n in nodes]
            preload(targets, base + ["--preload"])
            for setup, client in setups:
                r = measure(nodes, targets, base + ["--client", client], duration)
                r.update(bench="client", setup=setup, rep=rep)
                results.append(r)
                rows.append(r)
        finally:
            for node in nodes:
                node.stop()
    lines = [
        "| client | Gets/s | p50 µs | p99 µs | server CPU-s per s | Gets per server CPU-s | "
        "forwarded per Get | hand-offs per Get | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_cpu = {}
    for setup, _ in setups:
        rs = [r for r in rows if r["setup"] == setup]
        cpu = statistics.median(r["server_cpu_s"] / r["duration_s"] for r in rs)
        per_cpu[setup] = statistics.median(
            r["throughput"] * r["duration_s"] / max(r["server_cpu_s"], 1e-9) for r in rs
        )
        def per_get(name):
            return statistics.median(
                sum(d.get(name, 0) for d in r["nodes"]) / max(r["throughput"] * r["duration_s"], 1)
                for r in rs
            )
        lines.append(
            f"| {setup} | {median(rs, 'throughput'):,.0f} | {median(rs, 'p50_us'):,.0f} | "
            f"{median(rs, 'p99_us'):,.0f} | {cpu:.2f} | {per_cpu[setup]:,.0f} | "
            f"{per_get('shardcache_forwarded_requests_total'):.2f} | "
            f"{per_get('shardcache_handoffs_total'):.2f} | {sum(r['errors'] for r in rs)} |"
        )
    a, b = (per_cpu[s] for s, _ in setups)
    lines += ["", f"shardcache-client: {b / a:.2f}x the Gets per server CPU-second of the stock client."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys of the hot-cache run")
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s, 100k keys")
    ap.add_argument("--only", choices=["hop", "hot", "client"], help="run one of the benchmarks")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.duration, a.keys = 1, 2, 100_000
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        sys.exit("cluster.py: needs 2 CPUs and taskset")
    for pkg, binary in (("shardcache", "shardcache"), ("shardcache-loadtest", "shardcache-loadtest")):
        subprocess.run(
            ["cargo", "build", "--release", "-p", pkg, "--bin", binary], cwd=ROOT, check=True
        )
    os.makedirs(OUT, exist_ok=True)
    results = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    report = [
        f"Run of {time.strftime('%Y-%m-%d')} at commit {commit}; {os.cpu_count()} CPUs ({cpu}), "
        f"kernel {os.uname().release}; servers on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; "
        f"{a.reps} reps of {a.duration:g} s, medians.",
        "",
    ]
    benches = [
        ("hop", "### The cost of a hop (Get 90 % / Set 10 %, 64 B values, 100k uniform keys)",
         lambda: hop_cost(a.reps, a.duration, results)),
        ("hot", f"### The hot cache (Zipf 0.99 Gets over {a.keys:,} keys through all three nodes)",
         lambda: hot_cache(a.reps, a.duration, a.keys, results)),
        ("client", "### The routing client (Gets, 100k keys of 64 B, 3 nodes x 2 shards, 128 calls in flight)",
         lambda: routing_client(a.reps, a.duration, results)),
    ]
    for name, title, run in benches:
        if a.only in (None, name):
            report += [title, "", run(), ""]
    with open(os.path.join(OUT, "results.jsonl"), "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    text = "\n".join(report) + "\n"
    with open(os.path.join(OUT, "report.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
