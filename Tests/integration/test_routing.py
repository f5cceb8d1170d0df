"""Integration tests of the proxy's routing core against a real 6-node cluster.

Clients talk to slotproxy as if it were one Redis server; the checks compare
what they get with what Redis 7.0 itself answers, and look at the cluster nodes
directly (never through the proxy) to see where the data landed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis

from harness import (
    HOST,
    Map,
    RawConnection,
    RespError,
    Status,
    encode_command,
    is_status,
    key_hash_slot,
    keys_on_each_master,
    pairs_to_dict,
    verify_on_masters,
)

N_PIPELINED = 10_000

# Redis 7.0's own texts (checked against a live node in the tests below too).
ERR_ARITY_GET = "ERR wrong number of arguments for 'get' command"
ERR_UNKNOWN_FOO = "ERR unknown command 'FOO', with args beginning with: 'bar' "
ERR_CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"
ERR_SELECT = "ERR SELECT is not allowed in cluster mode"


def unique(tag: str) -> str:
    return f"it:{tag}:{uuid.uuid4().hex[:10]}"


def make_data(tag: str, n: int = N_PIPELINED):
    prefix = unique(tag)
    keys = [f"{prefix}:{i}".encode() for i in range(n)]
    values = [f"value-{i}-{prefix}".encode() for i in range(n)]
    return keys, values


def assert_covers_all_masters(cluster, keys):
    owners = cluster.slot_owners()
    covered = {owners[key_hash_slot(k)] for k in keys}
    masters = set(cluster.masters)
    assert len(masters) == 3
    assert covered == masters, f"keys cover {sorted(covered)}, masters are {sorted(masters)}"


def assert_all_ok(replies, what="SET"):
    bad = [(i, r) for i, r in enumerate(replies) if not is_status(r, b"OK")]
    assert not bad, f"{len(bad)} {what} replies are not +OK, first: {bad[:3]}"


def assert_values(replies, values):
    assert len(replies) == len(values)
    for i, (got, want) in enumerate(zip(replies, values)):
        assert got == want, f"reply {i}: expected {want!r:.80}, got {got!r:.80}"


# ---------------------------------------------------------------------------
# Harness sanity (no proxy): our CRC16 agrees with the cluster.
# ---------------------------------------------------------------------------


def test_crc16_matches_cluster_keyslot(cluster):
    keys = [b"", b"a", b"b", b"user:1", b"{user}:1", b"foo{}{bar}", b"foo{{bar}}zap",
            b"{}", b"x{y}", b"\x00\xff\r\n", bytes(range(256))]
    keys += [f"k:{i}".encode() for i in range(300)]
    with RawConnection(cluster.masters[0]) as c:
        replies = c.pipeline([("CLUSTER", "KEYSLOT", k) for k in keys])
    assert replies == [key_hash_slot(k) for k in keys]


# ---------------------------------------------------------------------------
# Pipelining, one connection.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("proto", [2, 3])
def test_pipelined_set_get_raw_socket(cluster, proxy, proto):
    keys, values = make_data(f"pipe-raw{proto}")
    assert_covers_all_masters(cluster, keys)
    with proxy.raw(timeout=60) as c:
        if proto == 3:
            hello = c.hello(3)
            assert isinstance(hello, Map), f"HELLO 3 reply is not a RESP3 map: {hello!r}"
            assert hello.get(b"proto") == 3, hello
        replies = c.pipeline([("SET", k, v) for k, v in zip(keys, values)])
        assert_all_ok(replies)
        replies = c.pipeline([("GET", k) for k in keys])
        assert_values(replies, values)
        # The connection is still in order afterwards.
        assert c.command("PING") == b"PONG"
    counts = verify_on_masters(cluster, keys, values)
    assert len(counts) == 3 and sum(counts.values()) == len(keys)


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipelined_set_get_redis_py(cluster, proxy, protocol):
    keys, values = make_data(f"pipe-py{protocol}")
    assert_covers_all_masters(cluster, keys)
    r = proxy.client(protocol=protocol)
    try:
        pipe = r.pipeline(transaction=False)
        for k, v in zip(keys, values):
            pipe.set(k, v)
        results = pipe.execute()
        assert results == [True] * len(keys)
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        assert_values(pipe.execute(), values)
        assert r.get(keys[123]) == values[123]
        assert r.get(unique("missing")) is None
    finally:
        r.close()
    verify_on_masters(cluster, keys, values)


def test_pipeline_mixes_local_and_routed_replies_in_order(cluster, proxy):
    """Replies the proxy makes itself and replies from three masters, all in one
    pipeline, come back in request order."""
    keys, values = make_data("mixed", 300)
    assert_covers_all_masters(cluster, keys)
    commands, expected = [], []
    for i, (k, v) in enumerate(zip(keys, values)):
        commands += [("SET", k, v), ("PING",), ("GET", k), ("ECHO", f"echo-{i}")]
        expected += [b"OK", b"PONG", v, f"echo-{i}".encode()]
    with proxy.raw() as c:
        replies = c.pipeline(commands)
    assert_values(replies, expected)


def first_reply_delay(conn, commands) -> tuple[float, list]:
    """Sends `commands` in one write; seconds until the first reply was read,
    and all the replies."""
    started = time.monotonic()
    conn.send(b"".join(encode_command(*c) for c in commands))
    first = conn.read_reply(timeout=10)
    delay = time.monotonic() - started
    return delay, [first] + conn.read_replies(len(commands) - 1, timeout=10)


# Busy for ARGV[1] microseconds on the node of KEYS[1].
BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start >= tonumber(ARGV[1])
return 1
"""


