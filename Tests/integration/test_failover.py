"""Failovers under load (issue 5): while loaders write and read through the
proxy, a master dies (or hands over); the clients see at most a pause, and
every acknowledged write reads back."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

from harness import RawConnection, RespError, is_status
from cluster import key_hash_slot

UNKNOWN_OUTCOME = "may or may not have run"


@dataclass
class LoadReport:
    acknowledged: dict = field(default_factory=dict)  # key -> value
    uncertain: set = field(default_factory=set)  # writes told "outcome unknown"
    unexpected: list = field(default_factory=list)  # any other error, or a wrong read
    # (sent, answered, keys) of each round, to find when traffic resumed
    successes: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_loaders(proxy, report: LoadReport, stop: threading.Event, threads: int = 4, batch: int = 20,
                pause: float = 0.0):
    """Each loader pipelines `batch` SETs of fresh keys plus GETs of keys it
    wrote before (then sleeps `pause` s), and records what was acknowledged."""
    prefix = uuid.uuid4().hex[:6]

    def loader(n: int):
        i = 0
        written: list[tuple[str, bytes]] = []
        with proxy.raw(timeout=60) as c:
            while not stop.is_set():
                keys = [f"fo:{prefix}:{n}:{i + j}" for j in range(batch)]
                values = [f"{n}-{i + j}".encode() for j in range(batch)]
                checks = written[-batch:]
                commands = [("SET", k, v) for k, v in zip(keys, values)] + [("GET", k) for k, _ in checks]
                started = time.monotonic()
                replies = c.pipeline(commands, timeout=60)
                with report.lock:
                    for k, v, r in zip(keys, values, replies[:batch]):
                        if is_status(r, b"OK"):
                            report.acknowledged[k] = v
                            written.append((k, v))
                        elif isinstance(r, RespError) and UNKNOWN_OUTCOME in r.message:
                            report.uncertain.add(k)
                        else:
                            report.unexpected.append(f"SET {k}: {r!r}")
                    for (k, v), r in zip(checks, replies[batch:]):
                        if r != v:
                            report.unexpected.append(f"GET {k}: {r!r}, acknowledged {v!r}")
                    report.successes.append((started, time.monotonic(), keys))
                i += batch
                if pause:
                    time.sleep(pause)

    workers = [threading.Thread(target=loader, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    return workers


def promote(cluster, replica: int) -> None:
    """CLUSTER FAILOVER on `replica`, until the cluster shows it a master."""
    assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and replica not in cluster.masters:
        time.sleep(0.1)
    assert replica in cluster.masters


def stop_loaders(stop: threading.Event, workers: list[threading.Thread]) -> None:
    stop.set()
    for w in workers:
        w.join(60)


def lost_writes(proxy, report: LoadReport) -> list[str]:
    """The acknowledged keys that do not read back their value."""
    r = proxy.client()
    keys = sorted(report.acknowledged)
    values = []
    for i in range(0, len(keys), 500):
        values += r.mget(keys[i:i + 500])
    return [k for k, v in zip(keys, values) if v != report.acknowledged[k]]


def test_master_killed_under_load(cluster, proxy_factory):
    proxy = proxy_factory("--topology-refresh-ms", "500")
    victim = cluster.masters[0]
    victim_slots = {s for s in range(16384) if cluster.node_for_slot(s) == victim}
    report = LoadReport()
    stop = threading.Event()
    workers = run_loaders(proxy, report, stop)
    try:
        time.sleep(1.5)
        cluster.kill(victim)
        # Taken once the node is gone: a reply that left it just before the
        # kill must not count as traffic resumed.
        killed_at = time.monotonic()
        # Traffic to the victim's slots resumes once a replica is promoted.
        resumed_at = promoted_at = None
        probe_slot = min(victim_slots)
        deadline = killed_at + 30
        while resumed_at is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if promoted_at is None:
                try:
                    if cluster.node_for_slot(probe_slot) != victim:
                        promoted_at = time.monotonic()
                except Exception:
                    pass
            with report.lock:
                for sent, answered, keys in report.successes:
                    if sent > killed_at and any(key_hash_slot(k) in victim_slots for k in keys):
                        resumed_at = answered
                        break
        time.sleep(1.0)
    finally:
        stop_loaders(stop, workers)
    try:
        recovery = (resumed_at - killed_at) if resumed_at else None
        # Everything acknowledged reads back (the victim's replica took over).
        lost = lost_writes(proxy, report)
        print(
            f"\nfailover under load: {len(report.acknowledged)} writes acknowledged, "
            f"{len(report.uncertain)} with unknown outcome, {len(report.unexpected)} unexpected errors, "
            f"{len(lost)} acknowledged writes lost, traffic resumed {recovery if recovery is None else round(recovery, 2)} s after the kill, "
            f"the cluster showed the new master after {promoted_at and round(promoted_at - killed_at, 2)} s "
            f"(cluster-node-timeout {cluster.node_timeout_ms} ms)"
        )
        assert not report.unexpected, report.unexpected[:5]
        assert not lost, lost[:5]
        assert recovery is not None and promoted_at is not None, (recovery, promoted_at)
        # The cluster's own failover (failure detection, election) takes most
        # of it; the proxy's part is noticing the new master.
        assert resumed_at - promoted_at <= 1.5, (recovery, promoted_at - killed_at)
        assert recovery <= cluster.node_timeout_ms / 1000 + 4, recovery
    finally:
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)


def test_planned_failover_is_invisible(cluster, proxy_factory):
    """CLUSTER FAILOVER on a replica: zero errors for the clients."""
    proxy = proxy_factory("--topology-refresh-ms", "500")
    master = cluster.masters[1]
    replica = cluster.replica_of(master)[0]
    report = LoadReport()
    stop = threading.Event()
    workers = run_loaders(proxy, report, stop)
    try:
        time.sleep(1.0)
        promote(cluster, replica)
        time.sleep(1.5)
    finally:
        stop_loaders(stop, workers)
    try:
        assert not report.unexpected, report.unexpected[:5]
        assert not report.uncertain, sorted(report.uncertain)[:5]
        assert lost_writes(proxy, report) == []
    finally:
        # Hand the slots back, so later tests see the usual layout.
        cluster.call(master, "CLUSTER", "FAILOVER")
        cluster.wait_healthy(timeout=60)


def test_a_hung_master_times_out_without_holding_up_the_others(cluster, proxy_factory):
    """A master that accepts TCP but never answers (SIGSTOP): its requests
    fail with a clear error after request-timeout-ms; clients of the other
    masters never wait for it."""
    import os
    import signal

    proxy = proxy_factory("--request-timeout-ms", "500")
    victim = cluster.masters[2]
    hung_key = next(f"hung:{i}" for i in range(10000) if cluster.node_for_slot(key_hash_slot(f"hung:{i}")) == victim)
    other_keys = [f"ok:{i}" for i in range(200) if cluster.node_for_slot(key_hash_slot(f"ok:{i}")) != victim][:50]
    with proxy.raw(timeout=10) as stuck, proxy.raw(timeout=10) as free:
        assert is_status(free.command("SET", hung_key, "v"))
        os.kill(cluster.pids[victim], signal.SIGSTOP)
        try:
            started = time.monotonic()
            stuck.send_command("GET", hung_key)
            # Meanwhile the other masters answer at once, round after round.
            slowest = 0.0
            while time.monotonic() - started < 1.0:
                t = time.monotonic()
                assert free.pipeline([("GET", k) for k in other_keys]) == [None] * len(other_keys)
                slowest = max(slowest, time.monotonic() - t)
            reply = stuck.read_replies(1)[0]
            waited = time.monotonic() - started
        finally:
            os.kill(cluster.pids[victim], signal.SIGCONT)
        assert isinstance(reply, RespError) and "request-timeout-ms 500" in reply.message, reply
        assert 0.4 <= waited <= 2.0, waited
        assert slowest < 0.3, slowest
        # Back to normal once the node answers again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if stuck.command("GET", hung_key) == b"v":
                break
            time.sleep(0.1)
        assert stuck.command("GET", hung_key) == b"v"


def test_requests_held_for_a_hung_master_wait_for_its_answer(cluster, proxy_factory):
    """Once a hung master (SIGSTOP) was found down, requests for it are held:
    the kernel still completes the proxy's redials, but nothing is written
    to the node until it answers, so they run when it resumes instead of
    failing with "may or may not have run"."""
    import os
    import signal

    # (One worker: the other workers' case is the next test.)
    proxy = proxy_factory(
        "--workers", "1", "--request-timeout-ms", "300", "--connect-timeout-ms", "250", "--log-level", "debug")
    victim = cluster.masters[2]
    keys = [f"held:{i}" for i in range(10000) if cluster.node_for_slot(key_hash_slot(f"held:{i}")) == victim][:2]
    with proxy.raw(timeout=10) as first, proxy.raw(timeout=10) as later:
        assert is_status(first.command("SET", keys[0], "before"))
        os.kill(cluster.pids[victim], signal.SIGSTOP)
        try:
            reply = first.command("SET", keys[0], "lost")
            assert isinstance(reply, RespError) and UNKNOWN_OUTCOME in reply.message, reply
            # The node is down for the proxy now: this one waits for it.
            later.send_command("SET", keys[1], "held")
            time.sleep(0.7)  # two redials' worth: each connects, none is answered
        finally:
            os.kill(cluster.pids[victim], signal.SIGCONT)
        assert later.read_replies(1)[0] == b"OK"
    assert cluster.call(victim, "GET", keys[1]) == b"held"
    assert "connected, but no answer" in proxy.log_text()


def _client_per_worker(proxy, workers: int) -> list:
    """One raw connection to each worker (the kernel spreads connections
    over the workers' listeners; CLIENT INFO says which one took it)."""
    chosen: dict[int, RawConnection] = {}
    for _ in range(64):
        if len(chosen) == workers:
            break
        c = proxy.raw(timeout=10)
        worker = int(c.command("CLIENT", "INFO").decode().split(" worker=")[1].split()[0])
        if worker in chosen:
            c.close()
        else:
            chosen[worker] = c
    assert len(chosen) == workers, chosen
    return [chosen[w] for w in sorted(chosen)]


def test_a_master_one_worker_found_hung_is_held_for_by_the_others(cluster, proxy_factory):
    """A worker that finds a master hung (request-timeout-ms) tells the
    others: one whose connection to it sat idle holds its next request
    instead of writing it to the paused node, and sends it once the node
    answers again."""
    import os
    import signal

    proxy = proxy_factory("--workers", "2", "--request-timeout-ms", "300", "--connect-timeout-ms", "250")
    victim = cluster.masters[2]
    keys = [f"hung2:{i}" for i in range(10000) if cluster.node_for_slot(key_hash_slot(f"hung2:{i}")) == victim][:2]
    first, other = _client_per_worker(proxy, 2)
    try:
        assert is_status(first.command("SET", keys[0], "before"))
        assert is_status(other.command("SET", keys[1], "before"))  # its worker's connection, now idle
        os.kill(cluster.pids[victim], signal.SIGSTOP)
        try:
            reply = first.command("SET", keys[0], "lost")
            assert isinstance(reply, RespError) and UNKNOWN_OUTCOME in reply.message, reply
            time.sleep(0.05)  # (the other worker is told at once)
            other.send_command("SET", keys[1], "held")
            time.sleep(0.7)
        finally:
            os.kill(cluster.pids[victim], signal.SIGCONT)
        assert other.read_replies(1)[0] == b"OK"
        assert "did not answer another worker" in proxy.log_text()
    finally:
        first.close()
        other.close()
    assert cluster.call(victim, "GET", keys[1]) == b"held"


def _reshard(cluster, src: int, dst: int, slots: int) -> None:
    subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src}", "--cluster-from", cluster.node_id(src),
         "--cluster-to", cluster.node_id(dst), "--cluster-slots", str(slots), "--cluster-yes"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=180, check=True,
    )


