"""FAISS's binary indexes, served: IndexBinary (the base: d in bits, vectors as uint8 rows),
IndexBinaryFlat, IndexBinaryHNSW(d[, M]), IndexBinaryHash(d, b)
and IndexBinaryMultiHash(d, nhash, b) (their `b`, `nhash`, and `nflip`, which reaches the
server). The index types are the
server's index_binary_factory ones ("BHNSW<M>", "BHash<b>", "BHash<nhash>x<b>")."""
import ctypes
import re
import struct

import numpy as np

from . import _lib, _remote, _stats
from ._lib import check, client, lib
from ._params import _ptr
from ._remote import METRIC_L2, Index, _HNSWParams, _rows


class IndexBinary(Index):
    """Binary indexes: d in bits, vectors as uint8 arrays of d/8 columns."""

    _binary = True
    _classes = ("IndexBinary",)

    def __init__(self, d, description, _attach=None):
        super().__init__(d, description, METRIC_L2, _attach=_attach)

    @property
    def code_size(self):
        return self.d // 8  # FAISS's: d / 8 bytes per vector

    @property
    def use_heap(self):
        self._check_use_heap()
        return getattr(self, "_use_heap", True)  # FAISS's default; its bytes do not carry it

    @use_heap.setter
    def use_heap(self, v):
        self._check_use_heap()
        self._set_param("use_heap", 1 if v else 0)
        self._use_heap = bool(v)

    def _check_use_heap(self):
        if self._idmap or self._classes[:1] not in (("IndexBinaryFlat",), ("IndexBinaryIVF",)):
            raise NotImplementedError("faissproxy: use_heap is served on IndexBinaryFlat and "
                                      "IndexBinaryIVF (FAISS's %s has none)"
                                      % type(self).__name__)

    @property
    def sa_encode(self):  # FAISS 1.7.3's binary indexes have no standalone codec
        raise AttributeError("'%s' object has no attribute 'sa_encode'" % type(self).__name__)

    sa_decode = sa_code_size = sa_encode

    def train(self, x):
        x, n = _rows(x, self.d // 8, "uint8")
        h = client()
        check(lib.fpx_client_train_binary(h, self._name.encode(), n, self.d, _ptr(x)), h)
        self._refresh()

    def _add(self, x, ids):
        x, n = _rows(x, self.d // 8, "uint8")
        total = ctypes.c_int64()
        h = client()
        check(lib.fpx_client_add_binary(h, self._name.encode(), n, self.d, _ptr(x),
                                        _ptr(ids) if ids is not None else None,
                                        ctypes.byref(total)), h)
        self._ntotal = int(total.value)

    def search(self, x, k, *, params=None, D=None, I=None):
        if params is not None:
            raise TypeError("faissproxy: FAISS 1.7.3's binary indexes take no search params")
        x, n = _rows(x, self.d // 8, "uint8")
        D = np.empty((n, k), dtype="int32") if D is None else D
        I = np.empty((n, k), dtype="int64") if I is None else I
        if n and _stats.wanted():
            return _stats.search_binary(self, x, n, int(k), D, I)
        if n:
            h = client()
            check(lib.fpx_client_search_binary(h, self._name.encode(), n, self.d, _ptr(x),
                                               int(k), _ptr(D), _ptr(I)), h)
        return D, I

    def range_search(self, x, thresh, *, params=None):
        if params is not None:
            raise TypeError("faissproxy: FAISS 1.7.3's binary indexes take no search params")
        x, n = _rows(x, self.d // 8, "uint8")
        if _stats.wanted():
            return _stats.range_search_binary(self, x, n, int(thresh))
        lims = ctypes.POINTER(ctypes.c_int64)()
        labels = ctypes.POINTER(ctypes.c_int64)()
        dist = ctypes.POINTER(ctypes.c_float)()
        h = client()
        check(lib.fpx_client_range_search_binary(h, self._name.encode(), n, self.d, _ptr(x),
                                                 int(thresh), ctypes.byref(lims),
                                                 ctypes.byref(labels), ctypes.byref(dist)), h)
        L = _lib.take_int64(lims, n + 1).astype("uint64")  # size_t, as faiss returns
        total = int(L[-1])
        return L, _lib.take_floats(dist, total).astype("int32"), _lib.take_int64(labels, total)

    def reconstruct(self, key, x=None):
        self._check_reconstruct()
        out = np.empty(self.d // 8, dtype="uint8") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_binary(h, self._name.encode(), int(key), self.d,
                                                _ptr(out)), h)
        return out

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        self._check_reconstruct()
        if ni == -1:
            ni = self.ntotal - n0
        out = np.empty((ni, self.d // 8), dtype="uint8") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_n_binary(h, self._name.encode(), int(n0), int(ni),
                                                  self.d, _ptr(out)), h)
        return out


class IndexBinaryFlat(IndexBinary):
    _classes = ("IndexBinaryFlat",)

    def __init__(self, d):
        super().__init__(d, "BFlat")


class IndexBinaryHNSW(IndexBinary):
    _classes = ("IndexBinaryHNSW",)

    def __init__(self, d, M=32):
        super().__init__(d, "BHNSW%d" % int(M))
        self._hnsw = _HNSWParams(self)

    @property
    def hnsw(self):
        return self._hnsw


class _Hash:
    """nflip of the binary hash indexes: set on the server (FAISS serializes it)."""

    _nflip = 0  # FAISS's default

    @property
    def nflip(self):
        if self._nflip is None:
            from ._remote import _index_meta
            self._nflip = int(_index_meta(self._name).get("params", {}).get("nflip", 0))
        return self._nflip

    @nflip.setter
    def nflip(self, v):
        self._set_param("nflip", int(v))
        self._nflip = int(v)

    _read = None  # (b, nhash) of an index read from FAISS's bytes

    @property
    def b(self):
        if self._read:
            return self._read[0]
        return int(re.search(r"BHash(?:\d+x)?(\d+)", self._hash_type()).group(1))

    def _hash_type(self):
        t = self._description
        if not t.startswith("BHash"):
            raise NotImplementedError("faissproxy: the hash parameters of a hash index read "
                                      "from bytes are not known here")
        return t


def read_params(data):
    """(b, nhash) of FAISS's bytes of a binary hash index ("IBHh": header then b; "IBHm":
    header, its flat storage, then b and nhash), or None."""
    data = bytes(data[:1 << 20]) if len(data) > 1 << 20 else bytes(data)
    head = 4 + 21  # fourcc; d, code_size (i32), ntotal (i64), is_trained (u8), metric (i32)
    try:
        if data[:4] == b"IBHh":
            return struct.unpack_from("<i", data, head)[0], 1
        if data[:4] == b"IBHm" and data[head:head + 4] == b"IBxF":
            n = struct.unpack_from("<Q", data, 2 * head)[0]
            b, nhash = struct.unpack_from("<ii", data, 2 * head + 8 + n)
            return b, nhash
    except struct.error:
        pass
    return None


class IndexBinaryHash(_Hash, IndexBinary):
    _classes = ("IndexBinaryHash",)

    def __init__(self, d, b):
        super().__init__(d, "BHash%d" % int(b))


class IndexBinaryMultiHash(_Hash, IndexBinary):
    _classes = ("IndexBinaryMultiHash",)

    def __init__(self, d, nhash, b):
        super().__init__(d, "BHash%dx%d" % (int(nhash), int(b)))

    @property
    def nhash(self):
        if self._read:
            return self._read[1]
        return int(re.search(r"BHash(\d+)x", self._hash_type()).group(1))


def hnsw_m(quantizer):
    """M of an empty served binary HNSW index (made here or by the factory), or None."""
    if not isinstance(quantizer, IndexBinary) or isinstance(quantizer, _remote._View) or \
            quantizer._classes[:1] != ("IndexBinaryHNSW",) or quantizer._idmap:
        return None
    m = re.fullmatch(r"BHNSW(\d+)", quantizer._description)
    return int(m.group(1)) if m else None
