#!/usr/bin/env python3
"""grpcio over TLS for tests/tls.rs: a Set and a Get through
grpc.ssl_channel_credentials with the test CA as root certificate (gRPC
C-core's own TLS stack). Prints one line of JSON: {"set": CODE,
"get": VALUE or CODE}. Assertions live in tests/tls.rs.

usage: grpcio_tls.py --target HOST:PORT --proto cache.proto --ca ca.pem
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpcio_client import generate_stubs  # noqa: E402

TIMEOUT = 10.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--ca", required=True)
    a = ap.parse_args()
    import grpc

    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = generate_stubs(a.proto, out)
        with open(a.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        # The certificate names localhost; the target is an IP address.
        options = [("grpc.ssl_target_name_override", "localhost")]
        res = {}
        with grpc.secure_channel(a.target, creds, options=options) as ch:
            stub = pb_grpc.CacheStub(ch)
            try:
                stub.Set(pb.Request(group="tls", key="py", value=b"value from grpcio"), timeout=TIMEOUT)
                res["set"] = "OK"
            except grpc.RpcError as e:
                res["set"] = e.code().name
            try:
                r = stub.Get(pb.Request(group="tls", key="py"), timeout=TIMEOUT)
                res["get"] = r.value.decode("latin-1")
            except grpc.RpcError as e:
                res["get"] = e.code().name
        print(json.dumps(res))


if __name__ == "__main__":
    main()
