"""No heap allocation per request in steady state (issue 8): the release
build of the proxy runs with a malloc counter preloaded
(support/malloc_counter.c), and the count must not grow with the number of
proxied single-slot commands, pipelined or not. A regression here shows as
allocations per request > 0.01.

The release build, because that is what runs in production: an unoptimized
build allocates a coroutine frame for nearly every `for`-in over an array.
`make test` builds it; $SLOTPROXY_RELEASE_BIN points elsewhere."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from harness import REPO, SANITIZED, RawConnection, encode_command, is_status, key_hash_slot, keys_on_each_master

SUPPORT = os.path.join(os.path.dirname(__file__), "support")

pytestmark = pytest.mark.skipif(SANITIZED, reason="a sanitizer's allocator replaces malloc")

RELEASE_BIN = os.environ.get("SLOTPROXY_RELEASE_BIN") or str(REPO / ".build" / "release" / "slotproxy")


@pytest.fixture(scope="module")
def release_binary():
    if not os.access(RELEASE_BIN, os.X_OK):
        pytest.fail(f"no release build at {RELEASE_BIN}: run `make release` (make test does)", pytrace=False)
    return RELEASE_BIN


@pytest.fixture(scope="module")
def malloc_counter(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("clang")
    if compiler is None:
        pytest.fail("no C compiler (cc or clang) to build the malloc counter")
    library = str(tmp_path_factory.mktemp("malloc") / "malloc_counter.so")
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", library, os.path.join(SUPPORT, "malloc_counter.c")],
                   check=True, capture_output=True)
    return library


def _allocations(pid: int, path: str) -> int:
    if os.path.exists(path):
        os.unlink(path)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError("the malloc counter did not report")


@pytest.mark.parametrize("protocol", [2, 3])
def test_no_allocation_per_proxied_request(cluster, proxy_factory, malloc_counter, release_binary, tmp_path, protocol):
    count_file = str(tmp_path / "count")
    # One worker and no periodic refresh: only the data path runs.
    proxy = proxy_factory("--workers", "1", "--topology-refresh-ms", "600000",
                          env={"LD_PRELOAD": malloc_counter, "MALLOC_COUNT_FILE": count_file},
                          binary_path=release_binary)
    keys = keys_on_each_master(cluster, "alloc")  # every master answers
    with RawConnection(proxy.port) as c:
        if protocol == 3:
            c.hello(3)
        for key in keys:
            assert is_status(c.command("SET", key, "v" * 100))
        # Reads and writes, single-slot, over every master.
        pairs = b"".join(encode_command("GET", key) + encode_command("SET", key, "v" * 100) for key in keys)
        batch = pairs * (1000 // (2 * len(keys)))
        per_batch = 2 * len(keys) * (1000 // (2 * len(keys)))

        def pipelined(n_batches: int) -> None:
            for _ in range(n_batches):
                c.send(batch)
                c.read_replies(per_batch)

        def one_at_a_time(n: int) -> None:
            for i in range(n):
                assert c.command("GET", keys[i % len(keys)]) == b"v" * 100

        pipelined(20)  # warm-up: buffers, pools and records reach their size
        one_at_a_time(500)
        before = _allocations(proxy.pid, count_file)
        pipelined(100)
        requests = 100 * per_batch
        after_pipelined = _allocations(proxy.pid, count_file)
        one_at_a_time(5000)
        after_single = _allocations(proxy.pid, count_file)

    pipelined_rate = (after_pipelined - before) / requests
    single_rate = (after_single - after_pipelined) / 5000
    print(f"\nallocations per proxied GET/SET (RESP{protocol}): pipelined {pipelined_rate:.4f} over {requests}, "
          f"one at a time {single_rate:.4f} over 5000")
    assert pipelined_rate < 0.01, (after_pipelined - before, requests)
    assert single_rate < 0.01, (after_single - after_pipelined, 5000)


def test_cross_slot_commands_allocate_per_command_not_per_key(cluster, proxy_factory, malloc_counter,
                                                              release_binary, tmp_path):
    # A 10-key MGET, MSET or DEL over several slots is split into a
    # sub-command per slot. Its fan-out costs 3 allocations (the object, its
    # reply storage and spans), MGET's one more (its keys' positions); the
    # parts themselves (records, requests, grouping tables, the merge
    # buffer) are pooled or reused. An MGET cost about 50 before.
    count_file = str(tmp_path / "count")
    proxy = proxy_factory("--workers", "1", "--topology-refresh-ms", "600000",
                          env={"LD_PRELOAD": malloc_counter, "MALLOC_COUNT_FILE": count_file},
                          binary_path=release_binary)
    keys = [f"split:alloc:{i}" for i in range(10)]
    assert len({key_hash_slot(key) for key in keys}) >= 8
    commands = [encode_command("MSET", *[x for key in keys for x in (key, "v" * 20)]),
                encode_command("MGET", *keys), encode_command("DEL", *keys[:5])]
    batch = b"".join(commands) * 50
    with RawConnection(proxy.port) as c:
        def run(n_batches: int) -> None:
            for _ in range(n_batches):
                c.send(batch)
                c.read_replies(3 * 50)

        run(10)  # warm-up
        before = _allocations(proxy.pid, count_file)
        run(40)
        after = _allocations(proxy.pid, count_file)
    per_command = (after - before) / (40 * 3 * 50)
    print(f"\nallocations per cross-slot 10-key MSET/MGET/5-key DEL: {per_command:.2f}")
    assert per_command <= 4, per_command
