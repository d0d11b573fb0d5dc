"""FAISS's Python index classes, served by a faiss-proxy server.

Each index object is a server index with a unique name, deleted when the
object is garbage-collected (unless `keep()` was called). Methods take and
return numpy arrays as faiss's do: vectors go to the library as the array's
own buffer (made contiguous float32 first, as faiss does), results land in
arrays allocated here.

Every attribute a program sets on a served object either reaches the server or raises,
naming it: nothing is kept on the Python object where it would change no result (see
docs/python.md for what is served).
"""
import ctypes
import re
import struct

import numpy as np

from . import _lib, _stats
from ._lib import check, client, lib
from ._attrs import _set_served
from ._wire import _call, _index_meta, _rows, _search_reply, _unique_name
from ._params import (IDSelector, IDSelectorAll, IDSelectorArray, IDSelectorBatch,
                      IDSelectorBitmap, IDSelectorRange, _ptr, _wire_params)

METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1


def _metric_name(metric):
    if metric == METRIC_L2:
        return b"L2"
    if metric == METRIC_INNER_PRODUCT:
        return b"IP"
    raise RuntimeError("faissproxy: metric %r is not one of FAISS 1.7.3's metric types "
                       "(the extra ones are created by faissproxy._metrics)" % (metric,))


class _HNSWParams:
    """index.hnsw: efSearch and efConstruction as attributes that reach the server."""

    def __init__(self, index, ef_search=16, ef_construction=40):
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_ef", ef_search)
        object.__setattr__(self, "_efc", ef_construction)

    __setattr__ = _set_served

    @property
    def efSearch(self):
        return self._ef

    @efSearch.setter
    def efSearch(self, v):
        self._index._set_param("efSearch", int(v))
        object.__setattr__(self, "_ef", int(v))

    @property
    def efConstruction(self):
        return self._efc

    @efConstruction.setter
    def efConstruction(self, v):
        self._index._set_param("efConstruction", int(v))
        object.__setattr__(self, "_efc", int(v))

    @property
    def search_bounded_queue(self):
        return getattr(self, "_sbq", True)  # FAISS's default; its bytes do not carry it

    @search_bounded_queue.setter
    def search_bounded_queue(self, v):
        self._index._set_param("search_bounded_queue", 1 if v else 0)
        object.__setattr__(self, "_sbq", bool(v))


def _nlist_of(description):
    """The number of lists an index_factory description gives its IVF, or None."""
    m = re.search(r"(?:^|,|_)IVF(\d+)", description)
    if m:
        return int(m.group(1))
    m = re.search(r"(?:^|,)IMI(\d+)x(\d+)", description)
    if m:
        return (1 << int(m.group(2))) ** int(m.group(1))
    return None


def _has_idmap(description):
    """As the server's test: an IDMap/IDMap2 wrapper as a prefix or a suffix."""
    for w in ("IDMap2", "IDMap"):
        if description.startswith(w + ",") or description.endswith("," + w):
            return w
    return None


