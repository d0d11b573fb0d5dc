"""FAISS's Python index classes, served by a faiss-proxy server.

Each index object is a server index with a unique name, deleted when the
object is garbage-collected (unless `keep()` was called). Methods take and
return numpy arrays as faiss's do: vectors go to the library as the array's
own buffer (made contiguous float32 first, as faiss does), results land in
arrays allocated here.
"""
import ctypes
import itertools
import os
import socket
import time

import numpy as np

from . import _lib
from ._lib import check, client, lib

METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1

_seq = itertools.count()


def _unique_name():
    host = "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40]
    return "fpxpy-%s-%d-%x-%d" % (host, os.getpid(), int(time.time()), next(_seq))


def _metric_name(metric):
    if metric == METRIC_L2:
        return b"L2"
    if metric == METRIC_INNER_PRODUCT:
        return b"IP"
    raise RuntimeError("faissproxy serves METRIC_L2 and METRIC_INNER_PRODUCT only")


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _rows(x, d, dtype="float32"):
    x = np.ascontiguousarray(x, dtype=dtype)
    n, d2 = x.shape
    assert d2 == d
    return x, n


class _IDSelector:
    pass


class IDSelectorRange(_IDSelector):
    def __init__(self, imin, imax):
        self.imin, self.imax = int(imin), int(imax)

    def is_member(self, i):
        return self.imin <= i < self.imax


class IDSelectorBatch(_IDSelector):
    def __init__(self, *args):
        # faiss accepts IDSelectorBatch(n, ptr) from SWIG; here an array, or (n, array)
        ids = args[-1]
        self.ids = np.ascontiguousarray(np.asarray(ids, dtype="int64").ravel())
        if len(args) == 2:
            self.ids = self.ids[:int(args[0])]

    def is_member(self, i):
        return bool(np.any(self.ids == i))


class _HNSWParams:
    """index.hnsw: efSearch and efConstruction as attributes, as in faiss."""

    def __init__(self, index):
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_ef", 16)

    @property
    def efSearch(self):
        return self._ef

    @efSearch.setter
    def efSearch(self, v):
        self._index._set_param("efSearch", int(v))
        object.__setattr__(self, "_ef", int(v))


