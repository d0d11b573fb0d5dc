"""The parts of a served index that FAISS programs read: an IVF index's quantizer and
clustering parameters, and the objects made from whole served indexes (clone_index,
IndexBinaryIVF over a binary quantizer).

In FAISS these are objects shared with the composed index. Here the server holds the
composition; the objects of this module answer from it, and a write to them either reaches
the server or raises, naming what is not served (docs/python.md).
"""
import struct

from . import _remote
from ._remote import Index, IndexBinary, _IVF, _View, _call, _import

# FAISS's ClusteringParameters as an IVF index's constructor leaves them (IndexIVF and
# IndexBinaryIVF set niter to 10; an inner-product IVF clusters on the sphere).
_CP_DEFAULTS = {"niter": 10, "nredo": 1, "verbose": False, "spherical": False,
                "int_centroids": False, "update_index": False, "frozen_centroids": False,
                "min_points_per_centroid": 39, "max_points_per_centroid": 256, "seed": 1234,
                "decode_block_size": 32768}

# In FAISS 1.7.3's Clustering::train these two only decide whether a warning is printed
# (min_points_per_centroid) or printing at all (verbose), and decode_block_size is read by
# encoded training only, which an IVF does not run: no result depends on them, so they are
# kept on the object, as an index's verbose is.
_CP_LOCAL = ("min_points_per_centroid", "verbose", "decode_block_size")
# The fields the server's training reads: set_params "cp_<field>" of a float IVF.
_CP_SERVED = ("niter", "nredo", "seed", "max_points_per_centroid", "spherical",
              "int_centroids", "update_index", "frozen_centroids")


class ClusteringParameters:
    """index.cp of an IVF index: FAISS's values, as the server holds them while the index
    is untrained; a write of a field that training reads reaches the server (a float IVF's
    set_params cp_<field>), where its training uses it."""

    def __init__(self, metric=_remote.METRIC_L2, index=None):
        values = dict(_CP_DEFAULTS, spherical=metric == _remote.METRIC_INNER_PRODUCT)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_index", index)
        if index is not None:  # the server's values: FAISS's reader leaves 25 iterations
            for field, value in served_cp(_remote._index_meta(index._name)).items():
                values[field] = type(values[field])(value)

    def __getattr__(self, name):
        values = self.__dict__["_values"]
        if name in values:
            return values[name]
        raise AttributeError("'ClusteringParameters' object has no attribute %r" % name)

    def __setattr__(self, name, value):
        if name in _CP_LOCAL:
            self._values[name] = type(self._values[name])(value)
        elif name in _CP_SERVED and self._index is not None:
            typed = type(self._values[name])(value)
            self._index._set_param("cp_" + name, int(typed))
            self._values[name] = typed
        elif name in self._values:
            raise NotImplementedError("faissproxy: setting ClusteringParameters.%s of a served "
                                      "index is not served: the server's training would not "
                                      "use it" % name)
        else:
            raise AttributeError("faissproxy: ClusteringParameters.%s is not an attribute "
                                 "FAISS has" % name)


def served_cp(info):
    """{field: value} of the k-means settings an info map reports (an untrained float
    IVF's cp_<field> params)."""
    params = info.get("params") or {}
    return {f: params["cp_" + f] for f in _CP_SERVED if "cp_" + f in params}


def give_back(index, before, names):
    """Sets on index's server index each of names that the info params before held and that
    it now holds otherwise (settings FAISS's bytes leave out, after a new server index)."""
    after = _remote._index_meta(index._name).get("params") or {}
    for name in names:
        if name in before and after.get(name) != before[name]:
            index._set_param(name, int(before[name]))


def _cp_served(index):
    # a float IVF of its own on the server (a binary IVF's k-means is not served)
    return not index._binary and not isinstance(index, _View) and index._name is not None


def clustering_parameters(index):
    cp = index.__dict__.get("_cp")
    if cp is None:
        cp = ClusteringParameters(index.metric_type, index if _cp_served(index) else None)
        object.__setattr__(index, "_cp", cp)
    return cp


# ---- the quantizer of an IVF index --------------------------------------------------------


def quantizer_bytes(owner):
    """FAISS's serialization of the coarse quantizer of owner's IVF, as the server holds it
    (export_index with part "quantizer")."""
    _, data, _ = _call({"operation": "export_index", "index_id": owner._name,
                        "part": "quantizer"})
    return data


