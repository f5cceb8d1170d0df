"""Big values stream through the proxy: a bulk reply of 256 kB or more goes
to its client as it arrives instead of being buffered whole and copied, so a
100 MB GET costs the proxy about the value once, not twice (issue 8). A
request of 256 kB or more is held once too: its record takes the client's
input buffer, and the node connection writes it from there. One of 16 kB or
more is copied into its record only, and written from there."""

from __future__ import annotations

import hashlib
import os
import socket

import redis

from harness import RawConnection, RespError, encode_command, is_status, key_hash_slot, memory_bytes

MB = 1 << 20


def _put_on_owner(cluster, key: str, value: bytes) -> None:
    """SET straight on the owning master (the request direction is not what
    is measured here)."""
    port = cluster.node_for_slot(key_hash_slot(key))
    redis.Redis(host="127.0.0.1", port=port, socket_timeout=60).set(key, value)


def test_100mb_get_is_held_once(cluster, proxy_factory):
    value = os.urandom(100 * MB)
    _put_on_owner(cluster, "big:100mb", value)
    proxy = proxy_factory("--workers", "1")
    baseline = memory_bytes(proxy.pid)
    r = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=60)
    got = r.get("big:100mb")
    assert hashlib.sha256(got).digest() == hashlib.sha256(value).digest()
    peak = memory_bytes(proxy.pid, "VmHWM")
    print(f"\n100 MB GET: proxy peak RSS {peak / MB:.0f} MB, {baseline / MB:.0f} MB before "
          f"({(peak - baseline) / len(value):.2f}x the value)")
    assert peak - baseline <= 1.2 * len(value), (peak, baseline)
    r.close()


def test_100mb_set_is_held_once(cluster, proxy_factory):
    value = os.urandom(100 * MB)
    proxy = proxy_factory("--workers", "1")
    baseline = memory_bytes(proxy.pid)
    r = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=60)
    assert r.set("big:set100mb", value)
    peak = memory_bytes(proxy.pid, "VmHWM")
    print(f"\n100 MB SET: proxy peak RSS {peak / MB:.0f} MB, {baseline / MB:.0f} MB before "
          f"({(peak - baseline) / len(value):.2f}x the value)")
    assert peak - baseline <= 1.2 * len(value), (peak, baseline)
    port = cluster.node_for_slot(key_hash_slot("big:set100mb"))
    stored = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60).get("big:set100mb")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(value).digest()
    r.close()