def test_reshard_under_load(cluster, proxy_factory):
    """`redis-cli --cluster reshard` of 1,000 slots while loaders write and
    read: every MOVED and ASK is followed, no client sees an error."""
    proxy = proxy_factory("--topology-refresh-ms", "500")
    src, dst = cluster.masters[0], cluster.masters[1]
    report = LoadReport()
    stop = threading.Event()
    workers = run_loaders(proxy, report, stop)
    try:
        time.sleep(1.0)
        started = time.monotonic()
        _reshard(cluster, src, dst, 1000)
        took = time.monotonic() - started
        time.sleep(0.5)
    finally:
        stop_loaders(stop, workers)
    try:
        print(f"\nreshard of 1000 slots under load: {took:.1f} s, {len(report.acknowledged)} writes acknowledged, "
              f"{len(report.unexpected)} unexpected errors")
        assert not report.unexpected, report.unexpected[:5]
        assert not report.uncertain, sorted(report.uncertain)[:5]
        assert lost_writes(proxy, report) == []
    finally:
        _reshard(cluster, dst, src, 1000)
        cluster.wait_healthy(timeout=60)


def test_standalone_backend(proxy_factory):
    """A plain (non-cluster) redis-server as the seed: every command goes to
    it, keys in any slots mix freely, and SELECT works."""
    from cluster import start_standalone

    server = start_standalone()
    try:
        proxy = proxy_factory(seeds=f"127.0.0.1:{server.port}")
        assert "standalone backend" in proxy.log_text()
        with proxy.raw() as c, proxy.raw() as other:
            assert is_status(c.command("MSET", "a", "1", "b", "2", "c", "3"))
            assert c.command("MGET", "a", "b", "c") == [b"1", b"2", b"3"]
            assert is_status(c.command("RENAME", "a", "z"))  # across "slots": fine on one server
            replies = c.pipeline([("MULTI",), ("INCR", "b"), ("INCR", "c"), ("EXEC",)])
            assert replies[-1] == [3, 4]
            # SELECT: this client's keys live in database 1, the other's in 0.
            assert is_status(c.command("SELECT", "1"))
            assert is_status(c.command("SET", "k", "in-db-1"))
            assert c.command("GET", "k") == b"in-db-1"
            assert other.command("GET", "k") is None
            with RawConnection(server.port) as direct:
                assert direct.pipeline([("SELECT", "1"), ("GET", "k")])[1] == b"in-db-1"
            # Blocking commands and transactions in database 1 too.
            other.command("SELECT", "1")
            other.command("RPUSH", "q", "job")
            assert c.command("BLPOP", "q", "1") == [b"q", b"job"]
            assert c.pipeline([("MULTI",), ("GET", "k"), ("EXEC",)])[-1] == [b"in-db-1"]
            assert c.command("DBSIZE") == 1
            assert isinstance(c.command("SELECT", "16"), RespError)
            assert is_status(c.command("SELECT", "0"))
            assert c.command("GET", "k") is None and c.command("GET", "z") == b"1"
            # SELECT of another database inside MULTI would switch the pooled
            # connection the transaction borrowed: refused (the same one is fine).
            replies = c.pipeline([("MULTI",), ("SELECT", "0"), ("SELECT", "1"), ("GET", "k"), ("EXEC",)])
            assert is_status(replies[1], b"QUEUED") and "SELECT before MULTI" in replies[2].message, replies
            assert replies[4].message.startswith("EXECABORT"), replies
            assert c.pipeline([("MULTI",), ("GET", "z"), ("EXEC",)])[-1] == [b"1"]
    finally:
        server.stop()


