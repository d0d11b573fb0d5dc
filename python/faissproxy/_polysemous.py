"""IndexPQ's and IndexIVFPQ's polysemous training as a program configures it
(do_polysemous_training, polysemous_training.n_iter, n_redo, ...), which the server's
index_factory does not take.

Once the program has written one of them, train() runs FAISS's IndexPQ::train (or
IndexIVFPQ::train) in local faiss on the same vectors, with a local faiss index of the same
shape carrying the program's settings (its PolysemousTraining object is local faiss's own,
so every field FAISS has is taken), and the trained index's FAISS bytes replace the empty
served index:
the codebook and the permutation are FAISS's for those settings. The server's training of
an index made by its factory knows only FAISS's default settings.
"""
import struct

from ._remote import _index_meta, _recompose


def _local():
    from . import _local_faiss
    local = _local_faiss()
    if local is None:
        raise NotImplementedError("faissproxy: IndexPQ's polysemous training settings are "
                                  "served with local faiss installed only (it trains there)")
    return local


def training_object(index):
    """index.polysemous_training: local faiss's PolysemousTraining, the program's to set;
    reading it asks for the local training."""
    if index._poly_training is None:
        index._poly_training = _local().PolysemousTraining()
        index._poly_local = True
    return index._poly_training


def set_training_object(index, pt):
    """index.polysemous_training = pt: local faiss's PolysemousTraining (FAISS's member
    takes its class only), which the local training then reads."""
    local = _local()
    if not isinstance(pt, local.PolysemousTraining):
        raise TypeError("in method '%s_polysemous_training_set', argument 2 of type "
                        "'faiss::PolysemousTraining *'" % type(index).__name__)
    index._poly_training, index._poly_local = pt, True


def train(index, x, n):
    """FAISS's IndexPQ::train of the program's settings, in local faiss; the trained bytes
    replace the served index (which holds no vectors: FAISS's IndexPQ needs training before
    any add)."""
    if index.ntotal:
        raise NotImplementedError("faissproxy: training again an IndexPQ that holds vectors "
                                  "with polysemous training settings is not served")
    local = _local()
    params = _index_meta(index._name).get("params") or {}
    m = struct.unpack("<QQQ", bytes(_pq_header(index)))
    loc = local.IndexPQ(index.d, int(m[1]), int(m[2]), index.metric_type)
    loc.do_polysemous_training = bool(index.do_polysemous_training)
    if index._poly_training is not None:
        loc.polysemous_training = index._poly_training
    loc.verbose = index.verbose
    loc.train(x)
    loc.search_type = int(params.get("search_type", 0))
    loc.polysemous_ht = int(params.get("polysemous_ht", 0))
    _replace(index, local.serialize_index(loc))


# Settings of an IndexIVFPQ that FAISS's bytes leave out, with FAISS's defaults.
_IVFPQ_MEMBERS = (("parallel_mode", 0), ("max_codes", 0), ("polysemous_ht", 0))


def train_ivf(index, x, n):
    """FAISS's IndexIVFPQ::train of the program's settings, in local faiss, on a local copy
    of the served index read from its FAISS bytes (its quantizer, by_residual, nprobe and
    product quantizer); the trained bytes replace the served index, and the settings those
    bytes leave out are set on it again."""
    if index.ntotal:
        raise NotImplementedError("faissproxy: training again an IndexIVFPQ that holds "
                                  "vectors with polysemous training settings is not served")
    local = _local()
    from ._remote import serialize_index
    params = _index_meta(index._name).get("params") or {}
    loc = local.deserialize_index(serialize_index(index))  # FAISS's reader downcasts
    # FAISS's bytes leave the coarse k-means settings out (its reader gives 25 iterations):
    # the served index's, which the server reports while the index is untrained
    from ._views import served_cp
    for field, value in served_cp({"params": params}).items():
        setattr(loc.cp, field, type(getattr(loc.cp, field))(value))
    loc.do_polysemous_training = bool(index.do_polysemous_training)
    if index._poly_training is not None:
        loc.polysemous_training = index._poly_training
    table = int(params.get("use_precomputed_table", 0))
    loc.use_precomputed_table = table  # FAISS's training honours -1, 1 and 2
    loc.verbose = index.verbose
    loc.train(x)
    _replace(index, local.serialize_index(loc))
    for name, default in _IVFPQ_MEMBERS + (("use_precomputed_table", 0),):
        value = int(params.get(name, default))
        if value != default:
            index._set_param(name, value)


def _replace(index, data):
    """The served index becomes FAISS's bytes data (a new server index under the same
    object)."""
    _recompose(index, bytes(data), index._description)


def _pq_header(index):
    """The product quantizer's d, M, nbits from the served index's FAISS bytes ("IxPo"):
    write_index_header (33 bytes, and metric_arg past the two plain metrics), then the PQ."""
    from ._remote import serialize_index
    data = serialize_index(index).tobytes()
    off = 4 + 33 + (4 if struct.unpack_from("<i", data, 33)[0] > 1 else 0)
    return data[off:off + 24]
