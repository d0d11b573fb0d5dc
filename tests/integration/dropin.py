"""The Python drop-in (python/faissproxy) as the integration tests load it
(conftest's fp fixture points it at the module's server).

An ASan-built library cannot be loaded into a Python that was not started with
the ASan runtime: with a sanitized server, the package uses the release build
of libfaissproxy (the C tests cover the library under ASan)."""
import os
import sys

from conftest import BUILD, ROOT, SANITIZED

sys.path.insert(0, os.path.join(ROOT, "python"))
PY_LIB = os.path.join(os.path.join(ROOT, "build") if SANITIZED else BUILD, "libfaissproxy.so")
os.environ.setdefault("FAISS_PROXY_LIB", PY_LIB)
import faissproxy  # noqa: E402,F401 (what the tests import from here)