def test_add_and_remove_a_master_under_load(cluster, proxy_factory):
    """A master joins and gets slots (rebalance), then leaves again: its
    traffic starts and stops without a proxy restart, and no client sees an
    error; the proxy's connections to the removed node close."""
    proxy = proxy_factory("--topology-refresh-ms", "500")
    report = LoadReport()
    stop = threading.Event()
    # A steady load (not flat out): the rebalance moves every key written.
    workers = run_loaders(proxy, report, stop, threads=2, pause=0.02)
    new = None
    try:
        time.sleep(0.5)
        new = cluster.add_master()
        cluster.cli(cluster.masters[0], "--cluster", "rebalance", f"127.0.0.1:{cluster.masters[0]}",
                    "--cluster-use-empty-masters", timeout=180)
        served = sum(1 for s in range(0, 16384, 64) if cluster.node_for_slot(s) == new)
        assert served > 0
        # Traffic reaches the new master.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = cluster.call(new, "INFO", "commandstats").decode()
            if "cmdstat_set:" in stats:
                break
            time.sleep(0.2)
        assert "cmdstat_set:" in stats
        cluster.empty_master(new)
        # Stopped only once the proxy's map no longer names it: a write still
        # on its way to a node being shut down has an unknown outcome.
        deadline = time.monotonic() + 10
        with proxy.raw() as c:
            while f"127.0.0.1:{new} master" in c.command("PROXY", "CLUSTER").decode():
                assert time.monotonic() < deadline
                time.sleep(0.1)
        cluster.forget_master(new)
        removed, new = new, None
        time.sleep(1.0)
    finally:
        stop_loaders(stop, workers)
        if new is not None:
            cluster.remove_master(new)
    try:
        print(f"\nadd + rebalance + remove under load: {len(report.acknowledged)} writes, "
              f"{len(report.unexpected)} unexpected errors")
        assert not report.unexpected, report.unexpected[:5]
        assert not report.uncertain, sorted(report.uncertain)[:5]
        assert lost_writes(proxy, report) == []
        # The proxy's map lost the node again (its pool and connections with it).
        assert proxy.client().info("proxy")["cluster_masters"] == 3, removed
    finally:
        cluster.wait_healthy(timeout=60)


