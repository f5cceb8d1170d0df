"""CLIENT TRACKING (client-side caching), default mode, RESP3: the node's
invalidations reach the clients that read the key through the proxy
(issue 4)."""

from __future__ import annotations

import uuid

import pytest

from harness import RawConnection, RespError, is_status, keys_on_each_master
from cluster import Push, key_hash_slot


def no_push_within(conn, seconds: float) -> bool:
    try:
        conn.read_replies(1, timeout=seconds)
    except TimeoutError:
        return True
    return False


def test_invalidations_reach_the_readers(cluster, proxy):
    a, b, c = keys_on_each_master(cluster, "trk:" + uuid.uuid4().hex[:8])
    with proxy.raw(timeout=5) as reader, proxy.raw() as writer, proxy.raw(timeout=5) as bystander:
        for k in (a, b, c):
            assert is_status(writer.command("SET", k, "v0"))
        reader.hello(3)
        bystander.hello(3)
        assert is_status(reader.command("CLIENT", "TRACKING", "ON"))
        assert is_status(bystander.command("CLIENT", "TRACKING", "ON"))
        assert reader.command("GET", a) == b"v0"
        # MGET over three masters: split, each part read over a tracking connection.
        assert reader.command("MGET", a, b, c) == [b"v0", b"v0", b"v0"]
        assert bystander.command("GET", c) == b"v0"
        # A write through the proxy (or straight to the node) invalidates.
        assert is_status(writer.command("SET", b, "v1"))
        assert reader.read_replies(1) == [Push([b"invalidate", [b.encode()]])]
        cluster.call(cluster.node_for_key(a), "SET", a, "v1")
        assert reader.read_replies(1) == [Push([b"invalidate", [a.encode()]])]
        # Only readers hear of it; once told, not again until they read again.
        assert no_push_within(bystander, 0.3)
        assert is_status(writer.command("SET", b, "v2"))
        assert no_push_within(reader, 0.3)
        assert reader.command("GET", b) == b"v2"
        assert writer.command("DEL", b) == 1
        assert reader.read_replies(1) == [Push([b"invalidate", [b.encode()]])]
        # Both readers of c are told.
        assert writer.command("INCR", f"{c}:other") == 1
        assert is_status(writer.command("SET", c, "v1"))
        assert reader.read_replies(1) == [Push([b"invalidate", [c.encode()]])]
        assert bystander.read_replies(1) == [Push([b"invalidate", [c.encode()]])]
        # OFF: no more invalidations.
        assert is_status(reader.command("CLIENT", "TRACKING", "OFF"))
        assert reader.command("GET", a) == b"v1"
        assert is_status(writer.command("SET", a, "v2"))
        assert no_push_within(reader, 0.3)


def test_tracking_info_and_refusals(proxy):
    from cluster import start_standalone

    server = start_standalone()
    try:
        with proxy.raw() as p, RawConnection(server.port) as s:
            for c in (p, s):
                c.hello(3)
            for cmd in (("CLIENT", "TRACKINGINFO"), ("CLIENT", "GETREDIR"), ("CLIENT", "CACHING", "YES"),
                        ("CLIENT", "TRACKING", "ON"), ("CLIENT", "TRACKINGINFO"), ("CLIENT", "GETREDIR"),
                        ("CLIENT", "CACHING", "YES"), ("CLIENT", "CACHING", "NO"), ("CLIENT", "TRACKING", "MAYBE")):
                assert p.command(*cmd) == s.command(*cmd), cmd
            # (A RESP3 set equals a list in the comparison above: its type too.)
            got, want = p.command("CLIENT", "TRACKINGINFO"), s.command("CLIENT", "TRACKINGINFO")
            assert type(got[b"flags"]) is type(want[b"flags"]), (got, want)
            reply = p.command("CLIENT", "TRACKING", "ON", "BCAST")
            assert isinstance(reply, RespError) and "default mode" in reply.message
        with proxy.raw() as p:
            reply = p.command("CLIENT", "TRACKING", "ON")
            assert isinstance(reply, RespError) and "RESP3" in reply.message
            assert p.command("PING") == b"PONG"
    finally:
        server.stop()


def test_tracking_follows_a_slot_migration(cluster, proxy):
    """A key whose slot moves: the reader is told (by the old owner as the
    key leaves, or by the proxy's drop-everything when its map changes), and
    reads on the new owner are tracked there."""
    key = "trk-mig:" + uuid.uuid4().hex[:8]
    slot = key_hash_slot(key)
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)
    with proxy.raw(timeout=15) as reader, proxy.raw() as writer:
        reader.hello(3)
        assert is_status(reader.command("CLIENT", "TRACKING", "ON"))
        assert is_status(writer.command("SET", key, "1"))
        assert reader.command("GET", key) == b"1"
        try:
            cluster.migrate_slot(slot, dst)
            assert is_status(writer.command("SET", key, "2"))  # MOVED for the proxy: its map changes
            told = reader.read_replies(1)[0]
            assert told in (Push([b"invalidate", [key.encode()]]), Push([b"invalidate", None])), told
            # Drain whatever else the move caused, then track on the new owner.
            for _ in range(10):
                if no_push_within(reader, 0.5):
                    break
            assert reader.command("GET", key) == b"2"
            cluster.call(dst, "SET", key, "3")
            assert reader.read_replies(1) == [Push([b"invalidate", [key.encode()]])]
        finally:
            cluster.migrate_slot(slot, src)


def test_tracking_table_limit_invalidates_early(cluster, proxy_factory):
    """Past tracking-table-max-keys, a remembered key is invalidated to make room."""
    proxy = proxy_factory("--tracking-table-max-keys", "2")
    keys = [f"trk-cap:{uuid.uuid4().hex[:8]}:{i}".encode() for i in range(3)]
    with proxy.raw(timeout=5) as reader:
        reader.hello(3)
        assert is_status(reader.command("CLIENT", "TRACKING", "ON"))
        assert reader.command("GET", keys[0]) is None
        assert reader.command("GET", keys[1]) is None
        reader.send_command("GET", keys[2])
        got = reader.read_replies(2)
        pushes = [g for g in got if isinstance(g, Push)]
        assert len(pushes) == 1 and pushes[0][0] == b"invalidate" and pushes[0][1][0] in keys[:2], got
