"""More of FAISS's constructors over served indexes: IndexBinaryIDMap(sub) and
IndexBinaryIDMap2(sub) (FAISS's serialization of the wrapper around the served binary
sub-index, which becomes a view of it, as a float IDMap's does), and
IndexIVFFlatDedup(quantizer, d, nlist[, metric]) over an empty served flat quantizer (the
server's factory's "IVF<nlist>,FlatDedup")."""
import struct

from . import _composed, _remote, _views
from ._remote import METRIC_L2, Index, IndexBinary, _IVF


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
                                      "flat quantizer only")
        self._nlist = nlist
        Index.__init__(self, d, "IVF%d,FlatDedup" % nlist, metric)
        _composed.attach_quantizer(self, quantizer)