def test_seed_nodes_restarted_one_by_one(cluster, proxy_factory):
    """The proxy's seeds (a master and its replica) are killed and restarted
    one after the other, failovers included: it keeps working, learning the
    topology from the nodes it knows."""
    master = cluster.masters[0]
    seeds = [master, cluster.replica_of(master)[0]]
    proxy = proxy_factory("--topology-refresh-ms", "500", seeds=",".join(f"127.0.0.1:{p}" for p in seeds))
    slot = next(s for s in range(16384) if cluster.node_for_slot(s) == master)
    report = LoadReport()
    stop = threading.Event()
    workers = run_loaders(proxy, report, stop, threads=2, pause=0.01)
    try:
        for port in seeds:
            was_master = port in cluster.masters
            cluster.kill(port)
            deadline = time.monotonic() + 30
            while was_master and time.monotonic() < deadline:
                try:
                    if cluster.node_for_slot(slot) != port:
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            time.sleep(1.0)
            cluster.restart(port)
            cluster.wait_healthy(timeout=60)
        time.sleep(1.0)
    finally:
        stop_loaders(stop, workers)
    print(f"\nseeds restarted one by one: {len(report.acknowledged)} writes, {len(report.uncertain)} with unknown "
          f"outcome, {len(report.unexpected)} unexpected errors")
    assert not report.unexpected, report.unexpected[:5]
    assert lost_writes(proxy, report) == []


