"""Cross-slot and cluster-wide commands through the proxy give the replies one
Redis server gives: each is checked against a standalone redis-server loaded
with the same data (issue 3)."""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid

import pytest

from harness import (
    HOST,
    RawConnection,
    RespError,
    encode_command,
    is_status,
    key_hash_slot,
)
from cluster import start_standalone


@pytest.fixture(scope="module")
def standalone():
    server = start_standalone()
    yield server
    server.stop()


def prefix(tag: str) -> str:
    return f"{tag}:{uuid.uuid4().hex[:8]}"


def both(proxy_conn, server_conn, commands):
    """Runs the same pipeline on the proxy and on the standalone server."""
    return proxy_conn.pipeline(commands), server_conn.pipeline(commands)


def masters_touched(cluster, keys) -> set[int]:
    owners = cluster.slot_owners()
    return {owners[key_hash_slot(k)] for k in keys}


def test_split_commands_equal_a_single_server(cluster, proxy, standalone):
    p = prefix("split")
    keys = [f"{p}:{i}" for i in range(60)]
    assert len(masters_touched(cluster, keys)) == 3
    missing = [f"{p}:missing:{i}" for i in range(5)]
    mset = ["MSET"] + list(itertools.chain.from_iterable((k, f"v-{k}") for k in keys))
    commands = [
        tuple(mset),
        ("GET", keys[0]),
        ("MGET", *keys, *missing, keys[3]),
        ("EXISTS", *keys[:30], *missing, keys[0], keys[0]),
        ("TOUCH", *keys[10:40], *missing),
        ("SET", keys[1], "single"),
        ("MGET", keys[1], keys[2], missing[0]),
        ("DEL", *keys[:20], *missing),
        ("GET", keys[25]),
        ("UNLINK", *keys[20:30], keys[20]),
        ("EXISTS", *keys),
        ("MGET", *keys),
        ("MSET", keys[0], "a", keys[59], "b"),
        ("MGET", keys[0], keys[59]),
    ]
    with proxy.raw() as c, RawConnection(standalone.port) as s:
        got, want = both(c, s, commands)
    assert got == want
    # The parts really landed on their own masters.
    owners = cluster.slot_owners()
    assert cluster.call(owners[key_hash_slot(keys[59])], "GET", keys[59]) == b"b"


def test_split_with_resp3_and_redis_py(cluster, proxy, standalone):
    p = prefix("split3")
    keys = [f"{p}:{i}" for i in range(30)]
    r = proxy.client(protocol=3)
    s = standalone_client(standalone, protocol=3)
    for client in (r, s):
        assert client.mset({k: f"v{i}" for i, k in enumerate(keys)}) is True
    assert r.mget(keys + ["nope"]) == s.mget(keys + ["nope"])
    assert r.exists(*keys) == s.exists(*keys) == 30
    assert r.delete(*keys[:7]) == s.delete(*keys[:7]) == 7
    assert r.mget(keys) == s.mget(keys)


def standalone_client(standalone, protocol=2):
    import redis

    return redis.Redis(host=HOST, port=standalone.port, protocol=protocol)


def test_cross_slot_atomic_commands_refused(proxy):
    with proxy.raw() as c:
        for args in (("MSETNX", "x1", "1", "x2", "2"), ("SMOVE", "x1", "x2", "m"), ("RPOPLPUSH", "x1", "x2"),
                     ("LMOVE", "x1", "x2", "LEFT", "RIGHT"), ("COPY", "x1", "x2"), ("RENAME", "x1", "x2")):
            reply = c.command(*args)
            assert isinstance(reply, RespError) and reply.message.startswith("CROSSSLOT"), (args, reply)
        tag = prefix("nx")
        assert c.command("MSETNX", f"{{{tag}}}a", "1", f"{{{tag}}}b", "2") == 1