class Index:
    """A server index behind FAISS's Index methods."""

    _binary = False
    _classes = ("Index",)
    _idmap = None

    def __init__(self, d, description, metric=METRIC_L2, _attach=None):
        self._name = None
        self._keep = False
        self._metric = metric
        self._verbose = False
        if _attach is not None:
            self._attach(_attach)
            return
        self._d = int(d)
        self._description = description
        self._ntotal = 0
        info = _lib.IndexInfo()
        h = client()
        name = _unique_name()
        from . import _metrics
        if not self._binary and _metrics.is_extra(metric):  # L1, Linf, Lp, ...
            info = _metrics.create(name, self._d, description, metric, 0.0)
        else:
            metric_arg = b"Hamming" if self._binary else _metric_name(metric)
            # generated for the program: leased, so a crash leaves nothing behind
            check(lib.fpx_client_create_index_leased(h, name.encode(), self._d,
                                                     description.encode(), metric_arg,
                                                     _lib.LEASE_FROM_ENV, ctypes.byref(info)),
                  h)
        self._name = name
        self._is_trained = bool(info.is_trained)

    def _attach(self, info):
        self._name = info.index_id.decode()
        self._d = int(info.dimension)
        self._ntotal = int(info.ntotal)
        self._is_trained = bool(info.is_trained)
        self._description = info.index_type.decode()
        from . import _metrics
        self._metric = _metrics.number_of(info.metric)
        self._metric_arg = None  # asked of the server when read (extra metrics only)

    __setattr__ = _set_served

    # ---- lifetime --------------------------------------------------------------------

    def keep(self, keep=True):
        """Leave the server index in place when this object goes away (and when the
        program ends: its lease, if it has one, is removed)."""
        if keep and not self._keep and self._name and _lib.lease_seconds() != 0:
            h = client()
            check(lib.fpx_client_set_lease(h, self._name.encode(), 0), h)
        self._keep = bool(keep)
        if self._name:
            if self._keep:
                _lib.generated.pop(self._name, None)
            else:
                _lib.generated[self._name] = _lib.configured_server()
        return self

    @property
    def thisown(self):
        """SWIG's flag: does this Python object delete what it holds when it goes away?
        True for a served index, unless keep() was called (or a program wrote False)."""
        return getattr(self, "_thisown", not self._keep)

    @thisown.setter
    def thisown(self, v):
        # FAISS programs write False when another FAISS object takes the index over (its
        # destructor deletes it). Here the objects made from this one hold what they need
        # of it (a reference to it, or a copy of their own on the server): the flag reads
        # back, and changes no lifetime.
        self._thisown = bool(v)

    def __reduce__(self):
        from . import _life
        return _life.reduce(self)

    @property
    def server_name(self):
        return self._name

    def __del__(self):
        name = getattr(self, "_name", None)
        if name and not getattr(self, "_keep", True):
            _lib.pending_deletes.append(name)  # deleted by this thread's next call

    # ---- attributes ------------------------------------------------------------------

    @property
    def d(self):
        return self._d

    @property
    def ntotal(self):
        return self._ntotal

    @property
    def is_trained(self):
        return self._is_trained

    @property
    def metric_type(self):
        return self._metric

    @property
    def metric_arg(self):
        from . import _metrics
        return _metrics.metric_arg_of(self)

    @metric_arg.setter
    def metric_arg(self, v):
        from . import _metrics
        _metrics.set_metric_arg(self, v)

    @property
    def verbose(self):
        return self._verbose

    @verbose.setter
    def verbose(self, v):
        # Kept here: FAISS's verbose only prints, and the server refuses to print (its
        # set_params refuses "verbose"), so no result depends on it.
        self._verbose = bool(v)

    def _refresh(self):
        info = _lib.IndexInfo()
        h = client()
        check(lib.fpx_client_get_index_info(h, self._name.encode(), ctypes.byref(info)), h)
        self._ntotal = int(info.ntotal)
        self._is_trained = bool(info.is_trained)

    def _set_param(self, name, value):
        h = client()
        check(lib.fpx_client_set_param(h, self._name.encode(), name.encode(), float(value)), h)

    # ---- FAISS's methods -------------------------------------------------------------

    def train(self, x):
        """Trains the index on the representative vectors x (n, d), on the server."""
        x, n = _rows(x, self.d)
        h = client()
        check(lib.fpx_client_train(h, self._name.encode(), n, self.d, _ptr(x)), h)
        self._refresh()

    def add(self, x):
        """Adds vectors to the index: x (n, d) float32, stored on the server. The index
        must be trained first; the vectors get the ids ntotal, ntotal + 1, ...,
        ntotal + n - 1 (use add_with_ids, on the index types that take ids, to give your
        own)."""
        if self._idmap:
            raise RuntimeError("add does not make sense with IndexIDMap, use add_with_ids")
        self._add(x, None)

    def add_with_ids(self, x, ids):
        """Adds vectors x (n, d) with the given int64 ids (n,), where FAISS's class of
        this index takes ids (IDMaps, IVF and binary hash indexes); other types raise."""
        ids = np.ascontiguousarray(ids, dtype="int64")
        assert ids.shape == (len(x),)
        if not self._takes_ids():
            # FAISS's Index::add_with_ids: the server would take the ids, FAISS refuses them
            raise RuntimeError("Error in virtual void faiss::Index::add_with_ids: "
                               "add_with_ids not implemented for this type of index")
        self._add(x, ids)

    def _takes_ids(self):
        """FAISS's class of this index implements add_with_ids: IDMaps, and IVF and binary
        hash indexes (under transforms too: an IndexPreTransform hands them on)."""
        if self._idmap:
            return True
        main = [c for c in self._classes if c != "IndexPreTransform"]
        return bool(main) and main[0].startswith(("IndexIVF", "IndexBinaryIVF",
                                                   "IndexBinaryHash", "IndexBinaryMultiHash"))

    @property
    def code_size(self):
        """FAISS's code_size: bytes per stored vector (an IVF's without its list number)."""
        if self._binary:
            return self.d // 8  # every binary index of FAISS 1.7.3
        top = self._classes[0] if self._classes else ""
        flat = ("IndexFlat", "IndexScalarQuantizer", "IndexPQ", "IndexLSH",
                "IndexResidualQuantizer", "IndexLocalSearchQuantizer")
        ivf = ("IndexIVFFlat", "IndexIVFScalarQuantizer", "IndexIVFPQ")
        if self._idmap or top not in flat + ivf:
            raise NotImplementedError("faissproxy: code_size of %s is not served (use "
                                      "sa_code_size())" % type(self).__name__)
        size = self.sa_code_size()
        if top in ivf:  # FAISS's IVF standalone codes start with the list number
            nl, coarse = self.nlist - 1, 0
            while nl > 0:
                coarse, nl = coarse + 1, nl >> 8
            size -= coarse
        return size

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
        """Searches the k nearest neighbors of each query of x (n, d) on the server:
        returns D (n, k) distances and I (n, k) labels (-1 where fewer than k are found),
        as FAISS's search; params as FAISS's SearchParameters."""
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
        if params is not None or _stats.wanted():  # (statistics: _stats)
            wire, sel = _wire_params(self, params) if params is not None else ({}, None)
            if n:
                header = {"operation": "search", "index_id": self._name, "k": k,
                          "vector_shape": [n, self.d], "params": wire, "id_selector": sel,
                          "complete": False}  # (FAISS's answer: short queries left short)
                _stats.ask(header)
                rh, data, _ = _call(header, x.tobytes())
                _stats.account(rh)
                _search_reply(data, n, k, D, I)
            return D, I
        if n:
            h = client()
            check(lib.fpx_client_search(h, self._name.encode(), n, self.d, _ptr(x), k, None,
                                        _ptr(D), _ptr(I)), h)
        return D, I

    def assign(self, x, k, labels=None):
        return self.search(x, k, I=labels)[1]

    def search_and_reconstruct(self, x, k, *, params=None, D=None, I=None, R=None):
        """FAISS's search_and_reconstruct: the search, and each hit's stored vector as the
        index reconstructs it (NaN bytes, FAISS's memset to -1, for a missing hit). An IVF
        reconstructs a hit from its list without a direct map, as reconstruct_n does."""
        if self._binary or params is not None:
            raise NotImplementedError("faissproxy: search_and_reconstruct %s is not served"
                                      % ("with params" if params is not None else
                                         "on binary indexes"))
        self._check_reconstruct()
        if not self._idmap:
            return self._search_and_reconstruct(x, int(k), D, I, R)
        # an IDMap2's is FAISS's default one: its search, then its reconstruct of each hit
        D, I = self.search(x, k, D=D, I=I)
        n = len(I)
        if R is None:
            R = np.empty((n, k, self.d), dtype="float32")
        else:
            assert R.shape == (n, k, self.d)
        R.view("uint32")[:] = 0xFFFFFFFF
        labels = np.unique(I[I >= 0])
        if len(labels):
            # (an IDMap2 reconstructs through its sub-index's reconstruct, as FAISS's)
            by_list = not self._idmap and any(c.startswith("IndexIVF") for c in self._classes)
            # consecutive labels are reconstructed together
            starts = np.flatnonzero(np.diff(labels, prepend=labels[0] - 2) != 1)
            ends = np.append(starts[1:], len(labels))
            found = np.empty((len(labels), self.d), dtype="float32")
            for a, b in zip(starts.tolist(), ends.tolist()):
                if by_list or b - a > 1:
                    found[a:b] = self.reconstruct_n(int(labels[a]), b - a)
                else:
                    found[a] = self.reconstruct(int(labels[a]))
            hit = I >= 0
            R[hit] = found[np.searchsorted(labels, I[hit])]
        return D, I, R

    def _search_and_reconstruct(self, x, k, D, I, R):
        # the server's search with "reconstruct": FAISS's own search_and_reconstruct of the
        # served index, vectors and all, in one request
        x, n = _rows(x, self.d)
        assert k > 0
        D = np.empty((n, k), dtype="float32") if D is None else D
        I = np.empty((n, k), dtype="int64") if I is None else I
        R = np.empty((n, k, self.d), dtype="float32") if R is None else R
        assert D.shape == (n, k) and I.shape == (n, k) and R.shape == (n, k, self.d)
        if n:
            self._check_nprobe()
            header = {"operation": "search", "index_id": self._name, "k": k,
                      "vector_shape": [n, self.d], "reconstruct": True,
                      "complete": False}  # (FAISS's answer: short queries left short)
            _stats.ask(header)
            rh, data, _ = _call(header, x.tobytes())
            _stats.account(rh)
            _search_reply(data, n, k, D, I)
            R[:] = np.frombuffer(data, "float32", n * k * self.d,
                                 offset=12 * n * k).reshape(n, k, self.d)
        return D, I, R

    def _check_nprobe(self):
        pass  # (IVF indexes: FAISS's searches raise while nprobe is 0)

    def range_search(self, x, thresh, *, params=None):
        x, n = _rows(x, self.d)
        if params is not None or _stats.wanted():  # (statistics: _stats)
            wire, sel = _wire_params(self, params) if params is not None else ({}, None)
            header = {"operation": "range_search", "index_id": self._name,
                      "radius": float(thresh), "vector_shape": [n, self.d], "params": wire,
                      "id_selector": sel}
            _stats.ask(header)
            rh, data, _ = _call(header, x.tobytes())
            _stats.account(rh)
            nres = int(rh["nres"])
            L = np.frombuffer(data, "int64", n + 1).astype("uint64")
            I = np.frombuffer(data, "int64", nres, offset=8 * (n + 1)).copy()
            D = np.frombuffer(data, "float32", nres, offset=8 * (n + 1 + nres)).copy()
            return L, D, I
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
        elif isinstance(x, IDSelectorAll):
            n = self.ntotal
            self.reset()
            return n
        elif isinstance(x, IDSelector) and not isinstance(
                x, (IDSelectorBatch, IDSelectorArray, IDSelectorBitmap)):
            raise NotImplementedError("faissproxy: remove_ids with %s is not served (it takes "
                                      "an id array, IDSelectorRange, IDSelectorBatch, "
                                      "IDSelectorArray, IDSelectorBitmap or IDSelectorAll)"
                                      % type(x).__name__)
        else:
            if isinstance(x, IDSelector):
                ids = np.ascontiguousarray(x._wire()["ids"], dtype="int64")
            elif hasattr(x, "is_member") and not isinstance(x, np.ndarray):
                raise TypeError("faissproxy: remove_ids takes an id array or one of "
                                "faissproxy's selectors, not %r" % (x,))
            else:
                ids = np.ascontiguousarray(x, dtype="int64").ravel()
            rc = lib.fpx_client_remove_ids(h, self._name.encode(), len(ids), _ptr(ids),
                                           ctypes.byref(removed))
        check(rc, h)
        self._ntotal -= int(removed.value)
        return int(removed.value)

    def _check_reconstruct(self):
        if self._idmap == "IDMap":  # FAISS's IndexIDMap keeps no reverse map (IDMap2 does)
            raise RuntimeError("Error in virtual void faiss::Index::reconstruct: reconstruct "
                               "not implemented for this type of index")

    def reconstruct(self, key, x=None):
        self._check_reconstruct()
        out = np.empty(self.d, dtype="float32") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct(h, self._name.encode(), int(key), self.d, _ptr(out)), h)
        return out

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        self._check_reconstruct()
        if ni == -1:
            ni = self.ntotal - n0
        out = np.empty((ni, self.d), dtype="float32") if x is None else x
        h = client()
        check(lib.fpx_client_reconstruct_n(h, self._name.encode(), int(n0), int(ni), self.d,
                                           _ptr(out)), h)
        return out

    def reconstruct_batch(self, key, x=None):
        """FAISS's reconstruct_batch: reconstruct() of each key (an IVF without a direct
        map raises, as FAISS's does)."""
        if self._binary:
            raise AttributeError("'%s' object has no attribute 'reconstruct_batch'"
                                 % type(self).__name__)
        key = np.ascontiguousarray(key, dtype="int64")
        n, = key.shape
        if x is None:
            x = np.empty((n, self.d), dtype="float32")
        else:
            assert x.shape == (n, self.d)
        keys, where = np.unique(key, return_inverse=True)
        found = np.empty((len(keys), self.d), dtype="float32")
        for i, k in enumerate(keys.tolist()):
            self.reconstruct(k, found[i])
        x[:] = found[where]
        return x

    def sa_code_size(self):
        from . import _codec
        return _codec.sa_code_size(self)

    def sa_encode(self, x, codes=None):
        from . import _codec
        return _codec.sa_encode(self, x, codes)

    def sa_decode(self, codes, x=None):
        from . import _codec
        return _codec.sa_decode(self, codes, x)

    def merge_from(self, other, *add_id):
        from . import _merge
        _merge.merge_from(self, other, *add_id)

    def __repr__(self):
        return "<faissproxy %s %r d=%d ntotal=%d>" % (type(self).__name__, self._description,
                                                      self.d, self.ntotal)


