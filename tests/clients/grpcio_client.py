#!/usr/bin/env python3
"""Second stock client for the interop test: Python grpcio (C-core HTTP/2).

Generates stubs from proto/cache.proto at run time with grpc_tools.protoc
into a temporary directory, runs a fixed scenario against --target and
prints ONE line of JSON with what it observed. Assertions live in
tests/grpcio_interop.rs; this script only reports (it exits non-zero only
when it cannot run the scenario at all).

usage: grpcio_client.py --target HOST:PORT --proto path/to/cache.proto
"""

import argparse
import concurrent.futures
import importlib
import json
import os
import sys
import tempfile

TIMEOUT = 10.0  # seconds per call (sent as grpc-timeout)


def generate_stubs(proto, out_dir):
    from grpc_tools import protoc

    try:
        from importlib.resources import files

        well_known = str(files("grpc_tools") / "_proto")
    except Exception:  # pragma: no cover - old Pythons
        import pkg_resources

        well_known = pkg_resources.resource_filename("grpc_tools", "_proto")
    proto = os.path.abspath(proto)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            "-I" + os.path.dirname(proto),
            "-I" + well_known,
            "--python_out=" + out_dir,
            "--grpc_python_out=" + out_dir,
            os.path.basename(proto),
        ]
    )
    if rc != 0:
        raise SystemExit("grpc_tools.protoc failed with status %d" % rc)
    sys.path.insert(0, out_dir)
    return importlib.import_module("cache_pb2"), importlib.import_module("cache_pb2_grpc")


def code_name(err):
    return err.code().name if hasattr(err, "code") else "UNKNOWN"


def scenario(pb, pb_grpc, target):
    import grpc

    res = {}
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        stub = pb_grpc.CacheStub(ch)

        r = stub.Set(pb.Request(group="py", key="k1", value=b"hello", ttl_ms=0), timeout=TIMEOUT)
        res["set_stored"] = r.stored

        r = stub.Get(pb.Request(group="py", key="k1"), timeout=TIMEOUT)
        res["get_found"] = r.found
        res["get_value"] = r.value.decode("latin-1")

        # Same key, other group: a miss with status OK.
        r = stub.Get(pb.Request(group="other", key="k1"), timeout=TIMEOUT)
        res["miss_found"] = r.found
        res["miss_value_len"] = len(r.value)

        r = stub.Delete(pb.Request(group="py", key="k1"), timeout=TIMEOUT)
        res["delete_deleted"] = r.deleted
        r = stub.Delete(pb.Request(group="py", key="k1"), timeout=TIMEOUT)
        res["delete_again_deleted"] = r.deleted
        r = stub.Get(pb.Request(group="py", key="k1"), timeout=TIMEOUT)
        res["get_after_delete_found"] = r.found

        all_bytes = bytes(range(256))
        stub.Set(pb.Request(group="py", key="bin", value=all_bytes), timeout=TIMEOUT)
        r = stub.Get(pb.Request(group="py", key="bin"), timeout=TIMEOUT)
        res["binary_roundtrip"] = r.found and r.value == all_bytes

        big = bytes((i * 31 + 7) % 256 for i in range(1 << 20))
        stub.Set(pb.Request(group="py", key="big", value=big), timeout=TIMEOUT)
        r = stub.Get(pb.Request(group="py", key="big"), timeout=TIMEOUT)
        res["big_roundtrip"] = r.found and r.value == big

        try:
            stub.Get(pb.Request(group="py", key=""), timeout=TIMEOUT)
            res["empty_key_code"] = "OK"
            res["empty_key_message"] = ""
        except grpc.RpcError as e:
            res["empty_key_code"] = code_name(e)
            res["empty_key_message"] = e.details() or ""

        try:
            stub.Get(pb.Request(group="py", key="x" * 4097), timeout=TIMEOUT)
            res["long_key_code"] = "OK"
        except grpc.RpcError as e:
            res["long_key_code"] = code_name(e)

        # 200 concurrent calls on the one channel (one HTTP/2 connection).
        futs = [
            stub.Set.future(pb.Request(group="conc", key="k%d" % i, value=b"v%d" % i), timeout=TIMEOUT)
            for i in range(200)
        ]
        res["concurrent_sets_stored"] = sum(1 for f in futs if f.result().stored)
        futs = [stub.Get.future(pb.Request(group="conc", key="k%d" % i), timeout=TIMEOUT) for i in range(200)]
        res["concurrent_gets_ok"] = sum(
            1 for i, f in enumerate(futs) if f.result().found and f.result().value == b"v%d" % i
        )

        s = stub.Stats(pb.StatsRequest(), timeout=TIMEOUT)
        fields = [
            "hits",
            "misses",
            "sets",
            "deletes",
            "evictions",
            "expirations",
            "items",
            "bytes",
            "capacity_bytes",
        ]
        res["stats_node_id"] = s.node_id
        res["stats_shards"] = len(s.shards)
        res["stats_total"] = {f: getattr(s.total, f) for f in fields}
        res["stats_total_is_sum"] = all(
            getattr(s.total, f) == sum(getattr(sh, f) for sh in s.shards) for f in fields
        )

        # Batch calls (after Stats, whose counts above they would change).
        items = [pb.Request(group="pyb", key="k%d" % i, value=b"b%d" % i) for i in range(50)]
        items[3] = pb.Request(group="pyb", key="", value=b"x")
        r = stub.SetMany(pb.ManyRequest(items=items), timeout=TIMEOUT)
        res["set_many"] = [[x.stored, x.code] for x in r.results]
        keys = ["k%d" % i for i in range(50)] + ["absent", "bad\x01key"]
        r = stub.GetMany(pb.ManyRequest(items=[pb.Request(group="pyb", key=k) for k in keys]), timeout=TIMEOUT)
        res["get_many"] = [[x.found, x.value.decode("latin-1"), x.code] for x in r.results]
        res["get_many_bad_message"] = r.results[-1].message
        r = stub.DeleteMany(
            pb.ManyRequest(items=[pb.Request(group="pyb", key=k) for k in ["k0", "absent"]]), timeout=TIMEOUT
        )
        res["delete_many"] = [x.deleted for x in r.results]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the node")
    ap.add_argument("--proto", required=True, help="path to proto/cache.proto")
    args = ap.parse_args()
    import grpc

    with tempfile.TemporaryDirectory(prefix="shardcache-grpcio-") as out:
        pb, pb_grpc = generate_stubs(args.proto, out)
        res = {"grpcio_version": grpc.__version__}
        try:
            res.update(scenario(pb, pb_grpc, args.target))
        except grpc.RpcError as e:
            res["error"] = "%s: %s" % (code_name(e), e.details())
        except (grpc.FutureTimeoutError, concurrent.futures.TimeoutError):
            res["error"] = "channel not ready within %.0f s" % TIMEOUT
        print(json.dumps(res, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
