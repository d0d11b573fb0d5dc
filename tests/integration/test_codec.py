"""sa_encode / sa_decode: FAISS's standalone codec of a served index, computed by the server
with the index's own encoding. Codes and decoded vectors are compared byte for byte with
in-process faiss on the same index (the server's export of it), refusals are FAISS's, and
the index is left unchanged (a read)."""

import faiss as real
import numpy as np
import pytest

from conftest import unique




def data(n, d, seed):
    return np.random.default_rng(seed).random((n, d), dtype="float32")


@pytest.mark.parametrize("key", ["Flat", "SQ8", "SQ4", "PQ4x6", "LSHrt", "IVF16,SQ8",
                                 "IVF16,PQ4np", "PCA8,IVF16,Flat", "IVF16,Flat,IDMap"])
def test_codes_are_faiss(fp, key):
    xt, x = data(1500, 16, 1), data(64, 16, 2)
    index = fp.index_factory(16, key)
    index.train(xt)
    if "IVF" in key or "IDMap" in key:
        index.add_with_ids(xt[:10], np.arange(10, dtype="int64"))
    else:  # FAISS's flat-code indexes take no ids (nor do served ones)
        index.add(xt[:10])
    ref = real.deserialize_index(fp.serialize_index(index))
    if "IDMap" in key:  # FAISS's IDMap has no codec: neither has the served one
        with pytest.raises(RuntimeError, match="not implemented"):
            ref.sa_encode(x)
        with pytest.raises(RuntimeError, match="not implemented"):
            index.sa_encode(x)
        return
    assert index.sa_code_size() == ref.sa_code_size()
    codes = index.sa_encode(x)
    np.testing.assert_array_equal(codes, ref.sa_encode(x))
    np.testing.assert_array_equal(index.sa_decode(codes), ref.sa_decode(codes))
    out = np.empty_like(codes)
    assert index.sa_encode(x, out) is out
    # a read: the index holds what it held
    assert index.ntotal == 10
    np.testing.assert_array_equal(index.search(x, 3)[1], ref.search(x, 3)[1])


def test_refusals(fp, client):
    x = data(5, 16, 3)
    h = fp.IndexHNSWFlat(16, 8)
    with pytest.raises(RuntimeError, match="standalone codec not implemented"):
        h.sa_encode(x)
    with pytest.raises(RuntimeError, match="standalone codec not implemented"):
        real.IndexHNSWFlat(16, 8).sa_encode(x)
    sq = fp.IndexScalarQuantizer(16, fp.ScalarQuantizer.QT_8bit)
    sq.train(data(200, 16, 4))
    with pytest.raises(AssertionError):  # codes of another size, as faiss asserts
        sq.sa_decode(np.zeros((2, 5), dtype="uint8"))
    assert not hasattr(fp.IndexBinaryFlat(64), "sa_encode")
    # on the wire: shapes that do not match the data, codes of another size, a binary index
    n = sq.server_name
    assert client.error({"operation": "sa_decode", "index_id": n, "dtype": "uint8",
                         "vector_shape": [2, 16]}, b"\0" * 31)["error_type"] == "validation_error"
    assert client.error({"operation": "sa_decode", "index_id": n, "dtype": "uint8",
                         "vector_shape": [2, 8]}, b"\0" * 16)["error_type"] == "validation_error"
    assert client.error({"operation": "sa_decode", "index_id": n,
                         "vector_shape": [1, 16]}, b"\0" * 16)["error_type"] == "validation_error"
    assert client.error({"operation": "sa_encode", "index_id": n,
                         "vector_shape": [1, 8]}, b"\0" * 32)["error_type"] == "validation_error"
    b = unique("bin")
    client.ok({"operation": "create_index", "index_id": b, "dimension": 64,
               "index_type": "BFlat"})
    assert client.error({"operation": "sa_encode", "index_id": b, "dtype": "uint8",
                         "vector_shape": [1, 8]}, b"\0" * 8)["error_type"] == "validation_error"
    client.drop(b)
    assert client.ping()  # still serving