def test_nodes_announced_by_host_name(cluster, proxy_factory):
    """Nodes that announce a host name (cluster-announce-hostname, preferred
    endpoint type hostname): CLUSTER SHARDS and MOVED name them so, and the
    proxy reaches them (resolved off the worker loops, to an address that
    answers: `localhost` may list ::1 first, where the nodes do not listen)."""
    ports = cluster.live_ports()
    try:
        for p in ports:
            cluster.call(p, "CONFIG", "SET", "cluster-announce-hostname", "localhost")
            cluster.call(p, "CONFIG", "SET", "cluster-preferred-endpoint-type", "hostname")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shards = cluster.call(ports[0], "CLUSTER", "SHARDS")
            endpoints = {n[n.index(b"endpoint") + 1] for s in shards for n in s[s.index(b"nodes") + 1]}
            if endpoints == {b"localhost"}:
                break
            time.sleep(0.1)
        assert endpoints == {b"localhost"}, endpoints
        proxy = proxy_factory()
        # (Its map names the nodes by host name.)
        assert "localhost:" in proxy.log_text(), proxy.log_text()
        with proxy.raw() as c:
            keys = [f"hn:{i}" for i in range(300)]
            assert {cluster.node_for_slot(key_hash_slot(k)) for k in keys} == set(cluster.masters)
            assert all(is_status(r) for r in c.pipeline([("SET", k, k) for k in keys]))
            assert c.pipeline([("GET", k) for k in keys]) == [k.encode() for k in keys]
    finally:
        for p in ports:
            cluster.call(p, "CONFIG", "SET", "cluster-preferred-endpoint-type", "ip")
            cluster.call(p, "CONFIG", "SET", "cluster-announce-hostname", "")


