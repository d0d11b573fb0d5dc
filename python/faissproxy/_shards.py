"""FAISS's IndexShards, IndexReplicas, IndexBinaryShards and IndexBinaryReplicas over served
indexes.

FAISS's classes hold C++ index pointers, so they cannot hold this package's indexes. These
classes do what FAISS's ThreadedIndex, IndexShardsTemplate and IndexReplicasTemplate do
(faiss/IndexShards.cpp, faiss/IndexReplicas.cpp of FAISS 1.7.3), in this process, with each
sub-index served: the same cached ntotal and is_trained (synchronised when FAISS synchronises
them), the same split of an add across shards, the same merge of the shards' results (ties
ordered by shard as FAISS's heaps order them, FAISS's "neutral" distance beside a -1 label) and the same split of the
queries across replicas. The sub-indexes are called one after the other whatever the
`threaded` flag says: FAISS's threads change when each sub-index runs, not what it answers.
"""
import numpy as np

from . import _remote

_FLT_MAX = float(np.finfo("float32").max)
_INT_MIN, _INT_MAX = int(np.iinfo("int32").min), int(np.iinfo("int32").max)


_UNSERVED = frozenset((
    "search_and_reconstruct", "sa_code_size", "sa_encode", "sa_decode", "merge_from",
    "check_compatible_for_merge", "compute_residual", "compute_residual_n",
    "get_distance_computer", "runOnIndex", "display",
))


def _faiss_error(where, what):
    return RuntimeError("Error in %s: Error: '%s' failed" % (where, what))


def _run(indexes, fn):
    """ThreadedIndex::runOnIndex: fn on every sub-index, every one run even when an earlier
    one fails; one failure is raised as it is, several as FAISS aggregates them."""
    errors = []
    for i, index in enumerate(list(indexes)):
        try:
            fn(i, index)
        except Exception as e:  # noqa: BLE001 - FAISS gathers every sub-index's exception
            errors.append((i, e))
    if len(errors) == 1:
        raise errors[0][1]
    if errors:
        raise RuntimeError("".join("Exception thrown from index %d: %s\n" % (i, e)
                                   for i, e in errors))


