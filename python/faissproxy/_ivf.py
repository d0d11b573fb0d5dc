"""The IVF family of served indexes: the attributes of every IVF index that reach the server
(nprobe, max_codes, parallel_mode, direct maps, its quantizer and clustering parameters),
what faiss.extract_index_ivf gives for an IVF inside a composition, by_residual, and the
constructors IndexIVFFlat(quantizer, d, nlist) and IndexIVFPQ(quantizer, d, nlist, M, nbits).

_remote imports this module at its end and gives its names as its own: import them from there.
"""
import struct

from ._remote import (METRIC_L2, Index, _compose, _empty_invlists, _index_header, _nlist_of,
                      _Polysemous, _set_served)


class _IVF:
    """An IVF index's attributes that take effect on the server."""

    _nlist = None
    _nprobe = 1
    _max_codes = 0
    _quantizer = None

    def check_ids_sorted(self):
        from . import _sorted
        return _sorted.check_ids_sorted(self)

    @property
    def metric_type(self):
        return self._metric

    @metric_type.setter
    def metric_type(self, v):
        from . import _composed
        _composed.set_metric_type(self, v)

    @property
    def nprobe(self):
        return self._nprobe

    @nprobe.setter
    def nprobe(self, v):
        if int(v) < 0:  # FAISS's nprobe is a size_t
            raise OverflowError("in method 'IndexIVF_nprobe_set', argument 2 of type 'size_t'")
        if int(v) > 0:
            self._set_param("nprobe", int(v))
        # 0: FAISS takes it, and its searches raise until another value is set (below)
        self._nprobe = int(v)

    def _check_nprobe(self):
        if self._nprobe == 0:
            raise RuntimeError("Error in IndexIVF::search: Error: 'nprobe > 0' failed")

    def search(self, x, k, *, params=None, D=None, I=None):
        if params is None:
            self._check_nprobe()
        return super().search(x, k, params=params, D=D, I=I)

    def range_search(self, x, thresh, *, params=None):
        if params is None:
            self._check_nprobe()
        return super().range_search(x, thresh, params=params)

    @property
    def max_codes(self):
        return self._max_codes

    @max_codes.setter
    def max_codes(self, v):
        self._set_param("max_codes", int(v))
        self._max_codes = int(v)

    @property
    def parallel_mode(self):
        if self._binary:  # FAISS's IndexBinaryIVF has none
            raise AttributeError("'%s' object has no attribute 'parallel_mode'"
                                 % type(self).__name__)
        return getattr(self, "_parallel_mode", 0)  # FAISS's default; its bytes do not carry it

    @parallel_mode.setter
    def parallel_mode(self, v):
        if self._binary:
            raise NotImplementedError("faissproxy: FAISS's IndexBinaryIVF has no parallel_mode")
        self._set_param("parallel_mode", int(v))  # 0..3, FAISS's search modes
        self._parallel_mode = int(v)

    @property
    def nlist(self):
        if self._nlist is None:
            from . import _views
            self._nlist = _views.nlist_of(self)
        return self._nlist

    @property
    def quantizer(self):
        if self._quantizer is None:  # made by index_factory or read from bytes
            from . import _views
            return _views.quantizer_view(self)
        return self._quantizer

    @property
    def cp(self):
        from . import _views
        return _views.clustering_parameters(self)

    def make_direct_map(self, new_maintain_direct_map=True):
        """As IndexIVF.make_direct_map: reconstruct() needs it."""
        self._set_param("direct_map", 1 if new_maintain_direct_map else 0)

    def set_direct_map_type(self, type):
        """As IndexIVF.set_direct_map_type (faiss.DirectMap.NoMap, Array, Hashtable)."""
        self._set_param("direct_map", int(type))

    def update_vectors(self, *args):
        """FAISS's IndexIVF.update_vectors moves entries between inverted lists in an order
        of its own (with an array direct map): not served, it raises."""
        raise NotImplementedError(
            "faissproxy: IndexIVF.update_vectors is not served (the server's lists would not "
            "hold the entries in FAISS's order); use remove_ids then add_with_ids")


class _IVFView:
    """What faiss.extract_index_ivf gives for an IVF inside a composition (under a
    transform, a refinement or an IDMap): its search knobs, set on the whole index with
    FAISS's ParameterSpace, which reaches that IVF."""

    def __init__(self, owner):
        # FAISS's defaults for an index made here; an index read from bytes has the values
        # its bytes carried, which are not read here
        known = "imported" not in owner._description
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_nprobe", 1 if known else None)
        object.__setattr__(self, "_max_codes", 0 if known else None)

    __setattr__ = _set_served

    def _known(self, value, name):
        if value is None:
            raise NotImplementedError("faissproxy: the %s of an IVF inside an index read from "
                                      "bytes is not known here (set it to know it)" % name)
        return value

    @property
    def nprobe(self):
        return self._known(self._nprobe, "nprobe")

    @nprobe.setter
    def nprobe(self, v):
        self._owner._set_param("nprobe", int(v))
        object.__setattr__(self, "_nprobe", int(v))

    @property
    def cp(self):
        # set_params cp_<field> of the whole index reaches this IVF, as its max_codes
        from . import _views
        return _views.clustering_parameters(self._owner)

    @property
    def max_codes(self):
        return self._known(self._max_codes, "max_codes")

    @max_codes.setter
    def max_codes(self, v):
        self._owner._set_param("max_codes", int(v))
        object.__setattr__(self, "_max_codes", int(v))

    @property
    def nlist(self):
        n = _nlist_of(self._owner._description)
        if n is None:
            from . import _views
            n = _views.nlist_of(self._owner)
        return n

    @property
    def quantizer(self):
        from . import _views
        return _views.quantizer_view(self)

    @property
    def ntotal(self):
        return self._owner.ntotal

    @property
    def is_trained(self):
        return self._owner.is_trained

    @property
    def d(self):
        return self._owner.d


