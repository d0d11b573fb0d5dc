"""faissproxy: FAISS's Python API, served by a faiss-proxy server.

    import faissproxy as faiss          # the one change
    index = faiss.IndexFlatL2(64)
    index.add(xb)
    D, I = index.search(xq, 10)

The server comes from faissproxy.configure(server=..., api_key=..., tenant_id=...,
server_key=...) or from FAISS_PROXY_SERVER / FAISS_PROXY_API_KEY / FAISS_PROXY_TENANT /
FAISS_PROXY_SERVER_KEY (a CurveZMQ server's public key). With no server configured and
the real `faiss` module installed, the FAISS names resolve to local faiss, so the same code
runs in both places. Beyond FAISS's API, connect() gives named persistent indexes with string
keys, metadata and filtered search (the seed's vector-database features).
"""
import importlib

import numpy as np

from . import _lib

__version__ = "0.1.0"

METRIC_INNER_PRODUCT = 0
METRIC_L2 = 1
# FAISS's extra metrics, served on flat indexes and HNSW over flat storage (_metrics)
METRIC_L1 = 2
METRIC_Linf = 3
METRIC_Lp = 4
METRIC_Canberra = 20
METRIC_BrayCurtis = 21
METRIC_JensenShannon = 22

# The names of FAISS's API this package serves from the server.
_REMOTE = (
    "Index", "IndexFlat", "IndexFlatL2", "IndexFlatIP", "IndexIVFFlat", "IndexIVFPQ",
    "IndexHNSWFlat", "IndexPQ", "IndexScalarQuantizer", "ScalarQuantizer", "IndexIDMap",
    "IndexIDMap2", "IndexBinary", "IndexBinaryFlat",
    "index_factory", "index_binary_factory", "write_index", "read_index", "serialize_index",
    "deserialize_index", "write_index_binary", "read_index_binary", "serialize_index_binary",
    "deserialize_index_binary", "extract_index_ivf", "ParameterSpace", "downcast_index",
    "downcast_IndexBinary",
)
# ... and from _params: pointers, id selectors and search parameters.
_PARAMS = (
    "IDSelector", "IDSelectorBatch", "IDSelectorRange", "IDSelectorArray", "IDSelectorBitmap",
    "IDSelectorNot", "IDSelectorAll", "IDSelectorAnd", "IDSelectorOr", "IDSelectorXOr",
    "SearchParameters", "SearchParametersIVF", "SearchParametersHNSW", "SearchParametersPQ",
    "IVFSearchParameters", "swig_ptr",
)
# ... and from _views: the parts of served indexes, and indexes made from whole ones.
_VIEWS = ("clone_index", "IndexBinaryIVF", "DirectMap", "IndexRefine", "IndexRefineFlat")
# ... and from _composed: more IVF indexes composed over a served quantizer.
_COMPOSED = ("IndexIVFScalarQuantizer",)
# ... and from _metrics: FAISS's HNSW over a given flat storage (of any metric).
_METRICS = ("IndexHNSW",)
# ... and from _binary: more binary index types.
_BINARY = ("IndexBinaryHNSW", "IndexBinaryHash", "IndexBinaryMultiHash")
# ... and IndexBinaryFromFloat over a served float index.
_FROMFLOAT = ("IndexBinaryFromFloat",)
# ... and these from _more.
_MORE = ("IndexBinaryIDMap", "IndexBinaryIDMap2", "IndexIVFFlatDedup")
# ... and these from its fast-scan and additive-quantizer module.
_FASTSCAN = (
    "IndexPQFastScan", "IndexIVFPQFastScan", "IndexIVFResidualQuantizer",
    "IndexAdditiveQuantizerFastScan", "IndexIVFAdditiveQuantizerFastScan",
)
# ... and IndexPreTransform over local faiss's transforms.
_PRETRANSFORM = ("IndexPreTransform",)
# ... and IndexIVFSpectralHash.
_SPECTRAL = ("IndexIVFSpectralHash",)
# ... and FAISS's IVFlib searches reporting statistics, from _stats.
_STATS = ("search_with_parameters", "range_search_with_parameters")
# ... and FAISS's shards and replicas over served indexes, run in this process.
_SHARDS = ("IndexShards", "IndexReplicas", "IndexBinaryShards", "IndexBinaryReplicas")


