"""More of FAISS's constructors over served indexes: IndexBinaryIDMap(sub) and
IndexBinaryIDMap2(sub) (FAISS's serialization of the wrapper around the served binary
sub-index, which becomes a view of it, as a float IDMap's does), and
IndexIVFFlatDedup(quantizer, d, nlist[, metric]) over an empty served flat quantizer (the
server's factory's "IVF<nlist>,FlatDedup"), and the train_inplace of index_factory's
"MinMax,..." and "MinMaxFP16,..." indexes."""
import struct

import numpy as np

from . import _composed, _remote, _views
from ._remote import METRIC_L2, Index, IndexBinary, _IVF


class _RowwiseMinMax:
    """IndexRowwiseMinMax(FP16)'s train_inplace: FAISS's trains as train does (each row
    scaled to [0, 1] for the sub-index), and leaves x scaled there and back, rounded through
    the row's stored minimum and scale (float32, or float16 for MinMaxFP16). The server
    trains on x; local faiss's own train_inplace over a flat index (whose training changes
    nothing) then changes x as FAISS's would have."""

    def train_inplace(self, x):
        n, d = x.shape
        assert d == self.d
        x = np.ascontiguousarray(x, dtype="float32")  # as FAISS's: a copy is left alone
        from . import _local_faiss
        local = _local_faiss()
        if local is None:
            raise NotImplementedError("faissproxy: %s.train_inplace needs local faiss (to "
                                      "leave x as FAISS's does); use train" % type(self).__name__)
        self.train(x)
        sub = local.IndexFlatL2(d)
        scaler = getattr(local, type(self).__name__)(sub)
        scaler.train_inplace(x)


class IndexBinaryIDMap(IndexBinary):
    _idmap = "IDMap"

    def __init__(self, index):
        self._name, self._keep, self._verbose = None, False, False
        if not isinstance(index, IndexBinary) or isinstance(index, _remote._View) or \
                index._idmap:
            raise NotImplementedError("faissproxy: %s is served over a served binary index of "
                                      "its own, got %r" % (type(self).__name__, index))
        assert index.ntotal == 0, "index must be empty on input"
        # write_index_binary of the wrapper: fourcc, binary header, the sub-index, its ids
        fourcc = b"IBM2" if self._idmap == "IDMap2" else b"IBMp"
        body = fourcc + _views._binary_header(index.d, 0, index.is_trained)
        body += _remote.serialize_index(index).tobytes() + struct.pack("<Q", 0)
        _remote._compose(self, body, "%s,%s" % (self._idmap, index._description))
        self._classes = index._classes
        self._sub = _remote._make_view(index, self, "sub-index")

    index = _remote.IndexIDMap.index


class IndexBinaryIDMap2(IndexBinaryIDMap):
    _idmap = "IDMap2"


class IndexIVFFlatDedup(_IVF, Index):
    _classes = ("IndexIVFFlatDedup",)

    def __init__(self, quantizer, d, nlist, metric=METRIC_L2):
        self._name, self._keep, self._verbose = None, False, False
        d, nlist = int(d), int(nlist)
        centroids = _composed.quantizer_centroids(quantizer, d, nlist, metric,
                                                  "IndexIVFFlatDedup")
        if centroids is not None:
            raise NotImplementedError("faissproxy: IndexIVFFlatDedup is served over an empty "
                                      "flat quantizer of the same metric only")
        self._nlist = nlist
        Index.__init__(self, d, "IVF%d,FlatDedup" % nlist, metric)
        _composed.attach_quantizer(self, quantizer)