def test_info_answers_at_once_while_a_master_is_down(cluster, proxy_factory):
    """A plain INFO is many clients' ready check (ioredis sends one on every
    connect): with a master down it answers from the others at once instead
    of waiting for the shard's failover."""
    proxy = proxy_factory("--workers", "1")
    victim = cluster.masters[0]
    probe_slot = min(s for s in range(16384) if cluster.node_for_slot(s) == victim)
    c = proxy.raw(timeout=30)
    assert b"# Keyspace" in c.command("INFO")
    try:
        cluster.kill(victim)
        deadline = time.monotonic() + 5
        while b"down=1" not in c.command("INFO", "nodes") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"down=1" in c.command("INFO", "nodes")
        started = time.monotonic()
        info = c.command("INFO")
        took = time.monotonic() - started
        still_down = cluster.node_for_slot(probe_slot) == victim
        assert b"# Keyspace" in info and b"# Server" in info
        assert took < 1.0, f"INFO took {took:.2f} s"
        assert still_down, "the replica took over before INFO was asked: the test proved nothing"
    finally:
        c.close()
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)


def test_transactions_ride_through_a_failover(cluster, proxy_factory):
    """A MULTI/EXEC refused before it ran, because its master is dead (the
    connection refused) or because the cluster answers CLUSTERDOWN while a
    dead master's slots have none, waits and is sent again: clients on the
    dead master's slot and on another master's see no error, and every
    transaction ran whole, once."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    on_victim, elsewhere = (f"{{{k}}}" for k in _keys_on(cluster, [victim, cluster.masters[1]]))
    stop, workers, outcomes = _transaction_loop(proxy, [on_victim, elsewhere])
    try:
        time.sleep(1.0)
        cluster.kill(victim)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and cluster.node_for_slot(key_hash_slot(on_victim)) == victim:
            time.sleep(0.2)
        time.sleep(1.5)
    finally:
        stop_loaders(stop, workers)
    try:
        _check_transactions(proxy, outcomes)
        log = proxy.log_text()
        # Both ways in: the dead master's connection refused, and the
        # cluster's CLUSTERDOWN to a transaction on a live master.
        assert "lost before EXEC; sent again" in log, log[-3000:]
        assert "transaction refused by" in log and "CLUSTERDOWN" in log, log[-3000:]
    finally:
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)


def test_a_watched_transaction_whose_master_dies_aborts_as_for_a_changed_key(cluster, proxy_factory):
    """WATCH, then the watched master dies: the node's check died with it, so
    the transaction must not run, but an error would break the client's
    optimistic loop. EXEC answers as for a changed key (null), and the
    client's next try goes to the promoted replica."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    (key,) = _keys_on(cluster, [victim])
    with proxy.raw(timeout=60) as c:
        assert is_status(c.command("WATCH", key))
        cluster.kill(victim)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and cluster.node_for_slot(key_hash_slot(key)) == victim:
                time.sleep(0.2)
            # Watching again after the loss changes nothing: still aborted.
            assert is_status(c.command("WATCH", key))
            assert is_status(c.command("MULTI"))
            assert c.command("SET", key, "not-run") == b"QUEUED"
            assert c.command("EXEC") is None
            assert c.command("GET", key) is None
            # The client's loop tries again, on the new master.
            assert is_status(c.command("WATCH", key))
            assert is_status(c.command("MULTI"))
            assert c.command("SET", key, "second-try") == b"QUEUED"
            assert c.command("EXEC") == [b"OK"]
            assert c.command("GET", key) == b"second-try"
            assert "watched connection" in proxy.log_text()
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)


