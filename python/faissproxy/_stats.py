"""FAISS's search statistics (faiss.cvar.indexIVF_stats, ...) for served indexes.

FAISS's searches add to global counters (how many queries, lists, distances, heap
updates, ...) that a program reads after a search. A served index searches on the server,
so the counts come back in the search's reply (the search request's "stats" flag,
docs/protocol.md) and are added here into local faiss's own objects: reset(), reads and
the searches of local indexes all work on the same numbers, as in FAISS.

Asking costs the server something (a search with statistics runs alone among the searches
that can count), so searches ask only once the program has read one of the statistics
objects. A search the server cannot count as FAISS would have (deleted vectors not yet
compacted away, a metadata filter, a sharded search, ...) leaves every statistics object
unreadable until its reset(): reading a counter then raises, rather than give a number
FAISS would not give.
"""
import threading

import numpy as np

# faiss.cvar names of the counters the server reports, each with FAISS 1.7.3's fields.
GROUPS = ("indexIVF_stats", "indexIVFPQ_stats", "indexPQ_stats", "indexBinaryHash_stats",
          "hnsw_stats")

_lock = threading.Lock()
_wanted = False      # the program has read a statistics object: searches ask for counts
_tainted = set()     # objects holding a search whose counts are not FAISS's
_tls = threading.local()  # .capture: a list receiving the reply's counts instead


def touch():
    """From now on, served searches ask for their counts."""
    global _wanted
    _wanted = True


def wanted():
    """Whether a served search must ask for its counts."""
    return _wanted or getattr(_tls, "capture", None) is not None


def ask(header):
    """Sets the request's stats flag when counts are wanted."""
    if wanted():
        header["stats"] = True


def account(reply_header):
    """Adds what a served search added to FAISS's statistics (its reply's "stats") into
    local faiss's objects, or hands it to a capture (search_with_parameters)."""
    cap = getattr(_tls, "capture", None)
    stats = reply_header.get("stats")
    if cap is not None:
        cap.append(stats)
        return
    if not _wanted:
        return
    from . import _local_faiss
    local = _local_faiss()
    with _lock:
        if not isinstance(stats, dict) or not stats.get("exact"):
            _tainted.update(GROUPS)
            return
        if local is None:
            return
        _add(local.cvar, stats, GROUPS)


def _add(cvar, stats, groups):
    for g in groups:
        obj = getattr(cvar, g, None)
        for field, v in (stats.get(g) or {}).items():
            if obj is not None and v and hasattr(obj, field):
                setattr(obj, field, getattr(obj, field) + v)


class StatsView:
    """A statistics object of local faiss (faiss.cvar.indexIVF_stats, ...), whose counters
    raise on reading while they hold a search the server could not count as FAISS."""

    def __init__(self, name, obj):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_obj", obj)

    def __getattr__(self, attr):
        value = getattr(self.__dict__["_obj"], attr)
        if callable(value) or attr.startswith("_") or attr in ("this", "thisown"):
            return value
        name = self.__dict__["_name"]
        if name in _tainted:
            raise NotImplementedError(
                "faissproxy: faiss.cvar.%s.%s is not served since a search the server could "
                "not count as FAISS would (deleted vectors not yet compacted away, a filter, "
                "a sharded search, an empty index, a server too busy to count it alone "
                "(--search-stats-wait-ms), ...): call reset() first" % (name, attr))
        return value

    def __setattr__(self, attr, value):
        setattr(self.__dict__["_obj"], attr, value)

    def reset(self):
        with _lock:
            _tainted.discard(self.__dict__["_name"])
            self.__dict__["_obj"].reset()

    def __repr__(self):
        return "<faissproxy %s over %r>" % (self.__dict__["_name"], self.__dict__["_obj"])


def view(name, local_cvar):
    """faiss.cvar.<name>: the view over local faiss's object; searches ask for counts."""
    touch()
    return StatsView(name, getattr(local_cvar, name))


# ---- faiss.search_with_parameters and range_search_with_parameters ------------------------


def _captured(call):
    """Runs call() with the served search's counts captured; returns (result, counts)."""
    prev = getattr(_tls, "capture", None)
    _tls.capture = []
    try:
        result = call()
        got = _tls.capture
    finally:
        _tls.capture = prev
    return result, got


def _params_of(index, params):
    from . import _params, _remote
    if params:
        return params
    params = _params.IVFSearchParameters()
    ivf = _remote.extract_index_ivf(index)
    params.nprobe = ivf.nprobe
    params.max_codes = ivf.max_codes
    return params


