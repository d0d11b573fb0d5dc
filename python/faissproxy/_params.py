"""FAISS's pointers, id selectors and search parameters, as the served indexes take them.

Selectors and parameters are plain descriptions here: a search sends them to the server
(`_wire_params`), which builds FAISS's own objects from them (docs/protocol.md,
"id_selector" and "params").
"""
import ctypes

import numpy as np



def _ptr(a):
    """The address of array a's data, for ctypes calls (libfaissproxy's too)."""
    return a.ctypes.data_as(ctypes.c_void_p)


# ---- pointers, id selectors and search parameters ---------------------------------------


class _Ptr:
    """What swig_ptr returns without local faiss: the array's address, holding the array."""

    def __init__(self, a):
        self.array = a
        self.dtype = a.dtype

    def __int__(self):
        return self.array.ctypes.data


def swig_ptr(a):
    """faiss.swig_ptr: a pointer to a numpy array's data. With local faiss installed it is
    faiss's own (so local helpers take it too); selectors read the ids it points to."""
    from . import _local_faiss
    local = _local_faiss()
    if local is not None:
        return local.swig_ptr(a)
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        raise TypeError("swig_ptr takes a contiguous numpy array")
    return _Ptr(a)


def _ptr_ints(ptr, n, what):
    """n int64 ids at ptr (a swig_ptr of an int64 array), copied, as FAISS reads them."""
    if isinstance(ptr, _Ptr):
        if ptr.dtype != np.int64:
            raise TypeError("%s takes a pointer to int64 ids, not %s" % (what, ptr.dtype))
    elif "long *" not in repr(ptr) and "int64" not in repr(ptr):
        raise TypeError("%s takes a pointer to int64 ids (swig_ptr of an int64 array), not %r"
                        % (what, ptr))
    n = int(n)
    if n <= 0:
        return np.empty(0, "int64")
    return np.ctypeslib.as_array((ctypes.c_int64 * n).from_address(int(ptr))).copy()


def _subset(args, what):
    """The ids of IDSelectorBatch/Array(n, ptr) or (array), as FAISS's Python accepts them."""
    if len(args) == 1:
        ids = np.ascontiguousarray(args[0], dtype="int64").ravel()
        return ids
    if len(args) != 2:
        raise TypeError("%s takes (ids) or (n, swig_ptr(ids))" % what)
    n, ptr = args
    if isinstance(ptr, np.ndarray):  # an array where FAISS wants its pointer: take n of it
        return np.ascontiguousarray(ptr, dtype="int64").ravel()[:int(n)]
    return _ptr_ints(ptr, n, what)


class IDSelector:
    """FAISS's id selectors, sent to the server with the search (docs/protocol.md,
    id_selector) or remove_ids that uses them."""

    def _wire(self):
        raise NotImplementedError("faissproxy: %s is not served" % type(self).__name__)

    def is_member(self, i):
        raise NotImplementedError


class IDSelectorRange(IDSelector):
    def __init__(self, imin, imax, assume_sorted=False):
        # assume_sorted only speeds FAISS up on sorted ids: the selection is the same
        self.imin, self.imax, self.assume_sorted = int(imin), int(imax), bool(assume_sorted)

    def is_member(self, i):
        return self.imin <= i < self.imax

    def find_sorted_ids_bounds(self, list_size, ids, jmin_out, jmax_out):
        from . import _sorted
        _sorted.find_sorted_ids_bounds(self, list_size, ids, jmin_out, jmax_out)

    def _wire(self):
        return {"range": [self.imin, self.imax]}


class IDSelectorBatch(IDSelector):
    """The ids are copied when the selector is made, as FAISS's IDSelectorBatch does."""

    def __init__(self, *args):
        self.ids = _subset(args, "IDSelectorBatch")

    def is_member(self, i):
        return bool(np.any(self.ids == i))

    def _wire(self):
        return {"ids": self.ids.tolist()}


class IDSelectorArray(IDSelector):
    """FAISS's IDSelectorArray reads the caller's ids when it is used: so does this one."""

    def __init__(self, *args):
        if len(args) == 1:
            self._array = np.ascontiguousarray(args[0], dtype="int64").ravel()
            self._ptr, self.n = None, len(self._array)
        elif len(args) == 2:
            self.n, self._ptr = int(args[0]), args[1]
            self._array = None
            if isinstance(self._ptr, np.ndarray):
                self._array = np.ascontiguousarray(self._ptr, dtype="int64").ravel()[:self.n]
                self._ptr = None
            else:
                _ptr_ints(self._ptr, 0, "IDSelectorArray")  # type check now, as FAISS
        else:
            raise TypeError("IDSelectorArray takes (ids) or (n, swig_ptr(ids))")

    @property
    def ids(self):
        if self._array is not None:
            return self._array
        return _ptr_ints(self._ptr, self.n, "IDSelectorArray")

    def is_member(self, i):
        return bool(np.any(self.ids == i))

    def _wire(self):
        return {"ids": self.ids.tolist()}