class _Threaded:
    """FAISS's ThreadedIndex: the sub-indexes, the dimension and the cached counts."""

    _binary = False
    _in_process = True  # serialize_index and clone_index refuse it, as FAISS's do
    _kind = "IndexShards"
    _settable = ("verbose", "threaded", "own_fields")
    _default_threaded = False

    def __init__(self, *args, **kwargs):
        names = self._arg_names
        if args and isinstance(args[0], (bool, np.bool_)):
            args = (0,) + args  # the (threaded[, successive_ids]) constructor: d = 0
        if len(args) > len(names):
            raise TypeError("Wrong number or type of arguments for overloaded function "
                            "'new_%s'." % self._kind)
        values = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names or k in values:
                raise TypeError("Wrong number or type of arguments for overloaded function "
                                "'new_%s'." % self._kind)
            values[k] = v
        object.__setattr__(self, "_d", int(values.get("d", 0)))
        self._threaded = bool(values.get("threaded", self._default_threaded))
        self._successive_ids = bool(values.get("successive_ids", True))
        self._indexes = []
        self._ntotal = 0
        self._is_trained = True  # FAISS's Index constructor; synchronised from the first sub
        self._metric = _remote.METRIC_L2
        self._code_size = self._d // 8  # IndexBinary's, fixed at construction as in FAISS
        self._verbose = False
        self._own_fields = False

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        elif name in self._settable:
            # verbose only prints in FAISS, own_fields only decides deletion of the
            # sub-indexes, and `threaded` is no attribute of FAISS's class (its Python object
            # keeps it and its C++ object never reads it)
            object.__setattr__(self, "_" + name, value)
        elif name == "successive_ids" and self._kind.endswith("Shards"):
            self._successive_ids = bool(value)
        elif name in ("d", "ntotal", "is_trained", "metric_type", "metric_arg", "code_size"):
            raise NotImplementedError("faissproxy: setting %s.%s is not served" % (
                self._kind, name))
        else:
            raise AttributeError("faissproxy: %s.%s is not an attribute FAISS has" % (
                self._kind, name))

    d = property(lambda self: self._d)
    ntotal = property(lambda self: self._ntotal)
    is_trained = property(lambda self: self._is_trained)
    verbose = property(lambda self: self._verbose)
    own_fields = property(lambda self: self._own_fields)
    metric_arg = property(lambda self: 0.0)

    threaded = property(lambda self: self._threaded)

    @property
    def metric_type(self):
        return self._metric

    @property
    def code_size(self):
        if not self._binary:
            raise AttributeError("'%s' object has no attribute 'code_size'" % self._kind)
        return self._code_size

    def __reduce__(self):
        raise RuntimeError("don't know how to serialize this type of index")

    def __repr__(self):
        return "<faissproxy.%s of %d served indexes>" % (self._kind, len(self._indexes))

    # ---- the sub-indexes (ThreadedIndex::addIndex, removeIndex) ----------------------

    def _check_kind(self, index, method):
        ok = isinstance(index, (_remote.Index, _Threaded)) and \
            bool(index._binary) == self._binary
        if not ok:
            raise TypeError("in method '%s_%s', argument 2 of type 'faiss::%s *' (a served "
                            "faissproxy %sindex)" % (
                                self._kind, method,
                                "IndexBinary" if self._binary else "Index",
                                "binary " if self._binary else "float "))

    def addIndex(self, index):
        self._check_kind(index, "addIndex")
        if not self._indexes and self._d == 0:
            self._d = int(index.d)
        if self._d != index.d:
            raise RuntimeError("Error in void faiss::ThreadedIndex<IndexT>::addIndex: "
                               "addIndex: dimension mismatch for newly added index; "
                               "expecting dim %d, new index has dim %d" % (self._d, index.d))
        if self._indexes:
            if index.metric_type != self._indexes[0].metric_type:
                raise RuntimeError("Error in void faiss::ThreadedIndex<IndexT>::addIndex: "
                                   "addIndex: newly added index is of different metric type "
                                   "than old index")
            if any(i is index for i in self._indexes):
                raise RuntimeError("Error in void faiss::ThreadedIndex<IndexT>::addIndex: "
                                   "addIndex: attempting to add index that is already in "
                                   "the collection")
        self._indexes.append(index)
        self._after_add(index)

    def removeIndex(self, index):
        for pos, i in enumerate(self._indexes):
            if i is index:
                del self._indexes[pos]
                self._sync(self._same_ntotal)
                return
        raise RuntimeError("Error in void faiss::ThreadedIndex<IndexT>::removeIndex: "
                           "IndexReplicas::removeIndex: index not found")

    def count(self):
        return len(self._indexes)

    def at(self, i):
        return self._indexes[i]

    def syncWithSubIndexes(self):
        self._sync(self._same_ntotal)

    def _sync(self, same_ntotal=False):
        """syncWithSubIndexes: the counts of the first sub-index, checked against the
        others (FAISS's binary templates check no metric)."""
        if not self._indexes:
            self._is_trained, self._ntotal = False, 0
            return
        first = self._indexes[0]
        if not self._binary:
            self._metric = first.metric_type
        self._is_trained, self._ntotal = bool(first.is_trained), int(first.ntotal)
        where = "void faiss::%sTemplate<IndexT>::syncWithSubIndexes()" % self._kind.replace(
            "Binary", "")
        for index in self._indexes[1:]:
            if not self._binary and self._metric != index.metric_type:
                raise _faiss_error(where, "this->metric_type == index->metric_type")
            if self._d != index.d:
                raise _faiss_error(where, "this->d == index->d")
            if self._is_trained != bool(index.is_trained):
                raise _faiss_error(where, "this->is_trained == index->is_trained")
            if same_ntotal:
                if self._ntotal != index.ntotal:
                    raise _faiss_error(where, "this->ntotal == index->ntotal")
            else:
                self._ntotal += int(index.ntotal)

    # ---- FAISS's methods -------------------------------------------------------------

    def _rows(self, x):
        if self._binary:
            x = np.ascontiguousarray(x, dtype="uint8")
            n, cols = x.shape
            assert cols * 8 == self._d
        else:
            x = np.ascontiguousarray(x, dtype="float32")
            n, cols = x.shape
            assert cols == self._d
        return x, n

    def train(self, x):
        x, _ = self._rows(x)
        _run(self._indexes, lambda i, index: index.train(x))
        self._sync(self._same_ntotal)

    def reset(self):
        _run(self._indexes, lambda i, index: index.reset())
        self._ntotal, self._is_trained = 0, False  # ThreadedIndex::reset, as FAISS does

    def _out(self, n, k, D, I):
        if D is None:
            D = np.empty((n, k), dtype="int32" if self._binary else "float32")
        else:
            assert D.shape == (n, k)
        if I is None:
            I = np.empty((n, k), dtype="int64")
        else:
            assert I.shape == (n, k)
        return D, I

    def assign(self, x, k, labels=None):
        return self.search(x, k, I=labels)[1]

    def range_search(self, x, thresh, *, params=None):
        raise RuntimeError("Error in virtual void faiss::Index::range_search: range search "
                           "not implemented")

    def remove_ids(self, sel):
        raise RuntimeError("Error in virtual size_t faiss::Index::remove_ids: remove_ids not "
                           "implemented for this type of index")

    def reconstruct(self, key, x=None):
        raise RuntimeError("Error in virtual void faiss::Index::reconstruct: reconstruct not "
                           "implemented for this type of index")

    def reconstruct_n(self, n0=0, ni=-1, x=None):
        if ni == -1:
            ni = self._ntotal - n0
        out = np.empty((ni, self._d // 8 if self._binary else self._d),
                       dtype="uint8" if self._binary else "float32") if x is None else x
        for i in range(ni):  # Index::reconstruct_n: reconstruct of each
            out[i] = self.reconstruct(n0 + i)
        return out

    def reconstruct_batch(self, key, x=None):
        key = np.ascontiguousarray(key, dtype="int64")
        out = np.empty((len(key), self._d // 8 if self._binary else self._d),
                       dtype="uint8" if self._binary else "float32") if x is None else x
        for i, k in enumerate(key):
            out[i] = self.reconstruct(int(k))
        return out

    def __getattr__(self, name):
        # FAISS's other Index methods are not served on these classes
        if name not in _UNSERVED:
            raise AttributeError("'%s' object has no attribute '%s'" % (self._kind, name))
        raise NotImplementedError("faissproxy: %s.%s is not served (the class runs over "
                                  "served sub-indexes in this process)" % (self._kind, name))


class _Shards(_Threaded):
    _arg_names = ("d", "threaded", "successive_ids")
    _same_ntotal = False

    @property
    def successive_ids(self):
        return self._successive_ids

    def _after_add(self, index):
        self._sync()

    def add_shard(self, index):
        self._check_kind(index, "add_shard")
        self.addIndex(index)

    def remove_shard(self, index):
        self.removeIndex(index)

    def add(self, x):
        self.add_with_ids(x, None)

    def add_with_ids(self, x, ids):
        """IndexShardsTemplate::add_with_ids: shard i takes rows [i n / s, (i + 1) n / s),
        with ids ntotal + row when successive_ids is off and none are given."""
        x, n = self._rows(x)
        where = ("void faiss::IndexShardsTemplate<IndexT>::add_with_ids(idx_t, const "
                 "component_t*, const idx_t*)")
        if ids is not None:
            ids = np.ascontiguousarray(ids, dtype="int64")
            assert ids.shape == (n,)
        if self._successive_ids and ids is not None:
            raise RuntimeError("Error in %s: Error: '!(successive_ids && xids)' failed: It "
                               "makes no sense to pass in ids and request them to be shifted"
                               % where)
        if self._successive_ids and self._ntotal != 0:
            raise RuntimeError("Error in %s: Error: 'this->ntotal == 0' failed: when adding "
                               "to IndexShards with sucessive_ids, only add() in a single "
                               "pass is supported" % where)
        nshard = len(self._indexes)
        if ids is None and not self._successive_ids:
            ids = np.arange(self._ntotal, self._ntotal + n, dtype="int64")

        def add(no, index):
            i0, i1 = no * n // nshard, (no + 1) * n // nshard
            if ids is not None:
                index.add_with_ids(x[i0:i1], ids[i0:i1])
            else:
                index.add(x[i0:i1])

        _run(self._indexes, add)
        self._sync()

    def search(self, x, k, *, params=None, D=None, I=None):
        x, n = self._rows(x)
        k = int(k)
        assert k > 0
        D, I = self._out(n, k, D, I)
        if params is not None:
            raise RuntimeError("Error in void faiss::IndexShardsTemplate<IndexT>::search: "
                               "Error: '!params' failed: search params not supported for "
                               "this index")
        nshard = len(self._indexes)
        dtype = "int32" if self._binary else "float32"
        all_d = np.empty((nshard, n, k), dtype=dtype)
        all_i = np.empty((nshard, n, k), dtype="int64")

        def search(no, index):
            all_d[no], all_i[no] = index.search(x, k)

        _run(self._indexes, search)
        trans = np.zeros(nshard, dtype="int64")
        if self._successive_ids:
            for s in range(nshard - 1):
                trans[s + 1] = trans[s] + self._indexes[s].ntotal
        _merge(all_d, all_i, trans, self._metric != _remote.METRIC_L2, self._binary, D, I)
        return D, I


def _merge(all_d, all_i, trans, larger_first, binary, D, I):
    """FAISS's merge_tables: per query, the best head of the shards' lists is taken in turn
    (the lower distance for L2, the higher otherwise; a tie goes to the lower shard for L2,
    to the higher one otherwise); a list
    stops at its end or at its first -1 label; rows past every list get label -1 and FAISS's
    neutral value (the lowest distance for L2, the highest otherwise)."""
    nshard, n, k = all_i.shape
    if binary:
        neutral = _INT_MAX if larger_first else _INT_MIN
    else:
        neutral = _FLT_MAX if larger_first else -_FLT_MAX
    rows = np.arange(n)
    pos = np.zeros((nshard, n), dtype="int64")
    for j in range(k):
        best = np.full(n, -1, dtype="int64")
        best_d = np.zeros(n, dtype=all_d.dtype)
        best_i = np.zeros(n, dtype="int64")
        for s in range(nshard):
            p = pos[s]
            live = p < k
            pc = np.minimum(p, k - 1)
            hd = all_d[s, rows, pc]
            hi = all_i[s, rows, pc]
            live &= hi >= 0
            # FAISS's heaps order (distance, shard): a tie goes to the lower shard in its
            # min-heap (L2), to the higher one in its max-heap (every other metric)
            beats = (hd >= best_d) if larger_first else (hd < best_d)
            take = live & ((best < 0) | beats)
            best = np.where(take, s, best)
            best_d = np.where(take, hd, best_d)
            best_i = np.where(take, hi + trans[s], best_i)
        found = best >= 0
        D[:, j] = np.where(found, best_d, neutral)
        I[:, j] = np.where(found, best_i, -1)
        pos[best[found], rows[found]] += 1


class _Replicas(_Threaded):
    _arg_names = ("d", "threaded")
    _same_ntotal = True

    def _after_add(self, index):
        """IndexReplicasTemplate::onAfterAddIndex: a later replica must match the first."""
        if len(self._indexes) > 1:
            first = self._indexes[0]
            where = "void faiss::IndexReplicasTemplate<IndexT>::onAfterAddIndex(IndexT*)"
            # (the index stays in the collection, as in FAISS, which checks after adding it)
            if index.ntotal != first.ntotal:
                raise RuntimeError(
                    "Error in %s: Error: 'index->ntotal == existing->ntotal' failed: "
                    "IndexReplicas: newly added index does not have same number of vectors "
                    "as prior index; prior index has %d vectors, new index has %d" % (
                        where, first.ntotal, index.ntotal))
            if bool(index.is_trained) != bool(first.is_trained):
                raise RuntimeError(
                    "Error in %s: Error: 'index->is_trained == existing->is_trained' failed: "
                    "IndexReplicas: newly added index does not have same train status as "
                    "prior index" % where)
        else:
            self._sync(True)

    def add_replica(self, index):
        self._check_kind(index, "add_replica")
        self.addIndex(index)

    def remove_replica(self, index):
        self.removeIndex(index)

    def add(self, x):
        x, _ = self._rows(x)
        _run(self._indexes, lambda i, index: index.add(x))
        self._sync(True)

    def add_with_ids(self, x, ids):
        raise RuntimeError("Error in virtual void faiss::Index::add_with_ids: add_with_ids "
                           "not implemented for this type of index")

    def reconstruct(self, key, x=None):
        if not self._indexes:
            raise RuntimeError("Error in void faiss::IndexReplicasTemplate<IndexT>::"
                               "reconstruct: Error: 'this->count() > 0' failed: no replicas "
                               "in index")
        out = self._indexes[0].reconstruct(key)
        if x is not None:
            x[:] = out
            return x
        return out

    def search(self, x, k, *, params=None, D=None, I=None):
        """IndexReplicasTemplate::search: replica i answers queries [i q, (i + 1) q), q the
        query count over the replica count, rounded up."""
        x, n = self._rows(x)
        k = int(k)
        assert k > 0
        D, I = self._out(n, k, D, I)
        where = "void faiss::IndexReplicasTemplate<IndexT>::search"
        if params is not None:
            raise RuntimeError("Error in %s: Error: '!params' failed: search params not "
                               "supported for this index" % where)
        if not self._indexes:
            raise RuntimeError("Error in %s: Error: 'this->count() > 0' failed: no replicas "
                               "in index" % where)
        if n == 0:
            return D, I
        per = (n + len(self._indexes) - 1) // len(self._indexes)

        def search(no, index):
            base = no * per
            if base < n:
                top = min(n, base + per)
                D[base:top], I[base:top] = index.search(x[base:top], k)

        _run(self._indexes, search)
        return D, I


class IndexShards(_Shards):
    """faiss.IndexShards(d, threaded=False, successive_ids=True) over served indexes."""


class IndexBinaryShards(_Shards):
    """faiss.IndexBinaryShards(d, threaded=False, successive_ids=True) over served binary
    indexes."""

    _binary = True
    _kind = "IndexBinaryShards"


class IndexReplicas(_Replicas):
    """faiss.IndexReplicas(d, threaded=True) over served indexes."""

    _kind = "IndexReplicas"
    _default_threaded = True  # FAISS's default for replicas


class IndexBinaryReplicas(IndexReplicas):
    """faiss.IndexBinaryReplicas(d, threaded=True) over served binary indexes."""

    _binary = True
    _kind = "IndexBinaryReplicas"
