"""serialize_index / deserialize_index and write_index / read_index (and the _binary forms).

A served index's bytes are the server's export of it, FAISS's own bytes; bytes read become a
new served index (the server's import of them). write_index and read_index also take FAISS's
reader and writer objects (faiss.VectorIOWriter, BufferedIOWriter, PyCallbackIOWriter,
FileIOWriter and the readers): they are local faiss's (this package does not serve them). The
bytes are handed to a writer as FAISS's writer calls it; a reader is read by local faiss's
read_index, which reads exactly the bytes of one index and no more (a pipe is not read past
them). A file FAISS cannot read is named in the error, as FAISS's reader names it."""
import ctypes
import struct

import numpy as np

from . import _lib
from ._lib import check, client, lib
from ._params import _ptr
from ._remote import Index, _described, _unique_name, _View


def _local():
    from . import _local_faiss
    return _local_faiss()


def is_io_object(f, kind):
    """f is local faiss's IOWriter ("IOWriter") or IOReader ("IOReader")."""
    local = _local()
    return local is not None and isinstance(f, getattr(local, kind))


def write(data, writer):
    """Hands FAISS's bytes (a uint8 array) to a local faiss IOWriter, in one call of it."""
    local = _local()
    data = np.ascontiguousarray(data, dtype="uint8")
    n = int(data.size)
    if n and writer(local.swig_ptr(data), 1, n) != n:
        raise RuntimeError("Error in faiss::write_index: Error: 'ret == (n)' failed: write "
                           "error in %s: %d != %d" % (getattr(writer, "name", ""), 0, n))


def read(reader, io_flags, binary):
    """The bytes of the one index a local faiss IOReader holds (read by local faiss)."""
    local = _local()
    if binary:
        return local.serialize_index_binary(local.read_index_binary(reader, io_flags))
    return local.serialize_index(local.read_index(reader, io_flags))


def named(error, fname):
    """A server's refusal of a file's bytes, with the file's name where FAISS's reader puts
    it ("read error in <fname>: ...")."""
    msg = str(error)
    if "read error in :" in msg:
        msg = msg.replace("read error in :", "read error in %s:" % fname, 1)
    else:
        msg = "%s (reading %s)" % (msg, fname)
    return _lib.ServerError(getattr(error, "error_type", ""), msg)


def serialize_index(index):
    """FAISS's write_index bytes of the index, as a uint8 array (faiss.serialize_index)."""
    from . import _views
    if _views.is_quantizer(index):
        return np.frombuffer(_views.serialized_quantizer(index), dtype="uint8").copy()
    if getattr(type(index), "_in_process", False):  # shards, replicas: FAISS cannot either
        raise RuntimeError("don't know how to serialize this type of index")
    if not isinstance(index, Index):
        from . import _local_faiss
        local = _local_faiss()  # an index of local faiss (a class not served): its bytes
        if local is not None and isinstance(index, local.Index):
            return local.serialize_index(index)
        if local is not None and isinstance(index, local.IndexBinary):
            return local.serialize_index_binary(index)
        raise TypeError("in method 'write_index', argument 1 of type 'faiss::Index const *'")
    if isinstance(index, _View):
        index._not_served()
    buf = ctypes.POINTER(ctypes.c_uint8)()
    n = ctypes.c_size_t()
    h = client()
    check(lib.fpx_client_export(h, index._name.encode(), ctypes.byref(buf), ctypes.byref(n)), h)
    out = np.ctypeslib.as_array(buf, shape=(n.value,)).copy() if n.value else np.empty(
        0, "uint8")
    _lib.libc.free(buf)
    return out


serialize_index_binary = serialize_index


def _ivf_nprobe(data):
    """nprobe of FAISS-serialized IVF bytes ("Iw.." and "IBw." fourccs): the reader sets
    it from there, so the object must report it."""
    try:
        if bytes(data[:2]) == b"Iw":
            metric = struct.unpack_from("<i", data, 33)[0]
            return struct.unpack_from("<QQ", data, 37 + (4 if metric > 1 else 0))[1]
        if bytes(data[:3]) == b"IBw":
            # binary header: d, code_size, ntotal, is_trained, metric_type
            return struct.unpack_from("<QQ", data, 4 + 4 + 4 + 8 + 1 + 4)[1]
    except struct.error:
        pass
    return 1


def _hnsw_settings(data):
    """(efSearch, efConstruction) of FAISS-serialized HNSW bytes ("IHN." float, "IBHf"
    binary), after FAISS's HNSW graph (write_HNSW), or None."""
    try:
        if bytes(data[:3]) == b"IHN":
            metric = struct.unpack_from("<i", data, 33)[0]
            off = 37 + (4 if metric > 1 else 0)
        elif bytes(data[:4]) == b"IBHf":
            off = 25
        else:
            return None
        for width in (8, 4, 4, 8, 4):  # assign_probas .. neighbors
            n = struct.unpack_from("<Q", data, off)[0]
            off += 8 + n * width
        _, _, ef_construction, ef_search = struct.unpack_from("<iiii", data, off)
        return ef_search, ef_construction
    except struct.error:
        return None


def _import(data, binary):
    data = np.ascontiguousarray(np.frombuffer(bytes(data), dtype="uint8") if isinstance(
        data, (bytes, bytearray)) else data, dtype="uint8")
    info = _lib.IndexInfo()
    name = _unique_name()
    h = client()
    check(lib.fpx_client_import_leased(h, name.encode(), b"imported", _ptr(data), data.nbytes,
                                       _lib.LEASE_FROM_ENV, ctypes.byref(info)), h)
    try:
        return _described(info, binary, _ivf_nprobe(data), _hnsw_settings(data), data)
    except BaseException:
        _lib.pending_deletes.append(name)
        raise


def deserialize_index(data):
    return _import(data, False)


def deserialize_index_binary(data):
    return _import(data, True)


def write_index(index, fname):
    if is_io_object(fname, "IOWriter"):  # faiss.VectorIOWriter, PyCallbackIOWriter, ...
        write(serialize_index(index), fname)
        return
    with open(fname, "wb") as f:
        f.write(serialize_index(index).tobytes())


write_index_binary = write_index


def _read_index(fname, io_flags, binary):
    if is_io_object(fname, "IOReader"):  # faiss.BufferedIOReader, PyCallbackIOReader, ...
        return _import(read(fname, io_flags, binary), binary)
    with open(fname, "rb") as f:
        data = f.read()
    try:
        return _import(data, binary)
    except _lib.ServerError as e:
        raise named(e, fname) from None  # FAISS's reader names the file


def read_index(fname, io_flags=0):
    return _read_index(fname, io_flags, False)


def read_index_binary(fname, io_flags=0):
    return _read_index(fname, io_flags, True)