class Index:
    """A server index behind FAISS's Index methods."""

    _binary = False

    def __init__(self, d, description, metric=METRIC_L2, _attach=None):
        self._name = None
        self._keep = False
        self.metric_type = metric
        if _attach is not None:
            info = _attach
            self._name = info.index_id.decode()
            self.d = int(info.dimension)
            self._ntotal = int(info.ntotal)
            self.is_trained = bool(info.is_trained)
            self._description = info.index_type.decode()
            return
        self.d = int(d)
        self._description = description
        self._ntotal = 0
        info = _lib.IndexInfo()
        h = client()
        name = _unique_name()
        metric_arg = b"Hamming" if self._binary else _metric_name(metric)
        # generated for the program: leased, so a crash leaves nothing behind
        check(lib.fpx_client_create_index_leased(h, name.encode(), self.d, description.encode(),
                                                 metric_arg, _lib.LEASE_FROM_ENV,
                                                 ctypes.byref(info)), h)
        self._name = name
        self.is_trained = bool(info.is_trained)

    # ---- lifetime --------------------------------------------------------------------

    def keep(self, keep=True):
        """Leave the server index in place when this object goes away (and when the
        program ends: its lease, if it has one, is removed)."""
        if keep and not self._keep and self._name and _lib.lease_seconds() != 0:
            h = client()
            check(lib.fpx_client_set_lease(h, self._name.encode(), 0), h)
        self._keep = bool(keep)
        return self

    @property
    def server_name(self):
        return self._name

    def __del__(self):
        name = getattr(self, "_name", None)
        if name and not getattr(self, "_keep", True):
            _lib.pending_deletes.append(name)  # deleted by this thread's next call

    # ---- attributes ------------------------------------------------------------------

    @property
    def ntotal(self):
        return self._ntotal

    def _refresh(self):
        info = _lib.IndexInfo()
        h = client()
        check(lib.fpx_client_get_index_info(h, self._name.encode(), ctypes.byref(info)), h)
        self._ntotal = int(info.ntotal)
        self.is_trained = bool(info.is_trained)

    def _set_param(self, name, value):
        h = client()
        check(lib.fpx_client_set_param(h, self._name.encode(), name.encode(), float(value)), h)

    # ---- FAISS's methods -------------------------------------------------------------

    def train(self, x):
        x, n = _rows(x, self.d)
        h = client()
        check(lib.fpx_client_train(h, self._name.encode(), n, self.d, _ptr(x)), h)
        self._refresh()

    def add(self, x):
        self._add(x, None)

    def add_with_ids(self, x, ids):
        ids = np.ascontiguousarray(ids, dtype="int64")
        assert ids.shape == (len(x),)
        self._add(x, ids)

    def _add(self, x, ids):
        x, n = _rows(x, self.d)
        total = ctypes.c_int64(-1)
        h = client()
        try:
            check(lib.fpx_client_add(h, self._name.encode(), n, self.d, _ptr(x),
                                     _ptr(ids) if ids is not None else None, None,
                                     ctypes.byref(total)), h)
        finally:  # an add sent in parts that failed midway: what went in
            if total.value >= 0:
                self._ntotal = int(total.value)

    def search(self, x, k, *, params=None, D=None, I=None):
        x, n = _rows(x, self.d)
        k = int(k)
        assert k > 0
        if D is None:
            D = np.empty((n, k), dtype="float32")
        else:
            assert D.shape == (n, k)
        if I is None:
            I = np.empty((n, k), dtype="int64")
        else:
            assert I.shape == (n, k)
        if n:
            h = client()
            check(lib.fpx_client_search(h, self._name.encode(), n, self.d, _ptr(x), k, None,
                                        _ptr(D), _ptr(I)), h)
        return D, I

    def assign(self, x, k, labels=None):
        return self.search(x, k, I=labels)[1]

    def range_search(self, x, thresh, *, params=None):
        x, n = _rows(x, self.d)
        lims = ctypes.POINTER(ctypes.c_int64)()
        labels = ctypes.POINTER(ctypes.c_int64)()
        dist = ctypes.POINTER(ctypes.c_float)()
        h = client()
        check(lib.fpx_client_range_search(h, self._name.encode(), n, self.d, _ptr(x),
                                          float(thresh), None, ctypes.byref(lims),
                                          ctypes.byref(labels), ctypes.byref(dist)), h)
        L = _lib.take_int64(lims, n + 1).astype("uint64")  # size_t, as faiss returns
        total = int(L[-1])
        return L, _lib.take_floats(dist, total), _lib.take_int64(labels, total)

    def reset(self):
        h = client()
        check(lib.fpx_client_reset(h, self._name.encode()), h)
        self._ntotal = 0

    def remove_ids(self, x):
        removed = ctypes.c_int64()
        h = client()
        if isinstance(x, IDSelectorRange):
            rc = lib.fpx_client_remove_range(h, self._name.encode(), x.imin, x.imax,
                                             ctypes.byref(removed))
        else:
            ids = x.ids if isinstance(x, IDSelectorBatch) else np.ascontiguousarray(
                x, dtype="int64").ravel()
            rc = lib.fpx_client_remove_ids(h, self._name.encode(), len(ids), _ptr(ids),
                                           ctypes.byref(removed))
        check(rc, h)
        self._ntotal -= int(removed.value)
        return int(removed.value)

    def reconstruct(self, key, x=None):
        out = np.empty(self.d, dtype="float32") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct(h, self._name.encode(), int(key), self.d, _ptr(out)), h)
        return out

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        if ni == -1:
            ni = self.ntotal - n0
        out = np.empty((ni, self.d), dtype="float32") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_n(h, self._name.encode(), int(n0), int(ni), self.d,
                                           _ptr(out)), h)
        return out

    def __repr__(self):
        return "<faissproxy %s %r d=%d ntotal=%d>" % (type(self).__name__, self._description,
                                                      self.d, self.ntotal)


class IndexFlat(Index):
    def __init__(self, d, metric=METRIC_L2):
        super().__init__(d, "Flat", metric)


class IndexFlatL2(IndexFlat):
    def __init__(self, d):
        super().__init__(d, METRIC_L2)


class IndexFlatIP(IndexFlat):
    def __init__(self, d):
        super().__init__(d, METRIC_INNER_PRODUCT)


class _IVF:
    """nprobe as an attribute that takes effect on the server."""

    @property
    def nprobe(self):
        return getattr(self, "_nprobe", 1)

    @nprobe.setter
    def nprobe(self, v):
        self._set_param("nprobe", int(v))
        self._nprobe = int(v)

    def make_direct_map(self, new_maintain_direct_map=True):
        """As IndexIVF.make_direct_map: reconstruct() needs it."""
        self._set_param("direct_map", 1 if new_maintain_direct_map else 0)


class IndexIVFFlat(_IVF, Index):
    def __init__(self, quantizer, d, nlist, metric=METRIC_L2):
        self.quantizer, self.nlist = quantizer, int(nlist)
        super().__init__(d, "IVF%d,Flat" % nlist, metric)


class IndexIVFPQ(_IVF, Index):
    def __init__(self, quantizer, d, nlist, M, nbits, metric=METRIC_L2):
        self.quantizer, self.nlist = quantizer, int(nlist)
        # faiss's constructor trains no polysemous codes: "np", as for IndexPQ
        super().__init__(d, "IVF%d,PQ%dx%dnp" % (nlist, M, nbits), metric)


class IndexHNSWFlat(Index):
    def __init__(self, d, M=32, metric=METRIC_L2):
        super().__init__(d, "HNSW%d" % M, metric)
        self.hnsw = _HNSWParams(self)


class IndexPQ(Index):
    def __init__(self, d, M, nbits, metric=METRIC_L2):
        # faiss's constructor makes a plain (non-polysemous) PQ, as "PQ<M>x<nbits>np"
        super().__init__(d, "PQ%dx%dnp" % (M, nbits), metric)


