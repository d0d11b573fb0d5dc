"""Attribute writes on served objects: each reaches the server or raises, naming it."""
import numpy as np

# Attributes FAISS's objects have that a program may set, but that the server's index does not
# take from here: writing one raises instead of being kept on the Python object, where it
# would change nothing (a silently different result).
_UNSERVED = frozenset((
    "d", "ntotal", "is_trained", "metric_type", "metric_arg", "by_residual", "code_size",
    "parallel_mode", "use_precomputed_table", "scan_table_threshold", "quantizer_trains_alone",
    "own_fields", "own_invlists", "cp", "clustering_index", "direct_map", "invlists", "nlist",
    "quantizer", "pq", "sq", "do_polysemous_training", "polysemous_training", "search_type",
    "polysemous_ht", "encode_signs", "xb", "codes", "storage", "hnsw", "index", "id_map",
    "rev_map", "nprobe", "max_codes", "efSearch", "efConstruction", "k_factor", "base_index",
    "refine_index", "chain", "prefix_len", "ksub", "M", "nbits", "upper_beam",
    "search_bounded_queue", "check_relative_distance", "use_heap", "query_batch_size",
))


def _plain_in_faiss(obj, name):
    """Would FAISS's Python object of obj's class keep name as a plain attribute (local
    faiss's class of that name has no such member)? False when that cannot be told."""
    from . import _local_faiss
    local = _local_faiss()
    cls = getattr(local, type(obj).__name__, None) if local is not None else None
    return isinstance(cls, type) and not hasattr(cls, name)


_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _holds(obj, name, value):
    """Does obj's attribute name read back the number value already?"""
    if not isinstance(value, _SCALARS):
        return False
    try:
        current = getattr(obj, name)
    except Exception:  # an attribute not served for reading either
        return False
    return isinstance(current, _SCALARS) and current == value


def _set_served(obj, name, value):
    """__setattr__ of served objects: private names are the object's own; a FAISS attribute
    with a setter here reaches the server; any other write raises, naming the attribute."""
    if name.startswith("_"):
        object.__setattr__(obj, name, value)
        return
    attr = getattr(type(obj), name, None)
    if isinstance(attr, property) and attr.fset is not None:
        attr.fset(obj, value)
        return
    from ._remote import _IVF, Index, _IVFView
    what = "%s.%s" % (type(obj).__name__, name)
    if name in ("nprobe", "max_codes") and isinstance(obj, Index) and not any(
            "IVF" in c for c in obj._classes):
        # FAISS's Python object of an index with no IVF anywhere keeps the value as a plain
        # attribute, which no search reads: so does this one
        object.__setattr__(obj, name, value)
        return
    if _plain_in_faiss(obj, name) and name not in ("nprobe", "max_codes"):
        # FAISS's Python object of this class has no such member: it keeps the value as a
        # plain attribute that nothing reads (a typo included), and so does this one
        object.__setattr__(obj, name, value)
        return
    if name in _UNSERVED or attr is not None:
        if _holds(obj, name, value):
            return  # FAISS's write of the value its member holds changes nothing
        hint = ""
        if name in ("nprobe", "max_codes") and not isinstance(obj, (_IVF, _IVFView)):
            hint = (" (this index is not an IVF at its top: use faiss.extract_index_ivf(index)."
                    "%s or faiss.ParameterSpace().set_index_parameter(index, %r, value))"
                    % (name, name))
        raise NotImplementedError("faissproxy: setting %s is not served: the server's index "
                                  "would not use it%s" % (what, hint))
    raise AttributeError("faissproxy: %s is not an attribute FAISS has; a served index keeps "
                         "no local attributes" % what)