def test_a_watched_transaction_whose_master_is_demoted_aborts_as_for_a_changed_key(cluster, proxy_factory):
    """WATCH, then CLUSTER FAILOVER demotes the watched master: its
    connection lives on, but the queued command meets MOVED. As for a
    changed key: +QUEUED, EXEC null, and the next try runs on the new master."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    master = cluster.masters[0]
    (key,) = _keys_on(cluster, [master])
    with proxy.raw(timeout=60) as c:
        assert is_status(c.command("WATCH", key))
        promote(cluster, cluster.replica_of(master)[0])
        try:
            assert is_status(c.command("MULTI"))
            assert c.command("SET", key, "not-run") == b"QUEUED"
            assert c.command("EXEC") is None
            assert c.command("GET", key) is None
            assert is_status(c.command("WATCH", key))
            assert c.pipeline([("MULTI",), ("SET", key, "second-try"), ("EXEC",)]) == [b"OK", b"QUEUED", [b"OK"]]
            assert c.command("GET", key) == b"second-try"
        finally:
            cluster.call(master, "CLUSTER", "FAILOVER")
            cluster.wait_healthy(timeout=60)


def test_optimistic_transactions_ride_through_a_failover(cluster, proxy_factory):
    """WATCH/GET/MULTI/SET/EXEC loops on the dead master's key and on a live
    master's: a WATCH refused before anything was watched (the master dead,
    the cluster's CLUSTERDOWN meanwhile) waits instead of failing; an EXEC
    whose watch was lost answers null and the loop tries again. No error,
    and the counters equal the successful increments."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    keys = _keys_on(cluster, [victim, cluster.masters[1]])
    stop = threading.Event()
    results = {key: {"ok": 0, "errors": []} for key in keys}

    def loop(key: str):
        with proxy.raw(timeout=60) as c:
            while not stop.is_set():
                if not is_status(reply := c.command("WATCH", key, timeout=60)):
                    results[key]["errors"].append(("WATCH", reply))
                    continue
                value = c.command("GET", key, timeout=60)
                replies = c.pipeline([("MULTI",), ("SET", key, str(int(value or 0) + 1)), ("EXEC",)], timeout=60)
                if isinstance(replies[-1], list):
                    results[key]["ok"] += 1
                elif replies[-1] is not None:
                    results[key]["errors"].append(("EXEC", replies))
                time.sleep(0.01)

    workers = [threading.Thread(target=loop, args=(key,), daemon=True) for key in keys]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        cluster.kill(victim)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and cluster.node_for_slot(key_hash_slot(keys[0])) == victim:
            time.sleep(0.2)
        time.sleep(1.5)
    finally:
        stop_loaders(stop, workers)
    try:
        r = proxy.client()
        for key, result in results.items():
            # (An EXEC written when its master died may or may not have run.)
            unknown = [e for e in result["errors"] if isinstance(e[1], list) and isinstance(e[1][-1], RespError)
                       and UNKNOWN_OUTCOME in e[1][-1].message]
            errors = [e for e in result["errors"] if e not in unknown]
            assert not errors, (key, len(errors), errors[:3])
            value = int(r.get(key) or 0)
            assert result["ok"] <= value <= result["ok"] + len(unknown), (key, value, result["ok"], len(unknown))
            assert result["ok"] > 0
    finally:
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)


