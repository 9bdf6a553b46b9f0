#!/usr/bin/env python3
"""What TLS costs per call: h2load (nghttp2, not our client) against one
shard pinned to CPU 0, plaintext and TLS side by side, Get 64 B at 16 x 16
and 64 x 1; h2load on CPU 1. Server CPU from /proc; ops per server
CPU-second is the figure to compare (h2load is the bottleneck at 64 x 1).

    cargo build --release --bin shardcache
    benches/tls_h2load.py [--reps 3] [--duration 4] [--tonic-ref BIN]

--forward measures TLS between nodes instead: two nodes on CPU 0 (static
--peers, no hot cache), h2load over https to the first for a key the second
owns, so every Get is forwarded; peers in plaintext, then over mutual TLS
(--peer-ca). Server CPU is both nodes'.

--tonic-ref BIN adds tonic-ref (../shared/bench's yardstick) plaintext and
over TLS, alternating with ours. The toolkit's tonic-ref has no TLS option:
benches/tonic-ref-tls.patch gives it --tls-cert/--tls-key the conventional
way (tokio-rustls in front of its hyper HTTP/2 connections, rustls with
the ring provider as ours); apply it to a copy and build that copy:

    cp -r ../shared/bench/anchors/tonic-ref /tmp/tonic-ref-tls
    patch -d /tmp/tonic-ref-tls -p1 < benches/tonic-ref-tls.patch
    export CACHE_PROTO=$(realpath ../shared/bench/cache.proto)
    (cd /tmp/tonic-ref-tls && cargo build --release)

Certificates are made with openssl into a temporary directory (a P-256
CA and a node certificate for 127.0.0.1), as docs/operations.md shows.
h2load does not verify the certificate; the handshake and the record
layer are the same work for the server either way.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/shardcache"
KEY = b"k" * 16
VALUE = b"v" * 64


def frame(msg: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def pb_bytes(field: int, data: bytes) -> bytes:
    # Lengths here are below 128: one varint byte.
    return bytes([field << 3 | 2, len(data)]) + data


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=bench")
    # Both usages: with --peer-ca the node is its peers' client too.
    (d / "node.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    run("openssl", "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.pem", "-days", "30", "-extfile", "node.ext")
    return d / "node.pem", d / "node.key", d / "ca.pem"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(url: str, body: Path, c: int, m: int, duration: float | None, n: int | None = None) -> dict:
    cmd = ["taskset", "-c", "1", "h2load", "-t", "1", "-c", str(c), "-m", str(m),
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)]
    cmd += ["-D", str(int(duration))] if duration else ["-n", str(n)]
    p = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=120)
    out = p.stdout
    m_rps = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    if not m_rps:
        raise SystemExit(f"h2load printed no result ({' '.join(cmd + [url])}):\n{out}\n{p.stderr}")
    rps = float(m_rps.group(1))
    st = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    return {"rps": rps, "done": int(st.group(3)), "failed": int(st.group(5)), "text": out}


def point(server: str, tls: bool, certs, c: int, m: int, duration: float, d: Path) -> dict:
    port = free_port()
    if server == "shardcache":
        argv = [str(BIN), "serve", "--listen", f"127.0.0.1:{port}", "--http", "off", "--shards", "1",
                "--memory", "1GiB", "--log-level", "warn"]
    else:
        argv = [server, "serve", "--listen", f"127.0.0.1:{port}", "--shards", "1", "--memory", "1GiB"]
    if tls:
        argv += ["--tls-cert", str(certs[0]), "--tls-key", str(certs[1])]
    srv = subprocess.Popen(["taskset", "-c", "0"] + argv, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("node did not listen")
                time.sleep(0.05)
        scheme = "https" if tls else "http"
        set_body, get_body = d / "set.bin", d / "get.bin"
        set_body.write_bytes(frame(pb_bytes(2, KEY) + pb_bytes(3, VALUE)))
        get_body.write_bytes(frame(pb_bytes(2, KEY)))
        h2load(f"{scheme}://127.0.0.1:{port}/cache.Cache/Set", set_body, 1, 1, None, n=1)
        h2load(f"{scheme}://127.0.0.1:{port}/cache.Cache/Get", get_body, c, m, 1)  # warm-up
        c0, t0 = cpu_seconds(srv.pid), time.monotonic()
        r = h2load(f"{scheme}://127.0.0.1:{port}/cache.Cache/Get", get_body, c, m, duration)
        cpu = (cpu_seconds(srv.pid) - c0) / (time.monotonic() - t0)
        if r["failed"] or not r["done"]:
            raise SystemExit(f"h2load failed:\n{r['text']}")
        return {"rps": r["rps"], "cpu": cpu, "per_cpu_s": r["rps"] / max(cpu, 1e-6)}
    finally:
        srv.terminate()
        srv.wait(10)


def metric(http_port: int, name: str) -> float:
    import ssl
    import urllib.request
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    text = urllib.request.urlopen(f"https://127.0.0.1:{http_port}/metrics", context=ctx, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def wait_listening(port: int) -> None:
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit("node did not listen")
            time.sleep(0.05)


def forward_point(peer_tls: bool, certs, c: int, m: int, duration: float, d: Path) -> dict:
    ports = [free_port() for _ in range(4)]
    peers = f"127.0.0.1:{ports[0]},127.0.0.1:{ports[2]}"
    procs = []
    for grpc, http in ((ports[0], ports[1]), (ports[2], ports[3])):
        argv = [str(BIN), "serve", "--listen", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}",
                "--shards", "1", "--memory", "1GiB", "--log-level", "warn", "--peers", peers,
                "--hot-fraction", "0", "--tls-cert", str(certs[0]), "--tls-key", str(certs[1])]
        if peer_tls:
            argv += ["--peer-ca", str(certs[2])]
        procs.append(subprocess.Popen(["taskset", "-c", "0"] + argv, stderr=subprocess.DEVNULL))
    try:
        for p in (ports[0], ports[2]):
            wait_listening(p)
        url = f"https://127.0.0.1:{ports[0]}/cache.Cache/"
        body = d / "fwd_get.bin"
        # A key the second node owns: the first forwards its Get.
        for i in range(200):
            key = f"fwd-key-{i:08d}".encode()
            (d / "fwd_set.bin").write_bytes(frame(pb_bytes(2, key) + pb_bytes(3, VALUE)))
            before = metric(ports[1], "shardcache_forwarded_requests_total")
            h2load(url + "Set", d / "fwd_set.bin", 1, 1, None, n=1)
            if metric(ports[1], "shardcache_forwarded_requests_total") > before:
                break
        else:
            raise SystemExit("no key of the second node found")
        body.write_bytes(frame(pb_bytes(2, key)))
        h2load(url + "Get", body, c, m, 1)  # warm-up
        c0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.monotonic()
        f0 = metric(ports[1], "shardcache_forwarded_requests_total")
        r = h2load(url + "Get", body, c, m, duration)
        cpu = (sum(cpu_seconds(p.pid) for p in procs) - c0) / (time.monotonic() - t0)
        forwarded = metric(ports[1], "shardcache_forwarded_requests_total") - f0
        if r["failed"] or not r["done"] or forwarded < r["done"]:
            raise SystemExit(f"h2load failed or calls not forwarded ({forwarded} of {r['done']}):\n{r['text']}")
        return {"rps": r["rps"], "cpu": cpu, "per_cpu_s": r["rps"] / max(cpu, 1e-6)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def forward_main(a, certs, d: Path) -> int:
    rows = {}
    for rep in range(a.reps):
        for c, m in ((16, 16), (64, 1)):
            for peer_tls in (False, True):
                r = forward_point(peer_tls, certs, c, m, a.duration, d)
                rows.setdefault((c, m, peer_tls), []).append(r)
                print(f"rep {rep} forward {c}x{m} peers {'TLS  ' if peer_tls else 'plain'}: "
                      f"{r['rps']:9.0f} req/s  servers' CPU {r['cpu']:.2f}  {r['per_cpu_s']:9.0f} per CPU-s",
                      file=sys.stderr)
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print(f"\nGet 64 B forwarded A -> B, both nodes on CPU 0 (one shard each), clients over TLS, "
          f"h2load on CPU 1, medians of {a.reps} x {a.duration:.0f} s\n")
    print("| shape | peers plaintext: Gets/s | servers' CPU | per CPU-s | peers mutual TLS: Gets/s | servers' CPU "
          "| per CPU-s | servers' CPU-µs per call |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for c, m in ((16, 16), (64, 1)):
        p, t = rows[(c, m, False)], rows[(c, m, True)]
        pus, tus = 1e6 / med(p, "per_cpu_s"), 1e6 / med(t, "per_cpu_s")
        print(f"| {c} × {m} | {med(p, 'rps'):,.0f} | {med(p, 'cpu'):.2f} | {med(p, 'per_cpu_s'):,.0f} "
              f"| {med(t, 'rps'):,.0f} | {med(t, 'cpu'):.2f} | {med(t, 'per_cpu_s'):,.0f} "
              f"| {pus:.2f} → {tus:.2f} (+{(tus / pus - 1) * 100:.0f} %) |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--tonic-ref", help="a tonic-ref binary built with benches/tonic-ref-tls.patch")
    ap.add_argument("--forward", action="store_true", help="TLS between nodes: forwarded Gets")
    a = ap.parse_args()
    servers = ["shardcache"] + ([a.tonic_ref] if a.tonic_ref else [])
    for tool in ("h2load", "openssl", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} (apt-get install nghttp2-client openssl util-linux)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        certs = make_certs(d)
        if a.forward:
            return forward_main(a, certs, d)
        rows = {}
        for rep in range(a.reps):
            for c, m in ((16, 16), (64, 1)):
                for server in servers:
                    for tls in (False, True):
                        r = point(server, tls, certs, c, m, a.duration, d)
                        rows.setdefault((server, c, m, tls), []).append(r)
                        print(f"rep {rep} {name(server)} {c}x{m} {'TLS  ' if tls else 'plain'}: "
                              f"{r['rps']:9.0f} req/s  server CPU {r['cpu']:.2f}  "
                              f"{r['per_cpu_s']:9.0f} per CPU-s", file=sys.stderr)
    print(f"\nGet 64 B, one shard on CPU 0, h2load on CPU 1, medians of {a.reps} x {a.duration:.0f} s\n")
    print("| server | shape | plaintext: Gets/s | server CPU | Gets per server CPU-s | TLS: Gets/s | server CPU "
          "| Gets per server CPU-s | server CPU-µs per call: plaintext → TLS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    for c, m in ((16, 16), (64, 1)):
        for server in servers:
            p, t = rows[(server, c, m, False)], rows[(server, c, m, True)]
            pus, tus = 1e6 / med(p, "per_cpu_s"), 1e6 / med(t, "per_cpu_s")
            print(f"| {name(server)} | {c} × {m} | {med(p, 'rps'):,.0f} | {med(p, 'cpu'):.2f} "
                  f"| {med(p, 'per_cpu_s'):,.0f} | {med(t, 'rps'):,.0f} | {med(t, 'cpu'):.2f} "
                  f"| {med(t, 'per_cpu_s'):,.0f} | {pus:.2f} → {tus:.2f} (+{(tus / pus - 1) * 100:.0f} %) |")
    if a.tonic_ref:
        print("\nshardcache ÷ tonic-ref, Gets per server CPU-s:")
        for c, m in ((16, 16), (64, 1)):
            for tls in (False, True):
                ours = med(rows[("shardcache", c, m, tls)], "per_cpu_s")
                theirs = med(rows[(a.tonic_ref, c, m, tls)], "per_cpu_s")
                print(f"  {c} × {m} {'TLS' if tls else 'plaintext'}: {ours / theirs:.2f}×")
    return 0


def name(server: str) -> str:
    return "shardcache" if server == "shardcache" else "tonic-ref"


if __name__ == "__main__":
    sys.exit(main())