class IndexFlat(Index):
    _classes = ("IndexFlat",)

    def __init__(self, d, metric=METRIC_L2):
        super().__init__(d, "Flat", metric)


class IndexFlatL2(IndexFlat):
    def __init__(self, d):
        super().__init__(d, METRIC_L2)


class IndexFlatIP(IndexFlat):
    def __init__(self, d):
        super().__init__(d, METRIC_INNER_PRODUCT)


class ParameterSpace:
    """faiss.ParameterSpace's set_index_parameter(s): on the server, where FAISS's own
    ParameterSpace applies them (through transforms, refinements and IDMaps)."""

    def set_index_parameter(self, index, name, value):
        index._set_param(name, value)
        ivf = extract_index_ivf(index) if name in ("nprobe", "max_codes") else None
        if ivf is not None:  # what the Python objects report follows
            object.__setattr__(ivf, "_" + name, int(value))
        if name in ("efSearch", "efConstruction") and getattr(index, "hnsw", None) is not None:
            object.__setattr__(index.hnsw, "_ef" if name == "efSearch" else "_efc", int(value))

    def set_index_parameters(self, index, description):
        for tok in description.replace(" ", ",").split(","):
            if tok:
                name, _, value = tok.partition("=")
                self.set_index_parameter(index, name, float(value))


