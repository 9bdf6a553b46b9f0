#!/usr/bin/env python3
"""GetMany of N keys against N single Gets, measured with h2load (nghttp2,
not our code) on one node: server CPU-µs per key and per-call latency;
then the same comparison through shardcache-client (shardcache-loadtest
--client sharded --batch N against --batch 1).

    python3 benches/batch.py [--keys 100] [--duration 8] [--runs 3] [--conns 16]

The node runs with one shard pinned to CPU 0, h2load (one thread) on CPU 1.
Both scenarios use the same N stored keys (16 B keys, 64 B values): `get`
sends single Gets of one of them, `get_many` one GetMany of all N; each with
--conns connections and one call in flight per connection. The runs
alternate (get, get_many, get, ...) so drift hits both alike; medians are
printed. Server CPU comes from /proc (utime+stime of the node). Every
response is checked by size: h2load's DATA byte count must be exactly
requests x the size of a correct all-hits response (gRPC errors travel as
trailers and h2load counts them as successes).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import free_port, wait_accepting  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def request(key, value=b""):
    """cache.Request { key = 2, value = 3 } in the default group."""
    return field(2, key) + (field(3, value) if value else b"")


def framed(msg):
    return b"\0" + len(msg).to_bytes(4, "big") + msg


def keys(n):
    return [b"batch-key-%06d" % i for i in range(n)]  # 16 bytes


VALUE = bytes(range(64))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(port, method, body_path, conns, duration, log=None):
    cmd = [
        "taskset", "-c", "1", "h2load", "-t", "1", "-c", str(conns), "-m", "1",
        "-D", str(duration), "-d", body_path,
        "-H", "content-type: application/grpc", "-H", "te: trailers",
    ]
    if log:
        cmd += ["--log-file", log]
    cmd.append(f"http://127.0.0.1:{port}/cache.Cache/{method}")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    done = succeeded = data = None
    for line in out.splitlines():
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            done = int(parts[parts.index("done") - 1])
            succeeded = int(parts[parts.index("succeeded") - 1])
        if line.startswith("traffic:"):
            # "traffic: ... total, ... headers (...), ... data": exact counts
            # in parentheses.
            nums = [int(t.strip("()")) for t in line.split() if t.startswith("(") and t.strip("()").isdigit()]
            data = nums[-1]
    return done, succeeded, data


def percentile(sorted_us, q):
    return sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))]


def through_client(node, port, args):
    """The same two calls through shardcache-client, driven by
    shardcache-loadtest on CPU 1 (--batch N against --batch 1)."""
    load = os.path.join(ROOT, "target/release/shardcache-loadtest")
    base = [
        "taskset", "-c", "1", load, "--target", f"127.0.0.1:{port}", "--client", "sharded",
        "--get-ratio", "1", "--keys", str(args.keys), "--key-size", "16", "--value-size", "64",
        "--connections", str(args.conns), "--inflight", "1", "--json", "--no-progress",
    ]
    subprocess.run(base + ["--preload", "--duration", "1s"], check=True, capture_output=True)
    rows = {1: [], args.keys: []}
    for _ in range(args.runs):
        for batch in rows:
            c0, t0 = cpu_seconds(node.pid), time.time()
            out = subprocess.run(base + ["--batch", str(batch), "--duration", f"{args.duration}s"],
                                 check=True, capture_output=True, text=True).stdout
            cpu, wall = cpu_seconds(node.pid) - c0, time.time() - t0
            j = json.loads(out)
            if j["ok"] != j["requests"] or j["hits"] != j["gets"]:
                raise SystemExit(f"--batch {batch}: {j['requests']} calls, {j['ok']} OK, {j['hits']} all-hit")
            keys = j["requests"] * batch
            rows[batch].append({
                "keys_per_s": keys / j["duration_s"],
                "cpu_us_per_key": cpu * 1e6 / keys,
                "server_cpu_util": cpu / wall,
                "p50_us": j["p50"],
                "p99_us": j["p99"],
            })
    med = {b: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for b, rs in rows.items()}
    print(f"\nthrough shardcache-client (shardcache-loadtest --client sharded), {args.conns} tasks x 1 call")
    print(f"{'keys/call':<10}{'keys/s':>11}{'CPU-us/key':>12}{'server CPU':>12}{'p50 us':>9}{'p99 us':>9}")
    for b, r in med.items():
        print(f"{b:<10}{r['keys_per_s']:>11.0f}{r['cpu_us_per_key']:>12.3f}{r['server_cpu_util']:>12.2f}"
              f"{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}")
    one, many = med[1], med[args.keys]
    print(f"get_many({args.keys}) vs get: {one['cpu_us_per_key'] / many['cpu_us_per_key']:.1f}x fewer "
          f"server CPU-us per key; p99 {many['p99_us'] / one['p99_us']:.2f}x one get's")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/shardcache"))
    args = ap.parse_args()

    ks = keys(args.keys)
    tmp = tempfile.mkdtemp(prefix="shardcache-batch-")
    bodies = {
        "SetMany": framed(b"".join(field(1, request(k, VALUE)) for k in ks)),
        "Get": framed(request(ks[0])),
        "GetMany": framed(b"".join(field(1, request(k)) for k in ks)),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = os.path.join(tmp, name)
        with open(paths[name], "wb") as f:
            f.write(body)
    # A correct all-hits response: GetResponse{value, found} = 2+64+2 bytes;
    # GetManyResponse: per item a field-1 wrapper (2 bytes) around the same.
    hit = 2 + len(VALUE) + 2
    expect = {"Get": 5 + hit, "GetMany": 5 + args.keys * (2 + hit)}

    port = free_port()
    node = subprocess.Popen(
        ["taskset", "-c", "0", args.bin, "serve", "--listen", f"127.0.0.1:{port}",
         "--http", "off", "--shards", str(args.shards), "--memory", "256MiB"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "node.log"), "w"),
    )
    try:
        wait_accepting(port, node)
        done, ok, _ = h2load(port, "SetMany", paths["SetMany"], 1, 1)
        assert done and ok, "preload failed"
        rows = {"Get": [], "GetMany": []}
        for run in range(args.runs):
            for method in ("Get", "GetMany"):
                h2load(port, method, paths[method], args.conns, 1)  # warm-up
                log = os.path.join(tmp, f"{method}-{run}.log")
                c0, t0 = cpu_seconds(node.pid), time.time()
                done, ok, data = h2load(port, method, paths[method], args.conns, args.duration, log)
                cpu, wall = cpu_seconds(node.pid) - c0, time.time() - t0
                if data != done * expect[method] or ok != done:
                    raise SystemExit(
                        f"{method}: {done} done, {ok} ok, {data} DATA bytes; "
                        f"expected {done * expect[method]}: some calls failed"
                    )
                lat = sorted(int(line.split()[2]) for line in open(log) if line.strip())
                per_call = 1 if method == "Get" else args.keys
                rows[method].append({
                    "calls_per_s": done / args.duration,
                    "keys_per_s": done * per_call / args.duration,
                    "cpu_us_per_key": cpu * 1e6 / (done * per_call),
                    "server_cpu_util": cpu / wall,
                    "p50_us": percentile(lat, 0.50),
                    "p99_us": percentile(lat, 0.99),
                })
        med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items()}
        print(f"h2load, {args.conns} connections x 1 in flight, {args.duration} s x {args.runs} runs "
              f"(medians), one node with {args.shards} shard(s) on CPU 0, {args.keys} keys of 64 B")
        print(f"{'call':<10}{'calls/s':>10}{'keys/s':>11}{'CPU-us/key':>12}{'server CPU':>12}"
              f"{'p50 us':>9}{'p99 us':>9}")
        for m, r in med.items():
            print(f"{m:<10}{r['calls_per_s']:>10.0f}{r['keys_per_s']:>11.0f}{r['cpu_us_per_key']:>12.3f}"
                  f"{r['server_cpu_util']:>12.2f}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}")
        g, b = med["Get"], med["GetMany"]
        print(f"GetMany({args.keys}) vs Get: {g['cpu_us_per_key'] / b['cpu_us_per_key']:.1f}x fewer "
              f"server CPU-us per key; p99 {b['p99_us'] / g['p99_us']:.2f}x one Get's")
        through_client(node, port, args)
    finally:
        node.terminate()
        node.wait(10)


if __name__ == "__main__":
    main()
