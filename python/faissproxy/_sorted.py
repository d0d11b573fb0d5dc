"""IDSelectorRange.find_sorted_ids_bounds: FAISS's bisection over a sorted id array, computed
here (it reads and writes the caller's memory only; no index is involved)."""
import ctypes

import numpy as np


def _address(ptr, dtypes, reprs, what):
    """The address behind a swig_ptr (local faiss's, or this package's _Ptr) of one of
    dtypes, checked as FAISS's typed signature would."""
    from ._params import _Ptr
    if isinstance(ptr, _Ptr):
        if ptr.dtype not in dtypes:
            raise TypeError("%s takes a pointer to %s, not %s" % (what, dtypes[0], ptr.dtype))
        return int(ptr)
    if not any(r in repr(ptr) for r in reprs):
        raise TypeError("%s takes a swig_ptr of a %s array, not %r" % (what, dtypes[0], ptr))
    return int(ptr)


def find_sorted_ids_bounds(sel, list_size, ids, jmin_out, jmax_out):
    """As FAISS: ids[jmin:jmax] are the ids of the sorted ids[:list_size] in [imin, imax)."""
    if not sel.assume_sorted:
        # FAISS_ASSERT, which aborts FAISS's process
        raise RuntimeError("faissproxy: find_sorted_ids_bounds needs assume_sorted=True "
                           "(FAISS asserts it)")
    n = int(list_size)
    a = _address(ids, (np.dtype("int64"),), ("long *", "int64"), "find_sorted_ids_bounds")
    outs = [_address(p, (np.dtype("uint64"),), ("size_t *", "unsigned long *", "uint64"),
                     "find_sorted_ids_bounds") for p in (jmin_out, jmax_out)]
    v = np.ctypeslib.as_array((ctypes.c_int64 * n).from_address(a)) if n > 0 else \
        np.empty(0, "int64")
    imin, imax = sel.imin, sel.imax
    if n == 0 or imax <= v[0] or imin > v[n - 1]:
        jmin = jmax = 0
    else:
        jmin = int(np.searchsorted(v, imin, side="left"))  # first id >= imin
        jmax = jmin if jmin == n or v[jmin] >= imax else \
            int(np.searchsorted(v, imax, side="left"))  # first id >= imax
    ctypes.c_uint64.from_address(outs[0]).value = jmin
    ctypes.c_uint64.from_address(outs[1]).value = jmax


def check_ids_sorted(index):
    """IndexIVF.check_ids_sorted: FAISS's own check, run by local faiss on FAISS's bytes of
    the index as the server holds it (its lists carry the ids a program sees)."""
    from . import _local_faiss
    from ._remote import serialize_index
    local = _local_faiss()
    if local is None:
        raise NotImplementedError("faissproxy: check_ids_sorted runs FAISS's check on the "
                                  "index's bytes in local faiss, which is not installed")
    copy = local.deserialize_index(serialize_index(index))  # owns the IVF read below
    return bool(local.extract_index_ivf(copy).check_ids_sorted())
