"""ctypes bindings of libfaissproxy (include/faissproxy/client.h).

One client handle per thread (a handle is not thread safe), made from the
current configuration. Arrays cross as pointers to numpy's own buffers: the
library copies request vectors once into the message and reply results once
into arrays allocated here.
"""
import atexit
import ctypes
import ctypes.util
import os
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find_library():
    env = os.environ.get("FAISS_PROXY_LIB")
    candidates = [env] if env else []
    for build in (os.environ.get("FPX_BUILD_DIR"),
                  os.path.join(_HERE, "..", "..", "build")):
        if build:
            candidates.append(os.path.join(build, "libfaissproxy.so"))
    for c in candidates:
        if c and os.path.exists(c):
            return c
    # An installed library (make install), by its soname: the dynamic
    # loader's own search finds it (ld.so.cache, LD_LIBRARY_PATH).
    found = ctypes.util.find_library("faissproxy")
    if found:
        return found
    raise ImportError("faissproxy: libfaissproxy.so not found (build it with `make`, or set "
                      "FAISS_PROXY_LIB to its path)")


class IndexInfo(ctypes.Structure):
    _fields_ = [("index_id", ctypes.c_char * 129), ("index_type", ctypes.c_char * 256),
                ("metric", ctypes.c_char * 8), ("dimension", ctypes.c_int64),
                ("ntotal", ctypes.c_int64), ("is_trained", ctypes.c_int)]


class Item(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("metadata", ctypes.c_void_p),
                ("metadata_size", ctypes.c_size_t)]


class SearchOpts(ctypes.Structure):
    _fields_ = [("nprobe", ctypes.c_int64), ("ef_search", ctypes.c_int64),
                ("filter", ctypes.c_void_p), ("filter_size", ctypes.c_size_t)]


class Hit(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("metadata", ctypes.POINTER(ctypes.c_uint8)),
                ("metadata_size", ctypes.c_size_t)]


P = ctypes.c_void_p
LEASE_FROM_ENV = -1  # FPX_LEASE_FROM_ENV: FAISS_PROXY_LEASE_SECONDS, default 60, 0 none
I64 = ctypes.c_int64
PI64 = ctypes.POINTER(ctypes.c_int64)
S = ctypes.c_char_p
INT = ctypes.c_int

lib = ctypes.CDLL(_find_library())
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.free.argtypes = [P]
libc.free.restype = None

