"""MULTI/EXEC/WATCH through the proxy: bound to one dedicated connection to
the transaction's master, pooled, aborted as Redis aborts (issue 4)."""

from __future__ import annotations

import uuid

from harness import RawConnection, RespError, is_status


def tag() -> str:
    return "{" + uuid.uuid4().hex[:8] + "}"


def test_multi_exec_in_one_slot(proxy):
    t = tag()
    with proxy.raw() as c:
        replies = c.pipeline([("MULTI",), ("PING",), ("SET", f"{t}a", "1"), ("INCR", f"{t}a"), ("GET", f"{t}a"),
                              ("EXEC",)])
        assert is_status(replies[0]) and all(is_status(r, b"QUEUED") for r in replies[1:5])
        assert replies[5] == [b"PONG", b"OK", 2, b"2"]
        assert c.command("GET", f"{t}a") == b"2"


def test_watch_success_and_conflict(proxy):
    t = tag()
    key = f"{t}counter"
    with proxy.raw() as a, proxy.raw() as b:
        assert is_status(a.command("SET", key, "10"))
        # Success: nobody touches the key.
        assert is_status(a.command("WATCH", key))
        value = int(a.command("GET", key))
        assert a.pipeline([("MULTI",), ("SET", key, value + 1), ("EXEC",)])[-1] == [b"OK"]
        # Conflict: another client changes it between WATCH and EXEC.
        assert is_status(a.command("WATCH", key))
        assert is_status(b.command("SET", key, "99"))
        assert a.pipeline([("MULTI",), ("SET", key, "12"), ("EXEC",)])[-1] is None
        assert a.command("GET", key) == b"99"
        # UNWATCH then a clean transaction.
        assert is_status(a.command("WATCH", key))
        assert is_status(a.command("UNWATCH"))
        assert is_status(b.command("SET", key, "5"))
        assert a.pipeline([("MULTI",), ("INCR", key), ("EXEC",)])[-1] == [6]


