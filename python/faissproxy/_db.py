"""The vector-database API: named persistent indexes, string keys, metadata,
filtered search and delete by key -- the seed's features FAISS has no words for.

    db = faissproxy.connect("tcp://host:5555", api_key="key1")
    docs = db.index("docs", dimension=384)          # created if missing, kept on the server
    docs.upsert(["a", "b"], vectors, [{"lang": "en"}, {"lang": "fr"}])
    hits = docs.search(query, k=5, filter={"lang": "en"})   # [[Hit(key, distance, metadata)]]
    docs.delete(["a"])
"""
import ctypes
from collections import namedtuple

import msgpack
import numpy as np

from . import _lib
from ._lib import check, client, lib

Hit = namedtuple("Hit", "key distance metadata")


class Connection:
    def index(self, name, dimension=None, index_type="Flat", metric="L2"):
        """The named index; created with dimension/index_type/metric when missing."""
        info = _lib.IndexInfo()
        h = client()
        if lib.fpx_client_get_index_info(h, name.encode(), ctypes.byref(info)) != 0:
            if (lib.fpx_client_errtype(h) or b"") != b"not_found" or dimension is None:
                check(-1, h)
            check(lib.fpx_client_create_index(h, name.encode(), int(dimension),
                                              index_type.encode(), metric.encode(),
                                              ctypes.byref(info)), h)
        return NamedIndex(name, info)

    def drop(self, name):
        h = client()
        check(lib.fpx_client_delete_index(h, name.encode()), h)


class NamedIndex:
    def __init__(self, name, info):
        self.name = name
        self.d = int(info.dimension)
        self.index_type = info.index_type.decode()
        self.metric = info.metric.decode()

    def info(self):
        info = _lib.IndexInfo()
        h = client()
        check(lib.fpx_client_get_index_info(h, self.name.encode(), ctypes.byref(info)), h)
        return {"index_id": info.index_id.decode(), "dimension": info.dimension,
                "index_type": info.index_type.decode(), "metric": info.metric.decode(),
                "ntotal": info.ntotal, "is_trained": bool(info.is_trained)}

    @property
    def ntotal(self):
        return self.info()["ntotal"]

    def train(self, vectors):
        x = np.ascontiguousarray(vectors, dtype="float32")
        h = client()
        check(lib.fpx_client_train(h, self.name.encode(), len(x), self.d,
                                   x.ctypes.data_as(ctypes.c_void_p)), h)

    def upsert(self, keys, vectors, metadata=None):
        """Adds vectors under string keys; a key already present is replaced."""
        x = np.ascontiguousarray(vectors, dtype="float32")
        assert x.ndim == 2 and x.shape[1] == self.d and len(keys) == len(x)
        if metadata is not None:
            assert len(metadata) == len(x)
        items = (_lib.Item * max(1, len(x)))()
        keep = []  # the encoded bytes must outlive the call
        for i, key in enumerate(keys):
            kb = str(key).encode()
            keep.append(kb)
            items[i].key = kb
            if metadata is not None and metadata[i] is not None:
                mb = msgpack.packb(dict(metadata[i]), use_bin_type=True)
                buf = ctypes.create_string_buffer(mb, len(mb))
                keep.append(buf)
                items[i].metadata = ctypes.cast(buf, ctypes.c_void_p)
                items[i].metadata_size = len(mb)
        total = ctypes.c_int64()
        h = client()
        check(lib.fpx_client_add(h, self.name.encode(), len(x), self.d,
                                 x.ctypes.data_as(ctypes.c_void_p), None, items,
                                 ctypes.byref(total)), h)
        return int(total.value)

    def search(self, queries, k=10, filter=None, nprobe=0, ef_search=0):
        """The k nearest live vectors of each query (matching every field of filter):
        a list per query of Hit(key, distance, metadata)."""
        q = np.ascontiguousarray(queries, dtype="float32")
        if q.ndim == 1:
            q = q.reshape(1, -1)
        n = len(q)
        D = np.empty((n, k), dtype="float32")
        I = np.empty((n, k), dtype="int64")
        opts = _lib.SearchOpts(int(nprobe), int(ef_search), None, 0)
        fb = None
        if filter:
            fb = msgpack.packb(dict(filter), use_bin_type=True)
            buf = ctypes.create_string_buffer(fb, len(fb))
            opts.filter = ctypes.cast(buf, ctypes.c_void_p)
            opts.filter_size = len(fb)
        hits = ctypes.POINTER(_lib.Hit)()
        h = client()
        check(lib.fpx_client_search_ex(h, self.name.encode(), n, self.d,
                                       q.ctypes.data_as(ctypes.c_void_p), int(k),
                                       ctypes.byref(opts), D.ctypes.data_as(ctypes.c_void_p),
                                       I.ctypes.data_as(ctypes.c_void_p), ctypes.byref(hits)),
              h)
        out = []
        try:
            for r in range(n):
                row = []
                for j in range(k):
                    hit = hits[r * k + j]
                    if I[r, j] < 0:
                        continue
                    md = None
                    if hit.metadata and hit.metadata_size:
                        md = msgpack.unpackb(ctypes.string_at(hit.metadata, hit.metadata_size),
                                             raw=False)
                    key = hit.key.decode() if hit.key is not None else int(I[r, j])
                    row.append(Hit(key, float(D[r, j]), md))
                out.append(row)
        finally:
            lib.fpx_hits_free(hits, n * k)
        return out

    def delete(self, keys):
        """Deletes by key; returns how many were there."""
        arr = (ctypes.c_char_p * max(1, len(keys)))(*[str(k).encode() for k in keys])
        deleted = ctypes.c_int64()
        h = client()
        check(lib.fpx_client_delete_keys(h, self.name.encode(), len(keys), arr,
                                         ctypes.byref(deleted)), h)
        return int(deleted.value)