_SIGS = {
    "fpx_client_new": (P, [S, S, S]),
    "fpx_client_free": (None, [P]),
    "fpx_client_set_timeout": (None, [P, INT]),
    "fpx_client_set_durability": (INT, [P, S]),
    "fpx_client_set_complete": (None, [P, INT]),
    "fpx_client_set_server_key": (INT, [P, S]),
    "fpx_client_errtype": (S, [P]),
    "fpx_client_errstr": (S, [P]),
    "fpx_client_ping": (INT, [P]),
    "fpx_client_create_index": (INT, [P, S, I64, S, S, ctypes.POINTER(IndexInfo)]),
    "fpx_client_create_index_leased": (INT, [P, S, I64, S, S, I64, ctypes.POINTER(IndexInfo)]),
    "fpx_client_import_leased": (INT, [P, S, S, P, ctypes.c_size_t, I64,
                                       ctypes.POINTER(IndexInfo)]),
    "fpx_client_set_lease": (INT, [P, S, I64]),
    "fpx_client_get_index_info": (INT, [P, S, ctypes.POINTER(IndexInfo)]),
    "fpx_client_delete_index": (INT, [P, S]),
    "fpx_client_train": (INT, [P, S, I64, I64, P]),
    "fpx_client_add": (INT, [P, S, I64, I64, P, P, ctypes.POINTER(Item), PI64]),
    "fpx_client_search": (INT, [P, S, I64, I64, P, I64, ctypes.POINTER(SearchOpts), P, P]),
    "fpx_client_search_ex": (INT, [P, S, I64, I64, P, I64, ctypes.POINTER(SearchOpts), P, P,
                                   ctypes.POINTER(ctypes.POINTER(Hit))]),
    "fpx_hits_free": (None, [ctypes.POINTER(Hit), ctypes.c_size_t]),
    "fpx_client_delete_keys": (INT, [P, S, ctypes.c_size_t, ctypes.POINTER(S), PI64]),
    "fpx_client_range_search": (INT, [P, S, I64, I64, P, ctypes.c_float,
                                      ctypes.POINTER(SearchOpts), ctypes.POINTER(PI64),
                                      ctypes.POINTER(PI64),
                                      ctypes.POINTER(ctypes.POINTER(ctypes.c_float))]),
    "fpx_client_reconstruct": (INT, [P, S, I64, I64, P]),
    "fpx_client_reconstruct_n": (INT, [P, S, I64, I64, I64, P]),
    "fpx_client_remove_ids": (INT, [P, S, ctypes.c_size_t, P, PI64]),
    "fpx_client_remove_range": (INT, [P, S, I64, I64, PI64]),
    "fpx_client_reset": (INT, [P, S]),
    "fpx_client_set_param": (INT, [P, S, S, ctypes.c_double]),
    "fpx_client_export": (INT, [P, S, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
                                ctypes.POINTER(ctypes.c_size_t)]),
    "fpx_client_import": (INT, [P, S, S, P, ctypes.c_size_t, ctypes.POINTER(IndexInfo)]),
    "fpx_client_train_binary": (INT, [P, S, I64, I64, P]),
    "fpx_client_add_binary": (INT, [P, S, I64, I64, P, P, PI64]),
    "fpx_client_search_binary": (INT, [P, S, I64, I64, P, I64, P, P]),
    "fpx_client_range_search_binary": (INT, [P, S, I64, I64, P, INT, ctypes.POINTER(PI64),
                                             ctypes.POINTER(PI64),
                                             ctypes.POINTER(ctypes.POINTER(ctypes.c_float))]),
    "fpx_client_reconstruct_binary": (INT, [P, S, I64, I64, P]),
    "fpx_client_reconstruct_n_binary": (INT, [P, S, I64, I64, I64, P]),
}
for _name, (_res, _args) in _SIGS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args


# Requests sent by this process: every call of the library that talks to the
# server goes through a counting wrapper, so that a program (or a test run,
# scripts/faiss-suite.py) can tell work the server did from work that stayed
# in local faiss. The calls below only touch the handle.
_LOCAL_CALLS = ("fpx_client_new", "fpx_client_free", "fpx_client_set_timeout",
                "fpx_client_set_durability", "fpx_client_set_complete",
                "fpx_client_set_server_key", "fpx_client_errtype", "fpx_client_errstr",
                "fpx_hits_free")
_sent = [0]
_sent_lock = threading.Lock()


def requests_sent():
    """How many requests this process has sent to a server (attempted, failed ones too)."""
    return _sent[0]


def _counting(f):
    def call(*args):
        with _sent_lock:
            _sent[0] += 1
        return f(*args)
    call.__name__ = f.__name__
    return call


for _name in _SIGS:
    if _name not in _LOCAL_CALLS:
        setattr(lib, _name, _counting(getattr(lib, _name)))


class Config:
    lock = threading.RLock()
    server = None
    api_key = None
    tenant_id = None
    server_key = None  # None: libfaissproxy reads FAISS_PROXY_SERVER_KEY
    timeout_ms = 300000
    durability = None  # None: libfaissproxy reads FAISS_PROXY_DURABILITY
    generation = 0


def configured_server():
    return Config.server or os.environ.get("FAISS_PROXY_SERVER") or None


def lease_seconds():
    """The lease of generated indexes (FAISS_PROXY_LEASE_SECONDS; 0: none)."""
    v = os.environ.get("FAISS_PROXY_LEASE_SECONDS", "")
    try:
        return int(v) if v else 60
    except ValueError:
        return 60  # the library refuses it, saying why, when an index is made


_local = threading.local()


# Server indexes of objects garbage-collected: deleted by the next call, not
# from __del__ (which may run inside any allocation, even inside client()).
pending_deletes = []


# The indexes this process generated and has not kept nor deleted (name: the server it
# was configured with): deleted at a normal exit, even when their objects are still alive.
generated = {}


