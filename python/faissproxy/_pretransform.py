"""IndexPreTransform made from objects, as FAISS programs build it:
IndexPreTransform(vt, index), IndexPreTransform(index) and prepend_transform(vt).

The transforms are local faiss's VectorTransform objects (this package does not serve
them: faiss.OPQMatrix, faiss.PCAMatrix, ... come from local faiss), held by the program and
shared with the composed index as in FAISS. The server holds the composition: FAISS's
serialization of an IndexPreTransform over the transforms and the served index given
(which becomes a view of it, as a quantizer or an IDMap's sub-index does), imported.

Training follows FAISS's IndexPreTransform::train: the untrained transforms of the chain
are trained in order, each on the vectors the transforms before it give, then the index
below on the whole chain's output. FAISS's serialization keeps a trained transform whole
but drops what an untrained one needs to train (an untrained OPQMatrix is written as a
bare LinearTransform), so the transforms train here, in the program's own objects (FAISS's
code, on the same vectors), and the composition is sent again with them trained; the index
below trains on the server, through the composition.
"""
import struct

from . import _remote
from ._remote import (Index, _index_header, _make_view, _rows, _served_index,
                      _settings_of, serialize_index)


def _local():
    from . import _local_faiss
    local = _local_faiss()
    if local is None:
        raise NotImplementedError("faissproxy: IndexPreTransform's transforms are local "
                                  "faiss's VectorTransform objects: faiss is not installed")
    return local


def _transform_bytes(vt):
    """FAISS's write_VectorTransform bytes of a local transform."""
    local = _local()
    if not isinstance(vt, local.VectorTransform):
        raise TypeError("faissproxy: IndexPreTransform takes faiss's VectorTransform objects, "
                        "not %r" % (vt,))
    w = local.VectorIOWriter()
    local.write_VectorTransform(vt, w)
    return local.vector_to_array(w.data).tobytes()


def _factory_name(vt):
    """The index_factory term that builds a transform like vt (d_in to d_out). The server
    takes an untrained composition's training settings (an IVF's k-means, ...) from the
    factory's index of the description, as for every index made here; a transform the
    factory cannot name is named by a random rotation of the same dimensions (only the
    structure below it matters for those settings)."""
    name = type(vt).__name__
    if name == "NormalizationTransform" and float(vt.norm) == 2.0:
        return "L2norm"
    if name == "PCAMatrix":
        return "PCA%s%s%d" % ("W" if vt.eigen_power == -0.5 else "",
                              "R" if vt.random_rotation else "", vt.d_out)
    if name == "OPQMatrix":
        return "OPQ%d_%d" % (vt.M, vt.d_out)
    if name == "ITQTransform":
        return "ITQ%d" % vt.d_out
    return "RR%d" % vt.d_out