def configure(server=None, api_key=None, tenant_id=None, timeout=None, server_key=None,
              durability=None):
    """Sets the server (e.g. "tcp://host:5555"), key, tenant, reply timeout (seconds),
    the server's CurveZMQ public key (Z85 text or the path of its .pub file; "" for a plain
    connection) and the durability of writes ("acked", "synced", or "" for the server's
    own; docs/cluster.md, "Durability") for every index made from now on, in every
    thread."""
    if durability is not None and durability not in ("", "acked", "synced"):
        raise ValueError('faissproxy: durability must be "acked", "synced" or ""')
    with _lib.Config.lock:
        if server is not None:
            _lib.Config.server = server
        if api_key is not None:
            _lib.Config.api_key = api_key
        if tenant_id is not None:
            _lib.Config.tenant_id = tenant_id
        if timeout is not None:
            _lib.Config.timeout_ms = int(timeout * 1000)
        if server_key is not None:
            _lib.Config.server_key = server_key
        if durability is not None:
            _lib.Config.durability = durability
        _lib.Config.generation += 1


def using_server():
    """True when FAISS's names resolve to server indexes (a server is configured, or the
    real faiss module is not installed)."""
    return _lib.configured_server() is not None or _local_faiss() is None


def _local_faiss():
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def __getattr__(name):
    """FAISS's names: the server's classes when a server is configured, else local faiss."""
    if _lib.configured_server() is None:
        local = _local_faiss()
        if local is not None and hasattr(local, name):
            return getattr(local, name)
    if name in _REMOTE:
        from . import _remote
        return getattr(_remote, name)
    if name in _PARAMS:
        from . import _params
        return getattr(_params, name)
    if name in _VIEWS:
        from . import _views
        return getattr(_views, name)
    if name in _COMPOSED:
        from . import _composed
        return getattr(_composed, name)
    if name in _FASTSCAN:
        from . import _fastscan
        return getattr(_fastscan, name)
    if name in _METRICS:
        from . import _metrics
        return getattr(_metrics, name)
    if name in _BINARY:
        from . import _binary
        return getattr(_binary, name)
    if name in _PRETRANSFORM:
        from . import _pretransform
        return getattr(_pretransform, name)
    if name in _SPECTRAL:
        from . import _spectral
        return getattr(_spectral, name)
    if name in _STATS:
        from . import _stats
        return getattr(_stats, name)
    if name in _MORE:
        from . import _more
        return getattr(_more, name)
    if name in _FROMFLOAT:
        from . import _fromfloat
        return getattr(_fromfloat, name)
    if name in _SHARDS:
        from . import _shards
        return getattr(_shards, name)
    if name == "Clustering" and _local_faiss() is not None:
        from . import _clustering  # local faiss's, taking served flat indexes
        return _clustering.served_class(_local_faiss())
    if name == "cvar":
        from . import _cvar
        local = _local_faiss()
        return _cvar.Cvar(local.cvar if local is not None else None)
    local = _local_faiss()
    if local is not None and hasattr(local, name):
        from . import _unserved  # classes over indexes: refuse served ones by name
        return _unserved.wrapped(name, getattr(local, name))  # pure-local helpers
    raise AttributeError("module 'faissproxy' has no attribute %r" % name)


# ---- pure-local helpers, as faiss has them --------------------------------------------------


def normalize_L2(x):
    """Normalizes the rows of a float32 array in place (faiss.normalize_L2)."""
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
    norms = np.sqrt((x.astype("float64") ** 2).sum(axis=1, keepdims=True))
    norms[norms == 0] = 1
    x /= norms.astype("float32")


def knn(xq, xb, k, metric=METRIC_L2):
    """Exact k nearest neighbours of xq in xb, computed locally (faiss.knn)."""
    local = _local_faiss()
    if local is not None:
        return local.knn(xq, xb, k, metric=metric)
    xq = np.ascontiguousarray(xq, dtype="float32")
    xb = np.ascontiguousarray(xb, dtype="float32")
    if metric == METRIC_INNER_PRODUCT:
        S = xq @ xb.T
        I = np.argsort(-S, axis=1, kind="stable")[:, :k]
    else:
        S = (xq ** 2).sum(1)[:, None] - 2 * xq @ xb.T + (xb ** 2).sum(1)[None, :]
        I = np.argsort(S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, I, axis=1).astype("float32"), I.astype("int64")


# ---- the vector-database API ---------------------------------------------------------------


def connect(server=None, api_key=None, tenant_id=None, server_key=None, durability=None):
    """A connection for named, persistent indexes with keys and metadata."""
    from ._db import Connection
    configure(server=server, api_key=api_key, tenant_id=tenant_id, server_key=server_key,
              durability=durability)
    return Connection()
