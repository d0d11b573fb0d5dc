"""FAISS's standalone codec of a served index (sa_code_size, sa_encode, sa_decode): the
server encodes and decodes with the index's own encoding (its sa_encode and sa_decode
operations, reads that leave the index unchanged), so the codes are FAISS's bytes for that
index, and FAISS's codes of the same index decode here."""
import numpy as np

from ._remote import _View, _call


def _served(index):
    if isinstance(index, _View):
        index._not_served()


def sa_code_size(index):
    _served(index)
    rh, _, _ = _call({"operation": "sa_encode", "index_id": index._name,
                      "vector_shape": [0, index.d]})
    return int(rh["shape"][1])


def sa_encode(index, x, codes=None):
    _served(index)
    x = np.ascontiguousarray(x, dtype="float32")
    n, d = x.shape
    assert d == index.d
    rh, data, _ = _call({"operation": "sa_encode", "index_id": index._name,
                         "vector_shape": [n, d]}, x.tobytes())
    cs = int(rh["shape"][1])
    if codes is None:
        codes = np.empty((n, cs), dtype="uint8")
    else:
        assert codes.shape == (n, cs)
    codes[:] = np.frombuffer(data, dtype="uint8", count=n * cs).reshape(n, cs)
    return codes


def sa_decode(index, codes, x=None):
    _served(index)
    codes = np.ascontiguousarray(codes, dtype="uint8")
    n, cs = codes.shape
    assert cs == sa_code_size(index)
    _, data, _ = _call({"operation": "sa_decode", "index_id": index._name, "dtype": "uint8",
                        "vector_shape": [n, cs]}, codes.tobytes())
    if x is None:
        x = np.empty((n, index.d), dtype="float32")
    else:
        assert x.shape == (n, index.d)
    x[:] = np.frombuffer(data, dtype="float32", count=n * index.d).reshape(n, index.d)
    return x
