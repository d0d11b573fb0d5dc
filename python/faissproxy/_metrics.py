"""FAISS's extra metrics on served indexes: METRIC_L1, METRIC_Linf, METRIC_Lp (its p in
`metric_arg`), METRIC_Canberra, METRIC_BrayCurtis and METRIC_JensenShannon, which FAISS 1.7.3
computes in its flat index and in an HNSW over one (the server refuses them elsewhere, as
FAISS computes them nowhere else). Also IndexHNSW(storage), FAISS's HNSW over a given flat
index, which is how a FAISS program builds an HNSW of these metrics.

The library's typed create call knows no metric_arg (and its info struct holds metric names
of up to 7 characters), so indexes of these metrics are created with a request built here."""

from . import (METRIC_BrayCurtis, METRIC_Canberra, METRIC_JensenShannon, METRIC_L1, METRIC_Linf,
               METRIC_Lp, _lib)
from ._lib import check, client, lib

# FAISS's metric numbers and the protocol's names (docs/protocol.md, create_index)
NAMES = {0: "IP", 1: "L2", METRIC_L1: "L1", METRIC_Linf: "Linf", METRIC_Lp: "Lp",
         METRIC_Canberra: "Canberra", METRIC_BrayCurtis: "BrayCurtis",
         METRIC_JensenShannon: "JensenShannon"}
# the library copies a name into 8 bytes: its first 7 characters tell it
_BY_PREFIX = {name[:7]: number for number, name in NAMES.items()}


def is_extra(metric):
    return metric not in (0, 1)


def name_of(metric):
    try:
        return NAMES[int(metric)]
    except (KeyError, TypeError, ValueError):
        raise RuntimeError("faissproxy: metric %r is not one of FAISS 1.7.3's metric types"
                           % (metric,)) from None


def number_of(info_metric):
    """FAISS's metric number of an info struct's (possibly cut) metric name."""
    name = info_metric.decode() if isinstance(info_metric, bytes) else info_metric
    return _BY_PREFIX.get(name[:7], 1)


def create(name, d, description, metric, metric_arg):
    """Creates server index `name` (leased as the typed call leases) with an extra metric;
    returns its IndexInfo."""
    from ._remote import _call
    lease = _lib.lease_seconds()
    header = {"operation": "create_index", "index_id": name, "dimension": int(d),
              "index_type": description, "metric": name_of(metric),
              "metric_arg": float(metric_arg)}
    if lease > 0:
        header["lease_seconds"] = lease
    _, _, meta = _call(header)
    if lease > 0:  # the library renews the leases it knows of: tell it of this one
        h = client()
        check(lib.fpx_client_set_lease(h, name.encode(), lease), h)
    info = _lib.IndexInfo()
    info.index_id = meta["index_id"].encode()
    info.index_type = meta["index_type"].encode()[:255]
    info.metric = meta["metric"].encode()[:7]
    info.dimension = int(meta["dimension"])
    info.ntotal = int(meta["ntotal"])
    info.is_trained = 1 if meta.get("is_trained") else 0
    return info


def metric_arg_of(index):
    """index.metric_arg: what the server's index holds (FAISS keeps it, and serializes it,
    with the extra metrics only: 0 with L2 and inner product)."""
    arg = getattr(index, "_metric_arg", None)
    if arg is None:
        arg = 0.0
        if is_extra(index.metric_type) and index._name:
            from ._remote import _index_meta
            arg = float(_index_meta(index._name).get("metric_arg", 0.0))
        object.__setattr__(index, "_metric_arg", arg)
    return arg


def set_metric_arg(index, value):
    """index.metric_arg = value: served on a flat index of an extra metric that holds no
    vectors yet (its server index is made again with it, as FAISS's search would then use
    it); anything else raises, naming what is not served."""
    from ._remote import Index, _View, _unique_name
    value = float(value)
    what = type(index).__name__
    if isinstance(index, _View):
        raise NotImplementedError("faissproxy: setting metric_arg of the %s of another index "
                                  "is not served (set it before composing)"
                                  % index._view_role)
    if not is_extra(index.metric_type):
        raise NotImplementedError("faissproxy: setting %s.metric_arg is not served with "
                                  "METRIC_L2 or METRIC_INNER_PRODUCT (FAISS neither uses nor "
                                  "keeps it there)" % what)
    if tuple(index._classes) != ("IndexFlat",) or index._idmap:
        raise NotImplementedError("faissproxy: setting %s.metric_arg is served on IndexFlat "
                                  "only (FAISS's IndexHNSW does not use its own; give it a "
                                  "flat storage with metric_arg set)" % what)
    if index.ntotal:
        raise NotImplementedError("faissproxy: setting metric_arg of an index holding vectors "
                                  "is not served: set it before adding")
    if value == metric_arg_of(index):
        return
    name = _unique_name()
    info = create(name, index.d, index._description, index.metric_type, value)
    old = index._name
    Index._attach(index, info)
    object.__setattr__(index, "_metric_arg", value)
    if old and not index._keep:
        _lib.pending_deletes.append(old)
    elif old:  # a kept index keeps its name on the server: the new one is kept too
        index._keep = False
        index.keep()


def hnsw_over(index, storage, M):
    """IndexHNSW(storage, M): FAISS's HNSW over an empty served flat index of any metric,
    built by the server as the factory's "HNSW<M>" of that metric (the same index), the flat
    index becoming a view of its storage."""
    from ._remote import Index, _HNSWParams, _make_view, _served_index
    _served_index(storage, "the HNSW storage")
    if tuple(storage._classes) != ("IndexFlat",) or storage._idmap:
        raise NotImplementedError("faissproxy: IndexHNSW is served over a flat storage index "
                                  "(IndexFlat, IndexFlatL2, IndexFlatIP), got %r" % (storage,))
    if storage.ntotal:
        raise NotImplementedError("faissproxy: IndexHNSW over a storage that holds vectors is "
                                  "not served (the graph would not hold them)")
    M = int(M)
    index._name, index._keep, index._verbose = None, False, False
    index._metric = storage.metric_type
    if is_extra(storage.metric_type):
        arg = metric_arg_of(storage)
        index._d, index._description = storage.d, "HNSW%d" % M
        index._attach(create(_remote_name(), storage.d, "HNSW%d" % M, storage.metric_type,
                             arg))
        index._metric_arg = 0.0  # FAISS's IndexHNSW keeps its own at 0
    else:
        Index.__init__(index, storage.d, "HNSW%d" % M, storage.metric_type)
    index._hnsw = _HNSWParams(index)
    index._storage = _make_view(storage, index, "storage")


def _remote_name():
    from ._remote import _unique_name
    return _unique_name()


def _index_hnsw():
    from ._remote import Index

    class IndexHNSW(Index):
        """FAISS's IndexHNSW(storage[, M]): an HNSW graph over a flat storage index."""

        _classes = ("IndexHNSW",)

        def __init__(self, storage, M=32):
            hnsw_over(self, storage, M)

        @property
        def hnsw(self):
            return self._hnsw

        @property
        def storage(self):
            return self._storage

    return IndexHNSW


def __getattr__(name):
    # built on first use: _remote imports this module lazily, and this class needs _remote
    if name == "IndexHNSW":
        cls = _index_hnsw()
        globals()["IndexHNSW"] = cls
        return cls
    raise AttributeError("module 'faissproxy._metrics' has no attribute %r" % name)
