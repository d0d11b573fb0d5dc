"""write_index / read_index (and the _binary forms) with FAISS's reader and writer objects
(faiss.VectorIOWriter, BufferedIOWriter, PyCallbackIOWriter, FileIOWriter and the readers),
and the file name in the error of a file FAISS cannot read.

The objects are local faiss's (this package does not serve them). A served index is written
as the server's export of it, FAISS's own bytes, handed to the writer as FAISS's writer is
called; a reader is read by local faiss's read_index, which reads exactly the bytes of one
index and no more (a pipe is not read past them), and the index read is sent to the server
(FAISS's bytes again) as a new served index."""
import numpy as np

from . import _lib


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
