"""Client authentication and per-user permissions (issue 7, first part):
Redis's exact replies, passwords never in the logs; backend credentials."""

from __future__ import annotations

import hashlib
import time

import redis

from harness import RawConnection, RespError, is_status

SHA = hashlib.sha256(b"reports-pw").hexdigest()


def auth_proxy(proxy_factory):
    proxy = proxy_factory(
        "--requirepass", "default-pw",
        "--user", "alice on >alice-pw ~app:* +@read +@write +@transaction -@dangerous",
        "--user", f"reports on #{SHA} ~report:* +@read",
        "--user", "gone off >gone-pw allkeys allcommands",
        "--user", "ops on >ops-pw ~* +@all -@dangerous",
        wait=False,
    )
    # (The harness's readiness probe cannot authenticate: wait here, bounded.)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with proxy.raw(timeout=2) as c:
                if is_status(c.command("AUTH", "default-pw")):
                    probe = c.command("GET", "__probe__")
                    if not (isinstance(probe, RespError) and probe.message.startswith("CLUSTERDOWN")):
                        return proxy
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("proxy with authentication never became ready")


def test_authentication_replies_as_redis(proxy_factory):
    proxy = auth_proxy(proxy_factory)
    with proxy.raw() as c:
        assert c.command("GET", "app:1").message == "NOAUTH Authentication required."
        assert c.command("PING").message == "NOAUTH Authentication required."
        reply = c.command("HELLO", "3")
        assert reply.message.startswith("NOAUTH HELLO must be called with the client already authenticated")
        for args in (("AUTH", "nope"), ("AUTH", "alice", "nope"), ("AUTH", "gone", "gone-pw"), ("AUTH", "nobody", "x")):
            assert c.command(*args).message == "WRONGPASS invalid username-password pair or user is disabled.", args
        assert is_status(c.command("AUTH", "default-pw"))
        assert is_status(c.command("SET", "anything", "1"))
        # The client's own user (the nodes would name the proxy's).
        assert c.command("ACL", "WHOAMI") == b"default"
        assert is_status(c.command("AUTH", "ops", "ops-pw"))
        assert c.command("ACL", "WHOAMI") == b"ops"
    with proxy.raw() as c:
        assert is_status(c.command("AUTH", "alice", "alice-pw"))
        assert is_status(c.command("SET", "app:1", "v")) and c.command("GET", "app:1") == b"v"
        reply = c.command("GET", "other:1")
        assert reply.message == "NOPERM this user has no permissions to access one of the keys used as arguments"
        assert c.command("FLUSHALL").message == "NOPERM this user has no permissions to run the 'flushall' command"
        # (@slow only: not in alice's categories, as on a server.)
        assert c.command("ACL", "WHOAMI").message == "NOPERM this user has no permissions to run the 'acl|whoami' command"
        # Inside MULTI a denied command aborts the transaction, as on a server.
        replies = c.pipeline([("MULTI",), ("SET", "app:2", "x"), ("GET", "other:2"), ("EXEC",)])
        assert replies[2].message.startswith("NOPERM") and replies[3].message.startswith("EXECABORT")
        # RESET signs out.
        assert is_status(c.command("RESET"), b"RESET")
        assert c.command("GET", "app:1").message == "NOAUTH Authentication required."
    with proxy.raw() as c:
        # HELLO AUTH, and a user whose password is configured as its SHA-256.
        reply = c.command("HELLO", "3", "AUTH", "reports", "reports-pw")
        assert isinstance(reply, dict) or not isinstance(reply, RespError), reply
        assert c.command("GET", "report:1") is None
        assert c.command("SET", "report:1", "x").message == "NOPERM this user has no permissions to run the 'set' command"
    # A stock client.
    r = redis.Redis(host="127.0.0.1", port=proxy.port, username="alice", password="alice-pw", protocol=3)
    assert r.set("app:py", "1") and r.get("app:py") == b"1"
    try:
        redis.Redis(host="127.0.0.1", port=proxy.port, username="alice", password="wrong").ping()
        raise AssertionError("a wrong password was accepted")
    except redis.AuthenticationError:
        pass
    # Passwords never reach the log.
    log = proxy.log_text()
    for secret in ("default-pw", "alice-pw", "reports-pw", "gone-pw"):
        assert secret not in log