class _View:
    """A quantizer or sub-index given to a composed index's constructor. FAISS's composed
    index holds that very object; here the server holds the composition, and this object
    reports what FAISS's would (ntotal, is_trained) from it. What cannot be answered from
    the composed index raises, rather than answer from a stale copy."""

    @property
    def ntotal(self):
        return self._view_ntotal()

    @property
    def is_trained(self):
        return True if self._view_role == "quantizer" else self._view_owner.is_trained

    def _view_ntotal(self):
        owner = self._view_owner
        if self._view_role == "quantizer":
            return owner.nlist if owner.is_trained else self._ntotal
        return owner.ntotal

    def _not_served(self, *args, **kwargs):
        raise RuntimeError("faissproxy: this %s is the %s of a %s held by the server; it is "
                           "served through that index only" % (
                               type(self).__bases__[-1].__name__, self._view_role,
                               type(self._view_owner).__name__))

    train = add = add_with_ids = reset = remove_ids = _not_served

    def _read(name):
        # a quantizer's reads are answered from the IVF's quantizer as the server holds it
        def read(self, *args, **kwargs):
            if self._view_role != "quantizer":
                self._not_served()
            from . import _views
            return getattr(_views.quantizer_view(self._view_owner), name)(*args, **kwargs)
        read.__name__ = name
        return read

    search, assign, range_search, reconstruct, reconstruct_n = map(
        _read, ("search", "assign", "range_search", "reconstruct", "reconstruct_n"))

    def _set_param(self, name, value):
        # FAISS's ParameterSpace reaches a sub-index through its IDMap, and an IVF's
        # quantizer under the "quantizer_" prefix: the composed index takes them so
        prefix = "quantizer_" if self._view_role == "quantizer" else ""
        self._view_owner._set_param(prefix + name, value)


