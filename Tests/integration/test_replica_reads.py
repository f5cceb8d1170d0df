"""read-from: reads spread over healthy replicas, writes stay on masters
(issue 6)."""

from __future__ import annotations

import threading
import time
import uuid

from harness import RespError, is_status
from cluster import key_hash_slot


def info_fields(text: bytes) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line and not line.startswith("#"))


def gets_on(cluster, port: int) -> int:
    stats = info_fields(cluster.call(port, "INFO", "commandstats"))
    field = stats.get("cmdstat_get", "calls=0")
    return int(field.split("calls=")[1].split(",")[0])


def proxy_node_requests(conn) -> dict[int, tuple[str, int]]:
    """port -> (role, requests) from the proxy's INFO nodes. (Other workers'
    counts are as they last published them, a tick after their last
    command: waited out, so a delta counts only what came after.)"""
    time.sleep(0.3)
    out = {}
    for line in conn.command("INFO", "nodes").decode().splitlines():
        if line.startswith("node:"):
            fields = dict(part.split("=", 1) for part in line[len("node:"):].split(",")[1:])
            port = int(line[len("node:"):].split(",")[0].rsplit(":", 1)[1])
            out[port] = (fields["role"], int(fields["requests"]))
    return out


def wait_for_replicas_ready(proxy, cluster, timeout: float = 15.0) -> None:
    """Until the proxy lists every replica as healthy (its first health check)."""
    deadline = time.monotonic() + timeout
    with proxy.raw() as c:
        while time.monotonic() < deadline:
            roles = [role for role, _ in proxy_node_requests(c).values()]
            if roles.count("replica") == len(cluster.replicas):
                return
            c.command("GET", "warm-up")
            time.sleep(0.1)
    raise AssertionError("replicas never reported healthy")


def test_prefer_replica_spreads_reads_and_keeps_writes_on_masters(cluster, proxy_factory):
    proxy = proxy_factory("--read-from", "prefer-replica")
    wait_for_replicas_ready(proxy, cluster)
    prefix = uuid.uuid4().hex[:8]
    keys = [f"rr:{prefix}:{i}" for i in range(300)]
    with proxy.raw(timeout=20) as c:
        before_writes = proxy_node_requests(c)
        assert all(is_status(r) for r in c.pipeline([("SET", k, k) for k in keys]))
        after_writes = proxy_node_requests(c)
        # Writes went to masters only.
        for port, (role, n) in after_writes.items():
            if role == "replica":
                assert n == before_writes.get(port, ("", 0))[1], (before_writes, after_writes)
        for m in cluster.masters:
            cluster.call(m, "WAIT", 1, 2000)
        before = {p: gets_on(cluster, p) for p in cluster.masters + cluster.replicas}
        rounds = 10
        for _ in range(rounds):
            assert c.pipeline([("GET", k) for k in keys]) == [k.encode() for k in keys]
        after = {p: gets_on(cluster, p) for p in cluster.masters + cluster.replicas}
    served = {p: after[p] - before[p] for p in after}
    print("\nGETs served per node:", {p: served[p] for p in sorted(served)})
    assert all(served[p] > 0 for p in cluster.replicas), served
    assert sum(served[p] for p in cluster.replicas) == rounds * len(keys), served
    assert all(served[p] == 0 for p in cluster.masters), served


def test_reads_survive_a_replica_killed_mid_load(cluster, proxy_factory):
    proxy = proxy_factory("--read-from", "prefer-replica", "--topology-refresh-ms", "500")
    wait_for_replicas_ready(proxy, cluster)
    prefix = uuid.uuid4().hex[:8]
    keys = [f"rk:{prefix}:{i}" for i in range(200)]
    errors: list = []
    stop = threading.Event()
    rounds = [0]
    with proxy.raw(timeout=20) as setup:
        assert all(is_status(r) for r in setup.pipeline([("SET", k, k) for k in keys]))
    for m in cluster.masters:
        cluster.call(m, "WAIT", 1, 2000)

    def reader():
        with proxy.raw(timeout=30) as c:
            while not stop.is_set():
                replies = c.pipeline([("GET", k) for k in keys])
                errors.extend(r for r in replies if isinstance(r, RespError))
                if replies != [k.encode() for k in keys] and not errors:
                    errors.append(f"wrong values: {replies[:3]}")
                rounds[0] += 1

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    victim = cluster.replicas[0]
    try:
        time.sleep(0.5)
        cluster.kill(victim)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)
    print(f"\nreads with a replica killed: {rounds[0]} rounds of {len(keys)} GETs, {len(errors)} errors")
    assert not errors, errors[:3]