def test_ping_before_auth(proxy_factory):
    proxy = proxy_factory("--requirepass", "pw", "--set", "ping-before-auth=yes", wait=False)
    deadline = time.monotonic() + 20
    while True:
        try:
            with proxy.raw(timeout=2) as c:
                assert c.command("PING") == b"PONG"
                assert c.command("GET", "k").message == "NOAUTH Authentication required."
                break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_requests_before_auth_are_held_to_redis_small_limits(proxy_factory):
    """Without the password a peer cannot make the proxy buffer much: as
    Redis, at most 10 arguments of 16 KB each before AUTH (error, then the
    connection closes); after AUTH the configured limits apply."""
    proxy = auth_proxy(proxy_factory)
    with proxy.raw() as c:
        c.send(b"*11\r\n")
        replies, closed = c.read_until_closed()
        assert closed and [r.message for r in replies] == ["ERR Protocol error: unauthenticated multibulk length"]
    with proxy.raw() as c:
        c.send(b"*2\r\n$3\r\nSET\r\n$536870912\r\n")
        replies, closed = c.read_until_closed()
        assert closed and [r.message for r in replies] == ["ERR Protocol error: unauthenticated bulk length"]
    with proxy.raw() as c:
        reply = c.command("AUTH", "x" * 20000)
        assert isinstance(reply, RespError) and reply.message.startswith("ERR Protocol error: unauthenticated bulk")
    with proxy.raw() as c:
        assert is_status(c.command("AUTH", "default-pw"))
        tag = hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
        assert is_status(c.command("SET", f"app:{tag}", "v" * 100_000))
        assert c.command("STRLEN", f"app:{tag}") == 100_000
        assert c.command("DEL", *[f"app:{tag}:{i}" for i in range(20)], f"app:{tag}") == 1


def test_backend_password(cluster, proxy_factory):
    """Nodes that require a password: the proxy sends it on every connection
    (shared, dedicated, topology)."""
    ports = cluster.live_ports()
    try:
        for p in ports:
            cluster.call(p, "CONFIG", "SET", "masterauth", "node-pw")
            cluster.call(p, "CONFIG", "SET", "requirepass", "node-pw")
        proxy = proxy_factory("--backend-password", "node-pw")
        with proxy.raw(timeout=10) as c:
            keys = [f"bp:{i}" for i in range(100)]
            assert all(is_status(r) for r in c.pipeline([("SET", k, k) for k in keys]))
            assert c.pipeline([("GET", k) for k in keys]) == [k.encode() for k in keys]
            c.command("RPUSH", "bp:q", "x")
            assert c.command("BLPOP", "bp:q", "1") == [b"bp:q", b"x"]
            assert c.pipeline([("MULTI",), ("INCR", "bp:n"), ("EXEC",)])[-1] == [1]
        assert "node-pw" not in proxy.log_text()
    finally:
        for p in ports:
            r = redis.Redis(host="127.0.0.1", port=p, password="node-pw")
            r.config_set("requirepass", "")
            r.config_set("masterauth", "")


