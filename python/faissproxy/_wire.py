"""The requests the Python drop-in builds itself, for the fields libfaissproxy has no typed
call for (search params and id selectors, the info map's faiss_classes): the body is built here
and sent with fpx_client_request_raw; and the helpers every served class shares (unique names,
rows in FAISS's layout, search replies into a program's arrays)."""
import ctypes
import itertools
import os
import socket
import time

import msgpack
import numpy as np

from . import _lib
from ._lib import check, client, lib

_seq = itertools.count()


def _unique_name():
    host = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40]
    name = "fpxpy-%s-%d-%x-%d" % (host, os.getpid(), int(time.time()), next(_seq))
    _lib.generated[name] = _lib.configured_server()  # deleted at exit unless kept
    return name


def _rows(x, d, dtype="float32"):
    x = np.ascontiguousarray(x, dtype=dtype)
    n, d2 = x.shape
    assert d2 == d
    return x, n


_raw = lib.fpx_client_request_raw
_raw.restype = ctypes.c_int
_raw.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                 ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)), ctypes.POINTER(ctypes.c_size_t)]
_raw = _lib._counting(_raw)  # a request sent, as the typed calls count (requests_sent)


def _call(header, data=b"", meta=None):
    """Sends one request (header map, data bytes, metadata); returns the reply's header,
    data bytes and metadata, or raises as the typed calls do."""
    header = dict(header)
    with _lib.Config.lock:
        key = _lib.Config.api_key if _lib.Config.api_key is not None else os.environ.get(
            "FAISS_PROXY_API_KEY")
        tenant = _lib.Config.tenant_id if _lib.Config.tenant_id is not None else \
            os.environ.get("FAISS_PROXY_TENANT")
    if key:
        header["api_key"] = key
    if tenant:
        header["tenant_id"] = tenant
    hb = msgpack.packb(header, use_bin_type=True)
    mb = b"" if meta is None else msgpack.packb(meta, use_bin_type=True)
    pre = msgpack.packb({"header_size": len(hb), "vector_size": len(data),
                         "metadata_size": len(mb)})
    body = b"".join((pre, hb, data, mb))
    out = ctypes.POINTER(ctypes.c_uint8)()
    n = ctypes.c_size_t()
    h = client()
    check(_raw(h, body, len(body), ctypes.byref(out), ctypes.byref(n)), h)
    reply = ctypes.string_at(out, n.value)
    _lib.libc.free(out)
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(reply)
    sizes = u.unpack()
    off = u.tell()
    hs, vs = sizes["header_size"], sizes.get("vector_size", 0)
    rh = msgpack.unpackb(reply[off:off + hs], raw=False, strict_map_key=False)
    rd = reply[off + hs:off + hs + vs]
    rm = reply[off + hs + vs:]
    rm = msgpack.unpackb(rm, raw=False, strict_map_key=False) if rm else None
    if rh.get("status") != "ok":
        raise _lib.ServerError(rh.get("error_type", ""), rh.get("message", ""))
    return rh, rd, rm


def _index_meta(name):
    """The server's info map of an index."""
    return _call({"operation": "get_index_info", "index_id": name})[2] or {}


def _search_reply(data, n, k, D, I):
    """A search reply's data section into D (n, k) and I (n, k): distances, then labels."""
    D[:] = np.frombuffer(data, "float32", n * k).reshape(n, k)
    I[:] = np.frombuffer(data, "int64", n * k, offset=4 * n * k).reshape(n, k)
