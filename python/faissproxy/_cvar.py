"""faiss.cvar for a program whose indexes are served: FAISS's global variables.

The statistics FAISS's searches accumulate there (indexIVF_stats, hnsw_stats, ...) count
the searches of this process's FAISS library; a served index searches on the server, so
local faiss's counters would read zero where FAISS's would count that search. Reading them
raises, naming what is not served. The other globals (I/O flags, block sizes of local
computations) are local faiss's, read and written there.
"""

# FAISS 1.7.3's counters of index searches (faiss.cvar.*_stats), all filled by searches
# that run on the server for a served index. partition_stats counts faiss.partition_*,
# which runs locally.
_SEARCH_STATS = frozenset((
    "indexIVF_stats", "indexIVFPQ_stats", "indexPQ_stats", "hnsw_stats",
    "indexBinaryHash_stats", "IVFFastScan_stats", "FastScan_stats",
))


class Cvar:
    """faiss.cvar: local faiss's globals, except the search statistics (not served)."""

    def __init__(self, local):
        object.__setattr__(self, "_local", local)

    def __getattr__(self, name):
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