def _make_view(obj, owner, role):
    """Turns obj (a served index given to owner's constructor) into a view of owner; its
    own server index goes, since owner's holds what FAISS's composition would share."""
    cls = type(obj)
    obj.__class__ = type(cls.__name__, (_View, cls), {})
    obj._view_owner, obj._view_role = owner, role
    if obj._name and not obj._keep:
        _lib.pending_deletes.append(obj._name)
    obj._name = None
    return obj


def _settings_of(index):
    """The search settings a program gave a served index: (name, value, FAISS's default)."""
    out = []
    if isinstance(index, _IVF):
        out += [("nprobe", index._nprobe, 1), ("max_codes", index._max_codes, 0)]
    hnsw = getattr(index, "_hnsw", None)
    if hnsw is not None:
        out += [("efSearch", hnsw._ef, 16), ("efConstruction", hnsw._efc, 40)]
    return out


def _served_index(x, what):
    if not isinstance(x, Index) or isinstance(x, _View) or x._binary:
        raise NotImplementedError("faissproxy: %s must be a served float index of its own "
                                  "(not a view of another index), got %r" % (what, x))
    return x


# FAISS's serialization, for the compositions built here: the header of every index
# (write_index_header in FAISS's index_write.cpp), then what each type adds.
def _index_header(d, is_trained, metric):
    # FAISS writes metric_arg past L2 (the constructors set it to 0)
    return struct.pack("<iqqq?i", int(d), 0, 1 << 20, 1 << 20, bool(is_trained), int(metric)) \
        + (struct.pack("<f", 0.0) if int(metric) > 1 else b"")