def test_partial_pipeline_replies_wait_for_the_rest_at_most_reply_coalesce_us(cluster, proxy_factory):
    """The first replies of a pipeline spread over masters wait for the rest
    (one write to the client), but never much longer than reply-coalesce-us;
    a lone request is not held at all, and 0 turns the wait off."""
    fast, slow = keys_on_each_master(cluster, unique("coalesce"))[:2]
    # The script keeps another master busy: it is the slow rest of the pipeline.
    slow_pipeline = [("GET", fast), ("EVAL", BUSY_SCRIPT, "1", slow, "500000")]
    with proxy_factory("--set", "reply-coalesce-us=100000").raw() as c:
        assert is_status(c.command("SET", fast, "v"))
        started = time.monotonic()
        for _ in range(20):
            assert c.command("GET", fast) == b"v"
        assert time.monotonic() - started < 0.5, "lone requests were held"
        for _ in range(3):
            delay, replies = first_reply_delay(c, slow_pipeline)
            assert replies == [b"v", 1]
            assert 0.09 <= delay < 0.45, f"first reply after {delay:.3f} s: held for 0.1 s, then written"
    with proxy_factory("--set", "reply-coalesce-us=0").raw() as c:
        delay, replies = first_reply_delay(c, slow_pipeline)
        assert replies == [b"v", 1]
        assert delay < 0.09, f"first reply after {delay:.3f} s with reply-coalesce-us 0"


def test_a_client_that_closes_its_side_still_gets_its_replies(cluster, proxy):
    """`printf 'GET k\\r\\n' | nc -N host port` and scripts like it: the
    client sends, closes its side at once, then reads. As with a server,
    everything it sent is answered before the connection closes."""
    tag = uuid.uuid4().hex[:8]
    keys = [f"halfclose:{tag}:{i}" for i in range(30)]  # (over all masters)
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(k), k.encode()) for k in keys)
    payload += b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in keys)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received == b"+OK\r\n" * len(keys) + b"$1\r\nv\r\n" * len(keys)


@pytest.mark.parametrize("proto", [2, 3])
def test_missing_key_and_reply_types_follow_client_protocol(proxy, proto):
    """A RESP3 client gets RESP3 replies (null `_`, maps) even though the
    backend connections are shared; a RESP2 client gets RESP2 ones."""
    key = unique("hash")
    with proxy.raw() as c:
        if proto == 3:
            assert isinstance(c.hello(3), Map)
        assert c.command("HSET", key, "f", "v") == 1
        c.send_command("GET", unique("missing"))
        null = b"_\r\n" if proto == 3 else b"$-1\r\n"
        assert c.read_raw(len(null)) == null
        c.send_command("HGETALL", key)
        head = b"%1\r\n" if proto == 3 else b"*2\r\n"
        assert c.read_raw(len(head)) == head
        assert c.read_replies(2) == [b"f", b"v"]
        assert c.command("PING") == b"PONG"


# ---------------------------------------------------------------------------
# Binary safety and big values.
# ---------------------------------------------------------------------------


def test_binary_keys_and_values(cluster, proxy):
    every_byte = bytes(range(256))
    prefix = unique("bin").encode()
    keys = [
        prefix + b":\x00\xff\r\n*3\r\n$3\r\n",
        prefix + b":" + every_byte,
        prefix + b":\r\n",
        prefix + b":\x80\x81{\xfe}",  # a binary hash tag
    ]
    values = [every_byte, every_byte[::-1], b"", b"\r\n" * 1000 + every_byte]
    with proxy.raw() as c:
        assert_all_ok(c.pipeline([("SET", k, v) for k, v in zip(keys, values)]))
        assert_values(c.pipeline([("GET", k) for k in keys]), values)
        assert c.command("STRLEN", keys[0]) == 256
    r = proxy.client()
    try:
        for k, v in zip(keys, values):
            assert r.get(k) == v
    finally:
        r.close()
    verify_on_masters(cluster, keys, values)


def test_16mb_value(cluster, proxy):
    key = unique("big").encode()
    value = os.urandom(16 * 1024 * 1024)
    with proxy.raw(timeout=60) as c:
        assert is_status(c.pipeline([("SET", key, value)])[0], b"OK")
        assert c.command("STRLEN", key) == len(value)
        got = c.pipeline([("GET", key)])[0]
        assert isinstance(got, bytes) and len(got) == len(value)
        assert got == value
        assert c.command("PING") == b"PONG"
    verify_on_masters(cluster, [key], [value])
    cluster.call(cluster.node_for_key(key), "DEL", key)


