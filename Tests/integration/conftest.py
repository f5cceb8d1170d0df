"""Fixtures for the integration tests (run: python3 -m pytest Tests/integration).

- `cluster` (session): a real 6-node Redis Cluster (3 masters + 3 replicas) from
  scripts/cluster.py on free loopback ports in a temporary directory. A missing
  redis-server makes every test that uses it fail (never skip).
- `proxy_factory` (function): `proxy_factory(*extra_args, env=None, seeds=None,
  wait=True, ready_timeout=20)` starts a slotproxy on the cluster and returns a
  harness.ProxyProcess (`.port`, `.pid`, `.raw()`, `.client(protocol=2)`,
  `.stop()`, `.log_text()`); every proxy it started is stopped after the test.
- `proxy` (function): one proxy started with no extra arguments.
- `workdir` (session): the temporary directory for proxy logs.

The proxy binary is $SLOTPROXY_BIN or <repo>/.build/debug/slotproxy. On a test
failure the log of each proxy the test started is attached to the report.
Set SLOTPROXY_KEEP_TMP=1 to keep the temporary directories.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import harness  # puts scripts/ on sys.path
from harness import Cluster, ProxyProcess, ProxyStartError, proxy_binary


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="slotproxy-it-")
    yield d
    if os.environ.get("SLOTPROXY_KEEP_TMP"):
        print(f"\nkept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(workdir):
    keep = bool(os.environ.get("SLOTPROXY_KEEP_TMP"))
    c = Cluster(directory=os.path.join(workdir, "cluster") if keep else None)
    problem = None
    try:
        c.start()
    except Exception as e:  # a missing redis-server is a failure, not a skip
        problem = f"could not start the Redis Cluster: {e}"
    if problem:
        pytest.fail(problem, pytrace=False)
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def cluster_left_healthy(request):
    """After each test that used the cluster: it must be healthy again (a
    test that killed or moved nodes waits for that itself). If it is not
    within a minute, this test errors with why, and the cluster is rebuilt,
    so one broken cluster does not fail every test after it."""
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster = request.getfixturevalue("cluster")
    layout = cluster.initial_masters * (1 + cluster.n_replicas)
    # A master added and never removed (the test broke down in between):
    # healthy maybe, but not the cluster the other tests expect.
    wrong_layout = cluster.n_masters != cluster.initial_masters or len(cluster.nodes) != layout
    problem = (f"{cluster.n_masters} masters and {len(cluster.nodes)} nodes, not {cluster.initial_masters} and {layout}"
               if wrong_layout else cluster.check_healthy())
    if problem is None:
        return
    if not wrong_layout and len(cluster.live_ports()) == len(cluster.nodes):  # (a dead node never comes back by itself)
        try:
            cluster.wait_healthy(timeout=60)
            return
        except TimeoutError as e:
            problem = str(e)
    cluster.rebuild()
    pytest.fail(f"the test left the cluster broken ({problem}); rebuilt it for the tests after", pytrace=False)


@pytest.fixture
def proxy_factory(cluster, workdir, request):
    started: list[ProxyProcess] = []
    request.node._slotproxy_proxies = started

    binary = proxy_binary()
    if not binary.is_file():
        pytest.fail(
            f"slotproxy binary not found at {binary}: build it (swift build) "
            f"or set SLOTPROXY_BIN",
            pytrace=False,
        )

    def start(*extra_args, env=None, seeds=None, port=None, wait=True, ready_timeout=20.0, log_level="info",
              binary_path=None, preexec=None):
        p = ProxyProcess(
            seeds or cluster.seeds, workdir, extra_args=extra_args, port=port,
            binary=binary_path or binary, env=env, log_level=log_level, preexec=preexec,
        )
        started.append(p)
        problem = None
        try:
            p.start(wait=wait, ready_timeout=ready_timeout)
        except ProxyStartError as e:
            problem = str(e)
        if problem:
            pytest.fail(problem, pytrace=False)
        return p

    yield start
    for p in started:
        p.stop()
    # Under `make test-sanitize`: a sanitizer report fails the test that caused it.
    if os.environ.get("SLOTPROXY_SANITIZER"):
        for p in started:
            log = p.log_text()
            for marker in ("ERROR: AddressSanitizer", "WARNING: ThreadSanitizer", "ERROR: LeakSanitizer"):
                if marker in log:
                    pytest.fail(f"{marker} in slotproxy :{p.port}'s log:\n{p.log_tail()}", pytrace=False)


@pytest.fixture
def proxy(proxy_factory):
    return proxy_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed:
        for p in getattr(item, "_slotproxy_proxies", ()):
            rep.sections.append((f"slotproxy :{p.port} (pid {p.pid}) log", p.log_tail()))
    return rep
