#!/usr/bin/env python3
"""Turns the captures of record.py into the seed corpora under fuzz/corpus/
(docs/fuzzing.md says how the captures were made), plus hand-written seeds
for the peer protocol and the config file, which have no stock client.

Each target's input starts with control bytes (see the target's header
comment); seeds use zeros there, i.e. the server's default settings and the
bytes in one piece, plus a few variants with other control bytes.

usage: make_corpus.py CAPTURE_DIR REPO_ROOT
"""

import hashlib
import os
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_SEED = 8 << 10


def frames(data):
    """(kind, flags, stream, payload, raw) of each complete frame."""
    out, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i : i + 3], "big")
        if i + 9 + n > len(data):
            break
        kind, flags = data[i + 3], data[i + 4]
        sid = int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF
        out.append((kind, flags, sid, data[i + 9 : i + 9 + n], data[i : i + 9 + n]))
        i += 9 + n
    return out


def write(corpus, name, data):
    os.makedirs(corpus, exist_ok=True)
    h = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(corpus, f"{name}-{h}"), "wb") as f:
        f.write(data)


def h2_windows(c2s):
    """Preface + first SETTINGS, then windows of whole frames <= MAX_SEED."""
    if not c2s.startswith(PREFACE):
        return [c2s[:MAX_SEED]]
    fs = frames(c2s[len(PREFACE) :])
    if not fs:
        return [c2s[:MAX_SEED]]
    head = PREFACE + fs[0][4]
    out, cur = [], head
    for f in fs[1:]:
        raw = f[4]
        if len(raw) > MAX_SEED // 2:
            # A big DATA frame: keep its head and a little of it.
            continue
        if len(cur) + len(raw) > MAX_SEED:
            out.append(cur)
            cur = head
            if len(out) >= 4:
                break
        cur += raw
    if cur != head or not out:
        out.append(cur)
    return out


def main():
    cap, root = sys.argv[1], sys.argv[2]
    corpus = os.path.join(root, "fuzz", "corpus")
    h2_caps = []
    for sub in ("h2", "grpcio", "grpcjs", "tonic"):
        d = os.path.join(cap, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                h2_caps.append((name, f.read()))

    for name, data in h2_caps:
        tag = name.split("-")[0]
        if name.endswith(".c2s"):
            # h2_connection: 8 control bytes (0: default settings, one piece).
            for i, w in enumerate(h2_windows(data)):
                write(f"{corpus}/h2_connection", tag, bytes(8) + w)
                if i == 0:
                    # Same stream, cut in pieces, answered, streaming on.
                    write(f"{corpus}/h2_connection", tag, b"\x07\x00\x00\x00\x1f\x40\x03\x00" + w)
            body = data[len(PREFACE) :] if data.startswith(PREFACE) else data
        else:
            body = data
        fs = frames(body)
        # h2_frame: the frames as they come (server frames too).
        write(f"{corpus}/h2_frame", tag, body[:4096])
        # hpack_diff: the connection's header blocks in order.
        blocks, bodies = b"", {}
        for kind, flags, sid, payload, _ in fs:
            if kind in (1, 9):  # HEADERS, CONTINUATION
                p = payload
                if kind == 1 and flags & 0x8:
                    p = p[1 : len(p) - p[0]] if p and p[0] < len(p) else b""
                if kind == 1 and flags & 0x20:
                    p = p[5:]
                if len(p) < 0xFF and len(blocks) < MAX_SEED:
                    blocks += bytes([len(p)]) + p
            elif kind == 0:  # DATA
                p = payload
                if flags & 0x8:
                    p = p[1 : len(p) - p[0]] if p and p[0] < len(p) else b""
                bodies.setdefault(sid, []).append(p)
        if blocks:
            write(f"{corpus}/hpack_diff", tag, bytes(2) + blocks)
        # grpc_messages: each stream's DATA joined (first few streams).
        seen = set()
        for sid in sorted(bodies)[:6]:
            b = b"".join(bodies[sid])[:MAX_SEED]
            if b and b not in seen:
                seen.add(b)
                write(f"{corpus}/grpc_messages", tag, bytes(5) + b)

    # http1_decode: the gateway's requests and responses as curl saw them.
    d = os.path.join(cap, "h1")
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()[:MAX_SEED]
            write(f"{corpus}/http1_decode", name.split(".")[1], bytes(5) + data)
            write(f"{corpus}/http1_decode", "cut", b"\x00\x05\x00\x00\x00" + data)

    peer_seeds(f"{corpus}/peer_decode")
    config_seeds(f"{corpus}/config_toml", root)


def peer_frame(ident, kind, body):
    return struct.pack(">IIB", 5 + len(body), ident, kind) + body


def pstr(s):
    return struct.pack(">I", len(s)) + s


def peer_seeds(corpus):
    reqs = [
        peer_frame(1, 1, struct.pack(">I", 0) + pstr(b"") + b"k"),
        peer_frame(2, 2, struct.pack(">IQ", 250, 60000) + pstr(b"users") + pstr(b"user:42") + b"value"),
        peer_frame(3, 3, struct.pack(">I", 9) + pstr(b"g") + "ü".encode()),
        peer_frame(0, 4, pstr(b"g") + b"key"),
    ]
    write(corpus, "requests", bytes(5) + b"".join(reqs))
    write(corpus, "requests-cut", b"\x00\x09\x00\x00\x00" + b"".join(reqs))
    for r in reqs:
        write(corpus, "request", bytes(5) + r)
    reps = [
        peer_frame(1, 0x81, b"\x00"),
        peer_frame(2, 0x81, b"\x01value"),
        peer_frame(3, 0x82, b"\x01"),
        peer_frame(4, 0x83, b"\x00"),
        peer_frame(5, 0xFF, b"\x04deadline exceeded"),
    ]
    write(corpus, "replies", b"\x01\x00\x00\x00\x00" + b"".join(reps))
    for r in reps:
        write(corpus, "reply", b"\x01\x00\x00\x00\x00" + r)


def config_seeds(corpus, root):
    with open(os.path.join(root, "dist", "shardcache.toml"), "rb") as f:
        write(corpus, "dist", f.read())
    for i, text in enumerate(
        [
            b'listen = "127.0.0.1:7070"\nshards = 2\nmemory = "64MiB"\nmax_value = "1MiB"\n',
            b'peers = ["127.0.0.1:7070", "127.0.0.1:7071"]\nidle_timeout = "5m"\n',
            b'[groups.users]\norigin = "http://127.0.0.1:8080/users/{key}"\nttl = "5m"\n'
            b'load_timeout = "2s"\nnegative_ttl = "10s"\n',
            b'http = "off"\nlog_level = "debug"\nspin_before_park = "auto"\n',
            b'memory = 1073741824\nhot_ttl = "30s"\nmax_connections = 100\n',
        ]
    ):
        write(corpus, f"hand{i}", text)


if __name__ == "__main__":
    main()
