"""The C client library and the seed's test client, against the real server."""
import os
import subprocess


from conftest import BUILD

TEST_CLIENT = os.path.join(BUILD, "faiss-proxy-test-client")
C_TESTS = os.path.join(BUILD, "test_client_c")


def run(args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_seed_test_client(server):
    r = run([TEST_CLIENT, "--server", server.endpoint])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ntotal=1000" in r.stdout and "OK" in r.stdout


def test_seed_test_client_with_keys(auth_server):
    r = run([TEST_CLIENT, "--server", auth_server.endpoint, "--api-key", "k2", "--dim", "16",
             "--count", "50"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([TEST_CLIENT, "--server", auth_server.endpoint, "--api-key", "wrong"])
    assert r.returncode == 1 and "authentication_error" in r.stderr
    r = run([TEST_CLIENT, "--bogus"])
    assert r.returncode == 2


def test_seed_test_client_from_env(server):
    env = dict(os.environ, FAISS_PROXY_SERVER=server.endpoint)
    r = subprocess.run([TEST_CLIENT, "--count", "20"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_c_client_library(server):
    r = run([C_TESTS, server.endpoint])
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout


def test_c_client_library_with_keys(auth_server):
    r = run([C_TESTS, auth_server.endpoint, "k1"])
    assert r.returncode == 0, r.stdout + r.stderr
