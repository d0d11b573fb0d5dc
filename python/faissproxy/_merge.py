"""FAISS's merge_from between two served indexes, run by the server (its merge_from
operation): the other index's vectors move into this one and the other is left empty, as
FAISS leaves it. Both must be indexes of this package, whole (not a quantizer or
sub-index view: their content lives in another index)."""
from . import _remote
from ._remote import Index, _View, _call


_NO_ADD_ID = object()


def merge_from(index, other, add_id=_NO_ADD_ID):
    """index.merge_from(other, add_id=0); FAISS's IVF indexes take no default add_id."""
    if add_id is _NO_ADD_ID:
        if isinstance(index, _remote._IVF):
            raise TypeError("%s.merge_from() missing 1 required positional argument: 'add_id'"
                            % ("IndexBinaryIVF" if index._binary else "IndexIVF"))
        add_id = 0
    if isinstance(index, _View):
        index._not_served()
    if not isinstance(other, Index):
        raise TypeError("in method 'Index_merge_from', argument 2 of type 'faiss::Index &'"
                        if not index._binary else
                        "in method 'IndexBinary_merge_from', argument 2 of type "
                        "'faiss::IndexBinary &'")
    if isinstance(other, _View):
        other._not_served()
    if other._binary != index._binary:
        raise TypeError("faissproxy: merge_from takes an index of the same kind (binary or "
                        "float) as the index merged into")
    _, _, meta = _call({"operation": "merge_from", "index_id": index._name,
                        "other": other._name, "add_id": int(add_id)})
    object.__setattr__(index, "_ntotal", int(meta["ntotal"]))
    object.__setattr__(other, "_ntotal", 0)


def check_consistency(index):
    """IndexIDMap2.check_consistency: the server keeps one label per vector and maps each
    label back to it, so FAISS's check (the reverse map agrees with the ids) always
    holds."""
    if isinstance(index, _View):
        index._not_served()