def test_dbsize_keys_randomkey(cluster, proxy, standalone):
    p = prefix("wide")
    keys = [f"{p}:{i}" for i in range(50)]
    with proxy.raw() as c, RawConnection(standalone.port) as s:
        both(c, s, [("MSET", *itertools.chain.from_iterable((k, "1") for k in keys))])
        got, want = both(c, s, [("KEYS", f"{p}:*")])
        assert sorted(got[0]) == sorted(want[0]) == sorted(k.encode() for k in keys)
        total = sum(cluster.call(m, "DBSIZE") for m in cluster.masters)
        assert c.command("DBSIZE") == total
        key = c.command("RANDOMKEY")
        assert isinstance(key, bytes) and c.command("EXISTS", key) == 1


def test_scan_returns_every_key_and_terminates(cluster, proxy):
    p = prefix("scan")
    keys = {f"{p}:{i}".encode() for i in range(20000)}
    with proxy.raw(timeout=60) as c:
        batch = list(keys)
        for i in range(0, len(batch), 1000):
            assert is_status(c.command("MSET", *itertools.chain.from_iterable((k, "x") for k in batch[i:i + 1000])))
        seen = set()
        cursor = b"0"
        for pages in range(1, 100000):
            cursor, found = c.command("SCAN", cursor, "MATCH", f"{p}:*", "COUNT", 500)
            seen.update(found)
            if cursor == b"0":
                break
        assert cursor == b"0", "SCAN did not terminate"
        assert keys <= seen
        # TYPE is passed through to the nodes.
        cursor, found = b"0", set()
        while True:
            cursor, page = c.command("SCAN", cursor, "MATCH", f"{p}:1*", "COUNT", 1000, "TYPE", "string")
            found.update(page)
            if cursor == b"0":
                break
        assert found == {k for k in keys if k.startswith(f"{p}:1".encode())}
        bad = c.command("SCAN", "notanumber")
        assert isinstance(bad, RespError) and bad.message == "ERR invalid cursor"


def test_script_load_then_evalsha_on_every_master(cluster, proxy):
    p = prefix("lua")
    keys = [f"{p}:{i}" for i in range(30)]
    assert len(masters_touched(cluster, keys)) == 3
    script = f"return redis.call('SET', KEYS[1], ARGV[1]) -- {p}"
    with proxy.raw() as c:
        sha = c.command("SCRIPT", "LOAD", script)
        assert isinstance(sha, bytes) and len(sha) == 40
        for m in cluster.masters:
            assert cluster.call(m, "SCRIPT", "EXISTS", sha) == [1]
        replies = c.pipeline([("EVALSHA", sha, 1, k, "v") for k in keys])
        assert all(is_status(r) for r in replies), replies[:3]
        assert c.command("SCRIPT", "EXISTS", sha, "0" * 40) == [1, 0]
        cluster.call(cluster.masters[0], "SCRIPT", "FLUSH")
        assert c.command("SCRIPT", "EXISTS", sha) == [0]  # only where every master has it


