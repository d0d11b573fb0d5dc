"""More of FAISS's binary indexes, served: IndexBinaryHNSW(d[, M]), IndexBinaryHash(d, b)
and IndexBinaryMultiHash(d, nhash, b) (their `b`, `nhash`, and `nflip`, which reaches the
server). The index types are the
server's index_binary_factory ones ("BHNSW<M>", "BHash<b>", "BHash<nhash>x<b>")."""
import re
import struct

from . import _remote
from ._remote import IndexBinary, _HNSWParams


class IndexBinaryHNSW(IndexBinary):
    _classes = ("IndexBinaryHNSW",)

    def __init__(self, d, M=32):
        super().__init__(d, "BHNSW%d" % int(M))
        self._hnsw = _HNSWParams(self)

    @property
    def hnsw(self):
        return self._hnsw


class _Hash:
    """nflip of the binary hash indexes: set on the server (FAISS serializes it)."""

    _nflip = 0  # FAISS's default

    @property
    def nflip(self):
        if self._nflip is None:
            from ._remote import _index_meta
            self._nflip = int(_index_meta(self._name).get("params", {}).get("nflip", 0))
        return self._nflip

    @nflip.setter
    def nflip(self, v):
        self._set_param("nflip", int(v))
        self._nflip = int(v)

    _read = None  # (b, nhash) of an index read from FAISS's bytes

    @property
    def b(self):
        if self._read:
            return self._read[0]
        return int(re.search(r"BHash(?:\d+x)?(\d+)", self._hash_type()).group(1))

    def _hash_type(self):
        t = self._description
        if not t.startswith("BHash"):
            raise NotImplementedError("faissproxy: the hash parameters of a hash index read "
                                      "from bytes are not known here")
        return t


def read_params(data):
    """(b, nhash) of FAISS's bytes of a binary hash index ("IBHh": header then b; "IBHm":
    header, its flat storage, then b and nhash), or None."""
    data = bytes(data[:1 << 20]) if len(data) > 1 << 20 else bytes(data)
    head = 4 + 21  # fourcc; d, code_size (i32), ntotal (i64), is_trained (u8), metric (i32)
    try:
        if data[:4] == b"IBHh":
            return struct.unpack_from("<i", data, head)[0], 1
        if data[:4] == b"IBHm" and data[head:head + 4] == b"IBxF":
            n = struct.unpack_from("<Q", data, 2 * head)[0]
            b, nhash = struct.unpack_from("<ii", data, 2 * head + 8 + n)
            return b, nhash
    except struct.error:
        pass
    return None


class IndexBinaryHash(_Hash, IndexBinary):
    _classes = ("IndexBinaryHash",)

    def __init__(self, d, b):
        super().__init__(d, "BHash%d" % int(b))


class IndexBinaryMultiHash(_Hash, IndexBinary):
    _classes = ("IndexBinaryMultiHash",)

    def __init__(self, d, nhash, b):
        super().__init__(d, "BHash%dx%d" % (int(nhash), int(b)))

    @property
    def nhash(self):
        if self._read:
            return self._read[1]
        return int(re.search(r"BHash(\d+)x", self._hash_type()).group(1))


def hnsw_m(quantizer):
    """M of an empty served binary HNSW index (made here or by the factory), or None."""
    if not isinstance(quantizer, IndexBinary) or isinstance(quantizer, _remote._View) or \
            quantizer._classes[:1] != ("IndexBinaryHNSW",) or quantizer._idmap:
        return None
    m = re.fullmatch(r"BHNSW(\d+)", quantizer._description)
    return int(m.group(1)) if m else None
