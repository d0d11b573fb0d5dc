"""An independent client of the faiss-proxy wire protocol, written from the
contract (protocol.md) for the integration tests: it shares no code with the
server or the C client, so the tests check the wire format itself.
"""
import msgpack
import numpy as np
import zmq

TIMEOUT_MS = 120_000


def encode(header, data=b"", meta=None):
    """preamble || header || data || metadata, with minimal msgpack sizes."""
    hb = msgpack.packb(header, use_bin_type=True)
    mb = b"" if meta is None else msgpack.packb(meta, use_bin_type=True)
    data = bytes(data)
    pre = msgpack.packb(
        {"header_size": len(hb), "vector_size": len(data), "metadata_size": len(mb)}
    )
    return pre + hb + data + mb


def decode(body):
    """(header, data bytes, metadata or None); asserts the sizes add up exactly."""
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(body)
    pre = u.unpack()
    off = u.tell()
    hs = pre["header_size"]
    vs = pre.get("vector_size", 0)
    ms = pre.get("metadata_size", 0)
    assert off + hs + vs + ms == len(body), (off, hs, vs, ms, len(body))
    header = msgpack.unpackb(body[off:off + hs], raw=False, strict_map_key=False)
    data = body[off + hs:off + hs + vs]
    meta = None
    if ms:
        meta = msgpack.unpackb(body[off + hs + vs:], raw=False, strict_map_key=False)
    return header, data, meta


class ServerError(Exception):
    def __init__(self, header):
        super().__init__("%s: %s" % (header.get("error_type"), header.get("message")))
        self.header = header
        self.error_type = header.get("error_type")


class Client:
    """A REQ client, one request in flight, as the seed's clients are."""

    def __init__(self, endpoint, api_key=None, tenant_id=None, timeout_ms=TIMEOUT_MS):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.api_key = api_key
        self.tenant_id = tenant_id
        self._connect()

    def _connect(self):
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        self.sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def close(self):
        self.sock.close(0)

    def raw(self, body):
        try:
            self.sock.send(body)
            return decode(self.sock.recv())
        except zmq.ZMQError:
            # A REQ socket that timed out cannot send again: start a new one so
            # that one slow reply fails one test, not every later one.
            self.sock.close(0)
            self._connect()
            raise

    def call(self, header, data=b"", meta=None, auth=True):
        h = dict(header)
        if auth and self.api_key is not None and "api_key" not in h:
            h["api_key"] = self.api_key
        if auth and self.tenant_id is not None and "tenant_id" not in h:
            h["tenant_id"] = self.tenant_id
        return self.raw(encode(h, data, meta))

    def ok(self, header, data=b"", meta=None):
        """call() that raises ServerError on an error reply."""
        h, d, m = self.call(header, data, meta)
        if h.get("status") != "ok":
            raise ServerError(h)
        return h, d, m

    def error(self, header, data=b"", meta=None):
        """call() that expects an error reply; returns its header."""
        h, d, m = self.call(header, data, meta)
        assert h.get("status") == "error", h
        assert d == b"" and m is None
        assert isinstance(h.get("message"), str) and h["message"]
        return h

    # ---- typed helpers -------------------------------------------------------

    def ping(self):
        return self.ok({"operation": "ping"})[2]

    def create(self, name, dim, index_type=None, metric=None):
        h = {"operation": "create_index", "index_id": name, "dimension": dim}
        if index_type is not None:
            h["index_type"] = index_type
        if metric is not None:
            h["metric"] = metric
        return self.ok(h)[2]

    def info(self, name):
        return self.ok({"operation": "get_index_info", "index_id": name})[2]

    def drop(self, name):
        return self.ok({"operation": "delete_index", "index_id": name})[2]

    def train(self, name, x):
        x = np.ascontiguousarray(x, dtype="float32")
        return self.ok({"operation": "train", "index_id": name,
                        "vector_shape": list(x.shape)}, x.tobytes())[2]

    def add(self, name, x, items=None, labels=None):
        x = np.ascontiguousarray(x, dtype="float32")
        h = {"operation": "add_vectors", "index_id": name, "vector_shape": list(x.shape)}
        data = x.tobytes()
        if labels is not None:
            h["with_ids"] = True
            data += np.ascontiguousarray(labels, dtype="int64").tobytes()
        return self.ok(h, data, items)[2]

    def search(self, name, q, k, filt=None, params=None, include_metadata=None):
        q = np.ascontiguousarray(q, dtype="float32")
        if q.ndim == 1:
            q = q.reshape(1, -1)
        h = {"operation": "search", "index_id": name, "k": k, "vector_shape": list(q.shape)}
        if params is not None:
            h["params"] = params
        if include_metadata is not None:
            h["include_metadata"] = include_metadata
        rh, d, m = self.ok(h, q.tobytes(), filt)
        nq = q.shape[0]
        assert rh["shape"] == [nq, k]
        assert len(d) == nq * k * 12
        D = np.frombuffer(d[:nq * k * 4], dtype="<f4").reshape(nq, k)
        I = np.frombuffer(d[nq * k * 4:], dtype="<i8").reshape(nq, k)
        return D, I, m

    def delete(self, name, ids):
        h = {"operation": "delete_vector", "index_id": name}
        if isinstance(ids, list):
            h["vector_ids"] = ids
        else:
            h["vector_id"] = ids
        return self.ok(h)[2]

    def list(self):
        return self.ok({"operation": "list_indexes"})[2]["indexes"]


def dealer(endpoint):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def dealer_send(sock, body):
    sock.send_multipart([b"", body])


def dealer_recv(sock):
    frames = sock.recv_multipart()
    assert frames[0] == b"" and len(frames) == 2, frames[:1]
    return decode(frames[1])


def rand(n, d, seed):
    return np.random.default_rng(seed).random((n, d), dtype="float32")
