"""Redirects and slot migration: what a redirect may change, and the paths a
half-migrated slot takes (MIGRATING on its master, IMPORTING on another)."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from cluster import key_hash_slot, start_standalone
from harness import RawConnection, RespError, encode_command, is_status


def tag() -> str:
    return uuid.uuid4().hex[:8]


@contextlib.contextmanager
def half_migrated(cluster, hash_tag: str, keys_moved: bool = True):
    """The slot of `{hash_tag}` MIGRATING from its master to another one,
    IMPORTING there; afterwards the slot, and whatever keys reached either
    side, end up back on the source (without `keys_moved`, none did: the
    migration is simply called off)."""
    slot = key_hash_slot(hash_tag)
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    cluster.call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    cluster.call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        yield slot, src, dst
    finally:
        if not keys_moved and cluster.node_for_slot(slot) == src:
            assert cluster.call(dst, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            cluster.call(dst, "CLUSTER", "SETSLOT", slot, "STABLE")
            cluster.call(src, "CLUSTER", "SETSLOT", slot, "STABLE")
            return
        if cluster.node_for_slot(slot) == src:
            cluster.migrate_keys(slot, src, dst)
            cluster.finish_slot(slot, dst)
        cluster.migrate_slot(slot, src)
        assert cluster.node_for_slot(slot) == src


def test_a_script_cannot_redirect_other_clients(cluster, proxy_factory):
    """A script can answer any error text: `MOVED <slot> <host:port>` from
    EVAL must not move the slot's traffic to that host (it did, for every
    client of the worker, until the next map change)."""
    foreign = start_standalone()
    try:
        proxy = proxy_factory("--workers", "1")
        key = f"victim:{tag()}"
        slot = key_hash_slot(key)
        fake = f"redis.error_reply('MOVED {slot} 127.0.0.1:{foreign.port}')"
        with proxy.raw(timeout=30) as attacker, proxy.raw(timeout=30) as victim:
            # Keyless: not the slot of any request, passed through as is.
            reply = attacker.command("EVAL", f"return {fake}", 0)
            assert isinstance(reply, RespError) and reply.message.startswith("MOVED"), reply
            # On the slot of its key: the proxy asks the cluster, whose map
            # does not name that host; the client gets the error in the end.
            reply = attacker.command("EVAL", f"return {fake}", 1, key)
            assert isinstance(reply, RespError) and reply.message.startswith("MOVED"), reply
            assert is_status(victim.command("SET", key, "safe"))
            assert victim.command("GET", key) == b"safe"
        assert cluster.call(cluster.node_for_slot(slot), "GET", key) == b"safe"
        assert foreign.call("DBSIZE") == 0
        # The proxy never even connected to it.
        clients = foreign.call("CLIENT", "LIST").decode().splitlines()
        assert len(clients) == 1, clients  # our own CLIENT LIST connection
    finally:
        foreign.stop()


def test_exec_redirected_mid_migration_gives_its_connection_back(cluster, proxy_factory):
    """EXEC answered ASK (a queued key's slot started migrating) fails the
    transaction with TRYAGAIN; its dedicated connection must go back to the
    pool, or a few of them use up blocking-connections-per-node for good."""
    proxy = proxy_factory("--workers", "1", "--set", "blocking-connections-per-node=2")
    t = tag()
    slot = key_hash_slot(t)
    src = cluster.node_for_slot(slot)
    for round_ in range(3):  # each client goes away after its failed EXEC
        with proxy.raw(timeout=30) as c:
            assert is_status(c.command("MULTI"))
            assert c.command("SET", f"{{{t}}}:new{round_}", 1) == b"QUEUED"
            with half_migrated(cluster, t, keys_moved=False):
                reply = c.command("EXEC")
            assert isinstance(reply, RespError), reply
    with proxy.raw(timeout=30) as c:
        # Still room for transactions and blocking commands on that master.
        assert is_status(c.command("MULTI"))
        assert c.command("SET", f"{{{t}}}:after", 1) == b"QUEUED"
        assert c.command("EXEC") == [b"OK"]
        assert c.command("BLPOP", f"{{{t}}}:list", 0.05) is None
    # Nothing of ours left open on the source beyond the pool's few.
    listing = cluster.call(src, "CLIENT", "LIST").decode().splitlines()
    assert sum(1 for line in listing if "cmd=exec" in line) <= 2, listing


def test_multi_key_command_on_a_half_migrated_slot_waits_it_out(cluster, proxy_factory):
    """MSET of keys that exist on neither side of a migrating slot: the
    source answers ASK, the target TRYAGAIN, round after round. The proxy
    retries until the migration ends (within failover-timeout-ms), never
    handing the client a raw ASK once max-redirects rounds are used up."""
    proxy = proxy_factory("--workers", "1")
    t = tag()
    with proxy.raw(timeout=30) as c:
        with half_migrated(cluster, t) as (slot, src, dst):
            c.send_command("MSET", f"{{{t}}}a", 1, f"{{{t}}}b", 2)
            time.sleep(2.0)  # ~1.5 s was enough to use up the redirects
            cluster.finish_slot(slot, dst)
            reply = c.read_replies(1)[0]
            assert is_status(reply), reply
            assert cluster.call(dst, "MGET", f"{{{t}}}a", f"{{{t}}}b") == [b"1", b"2"]


def test_scan_misses_no_master_when_a_slot_moves_mid_scan(cluster, proxy_factory):
    """SCAN walks the masters one after the other. Resharding mid-scan
    moved a low slot to the master visited last: ordered by first slot,
    that master fell behind the cursor and was never scanned."""
    proxy = proxy_factory("--workers", "1", "--topology-refresh-ms", "200")
    prefix = f"scanmove:{tag()}"
    keys = {f"{prefix}:{i}".encode() for i in range(300)}
    first_slot = {m: min(s for s in range(16384) if cluster.node_for_slot(s) == m) for m in cluster.masters}
    a, b, c = sorted(cluster.masters, key=first_slot.get)
    # `a`'s slot with the fewest keys (earlier tests leave some everywhere).
    empty = min((s for s in range(first_slot[a], min(first_slot[a] + 64, first_slot[b]))
                 if cluster.node_for_slot(s) == a),
                key=lambda s: cluster.call(a, "CLUSTER", "COUNTKEYSINSLOT", s))
    moved = False
    seen: set[bytes] = set()
    try:
        with proxy.raw(timeout=30) as conn:
            assert all(r == b"OK" for r in conn.pipeline([("SET", k, "v") for k in keys]))
            # Enough keys that COUNT 500 takes several pages a master, so a
            # cursor names `b` (run alone, on an empty cluster, one page each
            # went from `a` straight to `c`).
            filler = [f"scanfill:{tag()}:{i}" for i in range(4500)]
            assert all(r == b"OK" for r in conn.pipeline([("SET", k, "v") for k in filler]))
            cursor = b"0"
            for _ in range(20000):
                cursor, page = conn.command("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", 500)
                seen.update(page)
                if cursor == b"0":
                    break
                if not moved and cluster.node_for_slot(int(cursor) & 0x3FFF) == b:
                    cluster.migrate_slot(empty, c)  # `a`'s slot, below `b`'s first
                    moved = True
                    time.sleep(1.0)  # the proxy's map has it by then
        assert moved
        assert not keys - seen, f"{len(keys - seen)} of {len(keys)} keys never returned"
    finally:
        if cluster.node_for_slot(empty) != a:
            cluster.migrate_slot(empty, a)


def test_a_retried_write_is_never_overtaken_by_the_clients_later_write(cluster, proxy_factory):
    """`MSET {t}a new {t}b 2` on a half-migrated slot (a on the source, b
    nowhere) is answered TRYAGAIN, and the proxy retries it once the
    migration ends. The same client's `SET {t}a final` must not run before
    that retry (the final value was `new`: a lost update)."""
    proxy = proxy_factory("--workers", "1")
    for pipelined in (False, True):
        t = tag()
        a, b = f"{{{t}}}a", f"{{{t}}}b"
        with proxy.raw(timeout=30) as c:
            assert is_status(c.command("SET", a, "old"))
            with half_migrated(cluster, t) as (slot, src, dst):
                if pipelined:  # in one write: both reach the node before TRYAGAIN is back
                    c.send(encode_command("MSET", a, "new", b, "2") + encode_command("SET", a, "final"))
                else:
                    c.send_command("MSET", a, "new", b, "2")
                    time.sleep(0.2)  # answered TRYAGAIN by now: the proxy retries it
                    c.send_command("SET", a, "final")
                time.sleep(0.3)
                cluster.migrate_keys(slot, src, dst)
                cluster.finish_slot(slot, dst)
                mset, set_ = c.read_replies(2)
            assert is_status(set_), set_
            if pipelined:
                # The SET went out right behind it and ran: retrying the MSET
                # would undo it, so its client hears TRYAGAIN, as from a node.
                assert isinstance(mset, RespError) and mset.message.startswith("TRYAGAIN"), mset
            else:
                assert is_status(mset), mset  # retried, then the SET
            assert c.command("GET", a) == b"final", f"pipelined={pipelined}"
