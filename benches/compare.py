#!/usr/bin/env python3
"""Side-by-side benchmark of shardcache, tonic-ref, Redis and memcached.

Run through benches/compare.sh (which checks the tools and builds the release
binaries first); this file is its driver and uses only the standard library.

    benches/compare.py [--quick] [--only PARTS] [--reps N] [--duration S]
                       [--out DIR] [--no-docs]

Every server runs pinned to CPU 0 (taskset -c 0), every load generator on
CPU 1, one at a time, each measurement on a freshly started server. The gRPC
servers (shardcache and tonic-ref) are driven by the same load generators,
target/release/shardcache-loadtest and (part h2load) nghttp2's h2load through
the shared toolkit; Redis by redis-benchmark, memcached by
the shared toolkit's mcload. The two gRPC servers alternate point by point
(A B, B A, ...) so that drift on a shared machine hits both alike; each point
is measured --reps times and the tables quote medians, and ratios as the
median of the per-repetition ratios.

Parts (--only takes a comma-separated subset):
  closed   gRPC closed loop: Get/Set x 64 B/4 KiB x 16x16/64x1
  h2load   the same shapes (those the shared toolkit has) driven by h2load
           through ../shared/bench/run.sh: a load generator that is not ours
  open     gRPC open loop over 64 connections: a rate sweep of Get 64 B (the
           plots: latency, and server CPU-us per call) and Set 64 B at the
           fixed rate, latency from scheduled send times
  anchors  Redis (redis-benchmark) and memcached (mcload), same shapes
  instr    instructions per request under valgrind --tool=callgrind
           (or perf stat -e instructions where the PMU allows it)
  memory   resident bytes per item with 1M items (16 B keys, 64 B values)

Output: DIR/results.jsonl (one JSON object per measurement), DIR/report.md
(the tables), DIR/latency.dat, DIR/latency.png (latency vs throughput) and
DIR/cpu.png (server CPU per call vs throughput).
A full run (not --quick) also copies the PNGs to docs/img/compare-*.png
and results.jsonl to docs/data/compare-results.jsonl, and replaces the
generated part of docs/benchmarks.md (between the `compare:begin` and
`compare:end` markers), unless --no-docs. --quick writes to
target/compare/quick/ so that it never overwrites a full run's results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = os.environ.get("COMPARE_SERVER_CPU", "0")
LOAD_CPU = os.environ.get("COMPARE_LOAD_CPU", "1")


def shared_bench() -> Path:
    """The shared toolkit: beside the checkout, or (from a git worktree
    elsewhere) beside the main checkout."""
    if os.environ.get("COMPARE_SHARED_BENCH"):
        return Path(os.environ["COMPARE_SHARED_BENCH"])
    here = ROOT.parent / "shared" / "bench"
    if not here.is_dir():
        p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                           capture_output=True, text=True)
        main = Path(p.stdout.strip()).parent.parent / "shared" / "bench" if p.returncode == 0 else here
        if main.is_dir():
            return main
    return here


SHARED = shared_bench()
LOADTEST = ROOT / "target" / "release" / "shardcache-loadtest"
SHARDCACHE = ROOT / "target" / "release" / "shardcache"
TONIC_REF = Path(os.environ.get("TONIC_REF", SHARED / "target" / "release" / "tonic-ref"))
MCLOAD = Path(os.environ.get("MCLOAD", SHARED / "target" / "release" / "mcload"))

KEY_SIZE = 16
# Distinct keys of the throughput scenarios (all preloaded, so every Get hits).
KEYS = 10_000
OPEN_CONNS = 64
# The closed-loop shapes the shared toolkit's run.sh knows (for the h2load part).
H2LOAD_SHAPES = {"get_64B_c16m16", "get_64B_c64m1", "set_64B_c16m16", "set_64B_c64m1",
                 "get_4KiB_c16m16", "get_4KiB_c64m1"}

# name -> (op, value bytes, connections, in flight per connection)
CLOSED = [
    ("get_64B_c16m16", "get", 64, 16, 16),
    ("set_64B_c16m16", "set", 64, 16, 16),
    ("get_4KiB_c16m16", "get", 4096, 16, 16),
    ("set_4KiB_c16m16", "set", 4096, 16, 16),
    ("get_64B_c64m1", "get", 64, 64, 1),
    ("set_64B_c64m1", "set", 64, 64, 1),
    ("get_4KiB_c64m1", "get", 4096, 64, 1),
    ("set_4KiB_c64m1", "set", 4096, 64, 1),
]
GRPC_SERVERS = ["shardcache", "tonic-ref"]
# Before a point, wait (within --max-wait) until other processes use less
# than this many cores; a point during which they used more than
# DISTURBED_CORES is measured again, up to RETRIES times.
QUIET_CORES = 0.15
DISTURBED_CORES = 0.2
RETRIES = 2


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def busy_cpu_seconds() -> float:
    """CPU-seconds spent busy (not idle or iowait) by the whole machine."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def other_cpu_now(secs: float = 1.0) -> float:
    """Cores kept busy over the next `secs` (call it while nothing of ours runs)."""
    b0, t0 = busy_cpu_seconds(), time.monotonic()
    time.sleep(secs)
    return (busy_cpu_seconds() - b0) / (time.monotonic() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Failure(Exception):
    """A measurement that cannot be trusted; the run stops with the message."""


# ------------------------------------------------------------------ processes
class Server:
    """A server process pinned to the server CPU, in its own process group."""

    def __init__(self, name: str, argv: list[str], port: int, wrap: list[str] | None = None):
        self.name, self.port = name, port
        self.argv = ["taskset", "-c", SERVER_CPU] + (wrap or []) + argv
        self.log = tempfile.TemporaryFile()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Server":
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"{self.name} exited at start with {self.proc.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise Failure(f"{self.name} did not accept connections on {self.port} within {timeout:.0f}s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads)."""
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for ln in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
        raise Failure(f"no VmRSS for {self.name}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        except ProcessLookupError:
            return self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def run_load(argv: list[str], timeout: float, stdin: bytes | None = None) -> tuple[str, float, float]:
    """Runs a load generator on the load CPU; returns (stdout, wall s, CPU s)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(["taskset", "-c", LOAD_CPU] + argv, input=stdin, capture_output=True, timeout=timeout)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise Failure(f"{' '.join(argv[:3])}... exited {p.returncode}: "
                      f"{p.stderr.decode(errors='replace')[-1500:]} {out[-500:]}")
    return out, wall, cpu


