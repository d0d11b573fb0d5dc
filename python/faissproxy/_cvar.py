"""faiss.cvar for a program whose indexes are served: FAISS's global variables.

The statistics FAISS's searches accumulate there (indexIVF_stats, indexPQ_stats,
indexBinaryHash_stats, hnsw_stats, indexIVFPQ_stats) are local faiss's objects, into which
served searches add the counts the server reports (_stats); the fast-scan timers
(IVFFastScan_stats, FastScan_stats) are not sent back, and reading them raises. The other
globals (I/O flags, block sizes of local computations) are local faiss's, read and written
there.
"""

from . import _stats

# FAISS 1.7.3's counters of index searches (faiss.cvar.*_stats), all filled by searches
# that run on the server for a served index. partition_stats counts faiss.partition_*,
# which runs locally.
_SEARCH_STATS = frozenset((
    "indexIVF_stats", "indexIVFPQ_stats", "indexPQ_stats", "hnsw_stats",
    "indexBinaryHash_stats", "IVFFastScan_stats", "FastScan_stats",
))


class Cvar:
    """faiss.cvar: local faiss's globals; the search statistics count served searches too."""

    def __init__(self, local):
        object.__setattr__(self, "_local", local)

    def __getattr__(self, name):
        local = self.__dict__["_local"]
        if name in _stats.GROUPS and local is not None:
            return _stats.view(name, local)
        if name in _SEARCH_STATS:
            raise NotImplementedError(
                "faissproxy: faiss.cvar.%s is not served: served indexes search on the "
                "server, whose counters are not sent back (local faiss's would not count "
                "those searches)" % name)
        local = self.__dict__["_local"]
        if local is None:
            raise AttributeError("faissproxy: faiss.cvar.%s needs the local faiss module"
                                 % name)
        return getattr(local, name)

    def __setattr__(self, name, value):
        if name in _SEARCH_STATS:
            self.__getattr__(name)
        local = self.__dict__["_local"]
        if local is None:
            raise AttributeError("faissproxy: faiss.cvar.%s needs the local faiss module"
                                 % name)
        setattr(local, name, value)

    def __repr__(self):
        return "<faissproxy cvar over %r>" % (self.__dict__["_local"],)
