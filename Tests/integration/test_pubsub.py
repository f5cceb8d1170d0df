"""Pub/Sub through the proxy: subscribe mode on a dedicated connection, the
exact replies and messages of Redis, messages published on any master
(issue 4)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from harness import RawConnection, RespError, encode_command, is_status, keys_on_each_master, memory_bytes, out_of_file_descriptors


def channel() -> str:
    return f"ch:{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("proto", [2, 3])
def test_subscribe_receives_publish_from_every_master(cluster, proxy, standalone_like, proto):
    ch = channel()
    with proxy.raw(timeout=10) as sub, RawConnection(standalone_like.port, timeout=10) as ref:
        if proto == 3:
            sub.hello(3)
            ref.hello(3)
        # Replies of commands sent before SUBSCRIBE come first, as on a server.
        sub.send_command("PING")
        sub.send_command("SUBSCRIBE", ch, ch + ":2")
        ref.send_command("PING")
        ref.send_command("SUBSCRIBE", ch, ch + ":2")
        assert sub.read_replies(3) == ref.read_replies(3)
        sub.send_command("PSUBSCRIBE", ch + ":p*")
        ref.send_command("PSUBSCRIBE", ch + ":p*")
        assert sub.read_replies(1) == ref.read_replies(1)
        # Published on each master directly: the cluster bus brings it to the proxy's node.
        for i, m in enumerate(cluster.masters):
            cluster.call(m, "PUBLISH", ch, f"m{i}")
        got = sub.read_replies(3)
        # (Each message crosses the cluster bus from its own master: their
        # order on arrival is not the order they were published in.)
        assert sorted(g[-1] for g in got) == [b"m0", b"m1", b"m2"]
        assert got[0][0] == b"message" and got[0][1] == ch.encode()
        # Through the proxy too, from another client, and pattern messages.
        with proxy.raw() as pub:
            # (The count is of subscribers on the node that took the PUBLISH.)
            assert isinstance(pub.command("PUBLISH", ch + ":pattern", "pm"), int)
        msg = sub.read_replies(1)[0]
        assert msg == [b"pmessage", (ch + ":p*").encode(), (ch + ":pattern").encode(), b"pm"]
        # PING and errors in subscribe mode, as Redis answers them.
        for args in (("PING",), ("PING", "hi")):
            sub.send_command(*args)
            ref.send_command(*args)
            assert sub.read_replies(1) == ref.read_replies(1)
        if proto == 2:
            sub.send_command("GET", "x")
            ref.send_command("GET", "x")
            got, want = sub.read_replies(1)[0], ref.read_replies(1)[0]
            assert isinstance(got, RespError) and got == want
        # Leaving subscribe mode: the last UNSUBSCRIBE brings the count to 0.
        for args in (("UNSUBSCRIBE",), ("PUNSUBSCRIBE",)):
            sub.send_command(*args)
            ref.send_command(*args)
        got, want = sub.read_replies(3), ref.read_replies(3)
        # Which channel goes first is the server's dict order; the rest is exact.
        assert sorted((r[0], r[1]) for r in got) == sorted((r[0], r[1]) for r in want)
        assert [r[2] for r in got] == [r[2] for r in want] == [2, 1, 0]
        assert is_status(sub.command("SET", ch, "after"))
        assert sub.command("GET", ch) == b"after"


@pytest.fixture
def standalone_like():
    from cluster import start_standalone

    server = start_standalone()
    yield server
    server.stop()


def test_unsubscribe_when_not_subscribed(proxy, standalone_like):
    with proxy.raw() as c, RawConnection(standalone_like.port) as s:
        for args in (("UNSUBSCRIBE",), ("UNSUBSCRIBE", "a", "b"), ("PUNSUBSCRIBE", "p*")):
            n = max(1, len(args) - 1)
            c.send_command(*args)
            s.send_command(*args)
            assert c.read_replies(n) == s.read_replies(n)
        assert c.command("PING") == b"PONG"


def test_redis_py_pubsub(proxy):
    ch = channel()
    for protocol in (2, 3):
        r = proxy.client(protocol=protocol)
        p = r.pubsub()
        p.subscribe(ch)
        assert p.get_message(timeout=5)["type"] == "subscribe"
        r.publish(ch, "hello")
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = p.get_message(timeout=1, ignore_subscribe_messages=True)
        assert msg and msg["data"] == b"hello"
        p.unsubscribe(ch)
        p.close()


def test_subscriber_that_does_not_read_is_disconnected(cluster, proxy_factory):
    proxy = proxy_factory("--pubsub-output-limit", "4mb")
    ch = channel()
    sub = proxy.raw(timeout=10)
    sub.send_command("SUBSCRIBE", ch)
    assert sub.read_replies(1)[0][0] == b"subscribe"
    payload = "x" * 100_000
    # 4 MB limit: publish ~60 MB that the subscriber never reads.
    with proxy.raw(timeout=30) as pub:
        for _ in range(12):
            pub.pipeline([("PUBLISH", ch, payload)] * 50)
    deadline = time.monotonic() + 10
    while "pubsub-output-limit" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "pubsub-output-limit" in proxy.log_text()
    # The proxy's peak memory stayed far below the 60 MB published: the
    # limit (and buffers in flight), not the stream, bounds it.
    peak = memory_bytes(proxy.pid, "VmHWM")
    assert peak < 48 * 1024 * 1024, peak
    sub.abort()
    with proxy.raw() as c:
        assert c.command("PING") == b"PONG"


def _node_with_subscriber(cluster, pattern: str) -> int | None:
    for m in cluster.masters:
        listing = cluster.call(m, "CLIENT", "LIST").decode()
        if any(" sub=1 " in line and " psub=1 " in line for line in listing.splitlines()):
            return m
    return None


def test_subscription_survives_the_death_of_its_node(cluster, proxy_factory):
    proxy = proxy_factory("--topology-refresh-ms", "200")
    ch = channel()
    with proxy.raw(timeout=20) as sub:
        # (Subscriptions RESET ended are not taken along to the next node.)
        assert sub.command("SUBSCRIBE", ch + ":before-reset")[0] == b"subscribe"
        assert is_status(sub.command("RESET"), b"RESET")
        sub.send_command("SUBSCRIBE", ch)
        sub.send_command("PSUBSCRIBE", ch + ":*")
        assert [r[0] for r in sub.read_replies(2)] == [b"subscribe", b"psubscribe"]
        victim = _node_with_subscriber(cluster, ch)
        assert victim is not None
        cluster.kill(victim)
        try:
            # The proxy moves the subscription to another master; publish
            # until a message gets through (bounded).
            got = None
            deadline = time.monotonic() + 20
            while got is None and time.monotonic() < deadline:
                for m in cluster.live_ports():
                    try:
                        cluster.call(m, "PUBLISH", ch, "after-failure", timeout=2)
                        break
                    except Exception:
                        continue
                try:
                    got = sub.read_replies(1, timeout=1)[0]
                except TimeoutError:
                    pass
            assert got == [b"message", ch.encode(), b"after-failure"], got
            assert "subscription moved" in proxy.log_text()
            assert "(2 channels and patterns)" in proxy.log_text(), proxy.log_text()
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)


# ---------------------------------------------------------------------------
# Sharded Pub/Sub (SSUBSCRIBE, Redis 7): channels live on their slot's master.
# ---------------------------------------------------------------------------


def shard_channels(cluster) -> list[str]:
    """One fresh shard channel owned by each master, in `cluster.masters` order."""
    return keys_on_each_master(cluster, f"sch:{uuid.uuid4().hex[:8]}")


def shard_subscribers(cluster) -> int:
    """Connections with shard subscriptions, over every master."""
    total = 0
    for m in cluster.masters:
        listing = cluster.call(m, "CLIENT", "LIST").decode()
        total += sum(1 for line in listing.splitlines() if " ssub=" in line and " ssub=0 " not in line)
    return total


@pytest.mark.parametrize("proto", [2, 3])
def test_sharded_subscribe_across_masters(cluster, proxy, standalone_like, proto):
    a, b, c = shard_channels(cluster)
    before = shard_subscribers(cluster)
    with proxy.raw(timeout=10) as sub, RawConnection(standalone_like.port, timeout=10) as ref, proxy.raw() as pub:
        if proto == 3:
            sub.hello(3)
            ref.hello(3)
        for conn in (sub, ref):
            conn.send_command("PING")
            conn.send_command("SSUBSCRIBE", a)
        assert sub.read_replies(2) == ref.read_replies(2)
        # Channels on two other masters in one command: one confirmation
        # each, counted over all the client's shard channels.
        sub.send_command("SSUBSCRIBE", b, c)
        got = sub.read_replies(2)
        assert got == [[b"ssubscribe", b.encode(), 2], [b"ssubscribe", c.encode(), 3]]
        assert shard_subscribers(cluster) == before + 3
        # Each master delivers its own channel's messages.
        for i, ch in enumerate((a, b, c)):
            assert pub.command("SPUBLISH", ch, f"m{i}") == 1
        msgs = sub.read_replies(3)
        assert sorted(msgs) == sorted([[b"smessage", ch.encode(), f"m{i}".encode()] for i, ch in enumerate((a, b, c))])
        if proto == 2:
            for args in (("PING",), ("PING", "hi"), ("GET", "x")):
                sub.send_command(*args)
                ref.send_command(*args)
                assert sub.read_replies(1) == ref.read_replies(1), args
        # A regular channel besides: dropping it keeps the client subscribed.
        for conn in (sub, ref):
            conn.send_command("SUBSCRIBE", "plain:" + a)
            conn.send_command("UNSUBSCRIBE")
            conn.send_command("SUNSUBSCRIBE", a, "never-subscribed")
        assert sub.read_replies(2) == ref.read_replies(2)
        assert sub.read_replies(2) == [[b"sunsubscribe", a.encode(), 2], [b"sunsubscribe", b"never-subscribed", 2]]
        if proto == 2:
            sub.send_command("PING")
            assert sub.read_replies(1) == [[b"pong", b""]]  # still in subscribe mode
        sub.send_command("SUNSUBSCRIBE")
        got = sub.read_replies(2)
        # (Which channel goes first is unspecified, as on a server.)
        assert sorted(r[1] for r in got) == sorted([b.encode(), c.encode()]) and [r[2] for r in got] == [1, 0], got
        # Out of subscribe mode: ordinary commands again, and no shard
        # subscription left on any master.
        assert sub.command("PING") == b"PONG"
        assert is_status(sub.command("SET", a, "after"))
        deadline = time.monotonic() + 5
        while shard_subscribers(cluster) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shard_subscribers(cluster) == before


def test_sunsubscribe_when_not_subscribed(proxy, standalone_like):
    with proxy.raw() as c, RawConnection(standalone_like.port) as s:
        for args in (("SUNSUBSCRIBE",), ("SUNSUBSCRIBE", "a", "b")):
            n = max(1, len(args) - 1)
            c.send_command(*args)
            s.send_command(*args)
            assert c.read_replies(n) == s.read_replies(n)
        assert c.command("PING") == b"PONG"


def test_sharded_subscription_follows_slot_migration(cluster, proxy):
    """The old owner drops the channel with a `sunsubscribe` push when its
    slot leaves; the proxy subscribes it again on the new owner (following
    the old owner's MOVED) and the client sees only its messages."""
    from cluster import key_hash_slot

    ch = shard_channels(cluster)[0]
    slot = key_hash_slot(ch)
    src = cluster.node_for_slot(slot)
    dst = next(m for m in cluster.masters if m != src)

    def publish_until_delivered(pub, text: str) -> None:
        # Bounded: the resubscription follows the migration within moments.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if pub.command("SPUBLISH", ch, text) == 1:
                return
            time.sleep(0.05)
        raise AssertionError(f"no subscriber for {ch} after the migration")

    with proxy.raw(timeout=20) as sub, proxy.raw() as pub:
        sub.send_command("SSUBSCRIBE", ch)
        assert sub.read_replies(1) == [[b"ssubscribe", ch.encode(), 1]]
        assert pub.command("SPUBLISH", ch, "before") == 1
        assert sub.read_replies(1) == [[b"smessage", ch.encode(), b"before"]]
        try:
            cluster.migrate_slot(slot, dst)
            publish_until_delivered(pub, "moved")
            assert sub.read_replies(1) == [[b"smessage", ch.encode(), b"moved"]]
        finally:
            cluster.migrate_slot(slot, src)
        publish_until_delivered(pub, "back")
        assert sub.read_replies(1) == [[b"smessage", ch.encode(), b"back"]]
        # The client's own count never moved.
        sub.send_command("SUNSUBSCRIBE", ch)
        assert sub.read_replies(1) == [[b"sunsubscribe", ch.encode(), 0]]
        assert sub.command("PING") == b"PONG"
    assert "slot migrated" in proxy.log_text()


def test_sharded_subscription_survives_the_death_of_its_master(cluster, proxy_factory):
    """The link's node dies: once a replica is promoted, the proxy subscribes
    the channel on it, and the client's session goes on untouched."""
    from cluster import key_hash_slot

    proxy = proxy_factory("--topology-refresh-ms", "200")
    ch = shard_channels(cluster)[0]
    victim = cluster.node_for_slot(key_hash_slot(ch))
    with proxy.raw(timeout=30) as sub, proxy.raw(timeout=5) as pub:
        sub.send_command("SSUBSCRIBE", ch)
        assert sub.read_replies(1) == [[b"ssubscribe", ch.encode(), 1]]
        cluster.kill(victim)
        try:
            delivered = False
            deadline = time.monotonic() + 40
            while not delivered and time.monotonic() < deadline:
                # Errors while the slot has no master; 1 once the new one
                # carries the subscription.
                delivered = pub.command("SPUBLISH", ch, "after-failover") == 1
                if not delivered:
                    time.sleep(0.2)
            assert delivered, "the subscription never reached the promoted replica"
            assert sub.read_replies(1) == [[b"smessage", ch.encode(), b"after-failover"]]
            assert "wait for a live master" in proxy.log_text()
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)



