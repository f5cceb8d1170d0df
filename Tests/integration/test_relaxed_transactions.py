"""`cross-slot-transactions: relaxed`: transactions over several slots run as
one MULTI/EXEC per slot, so stock job queues and redis-py's transactional
pipelines work through the proxy (issue 10); `refuse` answers exactly as a
cluster node does."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from harness import RawConnection, RespError, is_status, keys_on_each_master
from cluster import key_hash_slot


@pytest.fixture
def relaxed(proxy_factory):
    return proxy_factory("--cross-slot-transactions", "relaxed")


@pytest.fixture
def standalone():
    from cluster import start_standalone

    server = start_standalone()
    yield server
    server.stop()


def test_transaction_over_all_masters_replies_as_one_server(cluster, relaxed, standalone):
    a, b, c = keys_on_each_master(cluster, uuid.uuid4().hex[:8])
    commands = [
        ("MULTI",),
        ("SET", a, "1"), ("INCR", a), ("RPUSH", b, "x", "y"), ("LRANGE", b, 0, -1),
        ("HSET", c, "f", "v", "g", "w"), ("HGETALL", c), ("PING",), ("SADD", f"{a}:set", "m"),
        ("INCR", b),  # wrong type: an error inside EXEC's reply, the rest still runs
        ("GET", a), ("ECHO", "hi"),
        ("EXEC",),
    ]
    with relaxed.raw() as p, RawConnection(standalone.port) as s:
        got, want = p.pipeline(commands), s.pipeline(commands)
        assert got == want, (got, want)
        assert isinstance(got[-1][8], RespError) and got[-1][8].message.startswith("WRONGTYPE")
    # The writes landed on their own masters.
    assert cluster.call(cluster.node_for_key(a), "GET", a) == b"2"
    assert cluster.call(cluster.node_for_key(c), "HGET", c, "g") == b"w"


@pytest.mark.parametrize("proto", [2, 3])
def test_split_commands_inside_a_transaction(cluster, relaxed, standalone, proto):
    """DEL, UNLINK, EXISTS, TOUCH, MGET and MSET over several slots inside
    MULTI: each part runs in its slot's group, and the command's reply is
    merged as outside a transaction (arq deletes a job's three keys in one
    DEL inside its MULTI)."""
    a, b, c = keys_on_each_master(cluster, uuid.uuid4().hex[:8])
    missing = f"{a}:missing"
    commands = [
        ("MULTI",),
        ("MSET", a, "1", b, "2", c, "3"), ("MGET", a, missing, b, c), ("EXISTS", a, b, c, missing),
        ("DEL", a, b), ("TOUCH", a, b, c), ("MGET", c, b, a), ("INCR", c),
        ("UNLINK", c, missing), ("EXISTS", a, b, c),
        ("EXEC",),
    ]
    with relaxed.raw() as p, RawConnection(standalone.port) as s:
        if proto == 3:
            p.hello(3)
            s.hello(3)
        got, want = p.pipeline(commands), s.pipeline(commands)
        assert got == want, (got, want)
        assert got[-1][:4] == [b"OK", [b"1", None, b"2", b"3"], 3, 2], got[-1]
    # And through redis-py's transactional pipeline, as arq uses it.
    r = relaxed.client()
    r.mset({a: "x", b: "y", c: "z"})
    pipe = r.pipeline(transaction=True)
    pipe.delete(a, b, c)
    pipe.mget(a, b, c)
    assert pipe.execute() == [3, [None, None, None]]


def test_queue_time_errors_abort_as_redis(relaxed, standalone):
    commands = [("MULTI",), ("SET", "a", "1"), ("NOSUCH",), ("GET",), ("EXEC",)]
    with relaxed.raw() as p, RawConnection(standalone.port) as s:
        assert p.pipeline(commands) == s.pipeline(commands)
        # One command over several slots that does not split is still
        # refused, and aborts.
        for command in (("RENAME", "a", "b"), ("MSETNX", "a", "1", "b", "2")):
            replies = p.pipeline([("MULTI",), command, ("EXEC",)])
            assert replies[1].message.startswith("CROSSSLOT") and replies[2].message.startswith("EXECABORT"), replies
        # A split one with a key missing its value: queued, the error inside EXEC's reply.
        for commands in ([("MULTI",), ("MSET", "a", "1", "b"), ("EXEC",)],
                         [("MULTI",), ("SET", "a", "1"), ("MSET", "a", "1", "b"), ("GET", "a"), ("EXEC",)]):
            assert p.pipeline(commands) == s.pipeline(commands), commands
        # DISCARD sends nothing; the session goes on.
        assert is_status(p.pipeline([("MULTI",), ("SET", "a", "9"), ("DISCARD",)])[-1])
        assert p.command("GET", "a") != b"9"


def test_watch_conflict_on_one_master_aborts_everything(cluster, relaxed):
    a, b, c = keys_on_each_master(cluster, uuid.uuid4().hex[:8])
    with relaxed.raw() as p, relaxed.raw() as other:
        assert is_status(p.command("MSET", a, "0")) and is_status(p.command("SET", b, "0"))
        # Only b watched: its master decides first, nothing else runs.
        assert is_status(p.command("WATCH", b))
        assert is_status(other.command("SET", b, "changed"))
        replies = p.pipeline([("MULTI",), ("SET", a, "1"), ("SET", b, "1"), ("SET", c, "1"), ("EXEC",)])
        assert replies[-1] is None
        assert [p.command("GET", k) for k in (a, b, c)] == [b"0", b"changed", None]
        # Watched on every master, no conflict: everything commits.
        assert is_status(p.command("WATCH", a, b, c))
        replies = p.pipeline([("MULTI",), ("SET", a, "2"), ("SET", b, "2"), ("SET", c, "2"), ("EXEC",)])
        assert replies[-1] == [b"OK", b"OK", b"OK"]
        # Watched on every master, conflict on one: null for the client; the
        # groups of the other masters had committed (counted, not undone).
        assert is_status(p.command("WATCH", a, b, c))
        assert is_status(other.command("SET", b, "again"))
        replies = p.pipeline([("MULTI",), ("SET", a, "3"), ("SET", b, "3"), ("SET", c, "3"), ("EXEC",)])
        assert replies[-1] is None
        assert p.command("GET", b) == b"again"
        info = p.command("INFO", "proxy").decode()
        assert "relaxed_transactions_partial:1" in info, info
        # UNWATCH releases the watches: a conflict after it no longer aborts.
        assert is_status(p.command("WATCH", a))
        assert is_status(p.command("UNWATCH"))
        assert is_status(other.command("SET", a, "x"))
        assert p.pipeline([("MULTI",), ("SET", a, "4"), ("SET", c, "4"), ("EXEC",)])[-1] == [b"OK", b"OK"]


def _clients_on_masters(cluster) -> int:
    return sum(len(cluster.call(m, "CLIENT", "LIST").splitlines()) for m in cluster.masters)


def test_redis_py_transactional_pipeline_over_many_slots(cluster, relaxed):
    r = relaxed.client()
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}:{i}" for i in range(50)]
    assert len({key_hash_slot(k) for k in keys}) > 40

    def one_round(i: int) -> None:
        with r.pipeline() as pipe:  # transaction=True, redis-py's default
            for k in keys[:10]:
                pipe.incr(k)
            pipe.lpush(f"{prefix}:list", i)
            pipe.sadd(f"{prefix}:set", i)
            results = pipe.execute()
        assert results[:10] == [i + 1] * 10 and results[11] == 1

    one_round(0)
    before = _clients_on_masters(cluster)
    for i in range(1, 1000):
        one_round(i)
    # 1,000 transactions over many slots: no connection per transaction.
    assert _clients_on_masters(cluster) <= before + 1
    assert r.llen(f"{prefix}:list") == 1000
    # WATCH through redis-py's optimistic-locking helper.
    def move(pipe):
        value = int(pipe.get(keys[0]))
        pipe.multi()
        pipe.set(keys[0], value + 1)
        pipe.set(keys[30], value)
    r.transaction(move, keys[0], keys[30])
    assert r.get(keys[0]) == b"1001" and r.get(keys[30]) == b"1000"


def test_rq_runs_jobs_through_the_proxy(relaxed):
    import rq  # installed by scripts/install-deps: missing is a failure, not a skip
    import rq_jobs

    r = relaxed.client()
    queue = rq.Queue(f"q-{uuid.uuid4().hex[:8]}", connection=r)
    jobs = [queue.enqueue(rq_jobs.add, i, 1000) for i in range(100)]
    assert queue.count == 100
    worker = rq.SimpleWorker([queue], connection=r)
    assert worker.work(burst=True)
    assert [job.latest_result().return_value for job in jobs] == [i + 1000 for i in range(100)]
    assert all(job.get_status(refresh=True) == "finished" for job in jobs)
    assert queue.count == 0


def test_refuse_mode_answers_as_a_cluster_node(cluster, proxy):
    """The default: a transaction over two slots gets the node's own replies."""
    node = cluster.masters[0]
    from cluster import key_for_slot

    first = next(s for s in range(16384) if cluster.node_for_slot(s) == node)
    k1, k2 = key_for_slot(first, "r1"), key_for_slot(first + 1, "r2")
    assert cluster.node_for_slot(first + 1) == node
    commands = [("MULTI",), ("SET", k1, "1"), ("SET", k2, "2"), ("EXEC",)]
    with proxy.raw() as p, RawConnection(node) as n:
        got, want = p.pipeline(commands), n.pipeline(commands)
        assert got == want, (got, want)
        # (A Redis 7.0 node queues both and refuses at EXEC.)
        assert is_status(want[2], b"QUEUED") and want[3].message.startswith("CROSSSLOT")
        # One command over two slots: refused at once, then EXECABORT, as the node does.
        commands = [("MULTI",), ("MSET", k1, "1", k2, "2"), ("EXEC",)]
        got, want = p.pipeline(commands), n.pipeline(commands)
        assert got == want, (got, want)
        assert want[1].message.startswith("CROSSSLOT") and want[2].message.startswith("EXECABORT")


