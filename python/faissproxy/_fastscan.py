"""FAISS's fast-scan and additive-quantizer index classes, served by a faiss-proxy server.

IndexPQFastScan and IndexIVFPQFastScan are made from their constructors' arguments (the
server's index_factory, or FAISS's serialization of the index over the given centroids) or,
as FAISS allows, from an existing IndexPQ / IndexIVFPQ: then FAISS copies that index's
product quantizer and codes, packing the codes in blocks of bbs vectors. Here the served
index's FAISS bytes are read, the codes packed the same way (_pq4_pack, FAISS's
pq4_pack_codes layout), and the fast-scan index's FAISS bytes imported on the server.

The members FAISS's fast-scan search reads (implem, qbs, norm_scale) reach the server as
logged settings (set_params); bbs is fixed at construction, as in FAISS.
"""
import struct

import numpy as np

from . import _remote
from ._params import _family
from ._remote import (METRIC_L2, Index, _compose, _index_header, _IVF, _make_view, _served_index,
                      serialize_index)

# ---- FAISS's serialization, read -----------------------------------------------------


class _Bytes:
    """A cursor over FAISS-serialized bytes (index_write.cpp's WRITE1/WRITEVECTOR)."""

    def __init__(self, data, off=0):
        self.data, self.off = data, off

    def take(self, n):
        if n < 0 or self.off + n > len(self.data):
            raise NotImplementedError("faissproxy: the server's bytes for this index are not "
                                      "in the layout expected here")
        out = self.data[self.off:self.off + n]
        self.off += n
        return out

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def vector(self, width):
        """A WRITEVECTOR: its element count, then the elements."""
        return self.take(self.u64() * width)

    def header(self):
        """write_index_header's fields: d, ntotal, two unused, is_trained, metric (and
        metric_arg past the two metrics served here). Returns them and their bytes."""
        start = self.off
        d, ntotal, _, _, trained, metric = struct.unpack("<iqqq?i", self.take(33))
        if metric > 1:
            self.take(4)
        return (d, ntotal, trained, metric), self.data[start:self.off]

    def pq(self):
        """write_ProductQuantizer: d, M, nbits, the centroids. Returns (M, nbits, bytes)."""
        start = self.off
        _, M, nbits = struct.unpack("<QQQ", self.take(24))
        self.vector(4)
        return M, nbits, self.data[start:self.off]