def test_backend_password_rotation(cluster, proxy_factory):
    """The nodes' password changes before the proxy's: connections the proxy
    opens then are refused at AUTH (clients get the node's NOAUTH, the log
    says why), and each such connection is dropped, so once the proxy has
    the new password its next connection works."""
    ports = cluster.live_ports()
    key = f"rot:{time.monotonic_ns()}"
    password = "node-pw"
    try:
        for p in ports:
            cluster.call(p, "CONFIG", "SET", "masterauth", "node-pw")
            cluster.call(p, "CONFIG", "SET", "requirepass", "node-pw")
        proxy = proxy_factory("--backend-password", "node-pw", "--workers", "1")
        with proxy.raw(timeout=10) as c:
            assert is_status(c.command("SET", key, "v"))
            password = "new-pw"
            for p in ports:
                r = redis.Redis(host="127.0.0.1", port=p, password="node-pw")
                r.config_set("masterauth", "new-pw")
                r.config_set("requirepass", "new-pw")
                r.client_kill_filter(_type="normal", skipme=True)
            deadline = time.monotonic() + 10
            while not isinstance(reply := c.command("GET", key), RespError) or "NOAUTH" not in reply.message:
                assert time.monotonic() < deadline, reply
                time.sleep(0.1)
            assert "refused the connection's set-up" in proxy.log_text()
            assert is_status(c.command("PROXY", "CONFIG", "SET", "backend-password", "new-pw"))
            deadline = time.monotonic() + 10
            while c.command("GET", key) != b"v":
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        for p in ports:
            r = redis.Redis(host="127.0.0.1", port=p, password=password)
            r.config_set("requirepass", "")
            r.config_set("masterauth", "")


def test_user_backend_credentials(cluster, proxy_factory):
    """A proxy user mapped to a node ACL user: its requests go as that user
    (the nodes enforce their rules and list it), over connections of its own
    shared by its clients; other users keep the proxy's identity."""
    ports = cluster.live_ports()
    try:
        for p in ports:
            cluster.call(p, "ACL", "SETUSER", "reports-ro", "on", ">ro-secret", "~report:*", "+@read", "+@connection")
        proxy = proxy_factory(
            "--requirepass", "default-pw",
            "--user", "reports on >reports-pw allkeys allcommands",
            "--set", "user-backend-credentials=reports=reports-ro:ro-secret", "--workers", "1",
            wait=False,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with proxy.raw(timeout=2) as c:
                    if is_status(c.command("AUTH", "default-pw")) and not isinstance(c.command("GET", "x"), RespError):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        with proxy.raw() as owner:
            assert is_status(owner.command("AUTH", "default-pw"))
            assert all(is_status(r) for r in owner.pipeline([("SET", f"report:{i}", i) for i in range(30)]))
        readers = [proxy.raw() for _ in range(3)]
        for c in readers:
            assert is_status(c.command("AUTH", "reports", "reports-pw"))
        for c in readers:
            # Reads pass the nodes' rules; a write is refused by the node itself.
            assert c.pipeline([("GET", f"report:{i}") for i in range(30)]) == [str(i).encode() for i in range(30)]
            reply = c.command("SET", "report:1", "changed")
            assert isinstance(reply, RespError) and reply.message.startswith("NOPERM"), reply
            assert c.command("MGET", "report:1", "report:2", "report:3") == [b"1", b"2", b"3"]
        # Three clients, one connection per master as reports-ro.
        for m in cluster.masters:
            listing = cluster.call(m, "CLIENT", "LIST").decode()
            assert listing.count("user=reports-ro") == 1, listing
        assert "ro-secret" not in proxy.log_text() and "reports-pw" not in proxy.log_text()
        for c in readers:
            c.close()
    finally:
        for p in ports:
            cluster.call(p, "ACL", "DELUSER", "reports-ro")


def test_auth_without_any_password_configured_answers_as_redis(proxy):
    """With no password set, Redis's default user takes any password
    (clients given `redis://default:secret@host` connect), others do not."""
    from cluster import start_standalone

    server = start_standalone()
    try:
        with proxy.raw() as p, RawConnection(server.port) as s:
            for args in (("AUTH", "x"), ("AUTH", "default", "x"), ("AUTH", "DEFAULT", "x"),
                         ("AUTH", "nobody", "x"), ("AUTH", "a", "b", "c"), ("PING", "a", "b")):
                assert p.command(*args) == s.command(*args), args
    finally:
        server.stop()
