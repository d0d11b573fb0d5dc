"""faiss.Clustering whose train() is given a served index.

FAISS's k-means uses the index it is given to assign the vectors at each iteration, and
leaves the final centroids in it. Over a served flat index (exact search) the assignments
are the same as those of a local flat index of its metric: the k-means runs in local faiss
with one (FAISS's code, the same vectors), and the served index is then left as FAISS
leaves it, holding the centroids. Over any other served index the assignments would be
its approximate search on the server: not served.
"""
import numpy as np

from ._remote import Index, _View


def clustering_class(local):
    """A subclass of local faiss's Clustering whose train() takes served indexes."""

    class Clustering(local.Clustering):
        __doc__ = local.Clustering.__doc__

        def train(self, x, index, weights=None):
            if not isinstance(index, Index):
                return super().train(x, index, weights=weights)
            if isinstance(index, _View) or index._binary or index._idmap or \
                    index._classes[:1] != ("IndexFlat",):
                raise NotImplementedError(
                    "faissproxy: Clustering.train is served with a served flat index (its "
                    "exact search assigns the vectors); not with %r" % (index,))
            assign = local.IndexFlat(index.d, index.metric_type)
            super().train(x, assign, weights=weights)
            # FAISS leaves the final centroids in the index it was given
            index.reset()
            centroids = assign.reconstruct_n(0, assign.ntotal)
            if len(centroids):
                index.add(np.ascontiguousarray(centroids))
            return None

    Clustering.__name__ = Clustering.__qualname__ = "Clustering"
    return Clustering


_made = {}


def served_class(local):
    """The Clustering class of this package over local faiss (one per faiss module)."""
    cls = _made.get(id(local))
    if cls is None:
        cls = _made[id(local)] = clustering_class(local)
    return cls
