"""IVF indexes composed over a served quantizer, beyond _remote's IndexIVFFlat and
IndexIVFPQ: IndexIVFScalarQuantizer, and the quantizer of another IVF given to a constructor
(FAISS's indexes would share it; here the new index gets FAISS's IVF over the same
centroids, which FAISS's training would not change either: an IVF whose quantizer holds
nlist centroids does not re-cluster them)."""
import struct

from . import _params, _remote, _views
from ._remote import (METRIC_L2, Index, _Residual, _IVF, _compose, _empty_invlists,
                      _index_header, _make_view, _served_index)

# FAISS's ScalarQuantizer code sizes per qtype (ScalarQuantizer::set_derived_sizes)
_SQ_CODE_SIZE = {0: lambda d: d, 1: lambda d: (d + 1) // 2, 2: lambda d: d,
                 3: lambda d: (d + 1) // 2, 4: lambda d: 2 * d, 5: lambda d: d,
                 6: lambda d: (d * 6 + 7) // 8}


_FLOAT_METRICS = (_remote.METRIC_INNER_PRODUCT, METRIC_L2)


def _metrics_compose(quantizer_metric, metric):
    """May an IVF of metric be composed over a quantizer of quantizer_metric: the same one, or
    L2 and inner product (FAISS's k-means then assigns with the quantizer's)?"""
    return quantizer_metric == metric or (quantizer_metric in _FLOAT_METRICS and
                                          metric in _FLOAT_METRICS)


def quantizer_centroids(quantizer, d, nlist, metric, what):
    """None for an empty served flat quantizer of its own of the index's metric, or FAISS's
    serialization of the quantizer: an empty flat one of the other metric (L2 and inner
    product; FAISS's k-means then assigns with the quantizer's metric), or one holding nlist
    centroids (a served flat index, or the quantizer of a trained served IVF); anything else
    raises NotImplementedError naming it."""
    if _views.is_quantizer(quantizer):
        owner = _views._quantizer_owner(quantizer)
        if owner._binary or not owner.is_trained or quantizer.d != d or \
                quantizer.ntotal != nlist or not _metrics_compose(quantizer.metric_type, metric):
            raise NotImplementedError(
                "faissproxy: %s over the quantizer of another IVF index is served when that "
                "index is trained, float, with %d lists, of dimension %d and this metric (or "
                "L2 and inner product)" % (what, nlist, d))
        return _views.serialized_quantizer(quantizer)
    _served_index(quantizer, "the quantizer")
    if quantizer.d != d or not _metrics_compose(quantizer.metric_type, metric) or \
            _params._family(quantizer._classes) != "flat" or quantizer._idmap:
        raise NotImplementedError("faissproxy: %s is served over a flat quantizer of the same "
                                  "dimension and metric (or L2 and inner product)" % what)
    if quantizer.ntotal == 0 and quantizer.metric_type == metric:
        return None
    if quantizer.ntotal == 0:
        return _remote.serialize_index(quantizer).tobytes()
    if quantizer.ntotal != nlist:
        raise NotImplementedError("faissproxy: an %s over a quantizer holding %d vectors for "
                                  "%d lists (FAISS would re-cluster it) is not served" % (
                                      what, quantizer.ntotal, nlist))
    return _remote.serialize_index(quantizer).tobytes()


def holds_centroids(quantizer_bytes):
    """Does FAISS's serialization of a flat quantizer hold vectors (ntotal, after its fourcc
    and dimension)?"""
    return struct.unpack_from("<q", quantizer_bytes, 8)[0] > 0


def attach_quantizer(index, quantizer):
    """quantizer, given to index's constructor, now answers as index's (a quantizer view
    of another IVF stays that one's: both hold the same centroids)."""
    if not _views.is_quantizer(quantizer):
        quantizer = _make_view(quantizer, index, "quantizer")
    object.__setattr__(index, "_quantizer", quantizer)
    constructor_cp(index)


def constructor_cp(index):
    """An untrained IVF composed from FAISS's bytes holds the k-means settings of FAISS's
    reader (25 iterations, never spherical): FAISS's IVF constructor sets 10, and spherical
    for an inner-product index, which its training then runs with."""
    params = _remote._index_meta(index._name).get("params") or {}
    want = {"cp_niter": 10, "cp_spherical": int(index.metric_type ==
                                                 _remote.METRIC_INNER_PRODUCT)}
    for name, value in want.items():
        if name in params and params[name] != value:  # reported while untrained
            index._set_param(name, value)


# Settings the server holds that FAISS's bytes leave out (set_params members), which an index
# composed again from its bytes must be given again.
_MEMBERS = ("parallel_mode", "max_codes", "polysemous_ht", "use_precomputed_table",
            "quantizer_max_codes", "quantizer_polysemous_ht") + tuple(
                "cp_" + f for f in _views._CP_SERVED)


def set_metric_type(index, metric):
    """FAISS's write of an IVF's metric_type (L2 and inner product), served while the index
    is untrained and empty: the server's index is composed again from its bytes with the
    other metric, and keeps its settings (its quantizer and k-means settings stay what the
    constructor made them, as in FAISS, where only the member changes)."""
    metric = int(metric)
    if metric == index.metric_type:
        return
    if index._binary or index.is_trained or index.ntotal or metric not in _FLOAT_METRICS or \
            index.metric_type not in _FLOAT_METRICS:
        raise NotImplementedError(
            "faissproxy: setting %s.metric_type is served from L2 to inner product and back, "
            "on an untrained empty index only" % type(index).__name__)
    before = _remote._index_meta(index._name).get("params") or {}
    data = bytearray(_remote.serialize_index(index).tobytes())
    # FAISS's index header after the fourcc: d (int32), ntotal, two int64, is_trained, metric
    # (int32); neither of these two metrics writes a metric_arg after it
    offset = 4 + struct.calcsize("<iqqq?")
    assert struct.unpack_from("<i", data, offset)[0] == index.metric_type
    struct.pack_into("<i", data, offset, metric)
    _remote._recompose(index, bytes(data), index._description)
    _views.give_back(index, before, _MEMBERS)


class IndexIVFScalarQuantizer(_Residual, _IVF, Index):
    _classes = ("IndexIVFScalarQuantizer",)

    def __init__(self, quantizer, d, nlist, qtype=0, metric=METRIC_L2, by_residual=True):
        self._name, self._keep, self._verbose = None, False, False
        d, nlist, qtype = int(d), int(nlist), int(qtype)
        if qtype not in _SQ_CODE_SIZE:
            raise NotImplementedError("faissproxy: ScalarQuantizer type %d is not served" % qtype)
        centroids = quantizer_centroids(quantizer, d, nlist, metric, "IndexIVFScalarQuantizer")
        self._nlist = nlist
        description = "IVF%d,%s" % (nlist, _remote._SQ_NAMES[qtype])
        if centroids is None:
            # the server's factory: FAISS's IVF scalar quantizer over an empty flat quantizer
            Index.__init__(self, d, description, metric)
        else:
            # FAISS's IVF scalar quantizer over these centroids, its quantizer untrained
            cs = _SQ_CODE_SIZE[qtype](d)
            body = b"IwSq" + _index_header(d, False, metric)
            body += struct.pack("<QQ", nlist, 1) + centroids
            body += b"\x00" + struct.pack("<Q", 0)  # no direct map
            # ScalarQuantizer: qtype, rangestat (min-max), rangestat_arg, d, code_size,
            # trained (empty until training)
            body += struct.pack("<iifQQQ", qtype, 0, 0.0, d, cs, 0)
            body += struct.pack("<Q?", cs, True)  # code_size, by_residual (set below)
            body += _empty_invlists(nlist, cs)
            _compose(self, body, description)
        if not by_residual:
            self.by_residual = False
        attach_quantizer(self, quantizer)