def extract_index_ivf(index):
    """faiss.extract_index_ivf: the IVF index in a composition."""
    if isinstance(index, _IVF):
        return index
    sub = getattr(index, "_sub", None)
    if sub is not None:  # an IDMap made here over this very object
        return extract_index_ivf(sub)
    if isinstance(index, Index) and any(c.startswith("IndexIVF") for c in index._classes):
        view = getattr(index, "_ivf_view", None)
        if view is None:
            view = _IVFView(index)
            index._ivf_view = view
        return view
    raise RuntimeError("Error in extract_index_ivf: 'ivf' failed (no IVF index in %r)"
                       % (index,))


class IndexIVFFlat(_IVF, Index):
    _classes = ("IndexIVFFlat",)

    def __init__(self, quantizer, d, nlist, metric=METRIC_L2):
        self._name, self._keep, self._verbose = None, False, False
        from . import _composed  # the quantizer: a served flat index, or another IVF's
        centroids = _composed.quantizer_centroids(quantizer, int(d), int(nlist), metric,
                                                  "IndexIVFFlat")
        self._nlist = int(nlist)
        if centroids is None:
            # the server's factory makes FAISS's IVF over an empty flat quantizer, with the
            # constructor's clustering settings (read_index would give other ones)
            Index.__init__(self, d, "IVF%d,Flat" % self._nlist, metric)
        else:
            # FAISS's IVF over these very centroids (trained: no clustering will run), or
            # over an empty quantizer of the other metric (untrained)
            body = b"IwFl" + _index_header(d, _composed.holds_centroids(centroids), metric)
            body += struct.pack("<QQ", self._nlist, 1) + centroids
            body += b"\x00" + struct.pack("<Q", 0)  # no direct map
            body += _empty_invlists(self._nlist, 4 * int(d))
            _compose(self, body, "IVF%d,Flat" % self._nlist)
        _composed.attach_quantizer(self, quantizer)


class _Residual:
    """by_residual of IVF-PQ and IVF scalar quantizer indexes: set on the server before
    training (training and encoding follow it); after training FAISS would keep codes
    that no longer decode, so that is not served."""

    _by_residual = True  # FAISS's default

    @property
    def by_residual(self):
        if self._by_residual is None:
            raise NotImplementedError("faissproxy: by_residual of an index read from bytes "
                                      "is not known here")
        return self._by_residual

    @by_residual.setter
    def by_residual(self, v):
        if self._by_residual is not None and bool(v) == self._by_residual:
            return  # FAISS's index is unchanged by its own value
        # FAISS takes it at any time: later encodings and searches follow it, the codes
        # already stored stay as encoded; the server's FAISS index does the same
        self._set_param("by_residual", 1 if v else 0)
        self._by_residual = bool(v)


class IndexIVFPQ(_Polysemous, _Residual, _IVF, Index):
    _classes = ("IndexIVFPQ",)

    def __init__(self, quantizer, d, nlist, M, nbits, metric=METRIC_L2):
        self._name, self._keep, self._verbose = None, False, False
        from . import _composed  # the quantizer: a served flat index, or another IVF's
        centroids = _composed.quantizer_centroids(quantizer, int(d), int(nlist), metric,
                                                  "IndexIVFPQ")
        self._nlist = int(nlist)
        description = "IVF%d,PQ%dx%dnp" % (nlist, M, nbits)
        if centroids is None:
            # faiss's constructor trains no polysemous codes: "np", as for IndexPQ
            Index.__init__(self, d, description, metric)
        else:
            # FAISS's IVF-PQ over these very centroids, its product quantizer untrained
            d, M, nbits = int(d), int(M), int(nbits)
            code_size = (M * nbits + 7) // 8
            body = b"IwPQ" + _index_header(d, False, metric)
            body += struct.pack("<QQ", self._nlist, 1) + centroids
            body += b"\x00" + struct.pack("<Q", 0)  # no direct map
            body += struct.pack("<?QQQQQ", True, code_size, d, M, nbits, d << nbits)
            body += bytes(4 * (d << nbits))  # centroids, set by training
            body += _empty_invlists(self._nlist, code_size)
            _compose(self, body, description)
        _composed.attach_quantizer(self, quantizer)

    @property
    def use_precomputed_table(self):
        # the server's value (its training chose it, as FAISS's precompute_table does); 0
        # before training, unless set
        if self._name is None:
            return 0
        from ._remote import _index_meta
        return int(_index_meta(self._name).get("params", {}).get("use_precomputed_table", 0))

    @use_precomputed_table.setter
    def use_precomputed_table(self, v):
        self._set_param("use_precomputed_table", int(v))

    def _poly_train(self, x, n):
        from . import _polysemous
        _polysemous.train_ivf(self, x, n)

    @property
    def polysemous_ht(self):
        return getattr(self, "_ht", 0)

    @polysemous_ht.setter
    def polysemous_ht(self, v):
        self._set_param("ht", int(v))
        self._ht = int(v)