def _ivflib_stats(index, params, got):
    """FAISS's IVFlib statistics of one served search: ndis is the size of the probed
    lists (FAISS's count_ndis), which the IVF's own count equals when no max_codes cuts
    the scan short and no selector bounds the lists."""
    if int(getattr(params, "max_codes", 0) or 0) > 0 or getattr(params, "sel", None) is not None:
        raise NotImplementedError("faissproxy: output_stats of search_with_parameters with "
                                  "max_codes or a selector is not served")
    if len(got) != 1 or not isinstance(got[0], dict) or not got[0].get("exact"):
        raise NotImplementedError("faissproxy: output_stats is not served for this search "
                                  "(the server could not count it as FAISS would)")
    ivf = got[0]["indexIVF_stats"]
    # FAISS's IVFlib search leaves indexIVF_stats alone; the quantizer's own counters
    # (an HNSW quantizer's) still count, as in FAISS.
    _account_others(got[0])
    return {
        "ndis": np.uint64(ivf["ndis"]),
        "pre_transform_ms": 0.0,
        "coarse_quantizer_ms": float(ivf["quantization_time"]),
        "invlist_scan_ms": float(ivf["search_time"] - ivf["quantization_time"]),
    }


def _account_others(stats):
    from . import _local_faiss
    local = _local_faiss()
    if not _wanted or local is None:
        return
    with _lock:
        _add(local.cvar, stats, [g for g in GROUPS if g != "indexIVF_stats"])


def _local_call(index, name, *args, **kw):
    from . import _local_faiss
    local = _local_faiss()
    if local is None:
        raise TypeError("faissproxy: %s takes a served index" % name)
    return getattr(local, name)(index, *args, **kw)


def _served(index):
    from . import _remote
    return isinstance(index, _remote.Index)


def search_with_parameters(index, x, k, params=None, output_stats=False):
    """faiss.search_with_parameters on a served IVF index (FAISS's IVFlib): the search with
    params (the index's nprobe and max_codes by default), and with output_stats its ndis
    and times."""
    if not _served(index):
        return _local_call(index, "search_with_parameters", x, k, params=params,
                           output_stats=output_stats)
    x = np.ascontiguousarray(x, dtype="float32")
    assert x.shape[1] == index.d
    params = _params_of(index, params)
    if not output_stats:
        return index.search(x, k, params=params)
    (D, I), got = _captured(lambda: index.search(x, k, params=params))
    return D, I, _ivflib_stats(index, params, got)


def range_search_with_parameters(index, x, radius, params=None, output_stats=False):
    """faiss.range_search_with_parameters on a served IVF index, as search_with_parameters."""
    if not _served(index):
        return _local_call(index, "range_search_with_parameters", x, radius, params=params,
                           output_stats=output_stats)
    x = np.ascontiguousarray(x, dtype="float32")
    assert x.shape[1] == index.d
    params = _params_of(index, params)
    if not output_stats:
        return index.range_search(x, radius, params=params)
    (L, D, I), got = _captured(lambda: index.range_search(x, radius, params=params))
    return L, D, I, _ivflib_stats(index, params, got)


# ---- binary searches asking for counts (the typed calls do not carry the flag) -------------


def search_binary(index, x, n, k, D, I):
    """A served binary index's search, with its counts."""
    from . import _remote
    header = {"operation": "search", "index_id": index._name, "k": k, "dtype": "uint8",
              "vector_shape": [n, index.d // 8]}
    ask(header)
    rh, data, _ = _remote._call(header, x.tobytes())
    account(rh)
    D[:] = np.frombuffer(data, "int32", n * k).reshape(n, k)
    I[:] = np.frombuffer(data, "int64", n * k, offset=4 * n * k).reshape(n, k)
    return D, I


def range_search_binary(index, x, n, radius):
    """A served binary index's range search, with its counts."""
    from . import _remote
    header = {"operation": "range_search", "index_id": index._name, "radius": radius,
              "dtype": "uint8", "vector_shape": [n, index.d // 8]}
    ask(header)
    rh, data, _ = _remote._call(header, x.tobytes())
    account(rh)
    nres = int(rh["nres"])
    L = np.frombuffer(data, "int64", n + 1).astype("uint64")
    I = np.frombuffer(data, "int64", nres, offset=8 * (n + 1)).copy()
    D = np.frombuffer(data, "float32", nres, offset=8 * (n + 1 + nres)).astype("int32")
    return L, D, I