class IDSelectorBitmap(IDSelector):
    """Bit i of the n-byte bitmap (bit i % 8 of byte i // 8) selects id i, as in FAISS."""

    def __init__(self, *args):
        if len(args) == 1:
            self._bits = np.ascontiguousarray(args[0], dtype="uint8").ravel()
        elif len(args) == 2:
            n, ptr = int(args[0]), args[1]
            if isinstance(ptr, np.ndarray):
                self._bits = np.ascontiguousarray(ptr, dtype="uint8").ravel()[:n]
            elif isinstance(ptr, _Ptr) and ptr.dtype == np.uint8 or \
                    "unsigned char *" in repr(ptr):
                self._bits = np.ctypeslib.as_array(
                    (ctypes.c_uint8 * n).from_address(int(ptr))).copy() if n > 0 else \
                    np.empty(0, "uint8")
            else:
                raise TypeError("IDSelectorBitmap takes (n, swig_ptr(uint8 bitmap))")
        else:
            raise TypeError("IDSelectorBitmap takes (bitmap) or (n, swig_ptr(bitmap))")

    def is_member(self, i):
        return 0 <= i < 8 * len(self._bits) and bool((self._bits[i >> 3] >> (i & 7)) & 1)

    def _wire(self):
        return {"ids": np.flatnonzero(np.unpackbits(self._bits, bitorder="little")).tolist()}


class IDSelectorNot(IDSelector):
    def __init__(self, sel):
        self.sel = _check_selector(sel)

    def is_member(self, i):
        return not self.sel.is_member(i)

    def _wire(self):
        return {"not": self.sel._wire()}


class IDSelectorAll(IDSelector):
    def is_member(self, i):
        return True

    def _wire(self):
        return {"all": True}


class _IDSelectorPair(IDSelector):
    _op = None

    def __init__(self, lhs, rhs):
        self.lhs, self.rhs = _check_selector(lhs), _check_selector(rhs)

    def _wire(self):
        return {self._op: [self.lhs._wire(), self.rhs._wire()]}


class IDSelectorAnd(_IDSelectorPair):
    _op = "and"

    def is_member(self, i):
        return self.lhs.is_member(i) and self.rhs.is_member(i)


class IDSelectorOr(_IDSelectorPair):
    _op = "or"

    def is_member(self, i):
        return self.lhs.is_member(i) or self.rhs.is_member(i)


class IDSelectorXOr(_IDSelectorPair):
    _op = "xor"

    def is_member(self, i):
        return self.lhs.is_member(i) != self.rhs.is_member(i)


def _check_selector(sel):
    if not isinstance(sel, IDSelector):
        raise TypeError("faissproxy: a selector must be one of faissproxy's IDSelector classes "
                        "(IDSelectorRange, IDSelectorBatch, IDSelectorArray, IDSelectorBitmap, "
                        "IDSelectorNot, IDSelectorAll), not %r" % (sel,))
    return sel


class SearchParameters:
    """faiss.SearchParameters: `sel` restricts a search to the ids it selects."""

    _fields = {"sel": None}

    def __init__(self, **kwargs):
        for k, v in self._fields.items():
            object.__setattr__(self, k, v)
        for k, v in kwargs.items():
            assert hasattr(self, k), k  # as FAISS's constructor
            setattr(self, k, v)

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError("faissproxy: %s has no field %r" % (type(self).__name__, name))
        if name == "sel" and value is not None:
            _check_selector(value)
        object.__setattr__(self, name, value)


class SearchParametersIVF(SearchParameters):
    # FAISS's defaults: nprobe 1 and max_codes 0 (no limit) replace the index's own values
    _fields = {"sel": None, "nprobe": 1, "max_codes": 0, "quantizer_params": None}


class SearchParametersHNSW(SearchParameters):
    _fields = {"sel": None, "efSearch": 16, "check_relative_distance": True}


class SearchParametersPQ(SearchParameters):
    # FAISS's value-initialised members: ST_PQ, and a threshold of 0
    _fields = {"sel": None, "search_type": 0, "polysemous_ht": 0}


IVFSearchParameters = SearchParametersIVF


def _family(classes):
    """What FAISS's search does with params, by the index's class (its top one first)."""
    top = classes[0] if classes else ""
    if top == "IndexPreTransform":
        return _family(classes[1:])  # FAISS hands the params to the transformed index
    if "FastScan" in top:
        return "plain"
    if top.startswith("IndexIVF"):
        return "ivf"
    if top.startswith("IndexHNSW"):
        return "hnsw"
    if top in ("IndexFlat", "IndexFlatL2", "IndexFlatIP", "IndexScalarQuantizer"):
        return "flat"
    if top.startswith("IndexPQ"):
        return "pq"
    return "other"