class _QuantizerView:
    """index.quantizer of an IVF index made by index_factory or read from bytes (or
    extract_index_ivf(index).quantizer). FAISS's quantizer is an index of its own inside the
    IVF; here its reads are answered by the server from a copy of it, made from the IVF's
    quantizer as the server holds it, and made again when the IVF's training (the only
    thing that changes a quantizer here) has run since. Writes raise."""

    def __init__(self, owner):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_copy", None)
        object.__setattr__(self, "_copy_trained", None)

    __setattr__ = _remote._set_served

    def _current(self):
        owner = self._owner
        trained = owner.is_trained
        if self._copy is None or self._copy_trained != trained:
            data = quantizer_bytes(owner)
            copy = _import(data, owner._binary)
            object.__setattr__(self, "_copy", copy)
            object.__setattr__(self, "_copy_trained", trained)
        return self._copy

    @property
    def d(self):
        return self._current().d

    @property
    def ntotal(self):
        return self._current().ntotal

    @property
    def is_trained(self):
        return self._current().is_trained

    @property
    def metric_type(self):
        return self._current().metric_type

    def search(self, x, k, *, params=None, D=None, I=None):
        return self._current().search(x, k, params=params, D=D, I=I)

    def assign(self, x, k, labels=None):
        return self._current().assign(x, k, labels)

    def range_search(self, x, thresh, *, params=None):
        return self._current().range_search(x, thresh, params=params)

    def reconstruct(self, key, x=None):
        return self._current().reconstruct(key, x)

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        return self._current().reconstruct_n(n0, ni, x)

    def _not_served(self, *args, **kwargs):
        raise NotImplementedError("faissproxy: writing to the quantizer of an IVF index made by "
                                  "index_factory or read from bytes is not served (the server "
                                  "trains it with the IVF index)")

    train = add = add_with_ids = reset = remove_ids = _not_served

    def _serialized(self):
        return quantizer_bytes(self._owner)

    def __repr__(self):
        return "<faissproxy quantizer of %r>" % (self._owner,)


def quantizer_view(owner):
    """The (one) quantizer view of owner, an IVF index or extract_index_ivf's view of one."""
    view = owner.__dict__.get("_qview")
    if view is None:
        top = getattr(owner, "_owner", owner)  # extract_index_ivf's view: its whole index
        view = _QuantizerView(top)
        object.__setattr__(owner, "_qview", view)
    return view


def nlist_of(index):
    """The number of lists of index's IVF as the server reports it (info map params)."""
    n = (_remote._index_meta(index._name).get("params") or {}).get("nlist")
    if n is None:
        raise AttributeError("faissproxy: the number of lists of %r is not known" % (index,))
    return int(n)


def is_quantizer(x):
    """x is the quantizer of a served IVF index (given to its constructor or read from it)."""
    return isinstance(x, _QuantizerView) or (isinstance(x, _View) and
                                             x._view_role == "quantizer")


def _quantizer_owner(x):
    return x._owner if isinstance(x, _QuantizerView) else x._view_owner


def serialized_quantizer(x):
    """FAISS's serialization of the quantizer x (is_quantizer(x))."""
    return quantizer_bytes(_quantizer_owner(x))


# ---- clone_index --------------------------------------------------------------------------


def clone_index(index):
    """faiss.clone_index: a new served index with index's content (FAISS's serialization of
    it, exported and imported by the server) and the settings given to it here."""
    if is_quantizer(index):
        return _import(serialized_quantizer(index), _quantizer_owner(index)._binary)
    if not isinstance(index, Index):
        from . import _local_faiss
        local = _local_faiss()
        if local is None:
            raise TypeError("in method 'clone_index', argument 1 of type 'faiss::Index const *'")
        return local.clone_index(index)
    if isinstance(index, _View):
        index._not_served()
    data = _remote.serialize_index(index)
    out = _import(data, index._binary)
    # what FAISS's copy keeps and its serialization does not carry
    if isinstance(out, _IVF) and isinstance(index, _IVF):
        if index._max_codes:
            out.max_codes = index._max_codes
        object.__setattr__(out, "_nlist", index._nlist)
    if isinstance(out, _remote._Residual) and isinstance(index, _remote._Residual):
        object.__setattr__(out, "_by_residual", index._by_residual)
    if getattr(index, "_ht", 0) and "polysemous_ht" in dir(type(out)):
        out.polysemous_ht = index._ht
    # FAISS's copy keeps an IVF's k-means settings, which the reader of the bytes sets to
    # its defaults: the server reports them while the IVF (also one inside a composition)
    # is untrained, and its training is the one they change
    if not index._binary and not out.is_trained:
        give_back(out, _remote._index_meta(index._name).get("params") or {},
                  ["cp_" + f for f in _CP_SERVED])
    if "_cp" in index.__dict__:  # and the values a program read or wrote, as they were
        object.__setattr__(out, "_cp", ClusteringParameters(index.metric_type,
                                                            out if _cp_served(out) else None))
        out._cp._values.update(index._cp._values)
    return out