def test_read_your_writes_goes_to_the_master(cluster, proxy_factory):
    proxy = proxy_factory("--read-from", "prefer-replica", "--read-your-writes-ms", "1000")
    wait_for_replicas_ready(proxy, cluster)
    key = f"ryw:{uuid.uuid4().hex[:8]}"
    master = cluster.node_for_key(key)
    with proxy.raw() as c:
        before = proxy_node_requests(c)
        for i in range(50):
            assert is_status(c.command("SET", key, str(i)))
            assert c.command("GET", key) == str(i).encode()  # never a stale replica read
        after = proxy_node_requests(c)
    assert after[master][1] - before.get(master, ("", 0))[1] == 100
    assert all(after[p][1] == before.get(p, ("", 0))[1] for p in cluster.replicas if p in after)
    # A write split across slots (MSET) counts as a write too.
    other = f"ryw:{uuid.uuid4().hex[:8]}"
    assert key_hash_slot(other) != key_hash_slot(key)
    with proxy.raw() as c:
        before = proxy_node_requests(c)
        for i in range(20):
            assert is_status(c.command("MSET", key, f"m{i}", other, f"m{i}"))
            assert c.command("GET", key) == f"m{i}".encode()
        after = proxy_node_requests(c)
    assert all(after[p][1] == before.get(p, ("", 0))[1] for p in cluster.replicas if p in after)
    # A PING (or HELLO, CLIENT SETNAME ...) is no write: past the window,
    # reads go to the replica again.
    time.sleep(1.1)
    with proxy.raw() as c:
        before = proxy_node_requests(c)
        assert is_status(c.command("PING"), b"PONG")
        assert c.command("GET", key) == b"m19"
        after = proxy_node_requests(c)
    assert sum(after[p][1] - before.get(p, ("", 0))[1] for p in cluster.replicas if p in after) == 1


def test_read_from_replica_without_a_healthy_replica(cluster, proxy_factory):
    """read-from replica: a master whose replicas are all down makes reads of
    its slots fail clearly; other masters' slots are unaffected."""
    proxy = proxy_factory("--read-from", "replica", "--topology-refresh-ms", "300")
    wait_for_replicas_ready(proxy, cluster)
    master = cluster.masters[0]
    victim = cluster.replica_of(master)[0]
    prefix = uuid.uuid4().hex[:8]
    keys = [f"rro:{prefix}:{i}" for i in range(100)]
    with proxy.raw(timeout=20) as c:
        assert all(is_status(r) for r in c.pipeline([("SET", k, k) for k in keys]))
        cluster.kill(victim)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                replies = c.pipeline([("GET", k) for k in keys])
                if any(isinstance(r, RespError) for r in replies):
                    break
                time.sleep(0.2)
            for k, r in zip(keys, replies):
                if cluster.node_for_slot(key_hash_slot(k)) == master:
                    assert isinstance(r, RespError) and "no healthy replica" in r.message, r
                else:
                    assert r == k.encode(), (k, r)
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)


def test_nearest_serves_reads(cluster, proxy_factory):
    proxy = proxy_factory("--read-from", "nearest")
    wait_for_replicas_ready(proxy, cluster)
    with proxy.raw() as c:
        assert is_status(c.command("SET", "near", "x"))
        cluster.call(cluster.node_for_key("near"), "WAIT", 1, 2000)
        assert c.command("GET", "near") == b"x"


def test_health_checks_do_not_republish_an_unchanged_map(cluster, proxy_factory):
    """Reads from replicas: every refresh measures round trips, which differ
    each time; the workers get a new map only when something that decides
    where requests go changed (topology_epoch stays put)."""
    proxy = proxy_factory("--read-from", "prefer-replica", "--topology-refresh-ms", "100")
    wait_for_replicas_ready(proxy, cluster)

    def epoch() -> int:
        with proxy.raw() as c:
            info = c.command("PROXY", "INFO").decode()
        return int(next(line.split(":")[1] for line in info.split("\r\n") if line.startswith("topology_epoch:")))

    time.sleep(0.5)
    before = epoch()
    time.sleep(2.0)  # (some 15 refreshes)
    assert epoch() - before <= 1