def grpc_server(name: str, port: int, memory: str = "1GiB", extra: list[str] | None = None,
                wrap: list[str] | None = None) -> Server:
    listen = f"127.0.0.1:{port}"
    if name == "shardcache":
        argv = [str(SHARDCACHE), "serve", "--listen", listen, "--shards", "1", "--memory", memory,
                "--max-value", "4MiB", "--log-level", "warn"]
    elif name == "tonic-ref":
        argv = [str(TONIC_REF), "serve", "--listen", listen, "--shards", "1", "--memory", memory,
                "--max-value", "4MiB"]
    else:
        raise ValueError(name)
    return Server(name, argv + (extra or []), port, wrap)


def loadtest_args(port: int, op: str, size: int, c: int, m: int | None, rate: float | None,
                  keys: int = KEYS) -> list[str]:
    a = [str(LOADTEST), "--target", f"127.0.0.1:{port}", "--connections", str(c),
         "--keys", str(keys), "--key-size", str(KEY_SIZE), "--value-size", str(size),
         "--get-ratio", "1" if op == "get" else "0", "--no-progress", "--json"]
    if m is not None:
        a += ["--inflight", str(m)]
    if rate is not None:
        a += ["--rate", str(rate)]
    return a


def loadtest(argv: list[str], timeout: float) -> tuple[dict, float, float]:
    out, wall, cpu = run_load(argv, timeout)
    return json.loads(out.strip().splitlines()[-1]), wall, cpu