def flush_deletes(h):
    while pending_deletes:
        try:
            name = pending_deletes.pop()
        except IndexError:
            break
        generated.pop(name, None)
        if lib.fpx_client_delete_index(h, name.encode()) != 0 and \
                lib.fpx_client_errtype(h) == b"connection_error":
            del pending_deletes[:]  # the server is gone: nothing left to tidy
            break


def client(flush=True):
    """This thread's client handle, rebuilt after configure()."""
    with Config.lock:
        gen = Config.generation
        server = configured_server() or "tcp://127.0.0.1:5555"
        # No key unless the program or FAISS_PROXY_API_KEY gives one.
        key = Config.api_key if Config.api_key is not None else os.environ.get(
            "FAISS_PROXY_API_KEY")
        server_key = Config.server_key
        tenant = Config.tenant_id if Config.tenant_id is not None else os.environ.get(
            "FAISS_PROXY_TENANT")
        timeout = Config.timeout_ms
        durability = Config.durability
    h = getattr(_local, "handle", None)
    if h is None or _local.gen != gen:
        if h is not None:
            lib.fpx_client_free(h)
        h = lib.fpx_client_new(server.encode(), key.encode() if key else None,
                               tenant.encode() if tenant else None)
        if not h:
            raise ConnectionError("faissproxy: cannot create a client for %s" % server)
        if server_key is not None and lib.fpx_client_set_server_key(h, server_key.encode()) != 0:
            msg = (lib.fpx_client_errstr(h) or b"").decode("utf-8", "replace")
            lib.fpx_client_free(h)
            raise ValueError("faissproxy: %s" % msg)
        lib.fpx_client_set_timeout(h, timeout)
        lib.fpx_client_set_complete(h, 0)  # FAISS's answers (docs/protocol.md, "complete")
        if durability is not None and lib.fpx_client_set_durability(h, durability.encode()) != 0:
            msg = (lib.fpx_client_errstr(h) or b"").decode("utf-8", "replace")
            lib.fpx_client_free(h)
            raise ValueError("faissproxy: %s" % msg)
        _local.handle, _local.gen, _local.server = h, gen, server
    if flush and pending_deletes:
        flush_deletes(h)
    return h


EXIT_DELETE_SECONDS = 10


@atexit.register
def _delete_pending_at_exit():
    """The indexes of objects gone, and those this process generated and did not keep
    (on the server configured now: others are left to their lease). Best effort, and
    bounded: a request waits at most 2 s, the first connection error ends it, and it
    stops after EXIT_DELETE_SECONDS."""
    server = configured_server()
    pending_deletes.extend(n for n, s in list(generated.items()) if s == server)
    generated.clear()
    if not pending_deletes:
        return
    try:
        h = client(flush=False)
        lib.fpx_client_set_timeout(h, 2000)
        deadline = time.monotonic() + EXIT_DELETE_SECONDS
        while pending_deletes and time.monotonic() < deadline:
            name = pending_deletes.pop()
            if lib.fpx_client_delete_index(h, name.encode()) != 0 and \
                    lib.fpx_client_errtype(h) == b"connection_error":
                break
        del pending_deletes[:]
    except Exception:
        pass


class ServerError(RuntimeError):
    """A request the server refused; error_type is the protocol's kind."""

    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def check(rc, h):
    """Raises for a failed call the way FAISS would for the same mistake."""
    if rc == 0:
        return
    etype = (lib.fpx_client_errtype(h) or b"").decode()
    msg = (lib.fpx_client_errstr(h) or b"").decode("utf-8", "replace")
    if etype == "connection_error":
        raise ConnectionError("faissproxy: no answer from %s: %s" % (_local.server, msg))
    if etype == "internal_error" and "out of memory" in msg:
        raise MemoryError(msg)
    raise ServerError(etype, msg)


def take_floats(ptr, n):
    """A numpy copy of n floats the library malloc'd, then frees them."""
    import numpy as np
    out = np.ctypeslib.as_array(ptr, shape=(n,)).copy() if n else np.empty(0, "float32")
    libc.free(ptr)
    return out


def take_int64(ptr, n):
    import numpy as np
    out = np.ctypeslib.as_array(ptr, shape=(n,)).copy() if n else np.empty(0, "int64")
    libc.free(ptr)
    return out
