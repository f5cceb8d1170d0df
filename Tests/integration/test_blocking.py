"""Blocking commands run on dedicated backend connections: they never hold up
other clients, time out (or not) as on a server, and a client that goes away
while blocked leaves nothing blocked behind it (issue 4)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

from harness import (
    RawConnection, RespError, encode_command, is_status, key_hash_slot, keys_on_each_master, out_of_file_descriptors)


def tag() -> str:
    return uuid.uuid4().hex[:8]


def blocked_clients(cluster, command: str) -> int:
    """Clients blocked in `command` on any master, from CLIENT LIST."""
    count = 0
    for m in cluster.masters:
        listing = cluster.call(m, "CLIENT", "LIST").decode()
        count += sum(1 for line in listing.splitlines() if f"cmd={command}" in line and "flags=b" in line)
    return count


def _info_field(c: RawConnection, section: str, field: str) -> int:
    text = c.command("INFO", section).decode()
    return int(dict(line.split(":", 1) for line in text.splitlines() if ":" in line)[field])


def _wait_for_info(c: RawConnection, section: str, field: str, want: int) -> int:
    deadline = time.monotonic() + 5
    value = _info_field(c, section, field)
    while value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = _info_field(c, section, field)
    return value


def test_info_counts_blocked_clients(cluster, proxy):
    # `INFO clients` has `blocked_clients` (redis-cli --stat shows it),
    # summed over the workers.
    queues = [f"queue:{tag()}" for _ in range(3)]
    consumers = [proxy.raw(timeout=30) for _ in queues]
    with proxy.raw() as observer:
        assert _info_field(observer, "clients", "blocked_clients") == 0
        for c, queue in zip(consumers, queues):
            c.send(encode_command("BLPOP", queue, 0))
        assert _wait_for_info(observer, "clients", "blocked_clients", 3) == 3
        assert observer.command("RPUSH", queues[0], "x") == 1
        assert consumers[0].read_reply() == [queues[0].encode(), b"x"]
        assert _wait_for_info(observer, "clients", "blocked_clients", 2) == 2
        consumers[1].close()  # gone while blocked
        assert _wait_for_info(observer, "clients", "blocked_clients", 1) == 1
        assert observer.command("RPUSH", queues[2], "y") == 1
        assert consumers[2].read_reply() == [queues[2].encode(), b"y"]
        assert _wait_for_info(observer, "clients", "blocked_clients", 0) == 0
    for c in consumers:
        c.close()


def test_blpop_is_unblocked_by_a_push_from_another_client(cluster, proxy):
    queue = f"queue:{tag()}"
    result = {}

    def consumer():
        with proxy.raw(timeout=30) as c:
            result["reply"] = c.command("BLPOP", queue, 0)  # 0: block forever

    t = threading.Thread(target=consumer)
    t.start()
    deadline = time.monotonic() + 10
    while blocked_clients(cluster, "blpop") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blocked_clients(cluster, "blpop") >= 1
    # Other clients keep working while the consumer is blocked.
    with proxy.raw() as other:
        for i in range(50):
            assert is_status(other.command("SET", f"{queue}:k{i}", i))
        assert other.command("RPUSH", queue, "job-1") == 1
    t.join(timeout=10)
    assert result["reply"] == [queue.encode(), b"job-1"]


def test_blocking_timeouts_and_other_blocking_commands(proxy):
    q = f"{{{tag()}}}"
    with proxy.raw(timeout=30) as c:
        start = time.monotonic()
        assert c.command("BLPOP", f"{q}a", 0.2) is None
        assert time.monotonic() - start >= 0.15
        c.command("ZADD", f"{q}z", 1, "m")
        assert c.command("BZPOPMIN", f"{q}z", 1) == [f"{q}z".encode(), b"m", b"1"]
        c.command("RPUSH", f"{q}src", "x")
        assert c.command("BLMOVE", f"{q}src", f"{q}dst", "LEFT", "RIGHT", 1) == b"x"
        c.command("XADD", f"{q}s", "1-1", "f", "v")
        reply = c.command("XREAD", "BLOCK", 100, "STREAMS", f"{q}s", "0")
        assert reply and reply[0][0] == f"{q}s".encode()
        assert c.command("XREAD", "BLOCK", 100, "STREAMS", f"{q}s", "$") is None
        # Many in a row reuse the dedicated connections.
        for _ in range(200):
            assert c.command("BRPOP", f"{q}empty", 0.01) is None


def test_multi_slot_blocking_command_is_crossslot(proxy):
    with proxy.raw() as c:
        reply = c.command("BLPOP", "a", "b", 1)
        assert isinstance(reply, RespError) and reply.message.startswith("CROSSSLOT")


def test_client_killed_while_blocked_leaves_nothing_blocked(cluster, proxy):
    queue = f"abandoned:{tag()}"
    before = blocked_clients(cluster, "brpop")
    conns = [proxy.raw(timeout=30) for _ in range(5)]
    for c in conns:
        c.send_command("BRPOP", queue, 0)
    deadline = time.monotonic() + 10
    while blocked_clients(cluster, "brpop") < before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blocked_clients(cluster, "brpop") == before + 5
    for c in conns:
        c.abort()
    deadline = time.monotonic() + 10
    while blocked_clients(cluster, "brpop") > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blocked_clients(cluster, "brpop") == before
    # The element pushed now is not eaten by a dead client's connection.
    with proxy.raw() as c:
        assert c.command("RPUSH", queue, "still-here") == 1
        assert c.command("LRANGE", queue, 0, -1) == [b"still-here"]


def test_wait_counts_replicas_that_have_the_writes_on_every_master(cluster, proxy):
    t = tag()
    with proxy.raw(timeout=30) as c:
        keys = [f"wait:{t}:{i}" for i in range(30)]
        c.pipeline([("SET", k, "v") for k in keys])
        assert c.command("WAIT", 1, 5000) == 1  # each master has one replica
        start = time.monotonic()
        assert c.command("WAIT", 2, 200) == 1   # nobody has two: the timeout decides
        assert time.monotonic() - start >= 0.15
        assert c.command("WAIT", 0, 0) >= 0
        bad = c.command("WAIT", "x", 0)
        assert isinstance(bad, RespError)
        # The replicas really have the writes.
        for k in keys[:5]:
            replica = cluster.replica_of(cluster.node_for_key(k))[0]
            with RawConnection(replica) as r:
                assert is_status(r.command("READONLY"))
                assert r.command("GET", k) == b"v"
        # Scratch keys expire at once: none is left behind.
        time.sleep(0.05)
        assert c.command("KEYS", "{slotproxy-wait-*") == []


def test_a_dedicated_connection_that_cannot_be_opened_frees_its_place(cluster, proxy_factory):
    """A blocking command whose connection fails at once (here the proxy is
    out of file descriptors) gets an error; its place under
    blocking-connections-per-node is freed, and the node is not marked down
    for the clients on shared connections."""
    proxy = proxy_factory("--blocking-connections-per-node", "2", "--workers", "1")
    t = tag()
    queue, other = f"{{{t}}}:queue", f"{{{t}}}:other"  # (one slot: one master)
    with proxy.raw() as c:
        assert is_status(c.command("SET", other, "1"))
        with out_of_file_descriptors(proxy.pid):
            for _ in range(3):
                reply = c.command("BLPOP", queue, "0.1")
                assert isinstance(reply, RespError) and "cannot connect" in reply.message, reply
            started = time.monotonic()
            assert c.command("GET", other) == b"1"
            assert time.monotonic() - started < 1
        assert c.command("BLPOP", queue, "0.1") is None
        assert c.command("RPUSH", queue, "a") == 1
        assert c.command("BLPOP", queue, "1") == [queue.encode(), b"a"]


def test_a_client_that_closes_its_side_behind_a_blocking_command_is_closed(cluster, proxy):
    """SET then BLPOP, then the client closes its side: the SET is answered,
    nothing is left blocked at a node for it, and the connection closes."""
    import socket

    queue = f"queue:{tag()}"
    before = blocked_clients(cluster, "blpop")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(queue) + 2, (queue + ":x").encode())
                  + b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(queue), queue.encode()))
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):  # (the socket's 10 s timeout bounds it)
            received += chunk
    assert received.startswith(b"+OK\r\n"), received
    time.sleep(0.2)
    assert blocked_clients(cluster, "blpop") == before


def _wait_blocked(cluster, command: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while blocked_clients(cluster, command) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert blocked_clients(cluster, command) >= count


def test_blocking_pops_across_slots_with_relaxed(cluster, proxy_factory):
    """Job queues wait on several queues (Sidekiq's `BRPOP queue:critical
    queue:default 2`, Celery's priority lists): with relaxed, the keys'
    order is the priority, a blocked pop takes the first element pushed
    anywhere, and nothing is lost or served twice."""
    proxy = proxy_factory("--cross-slot-transactions", "relaxed")
    q1, q2, q3 = keys_on_each_master(cluster, f"jobs:{tag()}")
    with proxy.raw(timeout=30) as c, proxy.raw(timeout=30) as producer:
        # Something waiting: the first non-empty key in the client's order.
        assert producer.command("RPUSH", q3, "c1") == 1
        assert producer.command("RPUSH", q2, "b1", "b2") == 2
        assert c.command("BRPOP", q1, q2, q3, 1) == [q2.encode(), b"b2"]
        assert c.command("BLPOP", q1, q2, q3, 1) == [q2.encode(), b"b1"]
        assert c.command("BLPOP", q1, q2, q3, 1) == [q3.encode(), b"c1"]
        # Nothing anywhere: the timeout's null, after the timeout.
        started = time.monotonic()
        assert c.command("BRPOP", q1, q2, q3, 0.3) is None
        assert time.monotonic() - started >= 0.25
        assert blocked_clients(cluster, "brpop") == 0

        # Blocked on all three masters; a push to any one wakes it, and the
        # other two are woken too (CLIENT UNBLOCK), not left blocked.
        for target in (q3, q1):
            c.send_command("BRPOP", q1, q2, q3, 0)
            _wait_blocked(cluster, "brpop", 3)
            assert producer.command("LPUSH", target, "job") == 1
            assert c.read_replies(1)[0] == [target.encode(), b"job"]
            deadline = time.monotonic() + 5
            while blocked_clients(cluster, "brpop") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert blocked_clients(cluster, "brpop") == 0
        assert [producer.command("LLEN", q) for q in (q1, q2, q3)] == [0, 0, 0]

        # Pushes to several queues at once: one is served, the rest stay
        # queued (a group that popped after losing the race pushed it back).
        for round_ in range(5):
            c.send_command("BLPOP", q1, q2, q3, 0)
            _wait_blocked(cluster, "blpop", 3)
            pushers = [threading.Thread(target=cluster.call, args=(m, "RPUSH", q, f"r{round_}"))
                       for m, q in zip(cluster.masters, (q1, q2, q3))]
            for t in pushers:
                t.start()
            for t in pushers:
                t.join()
            served = c.read_replies(1)[0]
            assert served[1] == f"r{round_}".encode()
            deadline = time.monotonic() + 5
            while (left := sum(producer.command("LLEN", q) for q in (q1, q2, q3))) != 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert left == 2, f"round {round_}: {left} left of 3 pushed, 1 served"
            for q in (q1, q2, q3):
                producer.command("DEL", q)

        # Sorted sets too, in the client's protocol.
        producer.command("ZADD", q2 + ":z", 5, "m")
        assert c.command("BZPOPMIN", q1 + ":z", q2 + ":z", 1) == [(q2 + ":z").encode(), b"m", b"5"]
        c.hello(3)
        c.send_command("BZPOPMAX", q1 + ":z", q3 + ":z", 0)
        _wait_blocked(cluster, "bzpopmax", 2)
        producer.command("ZADD", q3 + ":z", 2.5, "n")
        assert c.read_replies(1)[0] == [(q3 + ":z").encode(), b"n", 2.5]


def test_blocking_pop_across_slots_with_a_disconnecting_client(cluster, proxy_factory):
    proxy = proxy_factory("--cross-slot-transactions", "relaxed")
    q1, q2, q3 = keys_on_each_master(cluster, f"gone:{tag()}")
    c = proxy.raw(timeout=30)
    c.send_command("BRPOP", q1, q2, q3, 0)
    _wait_blocked(cluster, "brpop", 3)
    c.abort()
    deadline = time.monotonic() + 10
    while blocked_clients(cluster, "brpop") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blocked_clients(cluster, "brpop") == 0
    with proxy.raw() as p:
        assert p.command("RPUSH", q2, "kept") == 1
        assert p.command("LRANGE", q2, 0, -1) == [b"kept"]
        bad = p.command("BLPOP", q1, q2, "forever")
        assert isinstance(bad, RespError) and "timeout" in bad.message


def _owner(cluster, key: str) -> int | None:
    from cluster import key_hash_slot

    try:
        return cluster.node_for_slot(key_hash_slot(key))
    except Exception:
        return None


def test_blocking_pops_wait_through_a_failover(cluster, proxy_factory):
    """A job queue's consumers through a master's death: one blocked on
    another master's list (the cluster's CLUSTERDOWN while the dead master's
    slots have no owner is retried, not passed on), one that starts to wait
    on the dead master's list before its replica takes over (held until the
    new master is known, not refused). Both get their job once it is pushed.
    A stream reader blocked on the dead master (XREAD ... $, a read that
    changed nothing there) blocks again on the new one and gets the entry
    added after the takeover, instead of "connection lost"."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    victim = cluster.masters[0]
    victim_queue, other_queue = keys_on_each_master(cluster, f"jobs:{tag()}")[:2]
    (victim_stream,) = [k for k in keys_on_each_master(cluster, f"ev:{tag()}") if _owner(cluster, k) == victim]
    results: dict = {}

    def consume(name: str, queue: str):
        with proxy.raw(timeout=60) as c:
            results[name] = c.command("BLPOP", queue, "0", timeout=60)

    def read_stream():
        with proxy.raw(timeout=60) as c:
            results["stream"] = c.command("XREAD", "BLOCK", "0", "STREAMS", victim_stream, "$", timeout=60)

    blocked = threading.Thread(target=consume, args=("blocked", other_queue))
    blocked.start()
    reader = threading.Thread(target=read_stream)
    reader.start()
    deadline = time.monotonic() + 5
    while blocked_clients(cluster, "blpop") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    _wait_blocked(cluster, "xread", 1)
    cluster.kill(victim)
    late = threading.Thread(target=consume, args=("late", victim_queue))
    late.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and _owner(cluster, victim_queue) in (victim, None):
            time.sleep(0.2)
        assert _owner(cluster, victim_queue) not in (victim, None), "no replica took over"
        time.sleep(1.0)
        assert results == {}, results  # both still waiting: no error
        with proxy.raw(timeout=20) as c:
            for queue in (victim_queue, other_queue):
                assert c.command("RPUSH", queue, "job") == 1
            entry = c.command("XADD", victim_stream, "*", "f", "after")
        blocked.join(30)
        late.join(30)
        reader.join(30)
        assert results == {
            "blocked": [other_queue.encode(), b"job"],
            "late": [victim_queue.encode(), b"job"],
            "stream": [[victim_stream.encode(), [[entry, [b"f", b"after"]]]]],
        }, results
    finally:
        cluster.restart(victim)
        cluster.wait_healthy(timeout=60)


def test_blocking_pop_waits_through_a_planned_failover(cluster, proxy):
    """CLUSTER FAILOVER: the demoted master unblocks its blocked clients
    with -UNBLOCKED (nothing was popped); the proxy blocks the command again
    on the new master, and the consumer gets its job."""
    master = cluster.masters[1]
    (queue,) = [q for q in keys_on_each_master(cluster, f"jobs:{tag()}") if _owner(cluster, q) == master]
    replica = cluster.replica_of(master)[0]
    result: list = []

    def consume():
        with proxy.raw(timeout=60) as c:
            result.append(c.command("BLPOP", queue, "0", timeout=60))

    consumer = threading.Thread(target=consume)
    consumer.start()
    deadline = time.monotonic() + 5
    while blocked_clients(cluster, "blpop") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and replica not in cluster.masters:
            time.sleep(0.1)
        time.sleep(1.0)
        assert result == []  # still waiting: no error
        with proxy.raw() as c:
            assert c.command("RPUSH", queue, "job") == 1
        consumer.join(30)
        assert result == [[queue.encode(), b"job"]]
    finally:
        cluster.hand_back(master)


def _add_once_promoted(cluster, replica: int, stream: str) -> bytes:
    """Adds an entry straight on `replica` the moment it is a master: before
    the proxy, told by the demoted master's -UNBLOCKED, can block its
    readers again there."""
    deadline = time.monotonic() + 20
    while cluster.call(replica, "ROLE")[0] != b"master":
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.002)
    return cluster.call(replica, "XADD", stream, "*", "f", "during")


def test_stream_reads_wait_through_a_planned_failover(cluster, proxy):
    """XREAD BLOCK 0 over streams on two masters, and one over a stream of
    one of them; that master hands over to its replica (CLUSTER FAILOVER)
    and unblocks its readers with -UNBLOCKED. The proxy blocks each read
    again on the new master, after the stream's last ID when the read was
    first sent (it looked it up then): both clients keep waiting, and get
    the entry added right as the replica took over, before the proxy could
    block them there (reading from `$` again would skip it)."""
    # (Another shard than the planned failover above fails over and back:
    # masters do not vote for a shard's failover twice within a while.)
    master = cluster.masters[2]
    streams = keys_on_each_master(cluster, f"fo:{tag()}")
    here, elsewhere = streams[2], streams[0]
    replica = cluster.replica_of(master)[0]
    with proxy.raw() as c:
        c.command("XADD", here, "*", "f", "before")
    results: dict = {}

    def consume(name: str, *streams: str):
        with proxy.raw(timeout=60) as c:
            ids = ["$"] * len(streams)
            results[name] = c.command("XREAD", "BLOCK", 0, "STREAMS", *streams, *ids, timeout=60)

    consumers = [
        threading.Thread(target=consume, args=("cross-slot", elsewhere, here)),
        threading.Thread(target=consume, args=("one slot", here)),
    ]
    for consumer in consumers:
        consumer.start()
    _wait_blocked(cluster, "xread", 3)
    assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
    try:
        entry = _add_once_promoted(cluster, replica, here)
        for consumer in consumers:
            consumer.join(30)
        read = [[here.encode(), [[entry, [b"f", b"during"]]]]]
        assert results == {"cross-slot": read, "one slot": read}, results
    finally:
        cluster.hand_back(master)


def test_relaxed_pop_moved_after_slow_attempts_keeps_the_clients_deadline(cluster, proxy_factory):
    """BLPOP qa qc 5 over two slots (relaxed): its non-blocking attempt on
    qa's master is slow (that master pauses writes for 2 s), so qc's group
    blocks with the 3 s left. qc's slot then moves to another master: the
    group, sent again there, still waits until the client's 5 s are up (not
    until 3 s after the client's command), and gets the job pushed at 3.8 s."""
    proxy = proxy_factory("--cross-slot-transactions", "relaxed")
    qa, qc, _ = keys_on_each_master(cluster, f"jobs:{tag()}")
    a, b, c = cluster.masters
    slot = key_hash_slot(qc)
    result: dict = {}

    def pop():
        with proxy.raw(timeout=30) as client:
            started = time.monotonic()
            result["reply"] = client.command("BLPOP", qa, qc, "5", timeout=30)
            result["elapsed"] = time.monotonic() - started

    cluster.call(a, "CLIENT", "PAUSE", "2000", "WRITE")
    started = time.monotonic()
    consumer = threading.Thread(target=pop)
    consumer.start()
    try:
        time.sleep(0.5)
        _wait_blocked(cluster, "blpop", 1)  # (qc's group, after the attempts)
        time.sleep(0.2)
        # (As redis-cli --cluster reshard moves it: the new owner bumps its
        # epoch, so every node, replicas too, learns the move.)
        cluster.migrate_slot(slot, c)
        deadline = time.monotonic() + 5
        while "cmd=blpop" not in cluster.call(c, "CLIENT", "LIST").decode() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert time.monotonic() - started < 3.5, "the move took too long for this test"
        time.sleep(started + 3.8 - time.monotonic())
        with proxy.raw() as producer:
            assert producer.command("RPUSH", qc, "job") == 1
        consumer.join(10)
        assert result.get("reply") == [qc.encode(), b"job"], result
    finally:
        consumer.join(10)
        cluster.migrate_slot(slot, b)
        cluster.wait_healthy(timeout=60)


def test_stream_read_from_dollar_after_a_big_entry(cluster, proxy_factory):
    """XREAD BLOCK ... $ on a stream whose newest entry is bigger than
    client-output-limit-hard: the proxy's lookup of that entry's ID (kept
    for a resend after a failover) fetches the ID only, so the read blocks
    and gets the next entry as usual."""
    proxy = proxy_factory("--client-output-limit-hard", "1mb", "--failover-timeout-ms", "4000")
    stream = f"big:{tag()}"
    result: list = []
    with proxy.raw(timeout=30) as c:
        c.command("XADD", stream, "*", "f", "x" * (2 << 20))

    def read():
        with proxy.raw(timeout=30) as c:
            result.append(c.command("XREAD", "BLOCK", "8000", "STREAMS", stream, "$", timeout=30))

    reader = threading.Thread(target=read)
    reader.start()
    _wait_blocked(cluster, "xread", 1)
    with proxy.raw(timeout=30) as c:
        entry = c.command("XADD", stream, "*", "f", "small")
    reader.join(15)
    assert result == [[[stream.encode(), [[entry, [b"f", b"small"]]]]]], result


def test_held_blocking_commands_keep_their_own_timeouts(cluster, proxy_factory):
    """A master and its replica are down, so its slots have no owner for
    longer than a blocking command's own timeout. The command is held (as
    through any failover) but answers when its time is up, with the null a
    node answers on timeout (RESP2 and RESP3), not after failover-timeout-ms
    with an error. One held while the master comes back is sent on with only
    what is left of its timeout: `BLPOP q 8` answers after about 8 s in all.
    A pop over two slots in relaxed mode whose first key's master is down
    answers its null when its time is up too (its non-blocking attempt on
    that master held, then the other key tried)."""
    settings = ("--topology-refresh-ms", "200", "--failover-timeout-ms", "15000")
    proxy = proxy_factory(*settings)
    relaxed = proxy_factory(*settings, "--cross-slot-transactions", "relaxed")
    victim = cluster.masters[0]
    (replica,) = cluster.replica_of(victim)
    queues = keys_on_each_master(cluster, f"jobs:{tag()}")
    (queue,) = [q for q in queues if _owner(cluster, q) == victim]
    other_queue = next(q for q in queues if q != queue)
    stream = "{" + queue + "}:events"
    results: dict = {}

    def wait(name: str, resp3: bool, *command: str, via=proxy):
        """The reply's raw bytes: the exact null (`*-1` or `_`) matters."""
        with via.raw(timeout=30) as c:
            if resp3:
                c.hello(3)
            started = time.monotonic()
            c.send_command(*command)
            reply = c.read_raw(len(b"_\r\n" if resp3 else b"*-1\r\n"), timeout=30)
            results[name] = (reply, time.monotonic() - started)

    cluster.kill(replica)
    cluster.kill(victim)
    try:
        waiters = [
            threading.Thread(target=wait, args=("blpop", False, "BLPOP", queue, "1")),
            threading.Thread(target=wait, args=("xread", False, "XREAD", "BLOCK", "1000", "STREAMS", stream, "$")),
            threading.Thread(target=wait, args=("blmpop", True, "BLMPOP", "1.5", "1", queue, "LEFT")),
            threading.Thread(
                target=wait, args=("relaxed", False, "BLPOP", queue, other_queue, "2"), kwargs={"via": relaxed}),
        ]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join(20)
        assert set(results) == {"blpop", "xread", "blmpop", "relaxed"}, results
        for name, (reply, elapsed) in results.items():
            assert reply == (b"_\r\n" if name == "blmpop" else b"*-1\r\n"), (name, reply)
            assert 0.9 <= elapsed < 5, (name, elapsed)

        # Over two slots, one held for the dead master: an entry on the other
        # answers the client at once (the held one reached no node), not
        # once the outage is over.
        up = cluster.masters[1]
        (elsewhere,) = [s for s in keys_on_each_master(cluster, f"up:{tag()}") if _owner(cluster, s) == up]
        with proxy.raw(timeout=30) as c, proxy.raw(timeout=30) as producer, proxy.raw(timeout=30) as held:
            # (A request held for the dead master: its redial just refused,
            # the XREAD's step for it is held too, not dialled.)
            held.send_command("GET", "{" + queue + "}:x")
            time.sleep(0.3)
            c.send_command("XREAD", "BLOCK", 0, "STREAMS", stream, elsewhere, "$", "$")
            deadline = time.monotonic() + 5
            while "cmd=xread" not in cluster.call(up, "CLIENT", "LIST").decode() and time.monotonic() < deadline:
                time.sleep(0.02)
            entry = producer.command("XADD", elsewhere, "*", "f", "v")
            started = time.monotonic()
            assert c.read_replies(1, timeout=5)[0] == [[elsewhere.encode(), [[entry, [b"f", b"v"]]]]]
            assert time.monotonic() - started < 1

        late = threading.Thread(target=wait, args=("late", False, "BLPOP", queue, "8"))
        late.start()
        time.sleep(1.5)
        cluster.restart(victim)
        cluster.restart(replica)
        late.join(20)
        reply, elapsed = results["late"]
        assert reply == b"*-1\r\n", reply
        # The node blocked it (a restarted master refuses for about 2 s
        # first, then the proxy sent it on) ...
        stats = cluster.info_fields(victim, "INFO", "commandstats").get("cmdstat_blpop", "calls=0,")
        assert int(stats.split("calls=")[1].split(",")[0]) >= 1, stats
        # ... with what was left: sent on with its full 8 s once the master
        # was back, it would answer 9.5 s or more after it was sent.
        assert 7.9 <= elapsed < 9.4, elapsed
    finally:
        for port in (victim, replica):
            if not cluster.alive(port):
                cluster.restart(port)
        cluster.wait_healthy(timeout=60)


def test_clients_held_for_a_dead_master_do_not_each_redial_it(cluster, proxy_factory):
    """Twenty consumers wait on a queue whose master and replica are both
    down. A refused connect marks the node down for all of them, so the
    proxy dials it about once a second (backoff), not once a second per
    consumer, and the log shows it so. When the master comes back at the same
    address (no failover), every consumer is served."""
    # (Failed redials of a node already down are logged at debug level.)
    proxy = proxy_factory("--topology-refresh-ms", "200", "--failover-timeout-ms", "30000", log_level="debug")
    victim = cluster.masters[0]
    (replica,) = cluster.replica_of(victim)
    (queue,) = [q for q in keys_on_each_master(cluster, f"jobs:{tag()}") if _owner(cluster, q) == victim]
    consumers = 20
    results: list = []

    def consume():
        with proxy.raw(timeout=60) as c:
            results.append(c.command("BLPOP", queue, "0", timeout=60))

    cluster.kill(replica)
    cluster.kill(victim)
    threads = [threading.Thread(target=consume) for _ in range(consumers)]
    try:
        for thread in threads:
            thread.start()
        # (Consumers arriving together before the first refusal is in may
        # each dial once: counted from a second on.)
        time.sleep(1)
        lines_before = len(proxy.log_text().splitlines())
        time.sleep(4)
        dials = [line for line in proxy.log_text().splitlines()[lines_before:]
                 if f":{victim}" in line and ("connect failed" in line or "cannot connect" in line)]
        per_worker = Counter(line.split("worker=")[1].split()[0] for line in dials if "worker=" in line)
        print(f"\n{consumers} consumers held 4 s for a dead master: {len(dials)} failed dials logged {dict(per_worker)}")
        # Each worker dials on its own backoff (up to 1 s): about 5 in 4 s.
        # Each consumer on its own would make that many (about 100 in all).
        assert max(per_worker.values()) <= 8, f"{dict(per_worker)}\n" + "\n".join(dials[-20:])
        # The connections' loss is a warning; a redial of a node known down
        # only counted (reported once a minute), not a warning a second.
        log = proxy.log_text().splitlines()
        assert any(" warning " in line and f"connection to 127.0.0.1:{victim} lost" in line for line in log)
        assert [line for line in dials if " debug " not in line] == []
        assert results == []  # all still waiting
    finally:
        cluster.restart(victim)
        cluster.restart(replica)
    cluster.wait_healthy(timeout=60)
    with proxy.raw(timeout=20) as c:
        for i in range(consumers):
            c.command("RPUSH", queue, f"job{i}")
    assert f"127.0.0.1:{victim} reachable again" in proxy.log_text()
    for thread in threads:
        thread.join(40)
    assert len(results) == consumers and all(isinstance(r, list) for r in results), results
    assert sorted(r[1] for r in results) == sorted(f"job{i}".encode() for i in range(consumers)), results


def test_stream_reads_across_slots(cluster, proxy):
    """A consumer reading several streams at once (`XREAD STREAMS orders
    payments 0 0`) whose streams live on different masters: the streams
    with entries in the client's order, as one server answers (checked
    against a standalone redis-server), in RESP2 and RESP3; null when none
    has any; a node's error as it is."""
    from cluster import start_standalone

    s1, s2, s3 = keys_on_each_master(cluster, f"st:{tag()}")
    server = start_standalone()
    try:
        with proxy.raw() as c, RawConnection(server.port) as ref:
            for conn in (c, ref):
                conn.command("XADD", s1, "1-1", "a", "1")
                conn.command("XADD", s3, "3-1", "c", "1")
                conn.command("XADD", s3, "3-2", "c", "2")
                conn.command("SET", s2 + ":string", "x")
            for protocol in (2, 3):
                for conn in (c, ref):
                    conn.hello(protocol)
                for args in (("STREAMS", s3, s2, s1, "0", "0", "0"), ("COUNT", 1, "STREAMS", s1, s3, "0", "0"),
                             ("STREAMS", s1, s3, "1-1", "3-1"), ("STREAMS", s2, s1 + ":none", "0", "0"),
                             ("STREAMS", s1, s2 + ":string", "0", "0")):
                    got, want = c.command("XREAD", *args), ref.command("XREAD", *args)
                    assert got == want and type(got) is type(want), (protocol, args, got, want)
            # Consumer groups: every entry handed out once, each master's
            # pending list holding its own.
            for conn in (c, ref):
                conn.hello(2)
                for stream in (s1, s3):
                    assert is_status(conn.command("XGROUP", "CREATE", stream, "g", "0"))
            for conn in (c, ref):
                assert conn.command("XREADGROUP", "GROUP", "g", "c1", "STREAMS", s1, s3, ">", ">") == [
                    [s1.encode(), [[b"1-1", [b"a", b"1"]]]], [s3.encode(), [[b"3-1", [b"c", b"1"]], [b"3-2", [b"c", b"2"]]]]]
                assert conn.command("XREADGROUP", "GROUP", "g", "c1", "STREAMS", s1, s3, ">", ">") is None
            assert c.command("XPENDING", s3, "g")[0] == 2
            reply = c.command("XREADGROUP", "GROUP", "nosuchgroup", "c1", "STREAMS", s1, s3, ">", ">")
            assert isinstance(reply, RespError) and reply.message.startswith("NOGROUP"), reply
    finally:
        server.stop()


def test_blocking_stream_reads_across_slots(cluster, proxy):
    """XREAD BLOCK over streams on three masters blocks on each; an entry
    added to any one answers the client, and the others are woken (not
    left blocked). All quiet: the null, after the timeout. A group read
    answers every entry it handed out: entries added to two streams at
    once are all seen, none left pending unseen."""
    s1, s2, s3 = keys_on_each_master(cluster, f"bst:{tag()}")
    with proxy.raw(timeout=30) as c:
        started = time.monotonic()
        assert c.command("XREAD", "BLOCK", 300, "STREAMS", s1, s2, s3, "$", "$", "$") is None
        assert time.monotonic() - started >= 0.25
        for target in (s2, s3):
            c.send_command("XREAD", "BLOCK", 0, "STREAMS", s1, s2, s3, "$", "$", "$")
            _wait_blocked(cluster, "xread", 3)
            # Counted as one blocked client, as on one server.
            with proxy.raw() as watcher:
                assert _wait_for_info(watcher, "clients", "blocked_clients", 1) == 1
                listing = watcher.command("CLIENT", "LIST").decode()
                assert any("cmd=xread" in line and "flags=b" in line for line in listing.splitlines()), listing
            entry = cluster.call(cluster.node_for_slot(key_hash_slot(target)), "XADD", target, "*", "f", "v")
            assert c.read_replies(1)[0] == [[target.encode(), [[entry, [b"f", b"v"]]]]]
            deadline = time.monotonic() + 5
            while blocked_clients(cluster, "xread") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert blocked_clients(cluster, "xread") == 0
        assert is_status(c.command("SET", f"{s1}:after", "ok"))  # the client is free again

        for stream in (s1, s2, s3):
            assert is_status(c.command("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"))
        added, seen = 0, 0
        for round_ in range(5):
            c.send_command("XREADGROUP", "GROUP", "g", "c1", "BLOCK", 0, "STREAMS", s1, s2, s3, ">", ">", ">")
            _wait_blocked(cluster, "xreadgroup", 3)
            adders = [threading.Thread(target=cluster.call, args=(m, "XADD", s, "*", "r", str(round_)))
                      for m, s in zip(cluster.masters, (s1, s2, s3))]
            for t in adders:
                t.start()
            for t in adders:
                t.join()
            added += 3
            seen += sum(len(entries) for _, entries in c.read_replies(1)[0])
            # What the race did not answer is still new for the group, not pending.
            rest = c.command("XREADGROUP", "GROUP", "g", "c1", "STREAMS", s1, s2, s3, ">", ">", ">") or []
            seen += sum(len(entries) for _, entries in rest)
        assert seen == added
        assert sum(c.command("XPENDING", s, "g")[0] for s in (s1, s2, s3)) == added


def test_a_cross_slot_read_decided_at_once_wakes_its_blocked_group(cluster, proxy_factory):
    """Two streams in two slots of one master, one dedicated connection per
    node: one slot's read blocks, the other's is refused at once, which
    decides the read. The CLIENT UNBLOCK for the blocked one travels on
    another connection and may reach the node first (waking nothing): it
    is sent again until that read answers, so the client is never left
    blocked forever (BLOCK 0)."""
    proxy = proxy_factory("--workers", "1", "--blocking-connections-per-node", "1")
    first = f"ub:{tag()}"
    owner = cluster.node_for_slot(key_hash_slot(first))
    second = next(k for k in (f"{first}:{i}" for i in range(1000))
                  if key_hash_slot(k) != key_hash_slot(first) and cluster.node_for_slot(key_hash_slot(k)) == owner)
    with proxy.raw(timeout=10) as c:
        for stream in (first, second):
            c.command("XADD", stream, "1-0", "f", "v")
        for _ in range(20):
            # (An idle dedicated connection whose node id is known, for the next read.)
            assert c.command("XREAD", "BLOCK", 1, "STREAMS", first, "$") is None
            with proxy.raw(timeout=5) as other, proxy.raw(timeout=5) as reader:
                other.send_command("GET", "{" + first + "}x")  # (the same master: its shared connection is written first)
                reader.send_command("XREAD", "BLOCK", 0, "STREAMS", first, second, "$", "$")
                assert other.read_replies(1)[0] is None
                reply = reader.read_replies(1, timeout=5)[0]
                assert isinstance(reply, RespError) and "too many blocked clients" in reply.message, reply
        deadline = time.monotonic() + 5
        while blocked_clients(cluster, "xread") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert blocked_clients(cluster, "xread") == 0


def test_xreadgroup_with_block_before_group_blocks_on_its_own_connection(cluster, proxy):
    """Redis takes XREADGROUP's options in any order: `BLOCK 300 GROUP g c`
    blocks like `GROUP g c BLOCK 300`, on a dedicated connection, never on
    the connection other clients' requests to that master share."""
    stream = f"bg:{tag()}"
    with proxy.raw(timeout=10) as c, proxy.raw(timeout=10) as other:
        assert is_status(c.command("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"))
        started = time.monotonic()
        c.send_command("XREADGROUP", "BLOCK", 300, "GROUP", "g", "c1", "STREAMS", stream, ">")
        time.sleep(0.05)
        assert other.command("GET", "{" + stream + "}x") is None
        assert time.monotonic() - started < 0.25, "another client's GET waited behind the blocked read"
        assert c.read_replies(1)[0] is None