def test_list_moves_between_slots(cluster, relaxed, proxy, standalone):
    """LMOVE and friends across slots: popped, then pushed (relaxed only)."""
    import threading

    prefix = uuid.uuid4().hex[:8]
    src, dst, other = keys_on_each_master(cluster, prefix)
    assert key_hash_slot(src) != key_hash_slot(dst)
    with relaxed.raw() as p, RawConnection(standalone.port) as s:
        for c in (p, s):
            c.command("RPUSH", src, "a", "b", "c")
        for cmd in (("LMOVE", src, dst, "LEFT", "RIGHT"), ("RPOPLPUSH", src, dst),
                    ("LMOVE", src, dst, "RIGHT", "LEFT"), ("LMOVE", src, dst, "LEFT", "LEFT"),
                    ("LMOVE", src, dst, "UP", "LEFT"), ("BLMOVE", src, dst, "LEFT", "LEFT", "0.1"),
                    ("BRPOPLPUSH", src, dst, "0.1"), ("BLMOVE", src, dst, "LEFT", "LEFT", "nan")):
            assert p.command(*cmd) == s.command(*cmd), cmd
        assert p.command("LRANGE", dst, 0, -1) == s.command("LRANGE", dst, 0, -1)
        # A destination of the wrong type: the error, and the element back home.
        p.command("SET", other, "string")
        p.command("RPUSH", src, "x", "y")
        reply = p.command("LMOVE", src, other, "LEFT", "LEFT")
        assert isinstance(reply, RespError) and reply.message.startswith("WRONGTYPE")
        assert p.command("LRANGE", src, 0, -1) == [b"x", b"y"]
        # Blocking: a push from another client wakes the mover.
        p.command("DEL", src, dst)
        got = {}
        mover = threading.Thread(target=lambda: got.setdefault("r", p.command("BLMOVE", src, dst, "RIGHT", "LEFT", "5")))
        mover.start()
        with relaxed.raw() as pusher:
            import time
            time.sleep(0.2)
            pusher.command("RPUSH", src, "job")
        mover.join(10)
        assert got.get("r") == b"job"
        assert p.command("LRANGE", dst, 0, -1) == [b"job"] and p.command("LLEN", src) == 0
    # The default (refuse) answers as a cluster node.
    with proxy.raw() as c:
        reply = c.command("LMOVE", src, dst, "LEFT", "LEFT")
        assert isinstance(reply, RespError) and reply.message.startswith("CROSSSLOT")


