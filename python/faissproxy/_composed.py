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


def quantizer_centroids(quantizer, d, nlist, metric, what):
    """None for an empty served flat quantizer of its own, or FAISS's serialization of the
    quantizer holding nlist centroids (a served flat index, or the quantizer of a trained
    served IVF); anything else raises NotImplementedError naming it."""
    if _views.is_quantizer(quantizer):
        owner = _views._quantizer_owner(quantizer)
        if owner._binary or not owner.is_trained or quantizer.d != d or \
                quantizer.metric_type != metric or quantizer.ntotal != nlist:
            raise NotImplementedError(
                "faissproxy: %s over the quantizer of another IVF index is served when that "
                "index is trained, float, with %d lists, of dimension %d and this metric" % (
                    what, nlist, d))
        return _views.serialized_quantizer(quantizer)
    _served_index(quantizer, "the quantizer")
    if quantizer.d != d or quantizer.metric_type != metric or \
            _params._family(quantizer._classes) != "flat" or quantizer._idmap:
        raise NotImplementedError("faissproxy: %s is served over a flat quantizer of the same "
                                  "dimension and metric" % what)
    if quantizer.ntotal == 0:
        return None
    if quantizer.ntotal != nlist:
        raise NotImplementedError("faissproxy: an %s over a quantizer holding %d vectors for "
                                  "%d lists (FAISS would re-cluster it) is not served" % (
                                      what, quantizer.ntotal, nlist))
    return _remote.serialize_index(quantizer).tobytes()


def attach_quantizer(index, quantizer):
    """quantizer, given to index's constructor, now answers as index's (a quantizer view
    of another IVF stays that one's: both hold the same centroids)."""
    if not _views.is_quantizer(quantizer):
        quantizer = _make_view(quantizer, index, "quantizer")
    object.__setattr__(index, "_quantizer", quantizer)


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