# ------------------------------------------------------------------ the runner
class Compare:
    def __init__(self, a):
        self.a = a
        self.wait_left = a.max_wait
        self.waited = 0.0
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.jsonl"
        self.results_path.write_text("")
        self.rows: list[dict] = []
        self.warmup = a.warmup
        self.duration = a.duration

    def record(self, row: dict, write: bool = True) -> dict:
        row["loadavg"] = loadavg()
        self.rows.append(row)
        if write:
            self.write(row)
        return row

    def write(self, row: dict) -> None:
        with self.results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def wait_quiet(self) -> None:
        """Before a point: wait while other processes keep the machine busy,
        within the run's --max-wait budget."""
        if self.wait_left <= 0:
            return
        t0 = time.monotonic()
        said = False
        while True:
            other = other_cpu_now()
            if other < QUIET_CORES:
                break
            if time.monotonic() - t0 >= self.wait_left:
                log(f"machine still busy ({other:.2f} cores used by others); --max-wait used up, measuring anyway")
                break
            if not said:
                log(f"machine busy ({other:.2f} cores used by others): waiting for it to calm down")
                said = True
            time.sleep(4)
        waited = time.monotonic() - t0
        self.wait_left -= waited
        self.waited += waited

    def measured(self, fn, *args) -> dict:
        """Runs one point; a run that other processes disturbed (more than
        DISTURBED_CORES of CPU) is kept in results.jsonl as discarded and
        measured again, up to RETRIES times."""
        for attempt in range(RETRIES + 1):
            self.wait_quiet()
            row = fn(*args)
            disturbed = (row.get("other_cpu") or 0) > DISTURBED_CORES
            if disturbed and attempt < RETRIES:
                row["discarded"] = f"other processes used {row['other_cpu']} cores"
                self.write(row)
                log(f"  disturbed ({row['other_cpu']} cores used by others): measuring again")
                continue
            row["attempt"] = attempt
            self.write(row)
            return row

    # -- gRPC (shardcache, tonic-ref) with shardcache-loadtest
    def grpc_point(self, server: str, scenario: str, op: str, size: int, c: int, m: int | None,
                   rate: float | None, rep: int, part: str) -> dict:
        port = free_port()
        base = loadtest_args(port, op, size, c, m, rate)
        with grpc_server(server, port) as srv:
            # Preload every key and warm up at the same load shape, unmeasured.
            pre, _, _ = loadtest(base + ["--preload", "--duration", f"{self.warmup}s"], 120)
            if pre["preload"]["ok"] != KEYS:
                raise Failure(f"{server} {scenario}: preload stored {pre['preload']['ok']} of {KEYS}: {pre}")
            cpu0, busy0 = srv.cpu_seconds(), busy_cpu_seconds()
            j, wall, load_cpu = loadtest(base + ["--duration", f"{self.duration}s", "--seed", str(rep + 1)],
                                         self.duration + 120)
            cpu1, busy1 = srv.cpu_seconds(), busy_cpu_seconds()
        errors = j["requests"] - j["ok"]
        hit_ok = op != "get" or j["hit_ratio"] == 1.0
        row = {
            "part": part, "server": server, "scenario": scenario, "tool": "shardcache-loadtest",
            "rep": rep, "op": op, "value_size": size, "c": c, "m": j["inflight"], "rate": rate,
            "ops_per_s": round(j["throughput"], 1), "p50_us": j["p50"], "p90_us": j["p90"],
            "p99_us": j["p99"], "p999_us": j["p999"], "max_us": j["max"], "requests": j["requests"],
            "errors": errors, "by_status": j["by_status"], "transport_errors": j["transport_errors"],
            "hit_ratio": j["hit_ratio"], "server_cpu": round((cpu1 - cpu0) / wall, 3),
            "load_cpu": round(load_cpu / wall, 3),
            "other_cpu": round(max(0.0, busy1 - busy0 - (cpu1 - cpu0) - load_cpu) / wall, 3),
        }
        row["ops_per_server_cpu_s"] = round(row["ops_per_s"] / row["server_cpu"]) if row["server_cpu"] else None
        self.record(row, write=False)
        log(f"{part} {server:10} {scenario:18} rep {rep}: {row['ops_per_s']:>10,.0f} ops/s  "
            f"p50 {row['p50_us']}  p99 {row['p99_us']} us  errors {errors}  server CPU {row['server_cpu']}  "
            f"load CPU {row['load_cpu']}  other CPU {row['other_cpu']}")
        if part == "closed" and (errors or not hit_ok):
            raise Failure(f"{server} {scenario}: {errors} errors, hit ratio {j['hit_ratio']}: {j}")
        if part == "open" and (not hit_ok or j["by_status"].get("OK", 0) != sum(j["by_status"].values())):
            raise Failure(f"{server} {scenario}: non-OK replies or misses: {j}")
        return row

    def interleaved(self, points, part):
        """points: list of (scenario, op, size, c, m, rate); each rep runs both
        servers, in alternating order."""
        for scenario, op, size, c, m, rate in points:
            for rep in range(self.a.reps):
                order = GRPC_SERVERS if rep % 2 == 0 else GRPC_SERVERS[::-1]
                for server in order:
                    self.measured(self.grpc_point, server, scenario, op, size, c, m, rate, rep, part)

    def closed(self):
        pts = [(n, op, size, c, m, None) for n, op, size, c, m in CLOSED]
        if self.a.quick:
            pts = [p for p in pts if p[0] in ("get_64B_c16m16", "set_4KiB_c64m1")]
        self.interleaved(pts, "closed")

    # -- the same closed-loop shapes with h2load (the shared toolkit)
    def h2load_point(self, server: str, scenario: str, rep: int) -> dict:
        binary = SHARDCACHE if server == "shardcache" else TONIC_REF
        cmd = f"{binary} serve --listen 127.0.0.1:{{port}} --shards {{shards}} --memory {{memory}} " \
              f"--max-value {{max_value}}"
        p = subprocess.run([str(SHARED / "run.sh"), server, cmd, "--kind", "grpc", "--duration",
                            f"{self.duration:g}", "--only", scenario], capture_output=True, text=True,
                           timeout=self.duration * 4 + 180, cwd=ROOT,
                           env={**os.environ, "BENCH_SERVER_CPU": SERVER_CPU, "BENCH_LOAD_CPU": LOAD_CPU})
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise Failure(f"run.sh {server} {scenario} exited {p.returncode}: {p.stderr[-1500:]}")
        j = json.loads(lines[-1])
        cpu, load = j["server_cpu_util"], j["load_cpu_util"]
        row = {
            "part": "h2load", "server": server, "scenario": scenario, "tool": "h2load", "rep": rep,
            "c": j["c"], "m": j["m"], "ops_per_s": j["ops_per_s"], "p50_us": j["p50_us"],
            "p99_us": j["p99_us"], "errors": j["errors"], "server_cpu": cpu, "load_cpu": load,
            # Not measured: run.sh's warm-up and preload, unseen from here,
            # would read as other processes' CPU.
            "other_cpu": None,
            "ops_per_server_cpu_s": round(j["ops_per_s"] / cpu) if cpu else None,
        }
        self.record(row, write=False)
        log(f"h2load {server:10} {scenario:18} rep {rep}: {row['ops_per_s']:>10,.0f} ops/s  p99 {row['p99_us']} us  "
            f"errors {row['errors']}  server CPU {cpu}  load CPU {load}")
        # run.sh's own count has read -1 (its HTTP tally includes done - 2xx,
        # which came out negative once); only more than 0 is an error.
        if row["errors"] > 0:
            raise Failure(f"h2load {server} {scenario}: {row['errors']} errors: {j}")
        return row

    def h2load(self):
        if not (SHARED / "run.sh").exists():
            raise Failure(f"{SHARED / 'run.sh'} not found: the h2load part needs the shared toolkit")
        names = [n for n, *_ in CLOSED if n in H2LOAD_SHAPES]
        if self.a.quick:
            names = [n for n in names if n in ("get_64B_c16m16", "get_64B_c64m1")]
        for scenario in names:
            for rep in range(self.a.reps):
                order = GRPC_SERVERS if rep % 2 == 0 else GRPC_SERVERS[::-1]
                for server in order:
                    self.measured(self.h2load_point, server, scenario, rep)

    def open(self):
        pts = [(f"get_64B_r{int(r)}", "get", 64, OPEN_CONNS, None, r) for r in self.a.rates]
        pts.append((f"set_64B_r{int(self.a.fixed_rate)}", "set", 64, OPEN_CONNS, None, self.a.fixed_rate))
        self.interleaved(pts, "open")

    # -- Redis and memcached with their own tools
    def anchors(self):
        pts = CLOSED if not self.a.quick else [p for p in CLOSED if p[0] in ("get_64B_c16m16", "set_4KiB_c64m1")]
        for name, op, size, c, m in pts:
            for rep in range(self.a.reps):
                self.measured(self.redis_point, name, op, size, c, m, rep)
                self.measured(self.memcached_point, name, op, size, c, m, rep)

    def redis_cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout

    def redis_info(self, port: int) -> dict:
        out = {}
        for ln in self.redis_cli(port, "info", "all").splitlines():
            if ":" in ln and not ln.startswith("#"):
                k, v = ln.strip().split(":", 1)
                out[k] = v
        return out

    @staticmethod
    def resp(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in args)

    def redis_fill(self, port: int, keys, size: int) -> None:
        value = b"v" * size
        data = b"".join(self.resp(b"SET", k, value) for k in keys)
        p = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=data, capture_output=True, timeout=300)
        if p.returncode != 0 or b"errors: 0" not in p.stdout:
            raise Failure(f"redis-cli --pipe failed: {p.stdout[-300:]} {p.stderr[-300:]}")

    def redis_server(self, port: int) -> Server:
        return Server("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--io-threads", "1", "--protected-mode", "no"], port)

    def redis_point(self, name, op, size, c, m, rep):
        port = free_port()
        with self.redis_server(port) as srv:
            # redis-benchmark -r R draws keys "key:" + 12 digits (16 bytes) below R.
            if op == "get":
                self.redis_fill(port, (b"key:%012d" % i for i in range(KEYS)), size)
            bench = ["redis-benchmark", "-p", str(port), "-t", op, "-c", str(c), "-P", str(m), "-d", str(size),
                     "-r", str(KEYS), "--threads", "1", "--csv"]

            def one(n):
                out, wall, cpu = run_load(bench + ["-n", str(n)], 300)
                rows = [ln.replace('"', "").split(",") for ln in out.splitlines()]
                row = next(r for r in rows if r and r[0].lower() == op)
                return [float(x) for x in row[1:8]], wall, cpu

            # Warm-up, which also sizes the measured run to about --duration.
            (rps, *_), _, _ = one(20_000 if m == 1 else 200_000)
            n = max(10_000, int(rps * self.duration))
            i0, cpu0, busy0 = self.redis_info(port), srv.cpu_seconds(), busy_cpu_seconds()
            (rps, avg, _mn, p50, p95, p99, mx), wall, load_cpu = one(n)
            i1, cpu1, busy1 = self.redis_info(port), srv.cpu_seconds(), busy_cpu_seconds()

        def d(k):
            return int(i1.get(k, 0)) - int(i0.get(k, 0))

        calls = re.search(r"calls=(\d+)", i1.get(f"cmdstat_{op}", "calls=0")).group(1)
        calls0 = re.search(r"calls=(\d+)", i0.get(f"cmdstat_{op}", "calls=0")).group(1)
        errors = d("keyspace_misses") + max(0, n - (int(calls) - int(calls0))) + d("total_error_replies")
        row = self.record(write=False, row={
            "part": "anchors", "server": "redis", "scenario": name, "tool": "redis-benchmark", "rep": rep,
            "op": op, "value_size": size, "c": c, "m": m, "ops_per_s": round(rps, 1),
            "p50_us": round(p50 * 1000), "p95_us": round(p95 * 1000), "p99_us": round(p99 * 1000),
            "max_us": round(mx * 1000), "requests": n, "errors": errors,
            "server_cpu": round((cpu1 - cpu0) / wall, 3), "load_cpu": round(load_cpu / wall, 3),
            "other_cpu": round(max(0.0, busy1 - busy0 - (cpu1 - cpu0) - load_cpu) / wall, 3)})
        log(f"anchors redis      {name:18} rep {rep}: {rps:>10,.0f} ops/s  p50 {row['p50_us']}  "
            f"p99 {row['p99_us']} us  errors {errors}  server CPU {row['server_cpu']}  load CPU {row['load_cpu']}  "
            f"other CPU {row['other_cpu']}")
        if errors:
            raise Failure(f"redis {name}: {errors} errors")
        return row

    def memcached_server(self, port: int, memory_mb: int = 1024) -> Server:
        argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", "-m", str(memory_mb)]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        return Server("memcached", argv, port)

    @staticmethod
    def mc_stats(port: int) -> dict:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"stats\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        out = {}
        for ln in buf.decode().splitlines():
            p = ln.split()
            if len(p) == 3 and p[0] == "STAT":
                out[p[1]] = p[2]
        return out

    def memcached_point(self, name, op, size, c, m, rep):
        port = free_port()
        with self.memcached_server(port) as srv:
            def one(secs):
                out, wall, cpu = run_load([str(MCLOAD), "--addr", f"127.0.0.1:{port}", "--op", op, "--conns", str(c),
                                           "--depth", str(m), "--key-size", str(KEY_SIZE), "--value-size", str(size),
                                           "--duration", str(secs), "--max-ops", "100000000"], secs + 60)
                return json.loads(out.strip().splitlines()[-1]), wall, cpu

            one(self.warmup)
            s0, cpu0, busy0 = self.mc_stats(port), srv.cpu_seconds(), busy_cpu_seconds()
            r, wall, load_cpu = one(self.duration)
            s1, cpu1, busy1 = self.mc_stats(port), srv.cpu_seconds(), busy_cpu_seconds()
        misses = int(s1["get_misses"]) - int(s0["get_misses"])
        errors = r["errors"] + misses
        row = self.record(write=False, row={
            "part": "anchors", "server": "memcached", "scenario": name, "tool": "mcload", "rep": rep,
            "op": op, "value_size": size, "c": c, "m": m, "ops_per_s": r["ops_per_s"], "p50_us": r["p50_us"],
            "p90_us": r["p90_us"], "p99_us": r["p99_us"], "p999_us": r["p999_us"], "max_us": r["max_us"],
            "requests": r["ops"], "errors": errors, "server_cpu": round((cpu1 - cpu0) / wall, 3),
            "load_cpu": round(load_cpu / wall, 3),
            "other_cpu": round(max(0.0, busy1 - busy0 - (cpu1 - cpu0) - load_cpu) / wall, 3)})
        log(f"anchors memcached  {name:18} rep {rep}: {r['ops_per_s']:>10,.0f} ops/s  p50 {row['p50_us']}  "
            f"p99 {row['p99_us']} us  errors {errors}  server CPU {row['server_cpu']}  load CPU {row['load_cpu']}  "
            f"other CPU {row['other_cpu']}")
        if errors:
            raise Failure(f"memcached {name}: {errors} errors")
        return row

    # -- instructions per request
    def perf_works(self) -> bool:
        p = subprocess.run(["perf", "stat", "-x,", "-e", "instructions:u", "true"], capture_output=True, text=True)
        return p.returncode == 0 and re.match(r"^\d+,", p.stderr.strip().splitlines()[-1] if p.stderr else "")

    def instr(self):
        n1, n2 = self.a.instr_requests
        tool = "perf" if shutil.which("perf") and self.perf_works() else "callgrind"
        pts = [("get_64B_c16m16", "get", 64, 16, 16), ("set_64B_c16m16", "set", 64, 16, 16),
               ("get_64B_c64m1", "get", 64, 64, 1)]
        if self.a.quick:
            pts = pts[:1]
        for name, op, size, c, m in pts:
            for rep in range(self.a.instr_reps):
                for server in GRPC_SERVERS:
                    counts = {n: self.instr_run(tool, server, op, size, c, m, n) for n in (n1, n2)}
                    per = (counts[n2] - counts[n1]) / (n2 - n1)
                    row = self.record({"part": "instr", "server": server, "scenario": name, "rep": rep, "tool": tool,
                                       "n1": n1, "n2": n2, "instr_n1": counts[n1], "instr_n2": counts[n2],
                                       "instr_per_request": round(per), "instr_per_request_incl_startup":
                                       round(counts[n2] / n2)})
                    log(f"instr {server:10} {name}: {row['instr_per_request']:,} instructions/request "
                        f"({counts[n1]:,} for {n1}, {counts[n2]:,} for {n2})")

    def instr_run(self, tool, server, op, size, c, m, n) -> int:
        port = free_port()
        tmp = Path(tempfile.mkdtemp(prefix="compare-instr-"))
        try:
            if tool == "callgrind":
                wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out.%p"]
            else:
                wrap = ["perf", "stat", "-x,", "-e", "instructions:u", "-o", str(tmp / "perf.out"), "--"]
            # Spinning before parking executes a timing-dependent number of
            # instructions (and valgrind distorts timing): count the work only.
            extra = ["--spin-before-park", "0"] if server == "shardcache" else []
            srv = grpc_server(server, port, extra=extra, wrap=wrap)
            srv.start(timeout=120)
            try:
                j, _, _ = loadtest(loadtest_args(port, op, size, c, m, None, keys=1000)
                                   + ["--preload", "--requests", str(n), "--grace", "60s",
                                      "--connect-timeout", "30s"], 900)
            finally:
                rc = srv.stop(timeout=120)
            if j["ok"] != n or (op == "get" and j["hit_ratio"] != 1.0):
                raise Failure(f"instr {server}: {j}")
            if tool == "callgrind":
                total = 0
                files = list(tmp.glob("cg.out.*"))
                for f in files:
                    for ln in f.read_text(errors="replace").splitlines():
                        if ln.startswith(("summary:", "totals:")):
                            total += int(ln.split()[1])
                            break
                if not files or total == 0:
                    raise Failure(f"callgrind wrote no totals for {server} (exit {rc}): {srv.output()}")
                return total
            txt = (tmp / "perf.out").read_text()
            return int(next(ln for ln in txt.splitlines() if "instructions" in ln).split(",")[0])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- memory per item
    def memory(self):
        items = self.a.mem_items
        for rep in range(self.a.mem_reps):
            for server in ["shardcache", "tonic-ref", "redis", "memcached"]:
                self.memory_point(server, items, rep)

    def memory_point(self, server, items, rep):
        port = free_port()
        if server in GRPC_SERVERS:
            srv = grpc_server(server, port, memory="1GiB")
        elif server == "redis":
            srv = self.redis_server(port)
        else:
            srv = self.memcached_server(port, memory_mb=4096)
        with srv:
            time.sleep(0.5)
            empty = srv.rss_bytes()
            t0 = time.monotonic()
            keys = (b"k%015d" % i for i in range(items))
            if server in GRPC_SERVERS:
                j, _, _ = loadtest(loadtest_args(port, "get", 64, 16, 16, None, keys=items)
                                   + ["--preload", "--requests", "1"], 600)
                stored = j["preload"]["ok"]
            elif server == "redis":
                self.redis_fill(port, keys, 64)
                stored = int(self.redis_cli(port, "dbsize").strip())
            else:
                self.mc_fill(port, keys, 64)
                stored = int(self.mc_stats(port)["curr_items"])
            fill_s = time.monotonic() - t0
            time.sleep(0.5)
            full = srv.rss_bytes()
            if server in GRPC_SERVERS:
                # Nothing was evicted: a sample of Gets all hit.
                j, _, _ = loadtest(loadtest_args(port, "get", 64, 4, 16, None, keys=items)
                                   + ["--requests", "20000"], 120)
                if j["hit_ratio"] != 1.0:
                    raise Failure(f"{server} lost items: hit ratio {j['hit_ratio']}")
        if stored != items:
            raise Failure(f"{server}: {stored} of {items} items stored")
        row = self.record({"part": "memory", "server": server, "rep": rep, "items": items, "rss_empty": empty,
                           "rss_full": full, "bytes_per_item": round((full - empty) / items, 1),
                           "fill_s": round(fill_s, 2)})
        log(f"memory {server:10}: {row['bytes_per_item']} B/item (RSS {empty/2**20:.1f} -> {full/2**20:.1f} MiB)")

    @staticmethod
    def mc_fill(port: int, keys, size: int) -> None:
        value = b"v" * size
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            batch = []
            for k in keys:
                batch.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, size, value))
                if len(batch) == 10_000:
                    s.sendall(b"".join(batch))
                    batch = []
            s.sendall(b"".join(batch) + b"version\r\n")
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            if not buf.startswith(b"VERSION"):
                raise Failure(f"memcached fill: {buf[:200]!r}")