def test_eval_then_evalsha_on_every_master(cluster, proxy_factory):
    """An app runs a script once with EVAL, then by its SHA1 for keys on
    every master (a master caches it only where it ran): no NOSCRIPT, as on
    one server. The proxy keeps eval-script-cache-bytes of scripts, the
    oldest go first; SCRIPT FLUSH forgets them."""
    p = prefix("evalsha")
    keys = [f"{p}:{i}" for i in range(30)]
    assert len(masters_touched(cluster, keys)) == 3

    def script(n):
        return f"return redis.call('SET', KEYS[1], ARGV[1]) -- {p} {n}"

    def sha(n):
        return hashlib.sha1(script(n).encode()).hexdigest()

    # Room for two of these scripts, not three.
    proxy = proxy_factory("--workers", "1", "--set", f"eval-script-cache-bytes={2 * len(script(1)) + 5}")
    with proxy.raw() as c:
        assert is_status(c.command("EVAL", script(1), 1, keys[0], "v"))
        replies = c.pipeline([("EVALSHA", sha(1), 1, k, "w") for k in keys])
        assert all(is_status(r) for r in replies), replies[:3]
        assert c.command("GET", keys[-1]) == b"w"
        # The oldest of three goes: its SHA1 reaches only the master that ran it.
        for n in (2, 3, 4):
            assert is_status(c.command("EVAL", script(n), 1, keys[0], "v"))
        replies = c.pipeline([("EVALSHA", sha(n), 1, k, "x") for n in (2, 3, 4) for k in keys])
        missing = [r for r in replies if isinstance(r, RespError)]
        assert missing and all(r.message.startswith("NOSCRIPT") for r in missing), missing[:3]
        assert all(is_status(r) for r in replies[len(keys):]), replies[len(keys):][:3]
        # SCRIPT FLUSH (through the proxy: every master) forgets them all.
        assert is_status(c.command("SCRIPT", "FLUSH"))
        assert is_status(c.command("EVAL", script(4), 1, keys[0], "v"))
        replies = c.pipeline([("EVALSHA", sha(4), 1, k, "y") for k in keys])
        assert all(is_status(r) for r in replies), replies[:3]
        # Turned off at run time: what was kept is dropped.
        assert is_status(c.command("EVAL", script(5), 1, keys[0], "v"))
        assert is_status(c.command("PROXY", "CONFIG", "SET", "eval-script-cache-bytes", "0"))
        replies = c.pipeline([("EVALSHA", sha(5), 1, k, "z") for k in keys])
        assert any(isinstance(r, RespError) and r.message.startswith("NOSCRIPT") for r in replies), replies[:3]


def test_flushall_needs_allow_flush(cluster, proxy_factory):
    plain = proxy_factory()
    with plain.raw() as c:
        reply = c.command("FLUSHALL")
        assert isinstance(reply, RespError) and "allow-flush" in reply.message
        reply = c.command("FLUSHDB", "ASYNC")
        assert isinstance(reply, RespError) and "allow-flush" in reply.message