def _quantizer_wire(index, qp):
    """The wire params for SearchParametersIVF.quantizer_params, which FAISS's IVF search
    hands to its coarse quantizer's search."""
    if not isinstance(qp, SearchParameters):
        raise TypeError("faissproxy: quantizer_params must be faissproxy's SearchParameters, "
                        "not %r" % (qp,))
    if qp.sel is not None:
        raise NotImplementedError("faissproxy: a selector in SearchParametersIVF."
                                  "quantizer_params (over the quantizer's centroids) is not "
                                  "served")
    from . import _remote  # (it imports this module)
    knobs = _remote._index_meta(index._name).get("params") or {}
    if "quantizer_efSearch" in knobs:  # an HNSW quantizer
        if not isinstance(qp, SearchParametersHNSW):
            raise RuntimeError("params type invalid")  # FAISS's IndexHNSW::search
        if not qp.check_relative_distance:
            raise NotImplementedError("faissproxy: SearchParametersHNSW."
                                      "check_relative_distance=False is not served")
        if not 1 <= int(qp.efSearch) <= 1 << 20:
            raise NotImplementedError("faissproxy: SearchParametersHNSW.efSearch is served in "
                                      "1..1048576")
        return {"quantizer_efSearch": int(qp.efSearch)}
    if knobs.get("nlist") is not None and _quantizer_is_flat(index):
        return {}  # FAISS's flat search reads the params' selector only (None here)
    raise NotImplementedError("faissproxy: SearchParametersIVF.quantizer_params is served for "
                              "an HNSW or flat quantizer only")


def _quantizer_is_flat(index):
    q = getattr(index, "quantizer", None)
    classes = getattr(q, "_classes", None)
    if classes is None and hasattr(q, "_current"):
        classes = q._current()._classes  # a view: its copy's classes
    return classes is not None and _family(classes) == "flat" and not getattr(q, "_idmap", 0)


def _wire_params(index, params):
    """(params map, id_selector) that make the server search as FAISS's search with params
    does on this index; raises as FAISS does, or NotImplementedError for what is not served."""
    name = type(params).__name__
    if not isinstance(params, SearchParameters):
        raise TypeError("faissproxy: params must be faissproxy's SearchParameters, "
                        "SearchParametersIVF or SearchParametersHNSW, not %r" % (params,))
    if index._idmap:
        raise RuntimeError("search params not supported for this index")  # FAISS's IndexIDMap
    fam = _family(index._classes)
    wire = {}
    if fam == "ivf":
        if not isinstance(params, SearchParametersIVF):
            raise RuntimeError("IndexIVF params have incorrect type")
        if params.quantizer_params is not None:
            wire.update(_quantizer_wire(index, params.quantizer_params))
        if int(params.nprobe) < 1:
            raise RuntimeError("Error: 'nprobe > 0' failed")
        wire["nprobe"] = min(int(params.nprobe), 1 << 20)
        wire["max_codes"] = int(params.max_codes)
    elif fam == "hnsw":
        if not isinstance(params, SearchParametersHNSW):
            raise RuntimeError("params type invalid")
        if not params.check_relative_distance:
            raise NotImplementedError("faissproxy: SearchParametersHNSW."
                                      "check_relative_distance=False is not served")
        if not 1 <= int(params.efSearch) <= 1 << 20:
            raise NotImplementedError("faissproxy: SearchParametersHNSW.efSearch is served in "
                                      "1..1048576")
        wire["efSearch"] = int(params.efSearch)
    elif fam == "pq":
        if not isinstance(params, SearchParametersPQ):
            raise RuntimeError("invalid search params")  # FAISS's IndexPQ wants these
        if params.sel is not None:
            raise RuntimeError("selector not supported")  # FAISS's IndexPQ::search
        # FAISS's search takes both from the params, whatever the index holds
        st = int(params.search_type)
        if not 0 <= st <= 5:
            raise NotImplementedError("faissproxy: SearchParametersPQ.search_type is served "
                                      "in 0..5 (FAISS's IndexPQ search types)")
        ht = int(params.polysemous_ht)
        if not 0 <= ht <= 1 << 20:
            raise NotImplementedError("faissproxy: SearchParametersPQ.polysemous_ht is served "
                                      "in 0..1048576")
        wire["search_type"] = st
        wire["polysemous_ht"] = ht
        return wire, None  # FAISS's IndexPQ takes no selector
    elif fam == "plain":
        raise RuntimeError("search params not supported for this index")
    elif fam != "flat":
        raise NotImplementedError("faissproxy: search params on %s are not served (%s)"
                                  % (type(index).__name__, name))
    # A search carrying a selector is answered as FAISS's search with these params is,
    # never widened: with no selector of the program's, the one that selects everything.
    sel = params.sel._wire() if params.sel is not None else {"all": True}
    return wire, sel