def test_blocking_list_move_refused_at_once_leaves_the_client_usable(proxy_factory):
    """A cross-slot BLMOVE whose pop cannot get a dedicated connection (the
    node's blocking-connections-per-node are taken) is answered with the
    error, and the client's next commands run."""
    t = uuid.uuid4().hex[:8]
    src, dst = f"{{{t}}}:src", f"{{{t}x}}:dst"
    proxy = proxy_factory("--cross-slot-transactions", "relaxed", "--blocking-connections-per-node", "1",
                          "--workers", "1")
    with proxy.raw() as blocker, proxy.raw() as c:
        blocker.send_command("BLPOP", f"{{{t}}}:other", "3")  # (takes the node's one dedicated connection)
        time.sleep(0.3)
        reply = c.command("BLMOVE", src, dst, "LEFT", "RIGHT", "0.1")
        assert isinstance(reply, RespError) and "too many blocked clients" in reply.message, reply
        assert is_status(c.command("PING", timeout=5), b"PONG")
        assert blocker.read_reply(timeout=10) is None


def test_watch_loops_go_through_a_planned_failover(cluster, relaxed):
    """Optimistic loops over two masters (arq's worker: WATCH k; GET k;
    MULTI; SET k; INCR elsewhere; EXEC) while k's master hands over to its
    replica (CLUSTER FAILOVER). A WATCH refused for the failover (MOVED,
    CLUSTERDOWN) watched nothing and waits for the new master, as a WATCH
    of one slot does; a watch check the demoted master can no longer run
    answers EXEC null, as for a changed key. The clients see no error, and
    every acknowledged EXEC ran both its groups, once."""
    import threading

    master = cluster.masters[1]
    replica = cluster.replica_of(master)[0]
    prefix = uuid.uuid4().hex[:8]
    watched = [k for k in (f"{prefix}:w{i}" for i in range(400)) if cluster.node_for_slot(key_hash_slot(k)) == master][:6]
    elsewhere = keys_on_each_master(cluster, f"{prefix}:e")[0]
    stop = threading.Event()
    committed = [0] * len(watched)
    errors: list[str] = []

    def loop(index: int):
        r = redis.Redis(port=relaxed.port, socket_timeout=30)
        key, other = watched[index], f"{elsewhere}:{index}"
        r.set(key, 0)
        while not stop.is_set():
            stage = "WATCH"
            try:
                with r.pipeline() as pipe:
                    pipe.watch(key)
                    stage = "GET"
                    value = int(pipe.get(key))
                    pipe.multi()
                    pipe.set(key, value + 1)
                    pipe.incr(other)
                    stage = "EXEC"
                    pipe.execute()
                committed[index] += 1
            except redis.WatchError:
                pass
            except redis.RedisError as e:
                errors.append(f"at {stage}: {e}")
        r.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(watched))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
        deadline = time.monotonic() + 20
        while cluster.call(replica, "ROLE")[0] != b"master" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
        cluster.hand_back(master)
    assert errors == [], errors[:5]
    r = relaxed.client()
    for index, key in enumerate(watched):
        assert int(r.get(key)) == committed[index]
        assert int(r.get(f"{elsewhere}:{index}") or 0) == committed[index]
    assert min(committed) > 0