def test_cross_slot_inside_multi_aborts_like_redis(proxy):
    with proxy.raw() as c:
        # Commands of two slots: queued, then EXEC says CROSSSLOT (a node's words).
        replies = c.pipeline([("MULTI",), ("SET", "a", "1"), ("SET", "b", "2"), ("EXEC",)])
        assert is_status(replies[0]) and is_status(replies[1], b"QUEUED") and is_status(replies[2], b"QUEUED")
        assert isinstance(replies[3], RespError) and replies[3].message.startswith("CROSSSLOT")
        # One command over two slots: refused at once, EXEC aborts.
        replies = c.pipeline([("MULTI",), ("MSET", "a", "1", "b", "2"), ("EXEC",)])
        assert isinstance(replies[1], RespError) and replies[1].message.startswith("CROSSSLOT")
        assert isinstance(replies[2], RespError) and replies[2].message.startswith("EXECABORT")
        # Unknown command and wrong arity abort too; the connection stays usable.
        replies = c.pipeline([("MULTI",), ("NOSUCH",), ("GET",), ("EXEC",)])
        assert isinstance(replies[3], RespError) and replies[3].message.startswith("EXECABORT")
        replies = c.pipeline([("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("DISCARD",)])
        assert [r.message for r in replies[:2]] == ["ERR EXEC without MULTI", "ERR DISCARD without MULTI"]
        assert replies[3].message == "ERR MULTI calls can not be nested" and is_status(replies[4])
        assert c.command("PING") == b"PONG"


def test_keyless_transaction_and_discard(proxy):
    t = tag()
    with proxy.raw() as c:
        assert c.pipeline([("MULTI",), ("PING",), ("ECHO", "x"), ("EXEC",)])[-1] == [b"PONG", b"x"]
        assert c.pipeline([("MULTI",), ("EXEC",)])[-1] == []
        replies = c.pipeline([("MULTI",), ("SET", f"{t}k", "v"), ("DISCARD",), ("GET", f"{t}k")])
        assert is_status(replies[2]) and replies[3] is None


def proxy_connections(cluster) -> int:
    """Connections on the masters that are not the test's own probes."""
    total = 0
    for m in cluster.masters:
        listing = cluster.call(m, "CLIENT", "LIST").decode()
        total += sum(1 for line in listing.splitlines() if "cmd=client|list" not in line)
    return total


def test_thousand_transactions_reuse_connections(cluster, proxy):
    t = tag()
    with proxy.raw(timeout=60) as c:
        c.pipeline([("MULTI",), ("INCR", f"{t}n"), ("EXEC",)])
        before = proxy_connections(cluster)
        commands = []
        for _ in range(1000):
            commands += [("WATCH", f"{t}n"), ("MULTI",), ("INCR", f"{t}n"), ("EXEC",)]
        replies = c.pipeline(commands)
        assert replies[-1] == [1001]
        assert proxy_connections(cluster) <= before + 1


def test_redis_py_transactional_pipeline(proxy):
    t = tag()
    for protocol in (2, 3):
        r = proxy.client(protocol=protocol)
        with r.pipeline(transaction=True) as p:
            p.set(f"{t}x", "1").incr(f"{t}x").get(f"{t}x")
            assert p.execute() == [True, 2, b"2"]

        def bump(pipe):
            value = int(pipe.get(f"{t}x"))
            pipe.multi()
            pipe.set(f"{t}x", value + 10)

        r.transaction(bump, f"{t}x")
        assert r.get(f"{t}x") == b"12"
        r.delete(f"{t}x")


def test_pipelined_commands_keep_their_order_around_dedicated_connections(proxy):
    t = tag()
    with proxy.raw(timeout=30) as c:
        # GET after EXEC sees the transaction's write (it must not overtake EXEC).
        replies = c.pipeline([("SET", f"{t}k", "1"), ("MULTI",), ("INCR", f"{t}k"), ("EXEC",), ("GET", f"{t}k")] * 20)
        assert [replies[i] for i in range(4, 100, 5)] == [b"2"] * 20
        # A blocking command delays the client's next one, as on one server.
        replies = c.pipeline([("BLPOP", f"{t}q", 0.3), ("RPUSH", f"{t}q", "x"), ("LLEN", f"{t}q")])
        assert replies == [None, 1, 1]
        # RESET pipelined behind transaction commands does not hang.
        replies = c.pipeline([("WATCH", f"{t}k"), ("RESET",), ("MULTI",), ("SET", f"{t}k", "v"), ("RESET",), ("PING",)])
        assert is_status(replies[0]) and is_status(replies[1], b"RESET") and is_status(replies[4], b"RESET")
        assert replies[5] == b"PONG"


def test_proxy_refusals_hold_inside_multi_and_subscribe_mode(cluster, proxy):
    t = tag()
    with proxy.raw() as c:
        assert is_status(c.command("SET", f"{t}keep", "1"))
        replies = c.pipeline([("MULTI",), ("SET", f"{t}a", "1"), ("FLUSHALL",), ("EXEC",)])
        assert isinstance(replies[2], RespError) and isinstance(replies[3], RespError)
        assert replies[3].message.startswith("EXECABORT")
        # A command pipelined after the last UNSUBSCRIBE runs after subscribe
        # mode ends, through the proxy's checks (FLUSHALL stays refused).
        replies = c.pipeline([("SUBSCRIBE", f"{t}ch"), ("UNSUBSCRIBE",), ("FLUSHALL",), ("GET", f"{t}keep")])
        assert replies[0][0] == b"subscribe" and replies[1][0] == b"unsubscribe" and replies[1][2] == 0
        assert isinstance(replies[2], RespError) and "allow-flush" in replies[2].message
        assert replies[3] == b"1"
        # MSET with a key missing its value, across slots: an arity error.
        reply = c.command("MSET", "a", "1", "b")
        assert isinstance(reply, RespError) and "wrong number of arguments" in reply.message
        assert c.command("PING") == b"PONG"


def test_unwatch_inside_multi_is_queued_as_redis(proxy):
    from cluster import start_standalone

    t = tag()
    server = start_standalone()
    try:
        with proxy.raw() as c, RawConnection(server.port) as s:
            script = [("WATCH", f"{t}w"), ("MULTI",), ("UNWATCH",), ("SET", f"{t}w", "1"), ("EXEC",)]
            assert c.pipeline(script) == s.pipeline(script)
    finally:
        server.stop()