def _empty_invlists(nlist, code_size):
    # ArrayInvertedLists with no entries: "ilar", nlist, code_size, the sparse format, no sizes
    return b"ilar" + struct.pack("<QQ", nlist, code_size) + b"sprs" + struct.pack("<Q", 0)


def _compose(obj, data, index_type):
    """obj becomes the server index read from FAISS-serialized data."""
    data = np.frombuffer(data, dtype="uint8")
    info = _lib.IndexInfo()
    name = _unique_name()
    h = client()
    check(lib.fpx_client_import_leased(h, name.encode(), index_type.encode(), _ptr(data),
                                       data.nbytes, _lib.LEASE_FROM_ENV, ctypes.byref(info)), h)
    obj._attach(info)


def _recompose(obj, data, index_type):
    """_compose over an object that may hold a server index already: the one it held goes as
    the object would have taken it (deleted, or left in place when kept, the new one kept
    then too)."""
    old, keep = obj._name, obj._keep
    _compose(obj, data, index_type)
    if old and not keep:
        _lib.pending_deletes.append(old)
    elif old:
        obj._keep = False
        obj.keep()



class IndexHNSWFlat(Index):
    _classes = ("IndexHNSWFlat",)

    def __init__(self, d, M=32, metric=METRIC_L2):
        super().__init__(d, "HNSW%d" % M, metric)
        self._hnsw = _HNSWParams(self)

    @property
    def hnsw(self):
        return self._hnsw


def _polysemous_training(index):
    """do_polysemous_training of an IndexPQ or IndexIVFPQ: the factory's PQ term without
    "np" trains polysemous codes, the constructors' ("...np") do not."""
    m = None
    for m in re.finditer(r"PQ\d+(?:x\d+)?(np)?(?=,|$)", index._description):
        pass
    if m is None:
        raise NotImplementedError("faissproxy: do_polysemous_training of an index read from "
                                  "bytes is not known here")
    return m.group(1) is None


class _Polysemous:
    """do_polysemous_training and polysemous_training of IndexPQ and IndexIVFPQ: once the
    program writes one, train() runs FAISS's training in local faiss with its settings
    (_polysemous.py; the class's _poly_train)."""

    _poly_local, _poly_flag, _poly_training = False, None, None

    @property
    def do_polysemous_training(self):
        if self._poly_flag is not None:
            return self._poly_flag
        return _polysemous_training(self)

    @do_polysemous_training.setter
    def do_polysemous_training(self, v):
        self._poly_flag, self._poly_local = bool(v), True

    @property
    def polysemous_training(self):
        from . import _polysemous
        return _polysemous.training_object(self)

    @polysemous_training.setter
    def polysemous_training(self, v):
        from . import _polysemous
        _polysemous.set_training_object(self, v)

    def train(self, x):
        if not self._poly_local:
            return super().train(x)
        x, n = _rows(x, self.d)
        self._poly_train(x, n)


class IndexPQ(_Polysemous, Index):
    _classes = ("IndexPQ",)
    # FAISS's IndexPQ::Search_type_t
    ST_PQ, ST_HE, ST_generalized_HE, ST_SDC, ST_polysemous, ST_polysemous_generalize = range(6)

    def __init__(self, d, M, nbits, metric=METRIC_L2):
        # faiss's constructor makes a plain (non-polysemous) PQ, as "PQ<M>x<nbits>np"
        super().__init__(d, "PQ%dx%dnp" % (M, nbits), metric)

    def _poly_train(self, x, n):
        from . import _polysemous
        _polysemous.train(self, x, n)

    # FAISS's members, kept by the server's index (and its write_index): read back from it,
    # since ParameterSpace's "ht" sets both
    @property
    def search_type(self):
        return int(_index_meta(self._name)["params"]["search_type"])

    @search_type.setter
    def search_type(self, v):
        self._set_param("search_type", int(v))

    @property
    def polysemous_ht(self):
        return int(_index_meta(self._name)["params"]["polysemous_ht"])

    @polysemous_ht.setter
    def polysemous_ht(self, v):
        self._set_param("polysemous_ht", int(v))


