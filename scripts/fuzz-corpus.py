#!/usr/bin/python3
"""fuzz-corpus.py - writes the seed corpus of the decoder's fuzz target
(tests/fuzz/corpus/, used by make fuzz and make fuzz-short).

Each seed is one request body as the server receives it: valid requests of
every operation (so the fuzzer starts from inputs that reach deep into the
decoder: metadata lists, filters, nested maps, every integer and string width)
and invalid ones (sizes that lie, truncated or non-map headers, huge counts in
a few bytes, deep nesting). The bodies are built here from protocol.md with
msgpack, deterministically: running the script again writes the same files.

    /usr/bin/python3 scripts/fuzz-corpus.py [DIR]   (default: tests/fuzz/corpus)
"""
import os
import struct
import sys

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def body(header, data=b"", meta=None, raw_meta=None):
    """preamble || header || data || metadata, minimal msgpack sizes."""
    hb = msgpack.packb(header, use_bin_type=True)
    mb = raw_meta if raw_meta is not None else (
        b"" if meta is None else msgpack.packb(meta, use_bin_type=True))
    pre = msgpack.packb({"header_size": len(hb), "vector_size": len(data),
                         "metadata_size": len(mb)})
    return pre + hb + data + mb


def wide_preamble(header):
    """The preamble as the server writes it: uint64 sizes, str8 keys."""
    hb = msgpack.packb(header)
    pre = b"\x83"
    for key, val in (("header_size", len(hb)), ("vector_size", 0), ("metadata_size", 0)):
        pre += b"\xd9" + bytes([len(key)]) + key.encode() + b"\xcf" + struct.pack(">Q", val)
    return pre + hb


def floats(n, d, seed):
    return struct.pack("<%df" % (n * d), *[((i * 37 + seed) % 101) / 101.0
                                           for i in range(n * d)])


def pre(hs, vs=0, ms=0):
    return msgpack.packb({"header_size": hs, "vector_size": vs, "metadata_size": ms})


def seeds():
    ping = msgpack.packb({"operation": "ping"})
    x4 = floats(2, 4, 1)
    yield "ping", body({"operation": "ping"})
    yield "ping-request-id", body({"operation": "ping", "request_id": 7})
    yield "ping-request-id-str", body({"operation": "ping", "request_id": "r-1"})
    yield "ping-auth", body({"operation": "ping", "api_key": "k1", "tenant_id": "alice"})
    yield "ping-wide-preamble", wide_preamble({"operation": "ping"})
    yield "create", body({"operation": "create_index", "index_id": "ix", "dimension": 4,
                          "index_type": "IVF4,Flat", "metric": "IP"})
    yield "create-binary", body({"operation": "create_index", "index_id": "b", "dimension": 64,
                                 "index_type": "BFlat"})
    yield "add-seed-dimension", body({"operation": "add_vectors", "index_id": "ix",
                                      "dimension": 4}, x4)
    yield "add-meta", body({"operation": "add_vectors", "index_id": "ix",
                            "vector_shape": [2, 4]}, x4,
                           [{"id": "k0", "metadata": {"g": 1, "s": "x", "f": 1.5,
                                                      "n": {"deep": [1, 2, None]}}},
                            {"id": -5, "metadata": None}])
    yield "add-with-ids", body({"operation": "add_vectors", "index_id": "ix",
                                "vector_shape": [2, 4], "with_ids": True},
                               x4 + struct.pack("<qq", 10, 2**40))
    yield "add-uint8", body({"operation": "add_vectors", "index_id": "b", "dtype": "uint8",
                             "vector_shape": [1, 8]}, bytes(range(8)))
    yield "search-filter", body({"operation": "search", "index_id": "ix", "k": 3,
                                 "vector_shape": [1, 4], "params": {"nprobe": 2},
                                 "include_metadata": True}, floats(1, 4, 2),
                                {"g": 1, "s": "x"})
    yield "search-ints", body({"operation": "search", "index_id": "ix", "k": 2**31,
                               "vector_shape": [2**32, -1], "request_id": -2**63}, b"")
    yield "range-search", body({"operation": "range_search", "index_id": "ix", "radius": 0.5,
                                "vector_shape": [1, 4]}, floats(1, 4, 3))
    yield "delete-one", body({"operation": "delete_vector", "index_id": "ix", "vector_id": "k0"})
    yield "delete-many", body({"operation": "delete_vector", "index_id": "ix",
                               "vector_ids": ["a", 1, 2**64 - 1, -1]})
    yield "remove-range", body({"operation": "remove_ids", "index_id": "ix", "range": [0, 5]})
    yield "set-params", body({"operation": "set_params", "index_id": "ix", "name": "nprobe",
                              "value": 4})
    yield "train", body({"operation": "train", "index_id": "ix", "vector_shape": [2, 4]}, x4)
    yield "import", body({"operation": "import_index", "index_id": "im"}, b"IxF2" + bytes(60))
    yield "list", body({"operation": "list_indexes", "api_key": "k" * 40})
    yield "bin-and-ext", body({"operation": "ping", "b": b"\x00\x01",
                               "e": msgpack.ExtType(5, b"abc"), "t": True, "f": False})
    bad_id = b"\x82\xa9operation\xa4ping\xaarequest_id\xa2\xff\xfe"
    yield "utf8-bad-request-id", pre(len(bad_id)) + bad_id
    yield "meta-not-utf8", body({"operation": "search", "index_id": "ix", "k": 1,
                                 "vector_shape": [1, 4]}, floats(1, 4, 4),
                                raw_meta=b"\x81\xa1c\xa2\xff\xfe")
    # invalid bodies
    yield "empty", b""
    yield "one-zero-byte", b"\x00"
    yield "reserved-byte", b"\xc1"
    yield "preamble-not-a-map", msgpack.packb([1, 2, 3]) + ping
    yield "no-header-size", msgpack.packb({"vector_size": 0}) + ping
    yield "sizes-too-big", pre(len(ping) + 1) + ping
    yield "sizes-too-small", pre(len(ping) - 1) + ping
    yield "trailing-byte", pre(len(ping)) + ping + b"\x00"
    yield "vector-size-lies", pre(len(ping), 100) + ping + bytes(10)
    yield "huge-sizes", pre(2**63, 2**63) + ping
    yield "negative-size", msgpack.packb({"header_size": -1}) + ping
    yield "header-array", pre(3) + msgpack.packb([1, 2])
    yield "header-truncated", pre(5) + b"\x82\xa1a\x01\xa1"
    yield "header-two-objects", pre(2) + b"\x80\x80"
    yield "array32-claims-4g", pre(5) + b"\xdd\xff\xff\xff\xff"
    yield "map32-claims-2g", pre(5) + b"\xdf\x7f\xff\xff\xff"
    yield "str32-past-end", pre(8) + b"\x81\xa1a\xdb\xff\xff\xff\xff"
    yield "nested-40-deep", pre(41) + b"\x91" * 40 + b"\xc0"
    yield "nested-preamble", b"\x91" * 2000 + b"\xc0"
    yield "operation-int", body({"operation": 7})
    yield "metadata-invalid", pre(len(ping), 0, 1) + ping + b"\xc1"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "corpus")
    os.makedirs(out, exist_ok=True)
    names = set()
    for name, data in seeds():
        assert name not in names, name
        names.add(name)
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    for stale in set(os.listdir(out)) - names:
        os.remove(os.path.join(out, stale))
    print("fuzz-corpus: %d seeds in %s" % (len(names), out))


if __name__ == "__main__":
    main()