def test_watch_of_a_key_being_migrated_answers_at_once(cluster, relaxed):
    """A relaxed WATCH of a key whose slot is being migrated (MIGRATING
    here, the key on neither side yet: the node answers -ASK) is told to
    retry the transaction at once, as in a transaction of one slot; it is
    not held until failover-timeout-ms as a failover's refusal would be."""
    prefix = uuid.uuid4().hex[:8]
    moving, other = keys_on_each_master(cluster, prefix)[:2]
    slot = key_hash_slot(moving)
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)
    cluster.call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    cluster.call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    try:
        with relaxed.raw(timeout=30) as c:
            for keys in ([moving, other], [moving]):
                started = time.monotonic()
                reply = c.command("WATCH", *keys)
                assert isinstance(reply, RespError) and reply.message.startswith("TRYAGAIN"), reply
                assert time.monotonic() - started < 2
                assert is_status(c.command("UNWATCH"))
    finally:
        cluster.call(dst, "CLUSTER", "SETSLOT", slot, "STABLE")
        cluster.call(src, "CLUSTER", "SETSLOT", slot, "STABLE")


def test_groups_the_cluster_refuses_during_an_outage_are_sent_again(cluster, proxy_factory):
    """A master and its replica are down, so every node answers
    CLUSTERDOWN (some slots have no owner). A relaxed transaction over keys
    of the two other masters is refused by both (their EXECs abort: nothing
    ran); the proxy sends the groups again after a backoff, and once the
    master is back they commit: one EXEC reply with every command's
    result, no error, as a transaction of one slot is replayed."""
    proxy = proxy_factory(
        "--cross-slot-transactions", "relaxed", "--failover-timeout-ms", "20000", "--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    (replica,) = cluster.replica_of(victim)
    _, b, c = keys_on_each_master(cluster, uuid.uuid4().hex[:8])
    survivor = cluster.node_for_slot(key_hash_slot(b))
    result: dict = {}

    def transaction():
        with proxy.raw(timeout=40) as p:
            result["replies"] = p.pipeline([("MULTI",), ("SET", b, "1"), ("SET", c, "2"), ("EXEC",)], timeout=40)

    cluster.kill(replica)
    cluster.kill(victim)
    runner = threading.Thread(target=transaction)
    restarted = False
    try:
        deadline = time.monotonic() + 30
        while cluster.info_fields(survivor, "CLUSTER", "INFO")["cluster_state"] != "fail":
            assert time.monotonic() < deadline, "the cluster never noticed"
            time.sleep(0.1)
        runner.start()
        time.sleep(1.5)
        assert "replies" not in result, result  # refused by both, waiting
        cluster.restart(victim)
        cluster.restart(replica)
        restarted = True
        runner.join(30)
        assert result.get("replies", [None])[-1] == [b"OK", b"OK"], result
        with proxy.raw() as p:
            assert [p.command("GET", k) for k in (b, c)] == [b"1", b"2"]
    finally:
        if not restarted:
            cluster.restart(victim)
            cluster.restart(replica)
        if runner.is_alive():
            runner.join(40)
        cluster.wait_healthy(timeout=60)


def test_a_group_for_a_crashed_master_waits_for_its_replica(cluster, proxy_factory):
    """A master crashes; its replica takes over a few seconds later. A
    relaxed transaction over its keys and another master's, sent in
    between: the crashed master's group was never written (its connection
    could not be made), so it waits for the new master and runs there, as a
    transaction of one slot does; the client gets every result, no error."""
    proxy = proxy_factory("--cross-slot-transactions", "relaxed", "--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    a, b, _ = keys_on_each_master(cluster, uuid.uuid4().hex[:8])
    with proxy.raw(timeout=40) as p:
        assert p.command("GET", a) is None  # (the proxy's connection to the victim is up)
        cluster.kill(victim)
        try:
            replies = p.pipeline([("MULTI",), ("INCR", a), ("INCR", b), ("EXEC",)], timeout=40)
            assert replies[-1] == [1, 1], replies
            assert [p.command("GET", k) for k in (a, b)] == [b"1", b"1"]
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)