class ScalarQuantizer:
    QT_8bit, QT_4bit, QT_8bit_uniform, QT_4bit_uniform, QT_fp16, QT_8bit_direct, QT_6bit = \
        range(7)


_SQ_NAMES = {0: "SQ8", 1: "SQ4", 2: "SQ8_uniform", 3: "SQ4_uniform", 4: "SQfp16",
             5: "SQ8_direct", 6: "SQ6"}


class IndexScalarQuantizer(Index):
    _classes = ("IndexScalarQuantizer",)

    def __init__(self, d, qtype=ScalarQuantizer.QT_8bit, metric=METRIC_L2):
        super().__init__(d, _SQ_NAMES[qtype], metric)


class IndexIDMap(Index):
    _idmap = "IDMap"

    def __init__(self, index):
        self._name, self._keep, self._verbose = None, False, False
        _served_index(index, "the sub-index")
        assert index.ntotal == 0, "index must be empty on input"
        description = "%s,%s" % (self._idmap, index._description)
        if index.is_trained or index._description == "imported":
            # FAISS's wrapper around this very sub-index, its training and settings kept:
            # IndexIDMap's serialization is a header, the sub-index and its (empty) ids.
            fourcc = b"IxM2" if self._idmap == "IDMap2" else b"IxMp"
            body = fourcc + _index_header(index.d, index.is_trained, index.metric_type)
            body += serialize_index(index).tobytes() + struct.pack("<Q", 0)
            _compose(self, body, description)
        else:
            # untrained, from the factory: the factory's wrapper, so that training runs
            # with the constructor's settings, then the settings given to the sub-index
            Index.__init__(self, index.d, description, index.metric_type)
            for name, value, default in _settings_of(index):
                if value != default:
                    self._set_param(name, value)
        self._classes = index._classes
        self._sub = _make_view(index, self, "sub-index")

    @property
    def index(self):
        sub = getattr(self, "_sub", None)
        if sub is None:
            raise NotImplementedError("faissproxy: the sub-index of an IDMap made by "
                                      "index_factory or read from bytes is not served")
        return sub


class IndexIDMap2(IndexIDMap):
    _idmap = "IDMap2"

    def check_consistency(self):
        from . import _merge
        _merge.check_consistency(self)


# ---- objects for indexes described by the server (index_factory, read_index) -------------

_MADE = {}


def _class_for(classes, idmap, binary):
    """The Python class FAISS's downcast would give an index of these FAISS classes: its
    name, and the attributes (nprobe, hnsw) that reach the server."""
    top = classes[0] if classes else ("IndexBinary" if binary else "Index")
    if idmap:
        top = "IndexBinary" + idmap if binary else "Index" + idmap
    served = _served_class(top, binary)
    if served is not None:
        return served  # FAISS's downcast gives faiss.IndexIVFFlat, ...: so does this
    key = (top, binary, tuple(classes), idmap)
    cls = _MADE.get(key)
    if cls is None:
        bases = (IndexBinary,) if binary else (Index,)
        if not idmap and (top.startswith("IndexIVF") or top.startswith("IndexBinaryIVF")):
            bases = (_IVF,) + bases
        if not idmap and top in ("IndexIVFPQ", "IndexIVFScalarQuantizer"):
            bases = (_Residual,) + bases
        attrs = {"_classes": tuple(classes)}
        if not idmap and top in ("IndexRefine", "IndexRefineFlat"):
            from . import _views
            bases = (_views._Refine,) + bases  # k_factor
        if not idmap and top in ("IndexRowwiseMinMax", "IndexRowwiseMinMaxFP16"):
            from . import _more
            bases = (_more._RowwiseMinMax,) + bases  # train_inplace
        if not idmap and binary and top in ("IndexBinaryHash", "IndexBinaryMultiHash"):
            from . import _binary  # b, nhash, nflip
            bases = (_binary._Hash,) + bases
            if top == "IndexBinaryMultiHash":
                attrs["nhash"] = _binary.IndexBinaryMultiHash.nhash
        if not idmap and not binary:  # fast-scan and additive-quantizer attributes
            from . import _fastscan
            bases = _fastscan.specialize(top, bases, attrs)
        cls = type(top, bases, attrs)
        if idmap == "IDMap2":
            cls.check_consistency = IndexIDMap2.check_consistency
        if not idmap and (top.startswith("IndexHNSW") or top.startswith("IndexBinaryHNSW")):
            cls.hnsw = property(lambda self: self._hnsw)
        _MADE[key] = cls
    return cls