class ScalarQuantizer:
    QT_8bit, QT_4bit, QT_8bit_uniform, QT_4bit_uniform, QT_fp16, QT_8bit_direct, QT_6bit = \
        range(7)


_SQ_NAMES = {0: "SQ8", 1: "SQ4", 2: "SQ8_uniform", 3: "SQ4_uniform", 4: "SQfp16",
             5: "SQ8_direct", 6: "SQ6"}


class IndexScalarQuantizer(Index):
    def __init__(self, d, qtype=ScalarQuantizer.QT_8bit, metric=METRIC_L2):
        super().__init__(d, _SQ_NAMES[qtype], metric)


class IndexIDMap(Index):
    _prefix = "IDMap"

    def __init__(self, index):
        assert index.ntotal == 0, "index must be empty on input"
        self.index = index
        super().__init__(index.d, "%s,%s" % (self._prefix, index._description),
                         index.metric_type)

    def add(self, x):
        raise RuntimeError("add does not make sense with IndexIDMap, use add_with_ids")


class IndexIDMap2(IndexIDMap):
    _prefix = "IDMap2"


class IndexBinary(Index):
    """Binary indexes: d in bits, vectors as uint8 arrays of d/8 columns."""

    _binary = True

    def __init__(self, d, description, _attach=None):
        super().__init__(d, description, METRIC_L2, _attach=_attach)

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
        x, n = _rows(x, self.d // 8, "uint8")
        D = np.empty((n, k), dtype="int32") if D is None else D
        I = np.empty((n, k), dtype="int64") if I is None else I
        if n:
            h = client()
            check(lib.fpx_client_search_binary(h, self._name.encode(), n, self.d, _ptr(x),
                                               int(k), _ptr(D), _ptr(I)), h)
        return D, I

    def range_search(self, x, thresh, *, params=None):
        x, n = _rows(x, self.d // 8, "uint8")
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
        out = np.empty(self.d // 8, dtype="uint8") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_binary(h, self._name.encode(), int(key), self.d,
                                                _ptr(out)), h)
        return out

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        if ni == -1:
            ni = self.ntotal - n0
        out = np.empty((ni, self.d // 8), dtype="uint8") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_n_binary(h, self._name.encode(), int(n0), int(ni),
                                                  self.d, _ptr(out)), h)
        return out


class IndexBinaryFlat(IndexBinary):
    def __init__(self, d):
        super().__init__(d, "BFlat")


def index_factory(d, description, metric=METRIC_L2):
    ix = Index(d, description, metric)
    if description.startswith("IVF"):
        ix.__class__ = type("IndexIVF", (_IVF, Index), {})
    elif description.startswith("HNSW"):
        ix.hnsw = _HNSWParams(ix)
    return ix


def index_binary_factory(d, description):
    return IndexBinary(d, description)


# ---- serialization ------------------------------------------------------------------------


def serialize_index(index):
    """FAISS's write_index bytes of the index, as a uint8 array (faiss.serialize_index)."""
    buf = ctypes.POINTER(ctypes.c_uint8)()
    n = ctypes.c_size_t()
    h = client()
    check(lib.fpx_client_export(h, index._name.encode(), ctypes.byref(buf), ctypes.byref(n)), h)
    out = np.ctypeslib.as_array(buf, shape=(n.value,)).copy() if n.value else np.empty(
        0, "uint8")
    _lib.libc.free(buf)
    return out


serialize_index_binary = serialize_index


def _import(data, binary):
    data = np.ascontiguousarray(np.frombuffer(bytes(data), dtype="uint8") if isinstance(
        data, (bytes, bytearray)) else data, dtype="uint8")
    info = _lib.IndexInfo()
    name = _unique_name()
    h = client()
    check(lib.fpx_client_import_leased(h, name.encode(), b"imported", _ptr(data), data.nbytes,
                                       _lib.LEASE_FROM_ENV, ctypes.byref(info)), h)
    if binary:
        return IndexBinary(0, "", _attach=info)
    ix = Index(0, "", _attach=info)
    ix.metric_type = METRIC_INNER_PRODUCT if info.metric == b"IP" else METRIC_L2
    fourcc = bytes(data[:4])
    if fourcc.startswith(b"Iw"):
        ix.__class__ = type("IndexIVF", (_IVF, Index), {})
    elif fourcc.startswith(b"IH"):
        ix.hnsw = _HNSWParams(ix)
    return ix


def deserialize_index(data):
    return _import(data, False)


def deserialize_index_binary(data):
    return _import(data, True)


def write_index(index, fname):
    with open(fname, "wb") as f:
        f.write(serialize_index(index).tobytes())


write_index_binary = write_index


def read_index(fname, io_flags=0):
    with open(fname, "rb") as f:
        return deserialize_index(f.read())


def read_index_binary(fname, io_flags=0):
    with open(fname, "rb") as f:
        return deserialize_index_binary(f.read())
