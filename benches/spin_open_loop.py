#!/usr/bin/env python3
"""Does the default node burn idle cores? Open-loop Gets over 64 connections
at idle, 1k, 10k and 40k requests/s, side by side:

- "1 shard": `--shards 1`, pinned to CPU 0 (the benchmark's one-shard
  reference);
- "default": the defaults (one shard per CPU of the affinity mask,
  `--spin-before-park auto`), on CPUs 0 and 1;
- with `--tonic`, tonic-ref too (one worker thread, CPU 0).

shardcache-loadtest runs on CPU 1 (shared with the default node's second
shard, as on a host where the cache shares cores with its clients). For each
point: server CPU per wall second (all threads, from /proc), p50/p99 from the
load generator (latency counted from each request's scheduled send time).
Every rep runs every point, configs alternating, so drift hits all alike.

    cargo build --release --workspace --bins
    benches/spin_open_loop.py                      # ~4 min, 3 reps
    benches/spin_open_loop.py --binary OTHER/shardcache --label before

`--binary` measures another build of the node under the same script
(e.g. a worktree of an older commit), labelled in the output.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as C  # noqa: E402  (the shared process and load helpers)

CONNS = 64
RATES = [0, 1_000, 10_000, 40_000]


def point(binary: str, label: str, config: str, rate: int, duration: float, rep: int,
          flags: list[str]) -> dict:
    port = C.free_port()
    if config == "tonic-ref":
        C.SERVER_CPU = "0"
        argv = [str(C.TONIC_REF), "serve", "--listen", f"127.0.0.1:{port}", "--shards", "1",
                "--memory", "1GiB"]
    else:
        cpus, extra = {"1 shard": ("0", ["--shards", "1"]), "default": ("0,1", [])}[config]
        C.SERVER_CPU = cpus
        argv = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--memory", "1GiB",
                "--log-level", "warn"] + extra + flags
    base = C.loadtest_args(port, "get", 64, CONNS, None, rate or None)
    with C.Server(label, argv, port) as srv:
        # Preload every key (4 connections, closed loop), then let it settle.
        preload = C.loadtest_args(port, "get", 64, 4, 1, None) + ["--preload", "--duration", "0.5s"]
        pre, _, _ = C.loadtest(preload, 120)
        if pre["preload"]["ok"] != C.KEYS:
            raise C.Failure(f"preload stored {pre['preload']['ok']} of {C.KEYS}")
        time.sleep(0.5)
        cpu0, t0 = srv.cpu_seconds(), time.monotonic()
        if rate:
            j, _, _ = C.loadtest(base + ["--duration", f"{duration}s", "--seed", str(rep + 1)],
                                 duration + 60)
        else:
            time.sleep(duration)
            j = None
        cpu1, wall = srv.cpu_seconds(), time.monotonic() - t0
    row = {"label": label, "config": config, "rate": rate, "rep": rep,
           "server_cpu": round((cpu1 - cpu0) / wall, 4)}
    if j:
        ok = j["by_status"].get("OK", 0)
        if ok != sum(j["by_status"].values()) or j["hit_ratio"] != 1.0:
            raise C.Failure(f"{label} {config} {rate}/s: non-OK replies or misses: {j}")
        row.update(ops_per_s=round(j["throughput"]), p50_us=j["p50"], p99_us=j["p99"])
    C.log(f"{label:8} {config:8} {rate:>6}/s rep {rep}: CPU {row['server_cpu']:.3f}"
          + (f"  p50 {row['p50_us']} p99 {row['p99_us']} us" if j else ""))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(C.SHARDCACHE))
    ap.add_argument("--label", default="this")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--json", help="append the rows to this file")
    ap.add_argument("--flags", default="", help="more flags for both configs, e.g. '--spin-before-park 0'")
    ap.add_argument("--tonic", action="store_true", help="also tonic-ref (one thread, CPU 0)")
    ap.add_argument("--rates", default=",".join(map(str, RATES)), help="comma-separated; 0 is idle")
    a = ap.parse_args()
    rows = []
    rates = [int(float(r)) for r in a.rates.split(",")]
    for rep in range(a.reps):
        for rate in rates:
            for config in ("1 shard", "default") + (("tonic-ref",) if a.tonic else ()):
                rows.append(point(a.binary, a.label, config, rate, a.duration, rep, a.flags.split()))
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"\n{a.label}: medians of {a.reps} runs, {CONNS} connections, open loop\n")
    print("| rate | 1 shard: server CPU | p50 / p99 µs | default: server CPU | p50 / p99 µs | CPU default / 1 shard |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rate in rates:
        cell = {}
        for config in ("1 shard", "default"):
            rs = [r for r in rows if r["rate"] == rate and r["config"] == config]
            cpu = C.median([r["server_cpu"] for r in rs])
            lat = (f"{C.median([r['p50_us'] for r in rs]):.0f} / {C.median([r['p99_us'] for r in rs]):.0f}"
                   if rate else "")
            cell[config] = (cpu, lat)
        ratio = cell["default"][0] / cell["1 shard"][0] if cell["1 shard"][0] > 0.0005 else float("nan")
        print(f"| {'idle' if not rate else f'{rate:,}/s'} | {cell['1 shard'][0]:.3f} | {cell['1 shard'][1]} "
              f"| {cell['default'][0]:.3f} | {cell['default'][1]} | {ratio:.2f} |")
    if a.tonic:
        print("\n| rate | shardcache 1 shard: CPU | p99 µs | tonic-ref: CPU | p99 µs | CPU ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
        for rate in [r for r in rates if r]:
            m = {}
            for config in ("1 shard", "tonic-ref"):
                rs = [r for r in rows if r["rate"] == rate and r["config"] == config]
                m[config] = (C.median([r["server_cpu"] for r in rs]), C.median([r["p99_us"] for r in rs]))
            print(f"| {rate:,}/s | {m['1 shard'][0]:.3f} | {m['1 shard'][1]:.0f} | {m['tonic-ref'][0]:.3f} "
                  f"| {m['tonic-ref'][1]:.0f} | {m['1 shard'][0] / m['tonic-ref'][0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