# The classes of this package that FAISS's downcast names, for the objects index_factory and
# read_index give (index.__class__ is faiss.IndexIVFFlat there, as in FAISS): each has the
# attributes _class_for would give an object of that FAISS class.
_SERVED_CLASSES = {
    False: ("IndexFlat", "IndexIVFFlat", "IndexIVFPQ", "IndexHNSWFlat", "IndexPQ",
            "IndexScalarQuantizer", "IndexIVFScalarQuantizer", "IndexIDMap", "IndexIDMap2",
            "IndexRefine", "IndexRefineFlat", "IndexPQFastScan", "IndexIVFPQFastScan",
            "IndexIVFResidualQuantizer", "IndexPreTransform", "IndexIVFSpectralHash"),
    True: ("IndexBinaryFlat", "IndexBinaryIVF", "IndexBinaryFromFloat", "IndexBinaryIDMap",
           "IndexBinaryIDMap2"),
}


def _served_class(top, binary):
    if top not in _SERVED_CLASSES[binary]:
        return None
    from . import _composed, _fastscan, _fromfloat, _more, _pretransform, _spectral, _views
    for module in (globals(), vars(_views), vars(_composed), vars(_fastscan),
                   vars(_pretransform), vars(_spectral), vars(_fromfloat), vars(_more)):
        if top in module:
            return module[top]
    return None


def _described(info, binary, nprobe=1, hnsw=None, data=None):
    """The object for a server index whose info (an IndexInfo) was just returned (data: the
    FAISS bytes it was read from)."""
    meta = _index_meta(info.index_id.decode())
    description = info.index_type.decode()
    classes = list(meta.get("faiss_classes") or [])
    idmap = _has_idmap(description)
    cls = _class_for(classes, idmap, binary)
    ix = object.__new__(cls)
    ix._keep, ix._verbose = False, False
    Index._attach(ix, info)
    ix._idmap = idmap
    ix._classes = tuple(classes)
    if isinstance(ix, _IVF):
        ix._nlist = _nlist_of(description)
        ix._nprobe = nprobe
    if isinstance(ix, _Residual) and description == "imported":
        ix._by_residual = None  # the bytes' value, not read here
    if "nflip" in (meta.get("params") or {}):
        ix._nflip = int(meta["params"]["nflip"])  # a hash index's, as its bytes carried
        if data is not None:
            from . import _binary
            ix._read = _binary.read_params(data)
    if "hnsw" in cls.__dict__:
        ix._hnsw = _HNSWParams(ix, *(hnsw or (16, 40)))
    if not idmap and not binary:
        from . import _fastscan
        _fastscan.describe(ix, description, data)
    return ix


def _create(d, description, metric, binary):
    info = _lib.IndexInfo()
    h = client()
    name = _unique_name()
    from . import _metrics
    if not binary and _metrics.is_extra(metric):  # L1, Linf, Lp, ...
        info = _metrics.create(name, d, description, metric, 0.0)
    else:
        check(lib.fpx_client_create_index_leased(
            h, name.encode(), int(d), description.encode(),
            b"Hamming" if binary else _metric_name(metric), _lib.LEASE_FROM_ENV,
            ctypes.byref(info)), h)
    try:
        return _described(info, binary)
    except BaseException:
        _lib.pending_deletes.append(name)
        raise


def index_factory(d, description, metric=METRIC_L2):
    return _create(d, description, metric, False)


def index_binary_factory(d, description):
    return _create(d, description, METRIC_L2, True)


def downcast_index(index):
    return index


downcast_IndexBinary = downcast_index


# The IVF family, defined over Index in its own module (see there).
from ._ivf import (  # noqa: E402,F401
    _IVF, IndexIVFFlat, IndexIVFPQ, _IVFView, _Residual, extract_index_ivf)
# Binary indexes and serialization, defined over Index in their own modules.
from ._binary import IndexBinary, IndexBinaryFlat  # noqa: E402,F401
from ._io import (  # noqa: E402,F401
    _import, deserialize_index, deserialize_index_binary, read_index, read_index_binary,
    serialize_index, serialize_index_binary, write_index, write_index_binary)