# ---- IndexBinaryIVF -----------------------------------------------------------------------


class DirectMap:
    """faiss.DirectMap's types, for set_direct_map_type."""
    NoMap, Array, Hashtable = 0, 1, 2


def _binary_header(d, ntotal, is_trained):
    # write_index_binary_header: d, code_size, ntotal, is_trained, metric_type (L2's 1)
    return struct.pack("<iiq?i", int(d), int(d) // 8, int(ntotal), bool(is_trained), 1)


class IndexBinaryIVF(_IVF, IndexBinary):
    _classes = ("IndexBinaryIVF",)

    def __init__(self, quantizer, d, nlist):
        self._name, self._keep, self._verbose = None, False, False
        self._nlist = int(nlist)
        if is_quantizer(quantizer):
            # the quantizer of another binary IVF: its centroids, as the server holds them
            if not _quantizer_owner(quantizer)._binary:
                raise NotImplementedError("faissproxy: IndexBinaryIVF is served over a binary "
                                          "flat quantizer")
            qdata, qtotal, qd = serialized_quantizer(quantizer), quantizer.ntotal, quantizer.d
        else:
            from . import _binary, _fromfloat
            qdata = _fromfloat.serialized_quantizer(quantizer)
            if qdata is not None and quantizer.d == int(d) and quantizer.ntotal == 0:
                # FAISS's binary IVF over this IndexBinaryFromFloat, to be trained: FAISS's
                # train clusters as over any quantizer, then adds the centroids to it
                body = b"IBwF" + _binary_header(d, 0, False)
                body += struct.pack("<QQ", self._nlist, 1) + qdata
                body += b"\x00" + struct.pack("<Q", 0)  # no direct map
                body += _remote._empty_invlists(self._nlist, int(d) // 8)
                _remote._compose(self, body, "BIVF%d" % self._nlist)  # its k-means settings
                self._quantizer = _remote._make_view(quantizer, self, "quantizer")
                return
            hnsw_m = _binary.hnsw_m(quantizer)  # an empty binary HNSW: the factory's
            if hnsw_m is not None and quantizer.ntotal == 0 and quantizer.d == int(d):
                IndexBinary.__init__(self, d, "BIVF%d_HNSW%d" % (self._nlist, hnsw_m))
                self._quantizer = _remote._make_view(quantizer, self, "quantizer")
                return
            if qdata is None and (
                    not isinstance(quantizer, IndexBinary) or isinstance(quantizer, _View) or
                    quantizer._classes[0] != "IndexBinaryFlat" or quantizer._idmap):
                raise NotImplementedError("faissproxy: IndexBinaryIVF is served over a served "
                                          "IndexBinaryFlat of its own, got %r" % (quantizer,))
            qtotal, qd = quantizer.ntotal, quantizer.d
        if qd != int(d):
            raise NotImplementedError("faissproxy: IndexBinaryIVF is served over a quantizer "
                                      "of the same dimension")
        if qtotal == 0:
            # the server's factory makes FAISS's binary IVF over an empty flat quantizer
            IndexBinary.__init__(self, d, "BIVF%d" % self._nlist)
        elif qtotal == self._nlist:
            # FAISS's binary IVF over these very centroids: trained, as its constructor says
            if qdata is None:
                qdata = _remote.serialize_index(quantizer).tobytes()
            body = b"IBwF" + _binary_header(d, 0, True)
            body += struct.pack("<QQ", self._nlist, 1) + bytes(qdata)
            body += b"\x00" + struct.pack("<Q", 0)  # no direct map
            body += _remote._empty_invlists(self._nlist, int(d) // 8)
            _remote._compose(self, body, "BIVF%d" % self._nlist)
        else:
            raise NotImplementedError("faissproxy: an IndexBinaryIVF over a quantizer holding "
                                      "%d vectors for %d lists (FAISS would re-cluster it) is "
                                      "not served" % (qtotal, self._nlist))
        if is_quantizer(quantizer):
            self._quantizer = quantizer  # shared, as in FAISS; it stays the other's view
        else:
            self._quantizer = _remote._make_view(quantizer, self, "quantizer")



# ---- IndexRefine, IndexRefineFlat ---------------------------------------------------------


def _refine_body(d, ntotal, is_trained, metric, base, refine, k_factor=1.0):
    # FAISS's serialization of an IndexRefine: "IxRF", the header, both indexes, k_factor
    # (FAISS's reader makes an IndexRefineFlat of it when the refine index is flat)
    head = struct.pack("<iqqq?i", int(d), int(ntotal), 1 << 20, 1 << 20, bool(is_trained),
                       int(metric))
    return b"IxRF" + head + bytes(base) + bytes(refine) + struct.pack("<f", k_factor)


def _empty_flat(d, metric):
    # write_index of an empty IndexFlatL2/IndexFlatIP: fourcc, header, no codes
    fourcc = b"IxF2" if metric == _remote.METRIC_L2 else b"IxFI"
    return fourcc + _remote._index_header(d, True, metric) + struct.pack("<Q", 0)


class _Refine:
    """k_factor of a refinement, which reaches the server (set_params "k_factor_rf")."""

    _k_factor = 1.0

    @property
    def k_factor(self):
        return self._k_factor

    @k_factor.setter
    def k_factor(self, v):
        # FAISS's ParameterSpace names an IndexRefine's k_factor "k_factor_rf"; the server
        # takes it as an integer (docs/protocol.md, set_params)
        if float(v) != int(v):
            raise NotImplementedError("faissproxy: a k_factor that is not an integer is not "
                                      "served")
        self._set_param("k_factor_rf", int(v))
        self._k_factor = float(v)

    def _part(self, attr, what):
        part = self.__dict__.get(attr)
        if part is None:
            raise NotImplementedError("faissproxy: the %s of an IndexRefine made by "
                                      "index_factory or read from bytes is not served" % what)
        return part

    @property
    def base_index(self):
        return self._part("_base", "base index")

    @property
    def refine_index(self):
        return self._part("_refine_part", "refine index")


def _check_part(x, what):
    _remote._served_index(x, what)
    if x._idmap:
        raise NotImplementedError("faissproxy: an IndexRefine over an IDMap is not served")
    return x


class IndexRefine(_Refine, Index):
    _classes = ("IndexRefine",)

    def __init__(self, base_index, refine_index):
        self._name, self._keep, self._verbose = None, False, False
        base, refine = _check_part(base_index, "the base index"), \
            _check_part(refine_index, "the refine index")
        # FAISS's constructor's checks, with its messages
        if base.d != refine.d:
            raise RuntimeError("Error: 'base_index->d == refine_index->d' failed")
        if base.metric_type != refine.metric_type:
            raise RuntimeError("Error: 'base_index->metric_type == refine_index->metric_type' "
                               "failed")
        if base.ntotal != refine.ntotal:
            raise RuntimeError("Error: 'base_index->ntotal == refine_index->ntotal' failed")
        body = _refine_body(base.d, base.ntotal, base.is_trained and refine.is_trained,
                            base.metric_type, _remote.serialize_index(base).tobytes(),
                            _remote.serialize_index(refine).tobytes())
        _remote._compose(self, body, "%s,Refine(%s)" % (base._description,
                                                       refine._description))
        self._metric = base.metric_type
        self._base = _remote._make_view(base, self, "base index")
        self._refine_part = _remote._make_view(refine, self, "refine index")


class IndexRefineFlat(_Refine, Index):
    _classes = ("IndexRefineFlat",)

    def __init__(self, base_index):
        self._name, self._keep, self._verbose = None, False, False
        base = _check_part(base_index, "the base index")
        if base.ntotal != 0:
            raise RuntimeError("Error: 'base_index->ntotal == 0' failed: base_index should be "
                               "empty in the beginning")
        if not base.is_trained and base._description != "imported":
            # untrained, from the factory: the factory's refinement, so that training runs
            # with the constructor's settings, then the settings given to the base index
            Index.__init__(self, base.d, base._description + ",RFlat", base.metric_type)
            for name, value, default in _remote._settings_of(base):
                if value != default:
                    self._set_param(name, value)
        else:
            body = _refine_body(base.d, 0, base.is_trained, base.metric_type,
                                _remote.serialize_index(base).tobytes(),
                                _empty_flat(base.d, base.metric_type))
            _remote._compose(self, body, base._description + ",RFlat")
        self._metric = base.metric_type
        self._base = _remote._make_view(base, self, "base index")