class IndexPreTransform(Index):
    """IndexPreTransform(index), IndexPreTransform(vt, index); index_factory's
    "PCA32,IVF..." descriptions give objects of this class too (their transforms live on
    the server only)."""

    _classes = ("IndexPreTransform",)

    def __init__(self, *args):
        self._name, self._keep, self._verbose = None, False, False
        if len(args) == 1:
            chain, sub = [], args[0]
        elif len(args) == 2:
            chain, sub = [args[0]], args[1]
        else:
            raise NotImplementedError("faissproxy: IndexPreTransform is served as "
                                      "IndexPreTransform(index) or IndexPreTransform(vt, "
                                      "index)")
        _served_index(sub, "the index of an IndexPreTransform")
        if sub._idmap:
            raise NotImplementedError("faissproxy: an IndexPreTransform over an IDMap is not "
                                      "served")
        data = serialize_index(sub).tobytes()
        if data[:4] in (b"IxMp", b"IxM2"):
            raise NotImplementedError("faissproxy: an IndexPreTransform over an index whose "
                                      "labels are not 0..ntotal-1 is not served")
        if chain and chain[0].d_out != sub.d:
            raise RuntimeError("Error: 'ltrans->d_out == d' failed")  # as prepend_transform
        self._chain = list(chain)
        self._sub_bytes = data
        self._sub_description = sub._description
        self._sub_trained = sub.is_trained
        self._sub_ntotal = sub.ntotal
        self._sub_classes = tuple(sub._classes)
        self._compose(sub)
        self._sub = _make_view(sub, self, "sub-index")

    # ---- the composition on the server ----------------------------------------------

    def _compose(self, sub=None):
        """(Re)makes the server's IndexPreTransform from the chain and the index below,
        then gives it the settings FAISS's bytes do not carry."""
        tbytes = [_transform_bytes(vt) for vt in self._chain]
        d = self._chain[0].d_in if self._chain else struct.unpack_from("<i", self._sub_bytes,
                                                                       4)[0]
        metric = struct.unpack_from("<i", self._sub_bytes, 33)[0]
        trained = self._sub_trained and all(vt.is_trained for vt in self._chain)
        header = _index_header(d, trained, metric)
        header = header[:4] + struct.pack("<q", self._sub_ntotal) + header[12:]
        body = b"IxPT" + header + struct.pack("<i", len(self._chain)) + b"".join(tbytes)
        body += self._sub_bytes
        names = [_factory_name(vt) for vt in self._chain]
        _remote._recompose(self, body, ",".join(names + [self._sub_description]))
        self._classes = ("IndexPreTransform",) + self._sub_classes
        source = sub if sub is not None else getattr(self, "_sub", None)
        if source is not None:
            for name, value, default in _settings_of(source):
                if value != default:
                    self._set_param(name, value)
            if getattr(source, "_ht", 0):
                self._set_param("ht", source._ht)

    def _refresh_sub_bytes(self):
        """The index below as the server holds it now (its settings included): the
        composition's export past its header and transforms, which are the bytes sent."""
        data = serialize_index(self).tobytes()
        tbytes = b"".join(_transform_bytes(vt) for vt in self._chain)
        off = 4 + 33 + 4
        if data[:4] != b"IxPT" or data[off:off + len(tbytes)] != tbytes:
            raise NotImplementedError("faissproxy: the server's bytes for this "
                                      "IndexPreTransform are not in the layout expected here")
        self._sub_bytes = data[off + len(tbytes):]

    def _made_here(self, what):
        if "_chain" not in self.__dict__:
            raise NotImplementedError("faissproxy: %s of an IndexPreTransform made by "
                                      "index_factory or read from bytes is not served" % what)

    # ---- FAISS's members ------------------------------------------------------------

    @property
    def index(self):
        self._made_here("the index")
        return self._sub

    def prepend_transform(self, ltrans):
        """FAISS's prepend_transform: ltrans goes first in the chain; d becomes its d_in."""
        self._made_here("prepend_transform")
        if ltrans.d_out != self.d:
            raise RuntimeError("Error: 'ltrans->d_out == d' failed")
        if self.ntotal:
            raise NotImplementedError("faissproxy: prepend_transform on an IndexPreTransform "
                                      "that holds vectors is not served")
        self._refresh_sub_bytes()
        self._chain.insert(0, ltrans)
        self._compose()

    def train(self, x):
        if "_chain" not in self.__dict__:
            Index.train(self, x)  # from the factory: its transforms train on the server
            return
        x, n = _rows(x, self.d)
        untrained = [i for i, vt in enumerate(self._chain) if not vt.is_trained]
        if untrained:
            # FAISS's IndexPreTransform::train: the transforms up to the last untrained one
            # (all of them when the index below needs training), each on what the ones
            # before it give
            last = len(self._chain) if not self._sub_trained else untrained[-1]
            self._refresh_sub_bytes()  # before the transforms change
            prev = x
            for i, vt in enumerate(self._chain):
                if not vt.is_trained:
                    vt.train(prev)
                if i == last or i == len(self._chain) - 1:
                    break
                prev = vt.apply(prev)
            self._compose()
        if not self._sub_trained:
            Index.train(self, x)  # the server trains the index below on the chain's output
            self._sub_trained = True
        self._refresh()
