"""The lifetime of served indexes beyond one object: pickling (FAISS's Python objects
pickle through serialize_index, so a pickled index comes back as an independent copy, never
as a second name for the same server index) and the indexes left at the process's exit
(deleted then, unless kept: see _lib.delete_generated_at_exit)."""
import numpy as np

from . import _remote, _views


def reduce(index):
    """Index.__reduce__: FAISS's serialization of index, read back as a new served index."""
    if _views.is_quantizer(index) or isinstance(index, _remote._View):
        raise TypeError("faissproxy: cannot pickle %s: it is a view of another index held by "
                        "the server" % type(index).__name__)
    if index._binary:  # FAISS 1.7.3 gives binary indexes no pickling
        raise TypeError("cannot pickle '%s' object" % type(index).__name__)
    return _unpickle, (_remote.serialize_index(index).tobytes(),)


def _unpickle(data):
    return _remote.deserialize_index(np.frombuffer(data, dtype="uint8"))