# ---------------------------------------------------------------------------
# Many clients.
# ---------------------------------------------------------------------------


def test_50_concurrent_clients(cluster, proxy):
    n_clients, n_ops = 50, 300
    barrier = threading.Barrier(n_clients, timeout=30)
    errors: list[str] = []
    done = []

    def client(idx: int):
        prefix = unique(f"conc{idx}")
        r = proxy.client(single_connection_client=True)
        try:
            barrier.wait()
            for i in range(n_ops):
                k, v = f"{prefix}:{i}", f"{idx}-{i}-{prefix}".encode()
                if r.set(k, v) is not True:
                    errors.append(f"client {idx}: SET {k} failed")
                    return
                got = r.get(k)
                if got != v:
                    errors.append(f"client {idx}: GET {k} -> {got!r}, expected {v!r}")
                    return
            pipe = r.pipeline(transaction=False)
            for i in range(n_ops):
                pipe.get(f"{prefix}:{i}")
            got = pipe.execute()
            want = [f"{idx}-{i}-{prefix}".encode() for i in range(n_ops)]
            if got != want:
                errors.append(f"client {idx}: re-read mismatch")
                return
            done.append(idx)
        except Exception as e:  # reported below
            errors.append(f"client {idx}: {type(e).__name__}: {e}")
        finally:
            r.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 180
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "some clients did not finish in 180 s"
    assert not errors, errors[:5]
    assert sorted(done) == list(range(n_clients))


# ---------------------------------------------------------------------------
# Real clients: redis-cli, inline commands.
# ---------------------------------------------------------------------------


