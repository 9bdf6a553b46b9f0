#!/usr/bin/env python3
"""Does a node's resident memory follow --memory? (docs/benchmarks.md)

One shardcache node (one shard, --memory M, pinned to CPU 0) is written far
past its budget over gRPC by shardcache-loadtest (CPU 1), 10x M in all, in
phases whose value sizes shift so that memory held by one size must serve
another:

  1. uniform 10 B .. 100 KiB   (4 M written: mostly heap blocks)
  2. uniform 10 B .. 500 B     (3 M: the blocks' memory becomes slab pages)
  3. uniform 501 B .. 1000 B   (3 M: the small classes' pages must empty
                                and serve the larger classes)

After each phase it prints the node's RSS, its RSS minus the RSS it had
before the first write (start-up), and the store's bytes and items (from
/metrics). Then a working set that fits (25 % of M, values 1000 B) is loaded
and read for --read-seconds while another load generator keeps writing
values of 10 B .. 100 KiB under other keys at --junk-rate Sets/s; the reads'
hit ratio must stay >= 0.99 (LRU keeps what is read).

    benches/memory_budget.py [--memory-mib 128] [--read-seconds 10] [--reps 1]

Needs target/release/{shardcache,shardcache-loadtest} (cargo build
--release --workspace --bins) and taskset. Writes
target/memory-budget/results.jsonl and prints a markdown table.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("SHARDCACHE", os.path.join(ROOT, "target/release/shardcache"))
LOAD = os.path.join(ROOT, "target/release/shardcache-loadtest")
OUT = os.path.join(ROOT, "target/memory-budget")
SERVER_CPU, LOAD_CPU = "0", "1"
MIB = 1 << 20

PHASES = [
    # (name, value sizes as shardcache-loadtest takes them, mean size, times M written)
    ("10B-100KiB", "10..=102400", (10 + 102400) / 2, 4),
    ("10B-500B", "10..=500", 255, 3),
    ("501B-1000B", "501..=1000", 750.5, 3),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def metrics(http):
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("shardcache_store_bytes", "shardcache_store_items", "shardcache_store_evictions_total"):
            if line.startswith(name + "{") or line.startswith(name + " "):
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
    return out


def load(port, *args, timeout=900):
    argv = ["taskset", "-c", LOAD_CPU, LOAD, "--target", f"127.0.0.1:{port}", "--no-progress", "--json",
            "--key-size", "16", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"loadtest {' '.join(args)} exited {p.returncode}: {p.stderr[-1000:]}")
    return json.loads(p.stdout)


def run(mem_mib, read_seconds, junk_rate):
    port, http = free_port(), free_port()
    srv = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, SERVER, "serve", "--listen", f"127.0.0.1:{port}", "--http",
         f"127.0.0.1:{http}", "--shards", "1", "--memory", f"{mem_mib}MiB", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        deadline = time.time() + 20
        while True:
            try:
                metrics(http)
                break
            except OSError:
                if time.time() > deadline or srv.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
        time.sleep(0.5)
        start = rss(srv.pid)
        budget = mem_mib * MIB

        def row(phase, written, extra=None):
            time.sleep(0.5)
            m = metrics(http)
            r = rss(srv.pid)
            d = {"phase": phase, "memory_mib": mem_mib, "written_mib": round(written / MIB, 1),
                 "rss_mib": round(r / MIB, 1), "startup_mib": round(start / MIB, 1),
                 "rss_over_startup_mib": round((r - start) / MIB, 1),
                 "ratio_to_memory": round((r - start) / budget, 3),
                 "store_bytes_mib": round(m.get("shardcache_store_bytes", 0) / MIB, 1),
                 "items": int(m.get("shardcache_store_items", 0)),
                 "evictions": int(m.get("shardcache_store_evictions_total", 0))}
            d.update(extra or {})
            rows.append(d)
            print(json.dumps(d), flush=True)

        written = 0
        for name, sizes, mean, times in PHASES:
            n = int(times * budget / mean)
            j = load(port, "--group", f"p-{name}", "--keys", str(10 * n), "--value-size", sizes,
                     "--get-ratio", "0", "--connections", "8", "--inflight", "16", "--requests", str(n))
            if j["ok"] != j["requests"]:
                raise RuntimeError(f"phase {name}: {j['requests'] - j['ok']} failed requests")
            written += n * mean
            row(name, written)

        # The working set: 25 % of the budget in 1000-byte values, read
        # while other keys keep being written (a budget's worth in ~10 s).
        ws_keys = int(0.25 * budget / 1100)
        base = ["--group", "ws", "--keys", str(ws_keys), "--value-size", "1000"]
        load(port, *base, "--preload", "--requests", "1", "--get-ratio", "1")
        junk = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, LOAD, "--target", f"127.0.0.1:{port}", "--no-progress", "--json",
             "--key-size", "16", "--group", "junk", "--keys", "100000000", "--value-size", "10..=102400",
             "--get-ratio", "0", "--rate", str(junk_rate), "--duration", f"{read_seconds}s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        j = load(port, *base, "--get-ratio", "1", "--connections", "4", "--inflight", "16",
                 "--duration", f"{read_seconds}s")
        jo, je = junk.communicate(timeout=read_seconds + 120)
        if junk.returncode != 0:
            raise RuntimeError(f"junk writer exited {junk.returncode}: {je[-1000:]}")
        jj = json.loads(jo)
        junk_bytes = jj["ok"] * (10 + 102400) / 2
        row("working set", written + junk_bytes,
            {"hit_ratio": round(j["hit_ratio"], 5), "gets": j["gets"], "ws_mib": round(ws_keys * 1000 / MIB, 1),
             "junk_sets": jj["ok"], "junk_written_mib": round(junk_bytes / MIB, 1)})
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-mib", type=int, default=128)
    ap.add_argument("--read-seconds", type=float, default=10)
    ap.add_argument("--junk-rate", type=int, default=200, help="Sets/s of 10 B..100 KiB during the reads")
    ap.add_argument("--reps", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    allrows = []
    for rep in range(a.reps):
        for r in run(a.memory_mib, a.read_seconds, a.junk_rate):
            r["rep"] = rep
            allrows.append(r)
    with open(os.path.join(OUT, "results.jsonl"), "a") as f:
        for r in allrows:
            f.write(json.dumps(r) + "\n")
    print()
    print(f"| phase | written MiB | RSS MiB | RSS - start-up MiB | / --memory | store bytes MiB | items | hit ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in allrows:
        print(f"| {r['phase']} | {r['written_mib']:,} | {r['rss_mib']} | {r['rss_over_startup_mib']} | "
              f"{r['ratio_to_memory']} | {r['store_bytes_mib']} | {r['items']:,} | {r.get('hit_ratio', '')} |")
    worst = max(r["ratio_to_memory"] for r in allrows)
    print(f"\nworst RSS - start-up: {worst:.3f} x --memory (start-up RSS {allrows[0]['startup_mib']} MiB)")
    return 0 if worst <= 1.1 and all(r.get("hit_ratio", 1) >= 0.99 for r in allrows) else 1


if __name__ == "__main__":
    sys.exit(main())