def test_split_mget_during_migration(cluster, proxy):
    """A split MGET of 1,000 keys while one of their slots is half-migrated:
    that slot's part gets ASK or TRYAGAIN and is followed key by key."""
    p = prefix("migmget")
    keys = [f"{p}:{i}" for i in range(1000)]
    values = [f"v{i}".encode() for i in range(1000)]
    slot = key_hash_slot(keys[0])
    in_slot = [k for k in keys if key_hash_slot(k) == slot]
    # Extra keys in the same slot, so that the migrating part has several keys.
    extra = [f"{{{keys[0]}}}:extra:{i}" for i in range(20)]
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    with proxy.raw(timeout=60) as c:
        assert is_status(c.command("MSET", *itertools.chain.from_iterable(zip(keys, values))))
        assert is_status(c.command("MSET", *itertools.chain.from_iterable((k, k) for k in extra)))
        try:
            cluster.call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            cluster.call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            half = (in_slot + extra)[::2]
            cluster.call(src, "MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *half)
            # What the proxy meets for that part: the slot's keys are on both sides.
            direct = cluster.call(src, "MGET", *in_slot, *extra, raise_errors=False)
            assert isinstance(direct, RespError) and direct.message.startswith("TRYAGAIN"), direct
            replies = c.pipeline([("MGET", *keys, *extra), ("GET", keys[0]), ("DEL", extra[0], extra[1], keys[5])])
            assert replies[0] == values + [k.encode() for k in extra]
            assert replies[1] == values[0]
            assert replies[2] == 3
        finally:
            cluster.migrate_keys(slot, src, dst)
            cluster.finish_slot(slot, dst)
            cluster.migrate_slot(slot, src)


def _failover(cluster, master: int, timeout: float = 30.0) -> int:
    """Promotes a replica of `master` with CLUSTER FAILOVER; returns its port."""
    replica = cluster.replica_of(master)[0]
    assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica in cluster.masters and master not in cluster.masters:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("failover did not complete")
    cluster.wait_healthy(timeout=timeout)
    return replica


def test_scan_continues_across_a_failover(cluster, proxy_factory):
    proxy = proxy_factory("--topology-refresh-ms", "200")
    p = prefix("scanfo")
    keys = {f"{p}:{i}".encode() for i in range(3000)}
    with proxy.raw(timeout=60) as c:
        assert is_status(c.command("MSET", *itertools.chain.from_iterable((k, "x") for k in keys)))
        seen, cursor = set(), b"0"
        # Scan until the cursor points into the middle of the second master.
        owners = cluster.slot_owners()
        first_master = min(set(owners), key=owners.index)
        for _ in range(1000):
            cursor, page = c.command("SCAN", cursor, "MATCH", f"{p}:*", "COUNT", 50)
            seen.update(page)
            slot = int(cursor) & 0x3FFF
            if cursor != b"0" and owners[slot] != first_master and int(cursor) >> 30 != 0:
                break
        assert cursor != b"0"
        current = owners[int(cursor) & 0x3FFF]
        _failover(cluster, current)
        time.sleep(1.0)  # the proxy learns the new master (refresh every 200 ms)
        for _ in range(10000):
            cursor, page = c.command("SCAN", cursor, "MATCH", f"{p}:*", "COUNT", 50)
            seen.update(page)
            if cursor == b"0":
                break
        assert cursor == b"0"
        assert keys <= seen, f"{len(keys - seen)} keys never returned"


def test_evalsha_after_failover_without_client_reload(cluster, proxy_factory):
    proxy = proxy_factory("--topology-refresh-ms", "200")
    p = prefix("lua-fo")
    keys = [f"{p}:{i}" for i in range(30)]
    script = f"return redis.call('INCR', KEYS[1]) -- {p}"
    with proxy.raw() as c:
        sha = c.command("SCRIPT", "LOAD", script)
        owner = cluster.node_for_key(keys[0])
        promoted = _failover(cluster, owner)
        # A promoted replica (or a new node) may lack the script: make sure.
        cluster.call(promoted, "SCRIPT", "FLUSH")
        time.sleep(1.0)
        replies = c.pipeline([("EVALSHA", sha, 1, k) for k in keys])
        assert replies == [1] * len(keys), replies[:5]
        assert cluster.call(promoted, "SCRIPT", "EXISTS", sha) == [1]


def test_info_describes_one_standalone_server(cluster, proxy):
    for protocol in (2, 3):
        r = proxy.client(protocol=protocol)
        assert r.mset({f"info:{i}": i for i in range(10)}) is True
        info = r.info()
        assert info["redis_mode"] == "standalone"
        assert info["cluster_enabled"] == 0
        assert info["cluster_masters"] == 3 and info["cluster_slots_covered"] == 16384
        assert info["total_commands_processed"] >= 1
        keys = sum(cluster.call(m, "DBSIZE") for m in cluster.masters)
        # Nothing else writes while this test runs: the sum is exact.
        assert r.info("keyspace")["db0"]["keys"] == keys
        assert r.info("cluster") == {"cluster_enabled": 0}
        # What tools read (redis-cli --stat, BullMQ's eviction check): the
        # masters' memory summed, their policy; the proxy's own counters.
        memory = r.info("memory")
        masters = [cluster.call(m, "INFO", "memory").decode() for m in cluster.masters]
        used = sum(int(line.split(":")[1]) for text in masters for line in text.splitlines()
                   if line.startswith("used_memory:"))
        assert abs(memory["used_memory"] - used) < used * 0.2, (memory["used_memory"], used)
        assert memory["maxmemory_policy"] == "noeviction" and memory["maxmemory"] == 0
        assert "used_memory_human" in info and info["maxmemory_policy"] == "noeviction"
        assert r.info("replication") == {"role": "master", "connected_slaves": 0}
        assert r.role() == [b"master", 0, []]  # the same, not a random master's replicas
        stats = r.info("stats")
        assert stats["total_connections_received"] >= 1 and stats["total_commands_processed"] >= 1
        assert r.info("persistence") == {"loading": 0, "async_loading": 0}
    # Like a server's, each reply ends with its last field's CRLF, once.
    with proxy.raw() as c:
        for sections in (("clients",), ("server",), ("stats",), ("replication", "cluster"), ("keyspace",), ()):
            text = c.command("INFO", *sections)
            assert text.endswith(b"\r\n") and not text.endswith(b"\r\n\r\n"), (sections, text[-40:])


def test_debug_only_with_allow_debug(proxy_factory):
    with proxy_factory().raw() as c:
        reply = c.command("DEBUG", "SLEEP", "0")
        assert isinstance(reply, RespError) and "allow-debug" in reply.message
    with proxy_factory("--allow-debug").raw() as c:
        assert is_status(c.command("DEBUG", "SLEEP", "0"))
        for i in range(10):  # DEBUG OBJECT routes by its key, whichever master holds it
            assert is_status(c.command("SET", f"dbg:{i}", "v"))
            reply = c.command("DEBUG", "OBJECT", f"dbg:{i}")
            assert not isinstance(reply, RespError) and b"encoding:embstr" in reply, reply


def test_spublish_routes_and_keyless_commands_go_anywhere(proxy):
    with proxy.raw() as c:
        assert c.command("SPUBLISH", "shard-channel", "hello") == 0
        assert c.command("PUBLISH", "channel", "hello") == 0
        assert isinstance(c.command("TIME"), list)


def _load_emulation_data(conn, p):
    return conn.pipeline([
        ("SADD", f"{p}:s1", *range(1, 40)), ("SADD", f"{p}:s2", *range(20, 60, 2)), ("SADD", f"{p}:s3", "a", "b", 25),
        ("ZADD", f"{p}:z1", 1, "a", 2.5, "b", 0.1, "c", 7, "d"), ("ZADD", f"{p}:z2", 10, "b", 3, "e", 0.2, "c"),
        ("ZADD", f"{p}:z3", -1, "a", 1e10, "f"),
        ("PFADD", f"{p}:h1", *[f"x{i}" for i in range(500)]), ("PFADD", f"{p}:h2", *[f"x{i}" for i in range(250, 900)]),
        ("SET", f"{p}:str", "v"),
    ])


@pytest.mark.parametrize("proto", [2, 3])
def test_emulated_commands_equal_a_single_server(cluster, proxy, standalone, proto):
    p = prefix("emu")
    s1, s2, s3, z1, z2, z3, h1, h2 = (f"{p}:{n}" for n in ("s1", "s2", "s3", "z1", "z2", "z3", "h1", "h2"))
    assert len(masters_touched(cluster, [s1, s2, s3, z1, z2, z3, h1, h2])) >= 2
    missing = f"{p}:missing"
    ordered = [  # replies whose order Redis defines
        ("SINTERCARD", 2, s1, s2), ("SINTERCARD", 3, s1, s2, s3, "LIMIT", 1), ("SINTERCARD", 2, s1, missing),
        ("ZUNION", 2, z1, z2), ("ZUNION", 3, z1, z2, z3, "WITHSCORES"),
        ("ZUNION", 2, z1, z2, "WEIGHTS", 2, 0.5, "AGGREGATE", "MAX", "WITHSCORES"),
        ("ZUNION", 2, z1, s3, "AGGREGATE", "MIN", "WITHSCORES"),
        ("ZINTER", 2, z1, z2, "WITHSCORES"), ("ZINTER", 2, z1, z2, "WEIGHTS", 1, 3, "AGGREGATE", "SUM"),
        ("ZDIFF", 2, z1, z2, "WITHSCORES"), ("ZDIFF", 3, z1, missing, z3),
        ("ZINTERCARD", 2, z1, z2), ("PFCOUNT", h1, h2), ("PFCOUNT", h1, missing, h2),
        ("GET", s1 + ":single"),  # interleaved single-key commands
        ("SUNION", s1, f"{p}:str"), ("ZUNION", 2, z1, f"{p}:str"),
    ]
    unordered = [("SUNION", s1, s2, s3, missing), ("SINTER", s1, s2), ("SINTER", s1, s2, s3), ("SDIFF", s1, s2, s3),
                 ("SDIFF", missing, s1)]
    with proxy.raw() as c, RawConnection(standalone.port) as s:
        if proto == 3:
            c.hello(3)
            s.hello(3)
        both(c, s, [("DEL", s1, s2, s3, z1, z2, z3, h1, h2)])
        _load_emulation_data(c, p)
        _load_emulation_data(s, p)
        got, want = both(c, s, ordered)
        assert got == want
        got, want = both(c, s, unordered)
        assert [sorted(x) for x in got] == [sorted(x) for x in want]


@pytest.mark.parametrize("proto", [2, 3])
def test_emulated_stores_equal_a_single_server(cluster, proxy, standalone, proto):
    """SUNIONSTORE ... BITOP with sources and destination in other slots:
    the destination holds what one server stores, on its own master, and
    no scratch key is left anywhere."""
    p = prefix("emustore")
    s1, s2, s3, z1, z2, h1, h2 = (f"{p}:{n}" for n in ("s1", "s2", "s3", "z1", "z2", "h1", "h2"))
    ds, dz, dh, db, b1, b2 = (f"{p}:{n}" for n in ("ds", "dz", "dh", "db", "b1", "b2"))
    keys = [s1, s2, s3, z1, z2, h1, h2, ds, dz, dh, db, b1, b2]
    assert len(masters_touched(cluster, keys)) >= 2
    missing = f"{p}:missing"
    rounds = [  # (store, read of its destination)
        (("SUNIONSTORE", ds, s1, s2, s3, missing), ("SMEMBERS", ds)),
        (("SINTERSTORE", ds, s1, s2), ("SMEMBERS", ds)),
        (("SDIFFSTORE", ds, s1, s2, s3), ("SMEMBERS", ds)),
        (("SUNIONSTORE", s3, s3, s2), ("SMEMBERS", s3)),  # the destination is a source too
        (("SINTERSTORE", ds, s1, missing), ("EXISTS", ds)),  # an empty result deletes it
        (("ZUNIONSTORE", dz, 2, z1, z2, "WEIGHTS", 2, 0.5, "AGGREGATE", "MAX"), ("ZRANGE", dz, 0, -1, "WITHSCORES")),
        (("ZINTERSTORE", dz, 2, z1, z2), ("ZRANGE", dz, 0, -1, "WITHSCORES")),
        (("ZDIFFSTORE", dz, 2, z1, z2), ("ZRANGE", dz, 0, -1, "WITHSCORES")),
        (("ZRANGESTORE", dz, z1, 1, -1), ("ZRANGE", dz, 0, -1, "WITHSCORES")),
        (("PFADD", dh, *[f"y{i}" for i in range(300)]), ("PFCOUNT", dh)),
        (("PFMERGE", dh, h1, h2), ("PFCOUNT", dh)),  # into an existing destination
        (("BITOP", "OR", db, b1, b2), ("GET", db)),
        (("BITOP", "NOT", db, b1), ("GET", db)),
        (("SUNIONSTORE", ds, s1, f"{p}:str"), ("EXISTS", ds)),  # WRONGTYPE, as a server says
    ]
    with proxy.raw() as c, RawConnection(standalone.port) as s:
        if proto == 3:
            c.hello(3)
            s.hello(3)
        for conn in (c, s):
            conn.command("DEL", *keys)
            _load_emulation_data(conn, p)
            conn.command("SET", b1, "abc")
            conn.command("SET", b2, "xyz")
        for store, read in rounds:
            got, want = both(c, s, [store, read])
            if read[0] == "SMEMBERS":
                got[1], want[1] = sorted(got[1]), sorted(want[1])
            assert got == want, (store, got, want)
    assert cluster.call(cluster.node_for_key(db), "GET", db) is not None  # written on its own master
    leftovers = [k for m in cluster.masters for k in cluster.call(m, "KEYS", "*slotproxy-scratch*")]
    assert leftovers == []


def test_emulated_store_reads_sources_of_its_own_slot_in_place(cluster, proxy):
    """A source in the destination's slot (the destination itself, say) is
    read by the script, atomically with the store, not copied first: a
    write made between a copy and the store would be overwritten."""
    tag = prefix("inplace")
    dest, other = f"{{{tag}}}:active", f"{tag}:done"
    home = cluster.node_for_key(dest)
    other = next(f"{other}:{i}" for i in range(1000) if cluster.node_for_key(f"{other}:{i}") != home)

    def dumps(port):
        stats = cluster.info_fields(port, "INFO", "commandstats").get("cmdstat_dump", "calls=0,")
        return int(stats.split("calls=")[1].split(",")[0])

    with proxy.raw() as c:
        c.command("SADD", dest, "a", "b", "c")
        c.command("SADD", other, "b")
        before = {home: dumps(home), cluster.node_for_key(other): dumps(cluster.node_for_key(other))}
        assert c.command("SDIFFSTORE", dest, dest, other) == 2
        assert sorted(c.command("SMEMBERS", dest)) == [b"a", b"c"]
        assert dumps(home) == before[home]  # the destination was not dumped
        assert dumps(cluster.node_for_key(other)) == before[cluster.node_for_key(other)] + 1
        # Too many arguments for the script: refused whole, nothing runs.
        keys = [f"{tag}:k{i}" for i in range(4001)]
        reply = c.command("SUNIONSTORE", dest, *keys)
        assert isinstance(reply, RespError) and "at most 4000 arguments" in reply.message, reply
        assert sorted(c.command("SMEMBERS", dest)) == [b"a", b"c"]


def test_functions_broadcast_and_fcall_by_key(cluster, proxy):
    p = prefix("fn").replace(":", "_")
    library = f"#!lua name={p}\nredis.register_function('{p}_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)"
    keys = [f"{p}:{i}" for i in range(30)]
    assert len(masters_touched(cluster, keys)) == 3
    with proxy.raw() as c:
        assert c.command("FUNCTION", "LOAD", library) == p.encode()
        for m in cluster.masters:
            libs = cluster.call(m, "FUNCTION", "LIST", "LIBRARYNAME", p)
            assert len(libs) == 1
        replies = c.pipeline([("FCALL", f"{p}_set", 1, k, "v") for k in keys])
        assert all(is_status(r) for r in replies), replies[:3]
        assert c.command("MGET", *keys) == [b"v"] * len(keys)
        assert is_status(c.command("FUNCTION", "DELETE", p))
        for m in cluster.masters:
            assert cluster.call(m, "FUNCTION", "LIST", "LIBRARYNAME", p) == []


def test_flushall_with_allow_flush_empties_every_master(cluster, proxy_factory):
    """Runs last in this module: it empties the cluster."""
    proxy = proxy_factory("--allow-flush")
    with proxy.raw() as c:
        assert is_status(c.command("MSET", *itertools.chain.from_iterable((f"flush:{i}", i) for i in range(50))))
        assert is_status(c.command("SCRIPT", "FLUSH"))
        assert is_status(c.command("FLUSHALL"))
        assert all(cluster.call(m, "DBSIZE") == 0 for m in cluster.masters)
        assert c.command("DBSIZE") == 0
        assert c.command("RANDOMKEY") is None
        assert c.command("KEYS", "*") == []
        assert is_status(c.command("FLUSHDB", "ASYNC"))
