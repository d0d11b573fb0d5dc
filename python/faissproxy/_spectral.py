"""IndexIVFSpectralHash(quantizer, d, nlist, nbit, period), served.

The server holds FAISS's serialization of the index FAISS's constructor makes: the IVF over
the quantizer given (empty, or holding nlist centroids), its transform a random rotation of
d to nbit dimensions initialised with seed 1234, threshold_type Thresh_global. The
transform is a local faiss VectorTransform object, shared with the program as FAISS's vt
is. Until the index is trained, the settings that shape training (threshold_type,
replace_vt) make the composition again; afterwards they raise.

FAISS trains an untrained transform on the training vectors first (train_residual): that
runs here, in the program's own transform object (FAISS's code, the same vectors), before
the server trains the quantizer and the thresholds.
"""
import struct

from . import _composed, _pretransform, _remote, _views
from ._remote import METRIC_L2, Index, _IVF, _index_header, _rows


class IndexIVFSpectralHash(_IVF, Index):
    _classes = ("IndexIVFSpectralHash",)
    Thresh_global, Thresh_centroid, Thresh_centroid_half, Thresh_median = range(4)

    def __init__(self, quantizer, d, nlist, nbit, period):
        self._name, self._keep, self._verbose = None, False, False
        d, nlist, nbit = int(d), int(nlist), int(nbit)
        centroids = _composed.quantizer_centroids(quantizer, d, nlist, METRIC_L2,
                                                  "IndexIVFSpectralHash")
        self._qbytes = centroids if centroids is not None else _views._empty_flat(d, METRIC_L2)
        self._nlist, self._nbit, self._period = nlist, nbit, float(period)
        self._threshold_type = 0
        vt = _pretransform._local().RandomRotationMatrix(d, nbit)
        vt.init(1234)
        self._vt = vt
        self._d = d
        self._compose()
        _composed.attach_quantizer(self, quantizer)

    def _compose(self):
        """(Re)makes the server's index from the constructor's arguments and the settings
        given since (the index is untrained and empty)."""
        body = b"IwSh" + _index_header(self._d, False, METRIC_L2)
        body += struct.pack("<QQ", self._nlist, self._nprobe) + self._qbytes
        body += b"\x00" + struct.pack("<Q", 0)  # no direct map
        body += _pretransform._transform_bytes(self._vt)
        body += struct.pack("<ifiQ", self._nbit, self._period, self._threshold_type, 0)
        body += _remote._empty_invlists(self._nlist, (self._nbit + 7) // 8)
        # the factory's IVF of this description: the constructor's k-means settings
        _remote._recompose(self, body, "IVF%d,ITQ%d,SH%g" % (self._nlist, self._nbit,
                                                             self._period))
        if self._max_codes:
            self._set_param("max_codes", self._max_codes)

    def _before_training(self, what):
        if self.is_trained or self.ntotal:
            raise NotImplementedError("faissproxy: %s of a trained IndexIVFSpectralHash is "
                                      "not served" % what)

    def _made_here(self, what):
        if "_vt" not in self.__dict__:
            raise NotImplementedError("faissproxy: %s of an IndexIVFSpectralHash made by "
                                      "index_factory or read from bytes is not served" % what)
        return self.__dict__["_" + what]

    @property
    def nbit(self):
        return self._made_here("nbit")

    @property
    def period(self):
        return self._made_here("period")

    @property
    def vt(self):
        return self._made_here("vt")

    @property
    def threshold_type(self):
        return self._made_here("threshold_type")

    @threshold_type.setter
    def threshold_type(self, v):
        if int(v) == self.threshold_type:
            return
        if int(v) not in range(4):
            raise NotImplementedError("faissproxy: threshold_type %r is not served" % (v,))
        self._before_training("setting threshold_type")
        self._threshold_type = int(v)
        self._compose()

    def replace_vt(self, vt, own=False):
        """FAISS's replace_vt: vt (d to nbit) replaces the transform; threshold_type goes
        back to Thresh_global."""
        if vt.d_out != self._nbit:
            raise RuntimeError("Error: 'vt_in->d_out == nbit' failed")
        if vt.d_in != self.d:
            raise RuntimeError("Error: 'vt_in->d_in == d' failed")
        self._made_here("vt")
        self._before_training("replace_vt")
        self._vt, self._threshold_type = vt, 0
        self._compose()

    def train(self, x):
        x, n = _rows(x, self.d)
        if "_vt" in self.__dict__ and not self._vt.is_trained:
            # FAISS's train_residual trains it on x first
            self._before_training("training an untrained vt")
            self._vt.train(x)
            self._compose()
        Index.train(self, x)