# ------------------------------------------------------------------ report
def machine() -> dict:
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    lscpu = sh("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    os_name = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()) \
        if Path("/etc/os-release").exists() else None
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    return {
        "cpu": model.group(1).strip() if model else "?", "cpus": os.cpu_count(),
        "kernel": sh("uname", "-r"), "os": os_name.group(1) if os_name else "?",
        "mem_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "commit": sh("git", "-C", str(ROOT), "log", "-1", "--format=%h %s"),
        "dirty": bool(sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "redis": sh("redis-server", "--version").split(" ")[2] if shutil.which("redis-server") else None,
        "memcached": sh("memcached", "--version"),
    }


def fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, float) and x < 10:
        return f"{x:.2f}{unit}"
    return f"{round(x):,}{unit}"


def spread(xs) -> str:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return "—"
    m = statistics.median(xs)
    return f"±{(max(xs) - min(xs)) / 2 / m * 100:.0f}%" if m else "—"


class Report:
    def __init__(self, rows: list[dict], info: dict, args):
        self.rows, self.info, self.a = rows, info, args

    def sel(self, part, server=None, scenario=None):
        return [r for r in self.rows if r["part"] == part and (server is None or r["server"] == server)
                and (scenario is None or r["scenario"] == scenario) and not r.get("discarded")]

    def med(self, part, server, scenario, key):
        return median([r.get(key) for r in self.sel(part, server, scenario)])

    def pair_ratio(self, part, scenario, key):
        """Median over repetitions of shardcache / tonic-ref for `key`."""
        a = {r["rep"]: r.get(key) for r in self.sel(part, "shardcache", scenario)}
        b = {r["rep"]: r.get(key) for r in self.sel(part, "tonic-ref", scenario)}
        return median([a[k] / b[k] for k in a if k in b and a[k] and b[k]])

    def scenarios(self, part):
        seen = []
        for r in self.rows:
            if r["part"] == part and r["scenario"] not in seen:
                seen.append(r["scenario"])
        return seen

    def header(self) -> str:
        i = self.info
        la0, la1 = self.a.loadavg_start, self.a.loadavg_end
        reps = self.a.reps
        return (f"Run of {i['date']} at commit `{i['commit']}`{' (with uncommitted changes)' if i['dirty'] else ''}"
                f"{' — **--quick smoke run, not a measurement**' if self.a.quick else ''}; "
                f"machine: {i['cpu']}, {i['cpus']} CPUs, {i['mem_gib']} GiB, kernel {i['kernel']}, {i['os']}; "
                f"Redis {i['redis']}, {i['memcached']}. Load average (1/5/15 min) "
                f"{'/'.join(map(str, la0))} at the start, {'/'.join(map(str, la1))} at the end; "
                f"{self.interference()}. "
                f"Each point: a fresh server, preload + {self.a.warmup}s warm-up, then {self.a.duration}s measured; "
                f"{reps} repetition(s), medians shown, ± is half the min–max range over repetitions.\n")

    def interference(self) -> str:
        """How much CPU other processes took during the measured runs."""
        kept = [r for r in self.rows if r.get("other_cpu") is not None and not r.get("discarded")]
        xs = sorted(r["other_cpu"] for r in kept)
        if not xs:
            return "other processes' CPU not measured"
        redone = sum(1 for r in self.rows if r.get("discarded"))
        busy = sum(1 for x in xs if x > DISTURBED_CORES)
        return (f"CPU used by other processes during the {len(xs)} measured runs: median {statistics.median(xs):.2f} "
                f"cores, max {xs[-1]:.2f}, above {DISTURBED_CORES} in {busy}; {redone} disturbed run(s) were "
                f"measured again, {self.a.waited:.0f} s spent waiting for a quiet machine")

    def closed_table(self, part: str = "closed") -> str:
        sc = self.scenarios(part)
        if not sc:
            return ""
        o = ["| scenario | shardcache ops/s | tonic-ref ops/s | ratio | shardcache p50 / p99 µs | "
             "tonic-ref p50 / p99 µs | server CPU (sc / tr) | ops per server CPU-s (sc / tr) | ratio per CPU-s | "
             "load CPU (sc / tr) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sc:
            def g(srv, k):
                return self.med(part, srv, s, k)

            def sp(srv):
                return spread([r["ops_per_s"] for r in self.sel(part, srv, s)])
            o.append(
                f"| {s} | {fmt(g('shardcache', 'ops_per_s'))} {sp('shardcache')} | "
                f"{fmt(g('tonic-ref', 'ops_per_s'))} {sp('tonic-ref')} | "
                f"**{fmt(self.pair_ratio(part, s, 'ops_per_s'), '×')}** | "
                f"{fmt(g('shardcache', 'p50_us'))} / {fmt(g('shardcache', 'p99_us'))} | "
                f"{fmt(g('tonic-ref', 'p50_us'))} / {fmt(g('tonic-ref', 'p99_us'))} | "
                f"{fmt(g('shardcache', 'server_cpu'))} / {fmt(g('tonic-ref', 'server_cpu'))} | "
                f"{fmt(g('shardcache', 'ops_per_server_cpu_s'))} / {fmt(g('tonic-ref', 'ops_per_server_cpu_s'))} | "
                f"{fmt(self.pair_ratio(part, s, 'ops_per_server_cpu_s'), '×')} | "
                f"{fmt(g('shardcache', 'load_cpu'))} / {fmt(g('tonic-ref', 'load_cpu'))} |")
        return "\n".join(o) + "\n"

    def open_table(self) -> str:
        sc = self.scenarios("open")
        if not sc:
            return ""
        o = ["| scenario | server | target rate | achieved ops/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | "
             "unanswered | server CPU | server CPU-µs per call |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sc:
            for srv in GRPC_SERVERS:
                rs = self.sel("open", srv, s)
                if not rs:
                    continue

                def g(k):
                    return self.med("open", srv, s, k)
                o.append(f"| {s} | {srv} | {fmt(rs[0]['rate'])} | {fmt(g('ops_per_s'))} | {fmt(g('p50_us'))} | "
                         f"{fmt(g('p90_us'))} | {fmt(g('p99_us'))} | {fmt(g('p999_us'))} | {fmt(g('max_us'))} | "
                         f"{fmt(g('errors'))} | {fmt(g('server_cpu'))} | "
                         f"{fmt(median([r['server_cpu'] / r['ops_per_s'] * 1e6 for r in rs if r['ops_per_s']]))} |")
        return "\n".join(o) + "\n"

    def anchors_table(self) -> str:
        sc = self.scenarios("anchors")
        if not sc:
            return ""
        o = ["| scenario | server (tool) | ops/s | p50 µs | p99 µs | server CPU | ops per server CPU-s | load CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in sc:
            for srv, tool in [("redis", "redis-benchmark"), ("memcached", "mcload"),
                              ("shardcache", "shardcache-loadtest")]:
                part = "closed" if srv == "shardcache" else "anchors"
                rs = self.sel(part, srv, s)
                if not rs:
                    continue
                ops, cpu = self.med(part, srv, s, "ops_per_s"), self.med(part, srv, s, "server_cpu")
                per_cpu = median([r["ops_per_s"] / r["server_cpu"] for r in rs if r.get("server_cpu")])
                o.append(f"| {s} | {srv} ({tool}) | {fmt(ops)} {spread([r['ops_per_s'] for r in rs])} | "
                         f"{fmt(self.med(part, srv, s, 'p50_us'))} | {fmt(self.med(part, srv, s, 'p99_us'))} | "
                         f"{fmt(cpu)} | {fmt(per_cpu)} | {fmt(self.med(part, srv, s, 'load_cpu'))} |")
        return "\n".join(o) + "\n"

    def instr_table(self) -> str:
        sc = self.scenarios("instr")
        if not sc:
            return ""
        rs0 = self.sel("instr")
        tool, n1, n2 = rs0[0]["tool"], rs0[0]["n1"], rs0[0]["n2"]
        o = [f"Tool: {'valgrind --tool=callgrind (user-space instructions of all threads)' if tool == 'callgrind' else 'perf stat -e instructions:u'}; "
             f"each server run twice, for {n1:,} and {n2:,} requests (after preloading 1,000 keys); "
             f"per request = Δinstructions / Δrequests, which cancels start-up, preload and shutdown.\n",
             "| scenario | shardcache instr/request | tonic-ref instr/request | tonic-ref / shardcache | "
             f"shardcache total for {n2:,} / {n2:,} | tonic-ref total for {n2:,} / {n2:,} |",
             "|---|---:|---:|---:|---:|---:|"]
        for s in sc:
            a = self.med("instr", "shardcache", s, "instr_per_request")
            b = self.med("instr", "tonic-ref", s, "instr_per_request")

            def sp(srv):
                return spread([r["instr_per_request"] for r in self.sel("instr", srv, s)])
            o.append(f"| {s} | {fmt(a)} {sp('shardcache')} | {fmt(b)} {sp('tonic-ref')} | "
                     f"{fmt(b / a if a and b else None, '×')} | "
                     f"{fmt(self.med('instr', 'shardcache', s, 'instr_per_request_incl_startup'))} | "
                     f"{fmt(self.med('instr', 'tonic-ref', s, 'instr_per_request_incl_startup'))} |")
        return "\n".join(o) + "\n"

    def memory_table(self) -> str:
        rs = self.sel("memory")
        if not rs:
            return ""
        items = rs[0]["items"]
        o = [f"| server | RSS empty MiB | RSS with {items:,} items MiB | bytes per item | fill time s |",
             "|---|---:|---:|---:|---:|"]
        for srv in ["shardcache", "tonic-ref", "redis", "memcached"]:
            x = self.sel("memory", srv)
            if x:
                o.append(f"| {srv} | {median([r['rss_empty'] for r in x]) / 2**20:.1f} | "
                         f"{median([r['rss_full'] for r in x]) / 2**20:.1f} | "
                         f"**{median([r['bytes_per_item'] for r in x]):.0f}** | "
                         f"{median([r['fill_s'] for r in x]):.1f} |")
        return "\n".join(o) + "\n"

    def plot(self, out: Path) -> Path | None:
        rs = [r for r in self.sel("open") if r["scenario"].startswith("get_64B_r")]
        if not rs:
            return None
        rates = sorted({r["rate"] for r in rs})
        lines = ["# rate  sc_ops sc_p50 sc_p99 sc_p999  tr_ops tr_p50 tr_p99 tr_p999   (medians; µs)"]
        for rate in rates:
            cols = [f"{rate:.0f}"]
            for srv in GRPC_SERVERS:
                x = [r for r in rs if r["server"] == srv and r["rate"] == rate]
                for k in ("ops_per_s", "p50_us", "p99_us", "p999_us"):
                    v = median([r[k] for r in x])
                    cols.append("NaN" if v is None else f"{v:.0f}")
            lines.append(" ".join(cols))
        dat = out / "latency.dat"
        dat.write_text("\n".join(lines) + "\n")
        png = out / "latency.png"
        i = self.info
        rates_txt = ", ".join(f"{r / 1000:g}k" for r in rates)
        gp = f"""
set terminal pngcairo size 900,560 font "DejaVu Sans,10"
set output '{png}'
set title "gRPC Get 64 B, open loop, {OPEN_CONNS} connections, rates {rates_txt}/s, shardcache-loadtest\\n{i['date']}, commit {i['commit'].split()[0]}, {i['cpu']}; server on CPU 0, load on CPU 1; medians of {self.a.reps}"
set xlabel "achieved throughput (thousand requests/s)"
set ylabel "latency from scheduled send time (ms)"
set logscale y
set format y "%g"
set grid
set key top right box opaque
plot '{dat}' using ($2/1000):($3/1000) with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'shardcache p50', \\
     '' using ($2/1000):($4/1000) with linespoints lw 2 pt 5 lc rgb '#1f77b4' dt 2 title 'shardcache p99', \\
     '' using ($6/1000):($7/1000) with linespoints lw 2 pt 7 lc rgb '#d62728' title 'tonic-ref p50', \\
     '' using ($6/1000):($8/1000) with linespoints lw 2 pt 5 lc rgb '#d62728' dt 2 title 'tonic-ref p99'
"""
        p = subprocess.run(["gnuplot"], input=gp, capture_output=True, text=True)
        if p.returncode != 0:
            raise Failure(f"gnuplot failed: {p.stderr}")
        return png

    def plot_cpu(self, out: Path) -> Path | None:
        """Server CPU-µs per call against achieved throughput, open loop."""
        rs = [r for r in self.sel("open") if r["scenario"].startswith("get_64B_r")]
        if not rs:
            return None
        lines = ["# rate  sc_ops sc_cpu_us_per_call  tr_ops tr_cpu_us_per_call   (medians)"]
        for rate in sorted({r["rate"] for r in rs}):
            cols = [f"{rate:.0f}"]
            for srv in GRPC_SERVERS:
                x = [r for r in rs if r["server"] == srv and r["rate"] == rate and r["ops_per_s"]]
                ops = median([r["ops_per_s"] for r in x])
                per = median([r["server_cpu"] / r["ops_per_s"] * 1e6 for r in x])
                cols += ["NaN" if ops is None else f"{ops:.0f}", "NaN" if per is None else f"{per:.2f}"]
            lines.append(" ".join(cols))
        dat = out / "cpu.dat"
        dat.write_text("\n".join(lines) + "\n")
        png = out / "cpu.png"
        i = self.info
        gp = f"""
set terminal pngcairo size 900,560 font "DejaVu Sans,10"
set output '{png}'
set title "gRPC Get 64 B, open loop, {OPEN_CONNS} connections: server CPU per call\\n{i['date']}, commit {i['commit'].split()[0]}, {i['cpu']}; server on CPU 0, load on CPU 1; medians of {self.a.reps}"
set xlabel "achieved throughput (thousand requests/s)"
set ylabel "server CPU per call (µs)"
set logscale x
set grid
set key top right box opaque
plot '{dat}' using ($2/1000):3 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'shardcache', \\
     '' using ($4/1000):5 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'tonic-ref'
"""
        p = subprocess.run(["gnuplot"], input=gp, capture_output=True, text=True)
        if p.returncode != 0:
            raise Failure(f"gnuplot failed: {p.stderr}")
        return png

    def markdown(self, png_ref: str | None, cpu_ref: str | None = None) -> str:
        parts = [self.header()]
        for title, body in [
            ("### gRPC closed loop: shardcache vs tonic-ref, both driven by shardcache-loadtest", self.closed_table()),
            ("### gRPC closed loop, the same shapes driven by h2load (nghttp2; ../shared/bench/run.sh)",
             self.closed_table("h2load")),
            (f"### gRPC open loop ({OPEN_CONNS} connections, latency from each request's scheduled send time)",
             self.open_table()),
            ("### Context: Redis and memcached with their own load tools", self.anchors_table()),
            ("### Instructions per request", self.instr_table()),
            ("### Memory per stored item (16-byte keys, 64-byte values)", self.memory_table()),
        ]:
            if body:
                parts += [title, "", body]
        if png_ref:
            at = parts.index(self.open_table()) + 1 if self.open_table() in parts else len(parts)
            parts.insert(at, f"![latency vs throughput]({png_ref})\n")
            if cpu_ref:
                parts.insert(at + 1, f"![server CPU per call vs throughput]({cpu_ref})\n")
        return "\n".join(parts)


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run: 1 repetition, short points, few scenarios")
    ap.add_argument("--only", default="closed,h2load,open,anchors,instr,memory")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--out", help="results directory (default target/compare, --quick: target/compare/quick)")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/ even on a full run")
    ap.add_argument("--max-wait", type=float, help="seconds the whole run may spend waiting for other processes "
                    "to leave the CPUs alone before points (default 1200; --quick: 0)")
    ap.add_argument("--from-results", metavar="RESULTS_JSONL",
                    help="measure nothing: redraw the tables, the plot and (for a full run) docs/ from a previous "
                    "run's results.jsonl, with that run's date, commit, machine and settings")
    a = ap.parse_args()
    if a.from_results:
        a.out = a.out or str(ROOT / "target" / "compare")
        return rerender(Path(a.from_results), a)
    q = a.quick
    a.out = a.out or str(ROOT / "target" / "compare" / ("quick" if q else ""))
    a.max_wait = a.max_wait if a.max_wait is not None else (0.0 if q else 1200.0)
    a.reps = a.reps or (1 if q else 3)
    a.duration = a.duration or (1.0 if q else 5.0)
    a.warmup = a.warmup or (0.5 if q else 1.0)
    a.fixed_rate = 50_000.0
    a.rates = [10_000.0, 50_000.0] if q else [10_000.0, 25_000.0, 50_000.0, 100_000.0, 200_000.0, 400_000.0,
                                              600_000.0, 800_000.0]
    a.instr_requests = (2_000, 6_000) if q else (10_000, 30_000)
    a.instr_reps = 1 if q else 2
    a.mem_items = int(os.environ.get("COMPARE_MEM_ITEMS", 100_000 if q else 1_000_000))
    a.mem_reps = 1 if q else 2
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    known = KNOWN_PARTS
    if set(parts) - known:
        ap.error(f"unknown parts {sorted(set(parts) - known)}; known: {sorted(known)}")

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Also when started in the background (where SIGINT is ignored): unwind,
    # so that every server and load generator started here is stopped.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    a.loadavg_start = loadavg()
    info = machine()
    log(f"{info['cpu']}, {info['cpus']} CPUs, kernel {info['kernel']}; load average {a.loadavg_start}; "
        f"commit {info['commit']}{' (dirty)' if info['dirty'] else ''}")
    c = Compare(a)
    c.write({"part": "meta", "info": info, "parts": parts, "quick": q, "reps": a.reps, "warmup": a.warmup,
             "duration": a.duration, "loadavg_start": a.loadavg_start})
    try:
        for p in ["closed", "h2load", "open", "anchors", "instr", "memory"]:
            if p in parts:
                log(f"--- {p}")
                getattr(c, p)()
    except Failure as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); servers stopped")
        return 130
    a.loadavg_end = loadavg()
    a.waited = c.waited
    c.write({"part": "meta_end", "loadavg_end": a.loadavg_end, "waited": a.waited})
    return finish(c.rows, info, a, parts, c.out, c.results_path)


KNOWN_PARTS = {"closed", "h2load", "open", "anchors", "instr", "memory"}


def rerender(path: Path, a) -> int:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    meta = next((r for r in rows if r.get("part") == "meta"), None)
    end = next((r for r in rows if r.get("part") == "meta_end"), None)
    if meta is None or end is None:
        log(f"{path} has no meta lines (start and end of a complete run): cannot redraw it")
        return 1
    a.quick, a.reps, a.warmup, a.duration = meta["quick"], meta["reps"], meta["warmup"], meta["duration"]
    a.loadavg_start, a.loadavg_end, a.waited = meta["loadavg_start"], end["loadavg_end"], end["waited"]
    rows = [r for r in rows if not r.get("part", "").startswith("meta")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    return finish(rows, meta["info"], a, meta["parts"], out, path)


def finish(rows: list[dict], info: dict, a, parts: list[str], out: Path, results: Path) -> int:
    q = a.quick
    rep = Report(rows, info, a)
    png = rep.plot(out)
    cpu_png = rep.plot_cpu(out)
    docs = not q and not a.no_docs and set(parts) == KNOWN_PARTS
    png_ref = None
    cpu_ref = str(cpu_png) if cpu_png else None
    if png and docs:
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(png, ROOT / "docs" / "img" / "compare-latency.png")
        png_ref = "img/compare-latency.png"
        if cpu_png:
            shutil.copy(cpu_png, ROOT / "docs" / "img" / "compare-cpu.png")
            cpu_ref = "img/compare-cpu.png"
    if docs:
        # The raw measurements behind the docs, for audit and --from-results.
        (ROOT / "docs" / "data").mkdir(parents=True, exist_ok=True)
        if results.resolve() != (ROOT / "docs" / "data" / "compare-results.jsonl").resolve():
            shutil.copy(results, ROOT / "docs" / "data" / "compare-results.jsonl")
    md = rep.markdown(png_ref or (str(png) if png else None), cpu_ref)
    (out / "report.md").write_text(md)
    log(f"wrote {out / 'report.md'}" + (f", {png}" if png else ""))
    if docs:
        bench = ROOT / "docs" / "benchmarks.md"
        text = bench.read_text()
        begin, end = "<!-- compare:begin (generated by benches/compare.sh; edits here are overwritten) -->", \
            "<!-- compare:end -->"
        if begin in text and end in text:
            pre, rest = text.split(begin, 1)
            _, post = rest.split(end, 1)
            bench.write_text(pre + begin + "\n\n" + md + "\n" + end + post)
            log(f"updated {bench}, docs/img/compare-latency.png and docs/data/compare-results.jsonl")
        else:
            log(f"{bench} has no compare markers: left unchanged")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