def test_sharded_subscribe_without_a_free_connection(cluster, proxy_factory):
    """No dedicated connection to the channel's master can be had (all taken
    by blocked clients): the client is still confirmed, the proxy keeps
    serving, and the channel is subscribed once a connection frees up."""
    from cluster import key_hash_slot

    proxy = proxy_factory("--blocking-connections-per-node", "1")
    ch = shard_channels(cluster)[0]
    blocker_key = next(f"blk:{i}" for i in range(10000)
                       if cluster.node_for_slot(key_hash_slot(f"blk:{i}")) == cluster.node_for_slot(key_hash_slot(ch)))
    with proxy.raw(timeout=10) as blocker, proxy.raw(timeout=10) as sub, proxy.raw() as pub:
        blocker.send_command("BLPOP", blocker_key, 0)
        time.sleep(0.3)
        sub.send_command("SSUBSCRIBE", ch)
        assert sub.read_replies(1) == [[b"ssubscribe", ch.encode(), 1]]
        assert pub.command("PING") == b"PONG"
        assert pub.command("RPUSH", blocker_key, "go") == 1
        assert blocker.read_replies(1) == [[blocker_key.encode(), b"go"]]
        deadline = time.monotonic() + 10
        while pub.command("SPUBLISH", ch, "late") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sub.read_replies(1) == [[b"smessage", ch.encode(), b"late"]]


