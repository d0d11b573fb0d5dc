"""FAISS's IndexBinaryFromFloat(index), served: a binary index whose vectors are stored and
searched as +-1 floats by a float index (FAISS's binary_to_real, and its Hamming distance
as the rounded quarter of the float L2 distance).

The server holds FAISS's serialization of the wrapper ("IBFf", the binary header, then the
float index's own bytes) and runs FAISS's IndexBinaryFromFloat on it; the float index given
becomes a view of it (`index.index`), as an IDMap's sub-index does, since in FAISS the two
objects share that index."""
from . import _remote, _views
from ._remote import IndexBinary


class IndexBinaryFromFloat(IndexBinary):
    _classes = ("IndexBinaryFromFloat",)
    _index_view = None  # the float index given to the constructor (none once read from bytes)

    def __init__(self, index=None):
        self._name, self._keep, self._verbose = None, False, False
        if index is None:
            raise NotImplementedError("faissproxy: IndexBinaryFromFloat() without an index is "
                                      "not served (give it a served float index)")
        index = _remote._served_index(index, "the index of IndexBinaryFromFloat")
        if not index.is_trained and any("IVF" in c for c in index._classes):
            # FAISS's bytes of an IVF do not carry its k-means settings: trained here, it
            # would not train as FAISS's object does
            raise NotImplementedError("faissproxy: IndexBinaryFromFloat over an untrained IVF "
                                      "index is not served (train it first)")
        if index.d % 8:
            raise RuntimeError("Error: 'd % 8 == 0' failed")
        data = _remote.serialize_index(index).tobytes()
        body = b"IBFf" + _views._binary_header(index.d, index.ntotal, index.is_trained) + data
        _remote._compose(self, body, "imported")
        self._index_view = _remote._make_view(index, self, "index")

    @property
    def index(self):
        if self._index_view is None:
            raise NotImplementedError("faissproxy: the float index of an IndexBinaryFromFloat "
                                      "read from bytes is not served")
        return self._index_view


def serialized_quantizer(quantizer):
    """FAISS's bytes of an IndexBinaryFromFloat given as a binary IVF's quantizer, or None
    for another quantizer."""
    if not isinstance(quantizer, IndexBinaryFromFloat) or isinstance(quantizer, _remote._View):
        return None
    return _remote.serialize_index(quantizer).tobytes()