def test_big_requests_keep_their_place_among_small_ones(cluster, proxy_factory):
    # One slot, so one node connection: small requests queued before, between
    # and after two big ones must reach the node in the clients' order.
    big1, big2 = os.urandom(3 * MB), os.urandom(MB // 2)
    proxy = proxy_factory("--workers", "1")
    with RawConnection(proxy.port, timeout=60) as c, RawConnection(proxy.port) as other:
        c.send(encode_command("SET", "{b}:s1", "one") + encode_command("SET", "{b}:big1", big1)
               + encode_command("APPEND", "{b}:s1", "+two") + encode_command("SET", "{b}:big2", big2)
               + encode_command("GET", "{b}:s1") + encode_command("STRLEN", "{b}:big1")
               + encode_command("PING"))
        for i in range(20):
            assert is_status(other.command("SET", "{b}:other", str(i)))
        replies = c.read_replies(7)
        assert [is_status(x) for x in replies[:4]] == [True, True, False, True], replies[:4]
        assert replies[2] == 7 and replies[4:] == [b"one+two", len(big1), b"PONG"], replies
        assert c.command("GET", "{b}:big1") == big1
        assert c.command("GET", "{b}:big2") == big2
        assert other.command("GET", "{b}:other") == b"19"
        # A big request that is not the only frame in its read, then inline
        # and pipelined small ones after it, on the input that gave it away.
        c.send(encode_command("SET", "{b}:big3", big2) + b"PING\r\n" + encode_command("GET", "{b}:s1"))
        assert c.read_replies(3)[1:] == [b"PONG", b"one+two"]
        assert c.command("GET", "{b}:big3") == big2


def test_streamed_replies_keep_order_with_other_clients(cluster, proxy_factory):
    big = os.urandom(3 * MB)
    _put_on_owner(cluster, "{big}:a", big)
    proxy = proxy_factory("--workers", "1")
    with RawConnection(proxy.port, timeout=60) as c, RawConnection(proxy.port) as other:
        assert is_status(other.command("SET", "{big}:small", "s"))
        # Big, small, big on one connection; another client's requests share
        # the node connection while the first big reply streams.
        c.send(encode_command("GET", "{big}:a") + encode_command("GET", "{big}:small") + encode_command("GET", "{big}:a"))
        for _ in range(20):
            assert other.command("GET", "{big}:small") == b"s"
        assert c.read_replies(3) == [big, b"s", big]
    for protocol in (2, 3):
        r = redis.Redis(host="127.0.0.1", port=proxy.port, protocol=protocol, socket_timeout=60)
        pipe = r.pipeline(transaction=False)
        pipe.get("{big}:a").get("{big}:small").strlen("{big}:a")
        assert pipe.execute() == [big, b"s", len(big)]
        r.close()


def test_mid_sized_replies_written_directly_keep_their_order(cluster, proxy_factory):
    # 64 kB - 256 kB replies are written from the node connection's input
    # when nothing is buffered ahead of them; a client that reads nothing
    # until it has sent everything fills its socket, so some are written in
    # part and the rest buffered. Keys on every master, small ones between.
    values = {f"mid:{i}": os.urandom(64 * 1024 + i * 4096) for i in range(40)}
    for key, value in values.items():
        _put_on_owner(cluster, key, value)
    _put_on_owner(cluster, "mid:small", b"s")
    proxy = proxy_factory("--workers", "1")
    with RawConnection(proxy.port, timeout=60) as c:
        # A small receive buffer and ~17 MB of replies: more than the
        # proxy's socket can take before the client reads.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        expected = []
        request = b""
        for _ in range(3):
            for key, value in values.items():
                request += encode_command("GET", key) + encode_command("GET", "mid:small")
                expected += [value, b"s"]
        c.send(request)
        replies = c.read_replies(len(expected))
        assert [len(x) for x in replies] == [len(x) for x in expected]
        assert replies == expected


def test_mid_sized_requests_written_from_their_records_keep_their_order(cluster, proxy_factory):
    # 16 kB - 256 kB requests are copied once, into their record, and
    # written from there, spliced between the small requests queued around
    # them. 100 of them in one pipeline (more than one gathered write takes)
    # over three masters, each followed by an APPEND to a small key.
    values = {f"midreq:{i}": os.urandom(16 * 1024 + i * 2048) for i in range(100)}
    proxy = proxy_factory("--workers", "1")
    with RawConnection(proxy.port, timeout=60) as c:
        request = encode_command("DEL", "midreq:log")
        for i, (key, value) in enumerate(values.items()):
            request += encode_command("SET", key, value) + encode_command("APPEND", "midreq:log", f"{i},")
        c.send(request)
        replies = c.read_replies(1 + 2 * len(values))
        assert all(is_status(x) for x in replies[1::2]), replies[1::2]
        assert replies[2::2] == [len("".join(f"{j}," for j in range(i + 1))) for i in range(len(values))]
    masters = {cluster.node_for_slot(key_hash_slot(key)) for key in values}
    assert len(masters) == 3
    for key, value in values.items():
        port = cluster.node_for_slot(key_hash_slot(key))
        assert redis.Redis(host="127.0.0.1", port=port, socket_timeout=60).get(key) == value, key


def test_client_gone_mid_stream(cluster, proxy_factory):
    big = os.urandom(20 * MB)
    _put_on_owner(cluster, "{big}:gone", big)
    proxy = proxy_factory("--workers", "1")
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", proxy.port))
        s.sendall(encode_command("GET", "{big}:gone"))
        assert len(s.recv(65536)) > 0  # the stream has begun
        s.close()
    with RawConnection(proxy.port, timeout=60) as c:
        assert c.command("GET", "{big}:gone") == big
        assert c.command("PING") == b"PONG"


def test_node_refusing_a_big_request_mid_write(cluster, proxy_factory):
    # A node whose proto-max-bulk-len is below the value answers the bulk
    # header with an error and hangs up, while the proxy is still writing
    # the request (64 MB: more than the sockets hold). The client gets the
    # node's error; the rest of the request is not written as commands;
    # the proxy goes on serving that node on a new connection.
    key = "big:refused"
    node = redis.Redis(host="127.0.0.1", port=cluster.node_for_slot(key_hash_slot(key)), socket_timeout=30)
    original = node.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    node.config_set("proto-max-bulk-len", "1mb")
    try:
        proxy = proxy_factory("--workers", "1")
        with RawConnection(proxy.port, timeout=60) as c:
            c.send(encode_command("SET", key, b"x" * (64 * MB)))
            reply = c.read_reply()
            assert isinstance(reply, RespError) and "bulk length" in reply.message, reply
            assert proxy.proc.poll() is None
            # The same client, the same node, a request it accepts.
            assert is_status(c.command("SET", key, "small"))
            assert c.command("GET", key) == b"small"
    finally:
        node.config_set("proto-max-bulk-len", original)
        node.close()