def redis_cli(port, *args, timeout=10):
    cli = shutil.which(os.environ.get("REDIS_CLI", "redis-cli"))
    assert cli, "redis-cli not found"
    r = subprocess.run([cli, "-h", HOST, "-p", str(port), *args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_redis_cli(proxy, cluster, resp3):
    flags = ["-3"] if resp3 else []
    value = "alice" if not resp3 else "alice3"
    rc, out, err = redis_cli(proxy.port, *flags, "set", "user:1", value)
    assert (rc, out) == (0, "OK\n"), err
    rc, out, err = redis_cli(proxy.port, *flags, "get", "user:1")
    assert (rc, out) == (0, f"{value}\n"), err
    assert cluster.call(cluster.node_for_key("user:1"), "GET", "user:1") == value.encode()


def test_inline_commands(cluster, proxy):
    key = unique("inline")
    with proxy.raw() as c:
        c.send(b"PING\r\n")
        assert is_status(c.read_reply(), b"PONG")
        c.send(f"SET {key} v\r\n".encode())
        assert is_status(c.read_reply(), b"OK")
        c.send(f"GET {key}\r\n".encode())
        assert c.read_reply() == b"v"
        # Several inline commands in one packet, answered in order.
        c.send(f"PING\r\nGET {key}\r\nPING\r\n".encode())
        assert c.read_replies(3) == [b"PONG", b"v", b"PONG"]
    assert cluster.call(cluster.node_for_key(key), "GET", key) == b"v"


# ---------------------------------------------------------------------------
# Commands the proxy answers itself.
# ---------------------------------------------------------------------------


def test_ping_and_echo(proxy):
    with proxy.raw() as c:
        assert is_status(c.command("PING"), b"PONG")
        reply = c.command("PING", "hello world")
        assert reply == b"hello world" and not isinstance(reply, Status)
        assert c.command("ECHO", "x\r\ny\x00") == b"x\r\ny\x00"


def test_select(proxy):
    with proxy.raw() as c:
        assert is_status(c.command("SELECT", 0), b"OK")
        err = c.command("SELECT", 1)
        assert isinstance(err, RespError) and err.message == ERR_SELECT
        assert c.command("PING") == b"PONG"


def test_client_setname_getname(proxy):
    with proxy.raw() as a, proxy.raw() as b:
        assert a.command("CLIENT", "GETNAME") is None
        assert is_status(a.command("CLIENT", "SETNAME", "worker-1"), b"OK")
        assert a.command("CLIENT", "GETNAME") == b"worker-1"
        assert b.command("CLIENT", "GETNAME") is None  # per connection
        assert is_status(a.command("CLIENT", "SETNAME", "renamed"), b"OK")
        assert a.command("CLIENT", "GETNAME") == b"renamed"


def test_client_id(proxy):
    with proxy.raw() as a, proxy.raw() as b:
        ida, idb = a.command("CLIENT", "ID"), b.command("CLIENT", "ID")
        assert type(ida) is int and type(idb) is int
        assert ida != idb
        assert a.command("CLIENT", "ID") == ida
        assert pairs_to_dict(a.command("HELLO", 2))["id"] == ida


def test_client_info_and_list_describe_the_proxys_clients(cluster, proxy):
    """CLIENT INFO and CLIENT LIST describe the clients of the proxy (with
    the ids CLIENT ID gives), not some node's connections, with every field
    a server gives, in its order (redis-py's client_info() needs them);
    commands that act on a node's connections (PAUSE ...) are refused with
    the reason."""
    node_fields = [f.split("=")[0] for f in cluster.call(cluster.masters[0], "CLIENT", "INFO").decode().split()]
    r = proxy.client()
    r.client_setname("py")
    info = r.client_info()
    assert info["name"] == "py" and info["db"] == 0 and info["flags"] == "N" and info["psub"] == 0, info
    assert [f for f in info if f in node_fields] == node_fields, (list(info), node_fields)
    r.close()
    for command in (("CLIENT", "INFO"), ("CLIENT", "LIST")):  # RESP3: verbatim text, as a server sends it
        with proxy.raw() as r3:
            r3.hello(3)
            r3.send_command(*command)
            assert r3.read_raw(6)[:1] == b"=", command
    with proxy.raw() as a, proxy.raw() as b:
        assert is_status(a.command("CLIENT", "SETNAME", "app-a"))
        ida, idb = a.command("CLIENT", "ID"), b.command("CLIENT", "ID")
        info = a.command("CLIENT", "INFO").decode()
        assert info.startswith(f"id={ida} ") and " name=app-a " in info and info.endswith("\n"), info
        listing = a.command("CLIENT", "LIST").decode().splitlines()
        assert {line.split()[0] for line in listing} >= {f"id={ida}", f"id={idb}"}, listing
        ids = [int(line.split()[0][3:]) for line in listing]
        assert ids == sorted(ids), ids  # in id order, as a server lists them
        a.command("MULTI")
        a.command("SET", "ci:x", "1")
        a.command("GET", "ci:x")
        in_multi = b.command("CLIENT", "LIST", "ID", str(ida)).decode()
        assert " flags=x " in in_multi and " multi=2 " in in_multi, in_multi
        a.command("DISCARD")
        only_b = b.command("CLIENT", "LIST", "ID", str(idb)).decode().splitlines()
        assert [line.split()[0] for line in only_b] == [f"id={idb}"]
        assert b.command("CLIENT", "LIST", "TYPE", "pubsub") == b""
        assert f"id={ida} " in b.command("CLIENT", "LIST", "TYPE", "normal").decode()
        assert b.command("CLIENT", "LIST", "TYPE", "bogus").message == "ERR Unknown client type 'bogus'"
        assert b.command("CLIENT", "LIST", "ID", "x").message == "ERR Invalid client ID"
        for args in (("PAUSE", "10"), ("UNPAUSE",), ("UNBLOCK", str(ida))):
            reply = b.command("CLIENT", *args)
            assert isinstance(reply, RespError) and "particular node" in reply.message, (args, reply)
        assert is_status(a.command("PING"), b"PONG")


def test_client_kill_closes_the_proxys_own_clients(proxy):
    """A runaway client is removed with CLIENT KILL, as on a server: by
    ID, ADDR, USER, TYPE (filters answer how many), or the old `ip:port`
    form (+OK); the caller is spared unless SKIPME no."""
    victims = [proxy.raw(timeout=5) for _ in range(4)]
    with proxy.raw() as admin:
        ids = [v.command("CLIENT", "ID") for v in victims]
        addrs = {line.split()[0][3:]: line.split()[1][5:]
                 for line in admin.command("CLIENT", "LIST").decode().splitlines()}
        victims[3].command("SUBSCRIBE", "kill-test")

        assert admin.command("CLIENT", "KILL", "ID", str(ids[0])) == 1
        assert admin.command("CLIENT", "KILL", addrs[str(ids[1])]) == b"OK"
        assert admin.command("CLIENT", "KILL", "127.0.0.1:1").message == "ERR No such client"
        assert admin.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        assert admin.command("CLIENT", "KILL", "ID", "0").message == "ERR client-id should be greater than 0"
        assert admin.command("CLIENT", "KILL", "ID", str(ids[2]), "bogus", "x").message == "ERR syntax error"
        for victim in (victims[0], victims[1], victims[3]):
            with pytest.raises((ConnectionError, OSError, EOFError)):
                victim.command("PING")
        assert victims[2].command("PING") == b"PONG"  # not named by any filter
        own = admin.command("CLIENT", "ID")
        assert admin.command("CLIENT", "KILL", "ID", str(own)) == 0  # SKIPME yes by default
        assert admin.command("CLIENT", "KILL", "USER", "default", "SKIPME", "no") >= 2
        with pytest.raises((ConnectionError, OSError, EOFError)):
            admin.command("PING")
    for v in victims:
        v.close()


HELLO_KEYS = {"server", "version", "proto", "id", "mode", "role", "modules"}


def test_hello_2(proxy):
    with proxy.raw() as c:
        reply = c.command("HELLO", 2)
        assert isinstance(reply, list) and not isinstance(reply, Map), reply
        fields = pairs_to_dict(reply)
        assert HELLO_KEYS <= set(fields), fields
        assert fields["proto"] == 2
        assert type(fields["id"]) is int
        assert isinstance(fields["server"], bytes) and isinstance(fields["version"], bytes)
        assert isinstance(fields["modules"], list)
        assert c.command("PING") == b"PONG"


def test_hello_3(proxy):
    with proxy.raw() as c:
        reply = c.command("HELLO", 3)
        assert isinstance(reply, Map), f"HELLO 3 must answer a RESP3 map, got {reply!r}"
        fields = pairs_to_dict(reply)
        assert HELLO_KEYS <= set(fields), fields
        assert fields["proto"] == 3
        assert type(fields["id"]) is int
        assert isinstance(fields["modules"], list)
        # Back to RESP2 on the same connection.
        back = c.command("HELLO", 2)
        assert not isinstance(back, Map) and pairs_to_dict(back)["proto"] == 2


def test_command_count(proxy):
    with proxy.raw() as c:
        n = c.command("COMMAND", "COUNT")
    assert type(n) is int and n > 200, n


def test_command_info_get(cluster, proxy):
    with proxy.raw() as c:
        reply = c.command("COMMAND", "INFO", "get")
    want = cluster.call(cluster.masters[0], "COMMAND", "INFO", "get")
    assert isinstance(reply, list) and len(reply) == 1, reply
    entry = reply[0]
    assert entry[0] == b"get"
    assert entry[1] == 2
    assert set(entry[2]) == set(want[0][2])  # flags
    assert entry[3:6] == [1, 1, 1] == want[0][3:6]  # first key, last key, step


# ---------------------------------------------------------------------------
# Errors, as Redis words them.
# ---------------------------------------------------------------------------


def test_error_texts_match_redis(cluster):
    """Guard for the constants above: a real node says exactly these."""
    with RawConnection(cluster.masters[0]) as c:
        assert c.command("GET").message == ERR_ARITY_GET
        assert c.command("FOO", "bar").message == ERR_UNKNOWN_FOO
        assert c.command("SELECT", 1).message == ERR_SELECT
        assert c.command("MGET", "a", "b").message == ERR_CROSSSLOT


def test_wrong_number_of_arguments(proxy):
    with proxy.raw() as c:
        err = c.command("GET")
        assert isinstance(err, RespError) and err.message == ERR_ARITY_GET
        assert c.command("PING") == b"PONG"


def test_unknown_command(proxy):
    with proxy.raw() as c:
        err = c.command("FOO", "bar")
        assert isinstance(err, RespError) and err.message == ERR_UNKNOWN_FOO
        assert c.command("PING") == b"PONG"


def test_mget_same_slot(proxy):
    tag = unique("u")
    a, b = f"{{{tag}}}a", f"{{{tag}}}b"
    with proxy.raw() as c:
        assert_all_ok(c.pipeline([("SET", a, "va"), ("SET", b, "vb")]))
        assert c.command("MGET", a, b) == [b"va", b"vb"]
        assert c.command("MGET", a, f"{{{tag}}}missing", b) == [b"va", None, b"vb"]


def test_cross_slot_without_split_is_refused(proxy):
    """Multi-key commands whose atomicity cannot span masters answer as a
    cluster node does (MGET and friends are split instead: test_split.py)."""
    assert key_hash_slot("a") != key_hash_slot("b")
    with proxy.raw() as c:
        for args in (("MSETNX", "a", "1", "b", "2"), ("RENAME", "a", "b"), ("SMOVE", "a", "b", "m")):
            err = c.command(*args)
            assert isinstance(err, RespError) and err.message == ERR_CROSSSLOT, (args, err)
        assert c.command("PING") == b"PONG"


def test_eval(proxy):
    key = unique("eval")
    with proxy.raw() as c:
        assert is_status(c.command("SET", key, "from-eval"), b"OK")
        assert c.command("EVAL", "return redis.call('get', KEYS[1])", 1, key) == b"from-eval"


def test_rpoplpush(proxy):
    tag = unique("q")
    src, dst = f"{{{tag}}}a", f"{{{tag}}}b"
    with proxy.raw() as c:
        assert c.command("RPUSH", src, "x", "y") == 2
        assert c.command("RPOPLPUSH", src, dst) == b"y"
        assert c.command("LRANGE", src, 0, -1) == [b"x"]
        assert c.command("LRANGE", dst, 0, -1) == [b"y"]


# ---------------------------------------------------------------------------
# Protocol errors: error reply, then the connection is closed; others go on.
# ---------------------------------------------------------------------------

PROTOCOL_ERRORS = [
    (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*1\r\nX\r\n", "ERR Protocol error: expected '$', got 'X'"),
]


@pytest.mark.parametrize("payload,message", PROTOCOL_ERRORS, ids=["bulk-length", "multibulk-length", "expected-dollar"])
def test_protocol_error_closes_only_that_connection(cluster, proxy, payload, message):
    # What Redis itself does with this input.
    with RawConnection(cluster.masters[0]) as direct:
        direct.send(payload)
        replies, closed = direct.read_until_closed(5)
        assert closed and len(replies) == 1 and replies[0].message == message

    key = unique("bystander")
    with proxy.raw() as other, proxy.raw() as bad:
        assert is_status(other.command("SET", key, "1"), b"OK")
        bad.send(payload)
        replies, closed = bad.read_until_closed(5)
        assert len(replies) == 1 and isinstance(replies[0], RespError), replies
        assert replies[0].message == message
        assert closed, "the proxy must close the connection after a protocol error"
        # The other connection is unaffected.
        assert other.command("GET", key) == b"1"
        assert other.command("PING") == b"PONG"
    with proxy.raw() as fresh:
        assert fresh.command("GET", key) == b"1"


def test_protocol_error_after_pending_requests(cluster, proxy):
    """Requests before the bad bytes are answered first, in order, then the error."""
    key = unique("before-error")
    with proxy.raw() as c:
        assert is_status(c.command("SET", key, "kept"), b"OK")
        c.send(encode_command("GET", key) + encode_command("PING") + b"*1\r\n$-5\r\n")
        replies, closed = c.read_until_closed(5)
        assert replies[:2] == [b"kept", b"PONG"], replies
        assert len(replies) == 3 and isinstance(replies[2], RespError), replies
        assert replies[2].message == "ERR Protocol error: invalid bulk length"
        assert closed


# ---------------------------------------------------------------------------
# MOVED and ASK, forced by migrating a slot for real.
# ---------------------------------------------------------------------------

MIGRATION_TAG = "slotproxy-migration-test"


def test_ask_and_moved_are_followed(cluster, proxy):
    slot = key_hash_slot(MIGRATION_TAG)
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    prefix = unique("mig")
    keys = [f"{prefix}:{i}:{{{MIGRATION_TAG}}}".encode() for i in range(40)]
    values = [f"v{i}-{prefix}".encode() for i in range(40)]
    assert {key_hash_slot(k) for k in keys} == {slot}
    moved_keys, staying = keys[:20], keys[20:]

    raw = proxy.raw()
    py = proxy.client(protocol=2)
    seen: list = []  # every reply the clients saw, to show none was an error

    def get_all(expected_values):
        replies = raw.pipeline([("GET", k) for k in keys])
        seen.extend(replies)
        assert_values(replies, expected_values)
        for k, v in zip(keys, expected_values):
            got = py.get(k)  # raises on an error reply
            seen.append(got)
            assert got == v

    try:
        assert_all_ok(raw.pipeline([("SET", k, v) for k, v in zip(keys, values)]))
        assert cluster.call(src, "CLUSTER", "COUNTKEYSINSLOT", slot) >= len(keys)

        # Half-way migration: the migrated keys answer ASK on the source.
        cluster.call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        cluster.call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        cluster.call(src, "MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *moved_keys)
        ask = cluster.call(src, "GET", moved_keys[0], raise_errors=False)
        assert isinstance(ask, RespError) and ask.message == f"ASK {slot} {HOST}:{dst}", ask
        assert cluster.call(src, "GET", staying[0]) == values[20]

        get_all(values)  # ASK path for the first half, direct for the rest

        # Writes during the migration: an existing migrated key, and a new key
        # (absent on the source, so the source answers ASK and it lands on dst).
        new_key = f"{prefix}:new:{{{MIGRATION_TAG}}}".encode()
        replies = raw.pipeline([("SET", moved_keys[1], b"rewritten"), ("SET", new_key, b"fresh"),
                                ("GET", moved_keys[1]), ("GET", new_key)])
        seen.extend(replies)
        assert replies[0] == b"OK" and replies[1] == b"OK"
        assert replies[2:] == [b"rewritten", b"fresh"]
        assert py.set(new_key, b"fresh2") is True and py.get(new_key) == b"fresh2"
        with RawConnection(dst) as d:
            d.send(encode_command("ASKING") + encode_command("GET", new_key))
            assert d.read_replies(2) == [b"OK", b"fresh2"]
        values[1] = b"rewritten"

        # Finish: the rest of the keys, then the slot belongs to dst everywhere.
        cluster.migrate_keys(slot, src, dst)
        cluster.finish_slot(slot, dst)
        moved = cluster.call(src, "GET", staying[0], raise_errors=False)
        assert isinstance(moved, RespError) and moved.message == f"MOVED {slot} {HOST}:{dst}", moved

        get_all(values)  # MOVED path (until the proxy has refreshed its map)
        assert cluster.call(dst, "GET", staying[0]) == values[20]
        assert cluster.call(dst, "GET", new_key) == b"fresh2"
        another = f"{prefix}:after:{{{MIGRATION_TAG}}}".encode()
        assert is_status(raw.command("SET", another, "after"), b"OK")
        assert cluster.call(dst, "GET", another) == b"after"
        get_all(values)
        errors = [r for r in seen if isinstance(r, RespError)]
        assert not errors, errors[:3]
    finally:
        raw.close()
        py.close()
        _restore_slot(cluster, slot, src, dst, src_id, dst_id)
    assert cluster.node_for_slot(slot) == src


def _restore_slot(cluster, slot, src, dst, src_id, dst_id):
    """Whatever state the test stopped in, end with `slot` (and its keys) back
    on `src`: complete the move to dst if it is still half-way, then move back."""
    if cluster.node_for_slot(slot) == src:
        try:
            cluster.call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            cluster.call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        except RespError:
            pass
        cluster.migrate_keys(slot, src, dst)
        cluster.finish_slot(slot, dst)
    cluster.migrate_slot(slot, src)
    for port in cluster.masters:
        assert cluster.call(port, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0 or port == src


# ---------------------------------------------------------------------------
# Clients going away.
# ---------------------------------------------------------------------------


def test_client_disconnect_with_requests_in_flight(cluster, proxy):
    """Clients that vanish with requests in flight (FIN or RST, whole or half
    frames) do not disturb a client working at the same time, nor new ones."""
    stop = threading.Event()
    errors: list[str] = []
    rounds = [0]

    def bystander():
        prefix = unique("bystander")
        try:
            with proxy.raw() as c:
                i = 0
                while not stop.is_set():
                    keys = [f"{prefix}:{i}:{j}" for j in range(50)]
                    vals = [f"{i}-{j}-{prefix}".encode() for j in range(50)]
                    cmds = [("SET", k, v) for k, v in zip(keys, vals)] + [("GET", k) for k in keys]
                    replies = c.pipeline(cmds, timeout=30)
                    if not all(is_status(r, b"OK") for r in replies[:50]) or replies[50:] != vals:
                        bad = next(r for r, w in zip(replies, [b"OK"] * 50 + vals) if r != w)
                        errors.append(f"round {i}: wrong reply {bad!r:.100}")
                        return
                    i += 1
                    rounds[0] = i
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=bystander, daemon=True)
    t.start()
    try:
        big = b"x" * 1024
        for n in range(24):
            vanish = unique(f"vanish{n}")
            payload = b"".join(encode_command("SET", f"{vanish}:{i}", big) for i in range(500))
            payload += b"".join(encode_command("GET", f"{vanish}:{i}") for i in range(500))
            if n % 3 == 2:
                payload += b"*3\r\n$3\r\nSET\r\n$5\r\nhalf-"  # ends inside a frame
            s = socket.create_connection((HOST, proxy.port), timeout=5)
            s.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 2
            while sent < len(payload) and time.monotonic() < deadline:
                try:
                    sent += s.send(payload[sent : sent + 65536])
                except BlockingIOError:
                    time.sleep(0.001)
            if n % 2 == 0:
                time.sleep(0.005)  # let some replies start
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            if errors:
                break
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive(), "the bystander client hung"
    assert not errors, errors
    assert rounds[0] > 0
    assert proxy.alive(), "the proxy died"
    with proxy.raw() as c:
        assert c.command("PING") == b"PONG"
        key = unique("after-vanish")
        assert is_status(c.command("SET", key, "ok"), b"OK")
        assert c.command("GET", key) == b"ok"


# ---------------------------------------------------------------------------
# Commands that would change a shared backend connection's state.
# ---------------------------------------------------------------------------


def test_connection_state_commands_never_reach_shared_connections(cluster, proxy):
    """REPLCONF GETACK gets no reply from a node and PSYNC turns a connection
    into a replica link: forwarded on a shared connection, either would hand
    other clients the wrong replies. The proxy answers them itself."""
    a = proxy.raw()
    b = proxy.raw()
    assert is_status(b.command("SET", "state:k", "v"))
    for args in (("REPLCONF", "GETACK", "*"), ("PSYNC", "?", "-1"), ("SYNC",), ("CLIENT", "NO-EVICT", "on")):
        reply = a.command(*args)
        assert isinstance(reply, RespError) and "slotproxy" in reply.message, (args, reply)
    for args in (("ASKING",), ("READONLY",), ("READWRITE",)):
        assert is_status(a.command(*args)), args
    for i in range(20):
        assert b.command("GET", "state:k") == b"v"
        assert a.command("ECHO", f"m{i}") == f"m{i}".encode()


def test_client_setinfo(proxy):
    c = proxy.raw()
    assert is_status(c.command("CLIENT", "SETINFO", "LIB-NAME", "mylib"))
    for args in (("CLIENT", "SETINFO"), ("CLIENT", "SETINFO", "LIB-NAME")):
        reply = c.command(*args)
        assert isinstance(reply, RespError) and "wrong number of arguments" in reply.message, reply
    assert is_status(c.command("PING"), b"PONG")


def test_xread_without_block_is_routed(proxy):
    c = proxy.raw()
    c.command("DEL", "stream:s")
    c.command("XADD", "stream:s", "1-1", "f", "v")
    reply = c.command("XREAD", "COUNT", "10", "STREAMS", "stream:s", "0")
    assert not isinstance(reply, RespError), reply
    assert b"stream:s" in repr(reply).encode()


def test_slow_reader_pauses_instead_of_buffering(cluster, proxy):
    """A client that pipelines far ahead without reading is paused (reading
    stops) and resumes once it reads: every reply arrives, in order."""
    c = proxy.raw(timeout=60)
    value = b"x" * 1024
    assert is_status(c.command("SET", "slow:k", value))
    n = 30000  # 30 MB of replies: past both the pending and the output marks
    replies = c.pipeline([("GET", "slow:k") if i % 2 else ("ECHO", f"v{i}") for i in range(n)])
    assert replies == [value if i % 2 else f"v{i}".encode() for i in range(n)]


def test_save_and_lastsave_cover_every_master(cluster, proxy):
    """SAVE / BGSAVE through the proxy snapshot every shard (a backup job's
    `redis-cli SAVE` saved one master of three); LASTSAVE is the oldest."""
    before = {m: cluster.call(m, "LASTSAVE") for m in cluster.masters}
    time.sleep(1.1)  # LASTSAVE counts seconds
    with proxy.raw(timeout=30) as c:
        assert is_status(c.command("SAVE"))
        after = {m: cluster.call(m, "LASTSAVE") for m in cluster.masters}
        assert all(after[m] > before[m] for m in cluster.masters), (before, after)
        assert c.command("LASTSAVE") == min(after.values())


def test_slot_introspection_goes_to_the_slots_master(cluster, proxy):
    t = uuid.uuid4().hex[:8]
    keys = [f"{{introspect-{t}}}:{i}" for i in range(5)]
    with proxy.raw() as c:
        for k in keys:
            assert is_status(c.command("SET", k, "v"))
        slot = c.command("CLUSTER", "KEYSLOT", keys[0])
        # (Other tests' keys may share the slot: its owner's own answer is the truth.)
        owner = cluster.node_for_slot(slot)
        count = cluster.call(owner, "CLUSTER", "COUNTKEYSINSLOT", slot)
        assert count >= 5
        for _ in range(3):  # any other master holds none of them
            assert c.command("CLUSTER", "COUNTKEYSINSLOT", str(slot)) == count
            assert {k.encode() for k in keys} <= set(c.command("CLUSTER", "GETKEYSINSLOT", str(slot), "100000"))
        assert isinstance(c.command("CLUSTER", "COUNTKEYSINSLOT", "16384"), RespError)


def test_cluster_mode_clients_see_the_proxy_as_the_whole_cluster(cluster, proxy):
    """An app left in cluster mode and pointed at the proxy asks for the
    topology: it must be told of the proxy alone, at the address it used,
    serving every slot, or it would go around the proxy to the nodes."""
    from redis.cluster import RedisCluster

    rc = RedisCluster(host="127.0.0.1", port=proxy.port, socket_timeout=10)
    try:
        nodes = rc.get_nodes()
        assert [(n.host, n.port) for n in nodes] == [("127.0.0.1", proxy.port)]
        keys = [f"cm:{uuid.uuid4().hex[:6]}:{i}" for i in range(30)]
        for i, k in enumerate(keys):
            assert rc.set(k, i)
        assert rc.mget_nonatomic(keys) == [str(i).encode() for i in range(30)]
        pipe = rc.pipeline()
        for k in keys:
            pipe.incr(k)
        assert pipe.execute() == list(range(1, 31))
    finally:
        rc.close()
    with proxy.raw() as c:
        # (A bare COMMAND, which RedisCluster sends first, was an arity error.)
        assert len(c.command("COMMAND")) == c.command("COMMAND", "COUNT")
        myid = c.command("CLUSTER", "MYID")
        assert len(myid) == 40
        assert c.command("CLUSTER", "SLOTS") == [[0, 16383, [b"127.0.0.1", proxy.port, myid]]]
        line = c.command("CLUSTER", "NODES").decode()
        assert line == f"{myid.decode()} 127.0.0.1:{proxy.port}@0 myself,master - 0 0 0 connected 0-16383\n"
        shards = c.command("CLUSTER", "SHARDS")
        assert shards[0][:2] == [b"slots", [0, 16383]]
        node = dict(zip(shards[0][3][0][::2], shards[0][3][0][1::2]))
        assert node[b"id"] == myid and node[b"port"] == proxy.port and node[b"role"] == b"master"
    # redis-cli in cluster mode stays on the proxy too.
    out = subprocess.run(["redis-cli", "-c", "-p", str(proxy.port), "SET", "cm:cli", "v"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "OK", out


def test_backend_connections_keep_each_clients_order(proxy_factory):
    # With several connections per node, each client's requests go over one
    # of them (by client), so the node runs them as sent; spread over all,
    # 2,000 pipelined APPENDs to one key came out of order in every round.
    proxy = proxy_factory("--workers", "1", "--backend-connections", "4")
    clients = [proxy.raw(timeout=30) for _ in range(3)]
    try:
        for round_ in range(3):
            keys = [f"order:{round_}:{i}" for i in range(len(clients))]
            for c, key in zip(clients, keys):
                c.send(b"".join(encode_command("APPEND", key, f"{i},") for i in range(2000)))
            for c in clients:
                assert len(c.read_replies(2000)) == 2000
            for c, key in zip(clients, keys):
                assert c.command("GET", key) == "".join(f"{i}," for i in range(2000)).encode(), key
    finally:
        for c in clients:
            c.close()