def _check_transactions(proxy, outcomes: dict) -> None:
    """No transaction refused; each ran whole, once. (One whose EXEC was
    written when its master died may or may not have run: told so.)"""
    r = proxy.client()
    for tag, results in outcomes.items():
        uncertain = [x for x in results if isinstance(x[-1], RespError) and UNKNOWN_OUTCOME in x[-1].message]
        ran = [x for x in results if isinstance(x[-1], list)]
        failed = [x for x in results if x not in uncertain and x not in ran]
        assert not failed, (tag, len(failed), failed[:2])
        assert all(x[:3] == [b"OK", b"QUEUED", b"QUEUED"] for x in ran), (tag, ran[:2])
        a, b = int(r.get(f"{tag}a") or 0), int(r.get(f"{tag}b") or 0)
        assert a == b and len(ran) <= a <= len(ran) + len(uncertain), (tag, a, b, len(ran), len(uncertain))


def _transaction_loop(proxy, tags: list[str]):
    """Threads pipelining MULTI, INCR <tag>a, INCR <tag>b, EXEC; returns
    (stop event, threads, replies by tag)."""
    stop = threading.Event()
    outcomes: dict = {tag: [] for tag in tags}

    def transactions(tag: str):
        with proxy.raw(timeout=60) as c:
            while not stop.is_set():
                outcomes[tag].append(
                    c.pipeline([("MULTI",), ("INCR", f"{tag}a"), ("INCR", f"{tag}b"), ("EXEC",)], timeout=60))
                time.sleep(0.02)

    workers = [threading.Thread(target=transactions, args=(tag,), daemon=True) for tag in tags]
    for w in workers:
        w.start()
    return stop, workers, outcomes


def test_transactions_ride_through_a_planned_failover(cluster, proxy_factory):
    """MOVED while a transaction queues (CLUSTER FAILOVER; a finished slot
    migration is the same): the node refused it, nothing ran, and the proxy
    sends it to the new master instead of answering TRYAGAIN."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    master = cluster.masters[0]
    (name,) = _keys_on(cluster, [master])
    tag = f"{{{name}}}"
    replica = cluster.replica_of(master)[0]
    stop, workers, outcomes = _transaction_loop(proxy, [tag])
    try:
        time.sleep(0.5)
        promote(cluster, replica)
        time.sleep(1.5)
    finally:
        stop_loaders(stop, workers)
    try:
        _check_transactions(proxy, outcomes)
        assert "(MOVED" in proxy.log_text()
    finally:
        cluster.call(master, "CLUSTER", "FAILOVER")  # (the usual layout back)
        cluster.wait_healthy(timeout=60)


def test_a_transaction_whose_master_dies_between_its_commands(cluster, proxy_factory):
    """The client had every reply (MULTI, +QUEUED) when the master died: its
    EXEC, sent while the proxy knows the master is down, waits with the
    transaction and sends it again to the promoted replica."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    (key,) = _keys_on(cluster, [victim])
    with proxy.raw(timeout=60) as c, proxy.raw(timeout=60) as other:
        assert is_status(c.command("MULTI"))
        assert c.command("PING") == b"QUEUED"  # (queued before the first key)
        assert c.command("SET", key, "queued-before-the-death") == b"QUEUED"
        cluster.kill(victim)
        try:
            # Another client's read finds the master down (it waits for the new one).
            reader = threading.Thread(target=other.command, args=("GET", key), kwargs={"timeout": 60})
            reader.start()
            time.sleep(0.5)
            assert c.command("EXEC", timeout=60) == [b"PONG", b"OK"]
            assert c.command("GET", key) == b"queued-before-the-death"
            reader.join(60)
            assert "lost between commands" in proxy.log_text()
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)


def _keys_on(cluster, masters: list[int]) -> list[str]:
    """A fresh name owned by each of `masters`."""
    found: dict[int, str] = {}
    prefix = uuid.uuid4().hex[:6]
    i = 0
    while len(found) < len(masters):
        name = f"tx:{prefix}:{i}"
        owner = cluster.node_for_slot(key_hash_slot(name))
        if owner in masters:
            found.setdefault(owner, name)
        i += 1
    return [found[m] for m in masters]