def test_subscribe_whose_connection_cannot_be_opened_gets_an_error(cluster, proxy_factory):
    """SUBSCRIBE when the subscription's connection fails at once (here the
    proxy is out of file descriptors): an error, not a client left waiting
    for a confirmation; the client can subscribe once connections open again."""
    proxy = proxy_factory("--workers", "1")
    channel = f"ch:{uuid.uuid4().hex[:8]}"
    with proxy.raw() as c:
        assert is_status(c.command("PING"), b"PONG")
        with out_of_file_descriptors(proxy.pid):
            reply = c.command("SUBSCRIBE", channel, timeout=5)
        assert isinstance(reply, RespError) and "cannot connect" in reply.message, reply
        assert is_status(c.command("PING"), b"PONG")
        assert c.command("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]


def test_subscribe_mode_errors_answer_as_redis(proxy, standalone_like):
    """RESP2 subscribe mode: an unknown command, one not allowed there, and a
    protocol error are answered as Redis answers them (the last then closes)."""
    channel = f"ch:{uuid.uuid4().hex[:8]}"
    with proxy.raw() as c, RawConnection(standalone_like.port) as s:
        for conn in (c, s):
            assert conn.command("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
        for args in (("NOSUCHCOMMAND", "x"), ("GET", "k"), ("PING",), ("SUBSCRIBE",)):
            assert c.command(*args) == s.command(*args), args
        for conn in (c, s):
            conn.send(b"*1\r\n$x\r\n")
        got, want = c.read_until_closed(), s.read_until_closed()
        assert got == want and got[1], (got, want)


def test_commands_written_with_subscribe_wait_for_its_confirmation(proxy, standalone_like):
    """A client writes SUBSCRIBE and more commands at once. As from one
    server, the confirmation comes first: before a refused command's error,
    and before QUIT's +OK (which must not drop it, nor a PING's reply)."""
    ch = channel()
    cases = [
        [("SUBSCRIBE", ch), ("GET", "k"), ("PING",)],
        [("SUBSCRIBE", ch), ("PING",)],
        [("PSUBSCRIBE", ch + "*")],
        [("SUBSCRIBE", ch), ("SUBSCRIBE", ch + ":2"), ("UNSUBSCRIBE", ch), ("GET", "k")],
    ]
    for commands in cases:
        payload = b"".join(encode_command(*args) for args in commands + [("QUIT",)])
        with proxy.raw() as c, RawConnection(standalone_like.port) as s:
            for conn in (c, s):
                conn.send(payload)
            got, want = c.read_until_closed(), s.read_until_closed()
            assert got == want and got[1], (commands, got, want)


def test_publish_written_with_subscribe_runs_once_subscribed(proxy):
    """RESP3: SUBSCRIBE, GET and PUBLISH to the same channel written at
    once. The confirmation comes first, and the message reaches the
    client: the PUBLISH ran once the subscription was in place."""
    for _ in range(5):  # (on fresh connections each time)
        ch = channel()
        with proxy.raw(timeout=10) as c:
            c.hello(3)
            c.send(encode_command("SUBSCRIBE", ch) + encode_command("GET", "k:" + ch) + encode_command("PUBLISH", ch, "hi"))
            got = c.read_replies(4)
            assert got[0] == [b"subscribe", ch.encode(), 1], got
            # (The message crosses the cluster bus from the master that ran
            # the PUBLISH: a push, it may come before or after the GET's and
            # the PUBLISH's replies, which keep their order.)
            message = [b"message", ch.encode(), b"hi"]
            assert message in got[1:], got
            replies = [r for r in got[1:] if r != message]
            assert replies[0] is None and isinstance(replies[1], int), got


def test_subscribe_mode_keeps_deny_commands(proxy_factory):
    """Subscribed, a client still cannot run what deny-commands refuses."""
    proxy = proxy_factory("--deny-commands", "psubscribe")
    channel = f"ch:{uuid.uuid4().hex[:8]}"
    with proxy.raw() as c:
        assert "deny-commands" in c.command("PSUBSCRIBE", "p*").message
        assert c.command("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
        reply = c.command("PSUBSCRIBE", "p*")
        assert isinstance(reply, RespError) and "deny-commands" in reply.message, reply
        assert c.command("UNSUBSCRIBE", channel) == [b"unsubscribe", channel.encode(), 0]



def test_long_channel_names_keep_the_subscription_count(proxy, standalone_like):
    """Confirmations carrying a long channel name still count: after the
    last UNSUBSCRIBE the client is out of subscribe mode, as on Redis."""
    short, long = channel(), channel() + "x" * 3000
    with proxy.raw() as c, RawConnection(standalone_like.port) as s:
        for conn in (c, s):
            conn.send_command("SUBSCRIBE", short, long)
            assert [r[2] for r in conn.read_replies(2)] == [1, 2]
        for args in (("UNSUBSCRIBE", short), ("UNSUBSCRIBE", long), ("GET", "nokey:" + short)):
            assert c.command(*args) == s.command(*args), args


def test_pubsub_introspection_counts_every_master(cluster, proxy):
    """The proxy spreads subscribers over the masters; PUBSUB NUMSUB,
    NUMPAT, CHANNELS and the SHARD forms must count them all, as one
    server counts its own, not ask one random master."""
    ch = channel()
    shard_ch = channel()
    subs = [proxy.raw(timeout=10) for _ in range(3)]
    try:
        for i, sub in enumerate(subs):
            sub.send_command("SUBSCRIBE", ch)
            sub.send_command("PSUBSCRIBE", f"{ch}:p{i}*")
            sub.read_replies(2)
        subs[0].send_command("SSUBSCRIBE", shard_ch)
        subs[0].read_replies(1)
        with proxy.raw() as c:
            for _ in range(3):  # a random master would answer 1 (or 0) some of the time
                assert c.command("PUBSUB", "NUMSUB", ch, "nobody") == [ch.encode(), 3, b"nobody", 0]
                assert c.command("PUBSUB", "NUMPAT") >= 3
                assert c.command("PUBSUB", "CHANNELS", ch) == [ch.encode()]
                assert c.command("PUBSUB", "SHARDNUMSUB", shard_ch) == [shard_ch.encode(), 1]
                assert c.command("PUBSUB", "SHARDCHANNELS", shard_ch) == [shard_ch.encode()]
            assert c.command("PUBSUB", "NUMSUB") == []
    finally:
        for sub in subs:
            sub.close()


# ---------------------------------------------------------------------------
# Keyspace notifications: each node publishes them for its own keys only and
# the cluster bus does not carry them; the proxy listens on every master.
# ---------------------------------------------------------------------------


@pytest.fixture
def keyspace_events(cluster):
    """Notifications on, on every node (a promoted replica publishes too)."""
    for port in cluster.live_ports():
        cluster.call(port, "CONFIG", "SET", "notify-keyspace-events", "KEA")
    yield
    for port in cluster.live_ports():
        cluster.call(port, "CONFIG", "SET", "notify-keyspace-events", "", raise_errors=False)


def _messages_until_quiet(sub, quiet: float = 0.7, limit: int = 200) -> list:
    """Every message that arrives until none has for `quiet` seconds (bounded)."""
    got: list = []
    while len(got) < limit:
        try:
            got.append(sub.read_replies(1, timeout=quiet)[0])
        except TimeoutError:
            break
    return got


@pytest.mark.parametrize("proto", [2, 3])
def test_keyspace_notifications_from_every_master_once(cluster, proxy, keyspace_events, proto):
    keys = keys_on_each_master(cluster, f"ks:{uuid.uuid4().hex[:6]}")
    with proxy.raw(timeout=10) as sub, proxy.raw() as c:
        if proto == 3:
            sub.hello(3)
        sub.send_command("PSUBSCRIBE", "__keyevent@0__:*")
        sub.send_command("SUBSCRIBE", f"__keyspace@0__:{keys[2]}")
        sub.send_command("PSUBSCRIBE", "*")
        assert [r[0] for r in sub.read_replies(3)] == [b"psubscribe", b"subscribe", b"psubscribe"]
        _wait_listening_on_every_master(cluster, "sub=1 psub=2")
        # Subscribed on every master, counted once.
        assert c.command("PUBSUB", "NUMSUB", f"__keyspace@0__:{keys[2]}") == [f"__keyspace@0__:{keys[2]}".encode(), 1]
        for key in keys:
            assert is_status(c.command("SET", key, "v"))
        # A PUBLISH reaches every node over the bus: still delivered once.
        c.command("PUBLISH", "plain-channel", "hello")
        got = _messages_until_quiet(sub)
        events = sorted(tuple(m[1:]) for m in got if m[0] == b"pmessage" and m[1] == b"__keyevent@0__:*")
        assert events == sorted((b"__keyevent@0__:*", b"__keyevent@0__:set", k.encode()) for k in keys), got
        # The same events again, through the `*` pattern: once each too.
        star = sorted(tuple(m[2:]) for m in got if m[0] == b"pmessage" and m[1] == b"*")
        assert star == sorted(
            [(b"__keyevent@0__:set", k.encode()) for k in keys]
            + [(f"__keyspace@0__:{k}".encode(), b"set") for k in keys]
            + [(b"plain-channel", b"hello")]
        ), got
        assert [m for m in got if m[0] == b"message"] == [[b"message", f"__keyspace@0__:{keys[2]}".encode(), b"set"]]
        # Expiry, as Spring Session listens for it, from whichever master holds the key.
        sub.send_command("PUNSUBSCRIBE", "*")
        assert sub.read_replies(1)[0][0] == b"punsubscribe"
        for key in keys:
            c.command("SET", key, "v", "PX", "50")
        expired: set = set()
        deadline = time.monotonic() + 10
        while len(expired) < len(keys) and time.monotonic() < deadline:
            try:
                m = sub.read_replies(1, timeout=1)[0]
            except TimeoutError:
                continue
            if m[0] == b"pmessage" and m[2] == b"__keyevent@0__:expired":
                expired.add(m[3].decode())
        assert expired == set(keys)
        # Leaving subscribe mode closes the listening connections too.
        sub.send_command("PUNSUBSCRIBE")
        sub.send_command("UNSUBSCRIBE")
        assert [r[2] for r in _messages_until_quiet(sub, quiet=0.5) if r[0].endswith(b"subscribe")][-1] == 0
        assert sub.command("PING") == b"PONG"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pattern_subscribers(cluster) > 0:
        time.sleep(0.1)
    assert _pattern_subscribers(cluster) == 0


def _wait_listening_on_every_master(cluster, counts: str) -> None:
    """Until every master has a connection subscribed as `counts` says
    (the listening links subscribe in the background)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listings = [cluster.call(m, "CLIENT", "LIST").decode() for m in cluster.masters]
        if all(f" {counts} " in listing for listing in listings):
            return
        time.sleep(0.05)
    missing = [m for m, listing in zip(cluster.masters, listings) if f" {counts} " not in listing]
    raise AssertionError(f"masters {missing} have no connection subscribed with {counts}")


def _pattern_subscribers(cluster) -> int:
    """Connections to the masters with a pattern subscription."""
    return sum(
        " psub=0 " not in line
        for m in cluster.masters
        for line in cluster.call(m, "CLIENT", "LIST").decode().splitlines()
    )


def test_plain_subscribers_get_no_listening_connections(cluster, proxy):
    """Channels and patterns that cannot name a notification cost no extra connection."""
    ch = channel()
    before = _pattern_subscribers(cluster)
    with proxy.raw(timeout=10) as sub:
        sub.send_command("PSUBSCRIBE", ch + ":*", "news.*")
        assert len(sub.read_replies(2)) == 2
        time.sleep(1.0)  # (time for wrongly opened links to subscribe)
        assert _pattern_subscribers(cluster) == before + 1


def _subscription_home(cluster, ch: str) -> int:
    """The master holding the proxy's subscription to plain channel `ch`."""
    return next(m for m in cluster.masters if cluster.call(m, "PUBSUB", "NUMSUB", ch)[1] == 1)


@pytest.mark.parametrize("victim_is", ["subscription node", "link node"])
def test_keyspace_notifications_follow_a_failover(cluster, proxy_factory, keyspace_events, victim_is):
    """A master dies, the subscription's own node or one a listening link
    goes to: once its replica is promoted, its keys' events arrive again,
    each once."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    keys = keys_on_each_master(cluster, f"ksf:{uuid.uuid4().hex[:6]}")
    ch = channel()
    with proxy.raw(timeout=10) as sub, proxy.raw(timeout=5) as c:
        sub.send_command("SUBSCRIBE", ch)
        sub.send_command("PSUBSCRIBE", "__keyevent@0__:set")
        assert [r[0] for r in sub.read_replies(2)] == [b"subscribe", b"psubscribe"]
        _wait_listening_on_every_master(cluster, "psub=1")
        home = _subscription_home(cluster, ch)
        victim = home if victim_is == "subscription node" else next(m for m in cluster.masters if m != home)
        victim_key = keys[cluster.masters.index(victim)]
        cluster.kill(victim)
        try:
            heard = False
            deadline = time.monotonic() + 40
            while not heard and time.monotonic() < deadline:
                try:
                    c.command("SET", victim_key, "after-failover")
                except RespError:
                    time.sleep(0.2)  # (no master for its slot yet)
                    continue
                for m in _messages_until_quiet(sub, quiet=1.0):
                    heard = heard or m[3] == victim_key.encode()
            assert heard, "no notification from the promoted replica"
            for key in keys:
                c.command("SET", key, "again")
            got = _messages_until_quiet(sub)
            assert sorted(m[3].decode() for m in got) == sorted(keys), got
            c.command("PUBLISH", ch, "plain")
            assert _messages_until_quiet(sub) == [[b"message", ch.encode(), b"plain"]]
        finally:
            cluster.restart(victim)
            cluster.wait_healthy(timeout=60)


def test_keyspace_notifications_after_a_manual_failover(cluster, proxy_factory, keyspace_events):
    """CLUSTER FAILOVER demotes a subscription's own node. As a replica it
    publishes notifications of the writes it replays (`del` for `expired`):
    those are dropped and its new master gets a link, whether the client
    listened before the failover or starts after it. Every event arrives
    once, and the client's confirmations all arrive."""
    proxy = proxy_factory("--topology-refresh-ms", "200")
    keys = keys_on_each_master(cluster, f"ksm:{uuid.uuid4().hex[:6]}")
    before_ch, after_ch = channel(), channel()
    with proxy.raw(timeout=10) as before, proxy.raw(timeout=10) as after, proxy.raw(timeout=5) as c:
        before.send_command("SUBSCRIBE", before_ch)
        before.send_command("PSUBSCRIBE", "__keyevent@0__:set")
        assert [r[0] for r in before.read_replies(2)] == [b"subscribe", b"psubscribe"]
        assert after.command("SUBSCRIBE", after_ch) == [b"subscribe", after_ch.encode(), 1]
        _wait_listening_on_every_master(cluster, "psub=1")
        home = _subscription_home(cluster, after_ch)
        replica = cluster.replica_of(home)[0]
        assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (replica not in cluster.masters or home in cluster.masters):
                time.sleep(0.1)
            cluster.wait_healthy(timeout=30)
            time.sleep(0.5)  # (the proxy re-reads the map every 200 ms)
            # Starting to listen on a demoted node: confirmed at once.
            assert after.command("PSUBSCRIBE", "__keyevent@0__:set") == [
                b"psubscribe", b"__keyevent@0__:set", 2]
            # Until the new master's events come through to both.
            heard: dict = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for key in keys:
                    assert is_status(c.command("SET", key, "x"))
                heard = {name: [m[3].decode() for m in _messages_until_quiet(sub, quiet=1.0)]
                         for name, sub in (("before", before), ("after", after))}
                if all(sorted(v) == sorted(keys) for v in heard.values()):
                    break
            assert all(sorted(v) == sorted(keys) for v in heard.values()), heard
            # Plain messages still arrive, once.
            c.command("PUBLISH", after_ch, "plain")
            assert _messages_until_quiet(after) == [[b"message", after_ch.encode(), b"plain"]]
        finally:
            cluster.call(home, "CLUSTER", "FAILOVER")
            cluster.wait_healthy(timeout=60)


def test_keyspace_link_returns_after_its_master_restarts_in_place(cluster, proxy_factory, keyspace_events):
    """A link's master is killed and restarted at once: no failover, no new
    map. The listener sits on worker 1, which had read from that master, so
    the worker marked it down, and nothing else of that worker's traffic
    goes there. The worker redials its down masters on its own, so the link
    comes back and the restarted master's events arrive again."""
    proxy = proxy_factory("--workers", "2", "--topology-refresh-ms", "200")
    keys = keys_on_each_master(cluster, f"ksr:{uuid.uuid4().hex[:6]}")
    ch = channel()
    subs = [proxy.raw(timeout=10) for _ in range(40)]
    on_worker_1 = [s for s in subs if b" worker=1 " in s.command("CLIENT", "INFO")]
    for s in subs:
        if s not in on_worker_1[:1]:
            s.close()
    assert on_worker_1, "the kernel gave worker 1 none of 40 connections"
    sub = on_worker_1[0]
    try:
        for key in keys:  # (worker 1's shared connections to every master)
            sub.command("GET", key)
        sub.send_command("SUBSCRIBE", ch)
        sub.send_command("PSUBSCRIBE", "__keyevent@0__:set")
        assert [r[0] for r in sub.read_replies(2)] == [b"subscribe", b"psubscribe"]
        _wait_listening_on_every_master(cluster, "psub=1")
        home = _subscription_home(cluster, ch)
        victim = next(m for m in cluster.masters if m != home)
        victim_key = keys[cluster.masters.index(victim)]
        # (Its replica paused: no failover, however long the restart takes.)
        (replica,) = cluster.replica_of(victim)
        os.kill(cluster.pids[replica], signal.SIGSTOP)
        try:
            cluster.kill(victim)
            cluster.restart(victim)
        finally:
            os.kill(cluster.pids[replica], signal.SIGCONT)
        heard = False
        deadline = time.monotonic() + 15
        while not heard and time.monotonic() < deadline:
            try:
                cluster.call(victim, "CONFIG", "SET", "notify-keyspace-events", "KEA")
                cluster.call(victim, "SET", victim_key, "after-restart")
            except (RespError, OSError):
                time.sleep(0.2)  # (still rejoining the cluster)
                continue
            heard = any(m[3] == victim_key.encode() for m in _messages_until_quiet(sub, quiet=1.0))
        assert cluster.masters.count(victim) == 1, "the restarted master was failed over"
        assert heard, "no notification from the restarted master"
    finally:
        sub.close()
        cluster.wait_healthy(timeout=60)
