"""FAISS classes this package does not serve that are built over other indexes
(IndexHNSW2Level, Index2Layer, MultiIndexQuantizer2, IndexRowwiseMinMax, ...). They are
local faiss's own; given a served index, local faiss's constructor would fail with SWIG's
TypeError about argument types, which does not say what is missing: here it raises
NotImplementedError naming the class. Built over local faiss objects they are unchanged."""

_OVER_INDEXES = frozenset(("IndexHNSW2Level", "Index2Layer", "MultiIndexQuantizer2",
                           "IndexRowwiseMinMax", "IndexRowwiseMinMaxFP16"))
_MADE = {}


def wrapped(name, local_cls):
    """local_cls, or a subclass of it refusing served indexes as arguments."""
    if name not in _OVER_INDEXES or not isinstance(local_cls, type):
        return local_cls
    cls = _MADE.get(name)
    if cls is None:
        from ._remote import Index

        def __init__(self, *args):
            if any(isinstance(a, Index) for a in args):
                raise NotImplementedError("faissproxy: %s over a served index is not served "
                                          "(FAISS's class is not served by the server; build "
                                          "it with local faiss over local indexes)" % name)
            local_cls.__init__(self, *args)

        cls = type(name, (local_cls,), {"__init__": __init__})
        _MADE[name] = cls
    return cls