def _vector(b, width=1):
    """A WRITEVECTOR of elements of width bytes: their count, then their bytes."""
    return struct.pack("<Q", len(b) // width) + b


def _pq4_pack(codes, M, bbs):
    """FAISS's pq4_pack_codes: the 4-bit codes of n vectors ((M + 1) // 2 bytes each, code m
    in the low nibble of byte m // 2 for even m) laid out in blocks of bbs vectors, for
    the fast-scan kernels. Rows past n in the last block are zeros, as in FAISS."""
    cols = (M + 1) // 2
    n = len(codes) // cols if cols else 0
    nb = (n + bbs - 1) // bbs * bbs
    c = np.zeros((nb, cols), dtype="uint8")
    c[:n] = np.frombuffer(codes, dtype="uint8").reshape(n, cols)
    # (block, 32-vector group, vector in group, column) -> (block, column, group, vector)
    c = c.reshape(nb // bbs, bbs // 32, 32, cols).transpose(0, 3, 1, 2)
    perm = np.array([0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15])
    out = np.empty(c.shape[:3] + (32,), dtype="uint8")
    for half, nib in ((0, c & 15), (16, c >> 4)):
        out[..., half:half + 16] = nib[..., perm] | (nib[..., perm + 16] << 4)
    return out.tobytes(), nb


# ---- the attributes of fast-scan indexes -------------------------------------------------


class _FastScan:
    """implem and qbs (search-time members FAISS's fast-scan search reads) reach the server;
    bbs, fixed at construction, is read only."""

    _implem = 0
    _qbs = 0
    _bbs = 32

    def _known(self, value, name):
        if value is None:
            raise NotImplementedError("faissproxy: %s of a %s read from bytes is not known "
                                      "here (set it to know it)" % (name, type(self).__name__))
        return value

    @property
    def implem(self):
        return self._known(self._implem, "implem")

    @implem.setter
    def implem(self, v):
        self._set_param("implem", int(v))
        self._implem = int(v)

    @property
    def qbs(self):
        return self._known(self._qbs, "qbs")

    @qbs.setter
    def qbs(self, v):
        self._set_param("qbs", int(v))
        self._qbs = int(v)

    @property
    def bbs(self):
        return self._known(self._bbs, "bbs")

    @bbs.setter
    def bbs(self, v):
        raise NotImplementedError("faissproxy: setting %s.bbs is not served: it is fixed "
                                  "when the index is made (its constructor's bbs)"
                                  % type(self).__name__)


class _NormScale:
    """norm_scale of additive-quantizer fast-scan indexes (the search's scaling of the norm
    term; training estimates it again when the index rescales norms, as FAISS does)."""

    _norm_scale = 1

    @property
    def norm_scale(self):
        if self._norm_scale is None:
            raise NotImplementedError("faissproxy: norm_scale of an index read from bytes or "
                                      "trained here is not known here")
        return self._norm_scale

    @norm_scale.setter
    def norm_scale(self, v):
        self._set_param("norm_scale", int(v))
        self._norm_scale = int(v)

    def train(self, x):
        super().train(x)
        if self.metric_type == METRIC_L2:
            self._norm_scale = None  # FAISS's training estimates it again, on the server


class _Internal:
    """FAISS's quantizer objects inside an index (rq, lsq, aq, pq, ...): not served."""

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        raise NotImplementedError("faissproxy: %s.%s (FAISS's internal quantizer object) is "
                                  "not served; the server holds it" % (cls.__name__, self.name))


def _bbs_of(description):
    """The bbs an index_factory description gives a fast-scan index (FAISS's default 32)."""
    import re
    m = re.search(r"x4fsr?_(\d+)", description)
    return int(m.group(1)) if m else 32


def _fs_residual(description):
    """by_residual of an IVF fast-scan index from the factory: its "fsr" suffix."""
    import re
    return bool(re.search(r"x4fsr", description))


def _ipfs_settings(data):
    """(implem, bbs, qbs) of FAISS-serialized IndexPQFastScan bytes ("IPfs"), or None."""
    try:
        if bytes(data[:4]) != b"IPfs":
            return None
        r = _Bytes(bytes(data), 4)
        r.header()
        r.pq()
        return struct.unpack("<iii", r.take(12))
    except (NotImplementedError, struct.error):
        return None


def _check_fast_scan(nbits, bbs):
    if int(nbits) != 4:
        raise RuntimeError("Error in void faiss::IndexFastScan::init_fastscan: "
                           "Error: 'nbits == 4' failed")
    if int(bbs) % 32 != 0 or int(bbs) <= 0:
        raise RuntimeError("Error in void faiss::IndexFastScan::init_fastscan: "
                           "Error: 'bbs % 32 == 0' failed")


def _is_top(index, name):
    return isinstance(index, Index) and not index._idmap and index._classes[:1] == (name,)


class IndexPQFastScan(_FastScan, Index):
    """IndexPQFastScan(d, M, nbits[, metric, bbs]) or IndexPQFastScan(index_pq[, bbs])."""

    _classes = ("IndexPQFastScan",)

    def __init__(self, *args):
        self._name, self._keep, self._verbose = None, False, False
        if args and isinstance(args[0], Index):
            self._from_pq(*args)
            return
        if not 3 <= len(args) <= 5:
            raise TypeError("IndexPQFastScan takes (d, M, nbits[, metric, bbs]) or "
                            "(index_pq[, bbs])")
        d, M, nbits = (int(a) for a in args[:3])
        metric = args[3] if len(args) > 3 else METRIC_L2
        bbs = int(args[4]) if len(args) > 4 else 32
        _check_fast_scan(nbits, bbs)
        description = "PQ%dx4fs" % M + ("_%d" % bbs if bbs != 32 else "")
        Index.__init__(self, d, description, metric)
        self._bbs = bbs

    def _from_pq(self, orig, bbs=32):
        """FAISS's IndexPQFastScan(const IndexPQ&, bbs): orig's product quantizer and its
        codes, packed; orig stays an index of its own."""
        if not _is_top(orig, "IndexPQ") or isinstance(orig, _remote._View):
            raise NotImplementedError("faissproxy: IndexPQFastScan is served from a served "
                                      "IndexPQ, not %r" % (orig,))
        bbs = int(bbs)
        r = _Bytes(serialize_index(orig).tobytes())
        if r.take(4) != b"IxPq":
            raise NotImplementedError("faissproxy: IndexPQFastScan is served from an IndexPQ")
        (d, ntotal, trained, metric), header = r.header()
        M, nbits, pq = r.pq()
        _check_fast_scan(nbits, bbs)
        packed, ntotal2 = _pq4_pack(r.vector(1), M, bbs)
        M2 = (M + 1) // 2 * 2
        body = b"IPfs" + header + pq + struct.pack("<iiiQQ", 0, bbs, 0, ntotal2, M2)
        body += _vector(packed)
        _compose(self, body, "PQ%dx4fs" % M + ("_%d" % bbs if bbs != 32 else ""))
        self._bbs = bbs


class IndexIVFPQFastScan(_FastScan, _remote._Residual, _IVF, Index):
    """IndexIVFPQFastScan(quantizer, d, nlist, M, nbits[, metric, bbs]) or
    IndexIVFPQFastScan(index_ivfpq[, bbs])."""

    _classes = ("IndexIVFPQFastScan",)
    _by_residual = False  # FAISS's constructor's

    def __init__(self, *args):
        self._name, self._keep, self._verbose = None, False, False
        if len(args) in (1, 2) and isinstance(args[0], Index):
            self._from_ivfpq(*args)
            return
        if not 5 <= len(args) <= 7:
            raise TypeError("IndexIVFPQFastScan takes (quantizer, d, nlist, M, nbits[, metric, "
                            "bbs]) or (index_ivfpq[, bbs])")
        quantizer = args[0]
        d, nlist, M, nbits = (int(a) for a in args[1:5])
        metric = args[5] if len(args) > 5 else METRIC_L2
        bbs = int(args[6]) if len(args) > 6 else 32
        from . import _composed  # a served flat quantizer, or another IVF's
        centroids = _composed.quantizer_centroids(quantizer, d, nlist, metric,
                                                  "IndexIVFPQFastScan")
        _check_fast_scan(nbits, bbs)
        self._nlist = nlist
        description = "IVF%d,PQ%dx4fs" % (nlist, M) + ("_%d" % bbs if bbs != 32 else "")
        if centroids is None:
            Index.__init__(self, d, description, metric)
        else:
            # FAISS's index over these very centroids, its product quantizer untrained
            M2 = (M + 1) // 2 * 2
            body = b"IwPf" + _index_header(d, False, metric)
            body += struct.pack("<QQ", nlist, 1) + centroids
            body += b"\x00" + struct.pack("<Q", 0)  # no direct map
            body += struct.pack("<?QiQiQ", False, M2 // 2, bbs, M2, 0, 0)
            body += struct.pack("<QQQ", d, M, 4) + _vector(bytes(4 * (d << 4)), 4)
            body += self._block_lists([(b"", b"")] * nlist, bbs, M2)
            _compose(self, body, description)
        self._bbs = bbs
        _composed.attach_quantizer(self, quantizer)

    @staticmethod
    def _block_lists(lists, bbs, M2):
        """FAISS's BlockInvertedLists ("ilbl"): per list its ids, then its packed codes."""
        out = b"ilbl" + struct.pack("<QQQQ", len(lists), (1 << 64) - 1, bbs, bbs * M2 // 2)
        for ids, codes in lists:
            out += _vector(ids, 8) + _vector(codes)
        return out

    def _from_ivfpq(self, orig, bbs=32):
        """FAISS's IndexIVFPQFastScan(const IndexIVFPQ&, bbs): orig's quantizer, product
        quantizer, by_residual and nprobe, and its lists' codes packed."""
        if not _is_top(orig, "IndexIVFPQ") or isinstance(orig, _remote._View):
            raise NotImplementedError("faissproxy: IndexIVFPQFastScan is served from a served "
                                      "IndexIVFPQ, not %r" % (orig,))
        bbs = int(bbs)
        data = serialize_index(orig).tobytes()
        r = _Bytes(data)
        if r.take(4) != b"IwPQ":
            raise NotImplementedError("faissproxy: IndexIVFPQFastScan is served from an "
                                      "IndexIVFPQ")
        start = r.off
        (d, ntotal, trained, metric), _ = r.header()
        nlist, nprobe = struct.unpack("<QQ", r.take(16))
        if r.take(4) not in (b"IxF2", b"IxFI"):
            raise NotImplementedError("faissproxy: IndexIVFPQFastScan is served from an "
                                      "IndexIVFPQ over a flat quantizer")
        r.header()
        r.vector(4)
        ivf_header = data[start:r.off]  # header, nlist, nprobe, the quantizer
        # the direct map (write_direct_map: type, array, hash table), which FAISS's
        # constructor does not copy
        if r.take(1) == b"\x02":
            r.vector(8)
            r.vector(16)
        else:
            r.vector(8)
        by_residual = r.take(1) != b"\x00"
        r.u64()  # code_size
        M, nbits, pq = r.pq()
        _check_fast_scan(nbits, bbs)
        if r.take(4) != b"ilar":
            raise NotImplementedError("faissproxy: the lists of this IndexIVFPQ are not "
                                      "served here")
        nl, cs = struct.unpack("<QQ", r.take(16))
        kind = r.take(4)
        sizes = np.frombuffer(r.vector(8), dtype="uint64")
        if kind == b"full":
            counts = sizes
        else:
            counts = np.zeros(nl, dtype="uint64")
            counts[sizes[0::2].astype(np.int64)] = sizes[1::2]
        M2 = (M + 1) // 2 * 2
        lists = []
        for n in counts.tolist():
            if n == 0:
                lists.append((b"", b""))
                continue
            codes = r.take(n * cs)
            ids = r.take(n * 8)
            lists.append((ids, _pq4_pack(codes, M, bbs)[0]))
        body = b"IwPf" + ivf_header + b"\x00" + struct.pack("<Q", 0)
        body += struct.pack("<?QiQiQ", by_residual, M2 // 2, bbs, M2, 0, 0) + pq
        body += self._block_lists(lists, bbs, M2)
        _compose(self, body, "IVF%d,PQ%dx4fs" % (nlist, M) + ("_%d" % bbs if bbs != 32 else ""))
        self._nlist, self._nprobe, self._bbs = nlist, nprobe, bbs
        self._by_residual = by_residual


class IndexIVFResidualQuantizer(_remote._Residual, _IVF, Index):
    """IndexIVFResidualQuantizer(quantizer, d, nlist, M, nbits[, metric, search_type]): over
    an empty flat quantizer, the factory's IVF<nlist>,RQ<M>x<nbits> (the same index, with
    FAISS's default search type)."""

    _classes = ("IndexIVFResidualQuantizer",)
    rq, aq = _Internal("rq"), _Internal("aq")

    def __init__(self, quantizer, d, nlist, M, nbits, metric=METRIC_L2, search_type=0):
        self._name, self._keep, self._verbose = None, False, False
        _served_index(quantizer, "the quantizer")
        if quantizer.d != int(d) or quantizer.metric_type != metric or \
                _family(quantizer._classes) != "flat" or quantizer._idmap or quantizer.ntotal:
            raise NotImplementedError("faissproxy: IndexIVFResidualQuantizer is served over an "
                                      "empty flat quantizer of the same dimension and metric")
        if int(search_type) != 0:
            raise NotImplementedError("faissproxy: IndexIVFResidualQuantizer is served with "
                                      "FAISS's default search type (ST_decompress) only")
        self._nlist = int(nlist)
        Index.__init__(self, d, "IVF%d,RQ%dx%d" % (self._nlist, int(M), int(nbits)), metric)
        self._quantizer = _make_view(quantizer, self, "quantizer")


# FAISS's fourcc of an additive-quantizer index, and that of the fast-scan index over the
# same quantizer (FAISS writes the fast-scan class by its quantizer's type).
_AQ_FS_FOURCC = {b"IxRq": b"IRfs", b"IxRQ": b"IRfs", b"IxLS": b"ILfs", b"IxPR": b"IPRf",
                 b"IxPL": b"IPLf", b"IwRQ": b"IVRf", b"IwLS": b"IVLf", b"IwPR": b"NPRf",
                 b"IwPL": b"NPLf"}


def _local_for(name, orig):
    """Local faiss, and orig (a served index of its own) read into it from FAISS's bytes:
    FAISS's constructor from another index runs there, on the same content."""
    from . import _local_faiss
    local = _local_faiss()
    if local is None:
        raise NotImplementedError("faissproxy: %s(index) is served with local faiss "
                                  "installed only (it builds FAISS's copy there)" % name)
    if not isinstance(orig, Index) or isinstance(orig, _remote._View) or orig._binary:
        raise NotImplementedError("faissproxy: %s is served from a served index of its own, "
                                  "not %r" % (name, orig))
    data = serialize_index(orig).tobytes()
    if data[:4] not in _AQ_FS_FOURCC:
        raise NotImplementedError("faissproxy: %s is served from a served additive-quantizer "
                                  "index (IndexResidualQuantizer, ...), not %s"
                                  % (name, type(orig).__name__))
    return local, data, local.deserialize_index(np.frombuffer(data, dtype="uint8"))


def _aq_fs_fields(fs, ivf):
    """The fast-scan members FAISS writes after the quantizer, from local faiss's object."""
    out = struct.pack("<?", fs.by_residual) if ivf else b""
    out += struct.pack("<iiiQQQQ", fs.implem, fs.bbs, fs.qbs, fs.M, fs.nbits, fs.ksub,
                       fs.code_size)
    out += struct.pack("<Q", fs.qbs2 if ivf else fs.ntotal2)
    return out + struct.pack("<Q?iQ", fs.M2, fs.rescale_norm, fs.norm_scale,
                             fs.max_train_points)


class IndexAdditiveQuantizerFastScan(_NormScale, _FastScan, Index):
    """IndexAdditiveQuantizerFastScan(index[, bbs]): FAISS's copy of a served additive-
    quantizer index (its quantizer, its codes packed), made by local faiss's constructor and
    imported as FAISS writes that index (by its quantizer's type, as FAISS's reader gives
    it back); the index given stays an index of its own, as in FAISS."""

    _classes = ("IndexAdditiveQuantizerFastScan",)
    aq = _Internal("aq")

    def __init__(self, *args):
        self._name, self._keep, self._verbose = None, False, False
        if not args or not isinstance(args[0], Index) or len(args) > 2:
            raise NotImplementedError("faissproxy: IndexAdditiveQuantizerFastScan is served "
                                      "as (index[, bbs]) over a served index; index_factory's "
                                      "\"...fs\" descriptions make the others")
        orig = args[0]
        local, data, lorig = _local_for("IndexAdditiveQuantizerFastScan", orig)
        if data[:2] != b"Ix":
            raise NotImplementedError("faissproxy: IndexAdditiveQuantizerFastScan is served "
                                      "from a flat additive-quantizer index, not %s"
                                      % type(orig).__name__)
        fs = local.IndexAdditiveQuantizerFastScan(lorig, *(int(a) for a in args[1:]))
        r = _Bytes(data, 4)
        _, header = r.header()
        # the quantizer lies between the header and code_size, codes (8 + 8 + n bytes)
        end = len(data) - 16 - lorig.ntotal * lorig.code_size
        quantizer = data[r.off:end]
        codes = local.rev_swig_ptr(fs.codes.get(), fs.codes.size()).tobytes() \
            if fs.codes.size() else b""
        body = _AQ_FS_FOURCC[data[:4]] + header + quantizer + _aq_fs_fields(fs, False)
        _compose(self, body + _vector(codes), "imported")
        self._implem, self._bbs, self._qbs = fs.implem, fs.bbs, fs.qbs
        self._norm_scale = fs.norm_scale


class IndexIVFAdditiveQuantizerFastScan(_NormScale, _FastScan, _remote._Residual, _IVF,
                                        Index):
    """IndexIVFAdditiveQuantizerFastScan(index[, bbs]): as IndexAdditiveQuantizerFastScan,
    from a served IVF additive-quantizer index (its quantizer, centroids and nprobe; its
    lists' codes packed)."""

    _classes = ("IndexIVFAdditiveQuantizerFastScan",)
    aq = _Internal("aq")

    def __init__(self, *args):
        self._name, self._keep, self._verbose = None, False, False
        if not args or not isinstance(args[0], Index) or len(args) > 2:
            raise NotImplementedError("faissproxy: IndexIVFAdditiveQuantizerFastScan is served "
                                      "as (index[, bbs]) over a served index; index_factory's "
                                      "\"...fs\" descriptions make the others")
        orig = args[0]
        local, data, lorig = _local_for("IndexIVFAdditiveQuantizerFastScan", orig)
        if data[:2] != b"Iw":
            raise NotImplementedError("faissproxy: IndexIVFAdditiveQuantizerFastScan is served "
                                      "from an IVF additive-quantizer index, not %s"
                                      % type(orig).__name__)
        fs = local.IndexIVFAdditiveQuantizerFastScan(lorig, *(int(a) for a in args[1:]))
        r = _Bytes(data, 4)
        start = r.off
        r.header()
        r.take(16)  # nlist, nprobe
        r.take(len(local.serialize_index(lorig.quantizer)))
        ivf_header = data[start:r.off]
        if r.take(1) == b"\x02":  # the direct map, which FAISS's constructor does not copy
            r.vector(8)
            r.vector(16)
        else:
            r.vector(8)
        r.u64()  # code_size
        # the quantizer, then by_residual, use_precomputed_table and the lists
        sizes = [lorig.invlists.list_size(i) for i in range(lorig.nlist)]
        nonzero = sum(1 for n in sizes if n)
        lists_len = 4 + 16 + 4 + 8 + 8 * (len(sizes) if nonzero > len(sizes) // 2
                                          else 2 * nonzero)
        lists_len += sum(n * (lorig.code_size + 8) for n in sizes)
        quantizer = data[r.off:len(data) - 5 - lists_len]
        lists = []
        inv = fs.invlists
        for i in range(fs.nlist):
            n = inv.list_size(i)
            if n == 0:
                lists.append((b"", b""))
                continue
            n2 = (n + fs.bbs - 1) // fs.bbs * fs.bbs
            ids = local.rev_swig_ptr(inv.get_ids(i), n).tobytes()
            codes = local.rev_swig_ptr(inv.get_codes(i), n2 * fs.M2 // 2).tobytes()
            lists.append((ids, codes))
        body = _AQ_FS_FOURCC[data[:4]] + ivf_header + b"\x00" + struct.pack("<Q", 0)
        body += quantizer + _aq_fs_fields(fs, True)
        body += IndexIVFPQFastScan._block_lists(lists, fs.bbs, fs.M2)
        _compose(self, body, "imported")
        self._nlist, self._nprobe = fs.nlist, fs.nprobe
        self._implem, self._bbs, self._qbs = fs.implem, fs.bbs, fs.qbs
        self._norm_scale, self._by_residual = fs.norm_scale, fs.by_residual


# FAISS's classes whose by_residual the server takes before training, and the internal
# objects of additive-quantizer classes, by the class name FAISS's downcast gives.
_AQ_INTERNALS = ("aq", "rq", "lsq", "prq", "plsq")
_AQ_KINDS = ("ResidualQuantizer", "LocalSearchQuantizer", "AdditiveQuantizer")


def specialize(top, bases, attrs):
    """_class_for's hook: the fast-scan and additive-quantizer attributes of a class FAISS's
    downcast would give (top), as extra bases and attributes."""
    extra = ()
    aq = any(q in top for q in _AQ_KINDS)
    if "FastScan" in top:
        extra += (_FastScan,)
        if aq:
            extra += (_NormScale,)
    if top.startswith("IndexIVF") and (aq or "FastScan" in top) and \
            _remote._Residual not in bases:
        extra += (_remote._Residual,)
    if aq:
        for name in _AQ_INTERNALS:
            attrs.setdefault(name, _Internal(name))
    return extra + bases


def describe(ix, description, data=None):
    """_described's hook: what a new object of a fast-scan class reports, from the factory
    description, or from FAISS's bytes it was read from (data)."""
    if isinstance(ix, _FastScan):
        if data is None:
            ix._bbs = _bbs_of(description)
        else:
            ix._implem, ix._bbs, ix._qbs = _ipfs_settings(data) or (None, None, None)
    if isinstance(ix, _NormScale) and data is not None:
        ix._norm_scale = None
    if isinstance(ix, _FastScan) and isinstance(ix, _remote._Residual) and data is None:
        ix._by_residual = _fs_residual(description)
