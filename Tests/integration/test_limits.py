"""Limits and hostile input: every limit trips with an error or a log line
naming its setting, and afterwards the proxy still serves other clients with
its memory within a stated bound."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import time

import pytest

from harness import RawConnection, RespError, encode_command, is_status, keys_on_each_master, memory_bytes

MB = 1 << 20


def _still_serves(proxy, tag: str) -> None:
    with proxy.raw(timeout=10) as c:
        assert is_status(c.command("SET", f"limits:{tag}", "ok"))
        assert c.command("GET", f"limits:{tag}") == b"ok"


def _reader_that_never_reads(proxy, key: str, gets: int) -> socket.socket:
    """A client with a 4 kB receive window that asks for `gets` copies of a
    1 MB value and reads none of them."""
    with proxy.raw() as c:
        assert is_status(c.command("SET", key, os.urandom(MB)))
    s = socket.create_connection(("127.0.0.1", proxy.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(encode_command("GET", key) * gets)
    return s


def _connected_clients(proxy) -> int:
    with proxy.raw() as c:
        info = c.command("INFO", "clients").decode()
    return int(info.split("connected_clients:")[1].split()[0])


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------


def test_random_bytes(proxy):
    """Random bytes get errors or unknown-command replies, never a crash or a hang."""
    rng = random.Random(7)
    for round in range(20):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 100, 4096, 65536]))))
        s.settimeout(2)
        try:
            while s.recv(1 << 16):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        if round % 5 == 0:
            _still_serves(proxy, f"random{round}")
    assert proxy.alive()
    _still_serves(proxy, "random-end")
    assert memory_bytes(proxy.pid) < 64 * MB


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"*2147483647\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$" + b"9" * 100 + b"\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*" + b"1" * 70000, "ERR Protocol error: too big mbulk count string"),
    ],
    ids=["huge-multibulk", "bulk-past-proto-max", "bulk-overflow", "endless-header"],
)
def test_huge_headers_are_refused_without_allocating(proxy, payload, message):
    before = memory_bytes(proxy.pid)
    with proxy.raw() as c:
        c.send(payload)
        replies, closed = c.read_until_closed(5)
    assert closed and len(replies) == 1 and isinstance(replies[0], RespError), replies
    assert replies[0].message == message
    assert memory_bytes(proxy.pid) < before + 8 * MB
    _still_serves(proxy, "headers")


def test_maxclients_with_100000_attempts(proxy_factory):
    """Connections past maxclients get Redis's error and are closed; 100,000
    attempts later the admitted clients still work and memory is flat."""
    proxy = proxy_factory("--maxclients", "50")
    held = [RawConnection(proxy.port) for _ in range(49)]  # + the harness's readiness probe is gone
    for c in held[:3]:
        assert c.command("PING") == b"PONG"
    probe = RawConnection(proxy.port)
    assert probe.command("PING") == b"PONG"
    rss_before = memory_bytes(proxy.pid)
    refused = 0
    attempts = 100_000
    # Spread over source addresses so the client side never runs out of ports.
    for i in range(attempts):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.bind((f"127.0.{1 + i % 200 // 100}.{2 + i % 100}", 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", proxy.port))
            if i % 1000 == 0:
                assert s.recv(100) == b"-ERR max number of clients reached\r\n"
            refused += 1
        finally:
            s.close()
    assert refused == attempts
    assert probe.command("PING") == b"PONG"
    assert all(c.command("PING") == b"PONG" for c in held[-3:])
    assert "maxclients (50) reached" in proxy.log_text()
    assert memory_bytes(proxy.pid) < rss_before + 16 * MB
    for c in held:
        c.close()
    probe.close()
    _still_serves(proxy, "maxclients")


def test_pipelined_gigabyte_never_read_hits_the_hard_limit(proxy_factory):
    """1 GB of 1 MB GET replies requested and never read: the client is
    disconnected at client-output-limit-hard, and the proxy's peak RSS stays
    within that limit plus its idle size and a few buffers: the reply that
    would cross the limit is never buffered (growing the output buffer for it
    would hold the limit twice, old and new allocation, ~160 MB here)."""
    limit = 64 * MB
    proxy = proxy_factory("--client-output-limit-hard", "64mb")
    greedy = _reader_that_never_reads(proxy, "limits:big", 1024)  # 1 GB of replies
    _wait_for(lambda: "client-output-limit-hard" in proxy.log_text(), 60, "the hard limit to trip")
    peak = memory_bytes(proxy.pid, "VmHWM")
    assert peak < limit + 48 * MB, f"peak RSS {peak >> 20} MB"
    # Closed by the proxy (reading what is left at a 4 kB window would take minutes).
    # (Another worker may still be closing it when the log line is read.)
    _wait_for(lambda: _connected_clients(proxy) == 1, 5, "the greedy client to be closed")  # 1: the one asking
    greedy.close()
    _still_serves(proxy, "hard")
    _wait_for(lambda: memory_bytes(proxy.pid) < limit + 96 * MB, 10, "memory back down")


def test_soft_limit_waits_its_seconds(proxy_factory):
    """Above the soft limit for less than client-output-limit-soft-seconds
    (60 by default): still connected."""
    proxy = proxy_factory("--client-output-limit-hard", "0", "--client-output-limit-soft", "4mb")
    slow = _reader_that_never_reads(proxy, "limits:soft", 16)
    time.sleep(2.5)
    assert "client-output-limit-soft" not in proxy.log_text(), "disconnected before soft-seconds passed"
    slow.close()


def test_soft_limit_seconds(proxy_factory):
    proxy = proxy_factory("--set", "client-output-limit-hard=0", "--set", "client-output-limit-soft=4mb",
                          "--set", "client-output-limit-soft-seconds=1")
    slow = _reader_that_never_reads(proxy, "limits:soft1", 16)
    _wait_for(lambda: "client-output-limit-soft" in proxy.log_text(), 10, "the soft limit to trip")
    slow.close()
    _still_serves(proxy, "soft")


def test_10000_clients_disconnect_mid_command(cluster, proxy):
    """Clients that vanish mid-command (half a frame, or a pipeline with
    replies still in flight, some with a reset) leave nothing behind."""
    baseline = _connected_clients(proxy)
    value = b"v" * 4096
    with proxy.raw() as c:
        assert is_status(c.command("SET", "limits:churn", value))
    full = encode_command("GET", "limits:churn") * 20 + encode_command("SET", "limits:churn2", "x")
    for i in range(10_000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.3.{2 + i % 100}", 0))
        s.connect(("127.0.0.1", proxy.port))
        if i % 3 == 0:
            s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nabc\r\n$10\r\nhal")  # half a command
        else:
            s.sendall(full)
        if i % 2 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        s.close()
    _wait_for(lambda: _connected_clients(proxy) <= baseline, 20, "every churned client to be gone")
    assert proxy.alive()
    _still_serves(proxy, "churn")
    # Bursts of clients raise the peak; once they are gone the memory goes back.
    _wait_for(lambda: memory_bytes(proxy.pid) < 96 * MB, 10,
              f"RSS under 96 MB after the churn (now {memory_bytes(proxy.pid) >> 20} MB)")


def test_query_buffer_limit_behind_a_blocking_command(proxy_factory):
    """A client blocked in BLPOP that keeps sending: its unparsed requests
    are bounded by client-query-buffer-limit."""
    proxy = proxy_factory("--set", "client-query-buffer-limit=2mb", "--set", "proto-max-bulk-len=1mb")
    with proxy.raw() as c:
        c.send_command("BLPOP", "limits:never", "0")
        try:
            for _ in range(64):
                c.send(encode_command("ECHO", "x" * 65536))
        except (BrokenPipeError, ConnectionResetError):
            pass
        _wait_for(lambda: "client-query-buffer-limit" in proxy.log_text(), 10, "the query buffer limit to trip")
    _still_serves(proxy, "query-buffer")


# ---------------------------------------------------------------------------
# Timeouts and keepalive
# ---------------------------------------------------------------------------


def test_idle_timeout_closes_silent_clients_only(proxy_factory):
    proxy = proxy_factory("--timeout", "1")
    idle = proxy.raw()
    subscriber = proxy.raw()
    subscriber.send_command("SUBSCRIBE", "limits:idle")
    assert subscriber.read_reply()[0] == b"subscribe"
    busy = proxy.raw()
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        assert busy.command("PING") == b"PONG"
        time.sleep(0.3)
    replies, closed = idle.read_until_closed(1)
    assert closed and replies == []
    # The subscriber is still there: a message reaches it (the count PUBLISH
    # returns is the receiving node's only, so it proves nothing here).
    with proxy.raw() as c:
        c.command("PUBLISH", "limits:idle", "hi")
    assert subscriber.read_reply() == [b"message", b"limits:idle", b"hi"]
    subscriber.close()
    busy.close()


def test_tcp_keepalive_on_client_connections(proxy_factory):
    proxy = proxy_factory("--tcp-keepalive", "42")
    with proxy.raw() as c:
        assert c.command("PING") == b"PONG"
        out = subprocess.run(
            ["ss", "-tno", "state", "established", f"( sport = :{proxy.port} )"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert "keepalive" in out, out


# ---------------------------------------------------------------------------
# deny-commands and rename-command
# ---------------------------------------------------------------------------


def test_dangerous_commands_denied_by_default(proxy):
    with proxy.raw() as c:
        for command in (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "RESETSTAT"), ("MONITOR",)):
            reply = c.command(*command)
            assert isinstance(reply, RespError) and "deny-commands" in reply.message, (command, reply)
        assert isinstance(c.command("CONFIG", "GET", "maxmemory"), list)
        # Inside MULTI a denied command aborts the transaction, like any refused one.
        assert is_status(c.command("MULTI"))
        assert isinstance(c.command("CONFIG", "SET", "maxmemory", "1"), RespError)
        assert c.command("EXEC").message.startswith("EXECABORT")


def test_deny_commands_setting(proxy_factory):
    proxy = proxy_factory("--deny-commands", "keys,strlen")
    with proxy.raw() as c:
        assert is_status(c.command("SET", "limits:deny", "1"))
        reply = c.command("STRLEN", "limits:deny")
        assert isinstance(reply, RespError) and reply.message.startswith("ERR STRLEN is denied"), reply
        assert "deny-commands" in c.command("KEYS", "*").message
        # The default list was replaced: CONFIG SET goes through now.
        assert is_status(c.command("CONFIG", "SET", "maxmemory-samples", "5"))


def test_rename_command(proxy_factory):
    proxy = proxy_factory("--rename-command", "config=cfg-9f3b", "--rename-command", "echo=", "--deny-commands", "")
    with proxy.raw() as c:
        reply = c.command("CONFIG", "GET", "maxmemory")
        assert isinstance(reply, RespError) and reply.message.startswith("ERR unknown command 'CONFIG'"), reply
        assert c.command("cfg-9f3b", "GET", "maxmemory")[0] == b"maxmemory"
        assert c.command("ECHO", "x").message.startswith("ERR unknown command")
        assert c.command("PING") == b"PONG"
        # Pipelined with other commands: order kept.
        replies = c.pipeline([("SET", "limits:r", "1"), ("CFG-9F3B", "GET", "maxmemory"), ("GET", "limits:r")])
        assert replies[0] == b"OK" and replies[1][0] == b"maxmemory" and replies[2] == b"1"


def test_a_paused_node_does_not_pile_a_clients_pipeline_up_in_the_proxy(cluster, proxy_factory):
    """While a master does not answer (CLIENT PAUSE, a long script), a
    client pipelining big writes to it is paused once client-read-pause-bytes
    of its requests wait (each is kept for a resend): the rest stays in the
    kernel's buffers, not in the proxy (it took ~200 MB for 150 MB sent)."""
    proxy = proxy_factory("--workers", "1")
    master = cluster.masters[0]
    key = keys_on_each_master(cluster, f"paused:{os.getpid()}")[0]
    value = b"x" * 100_000
    before = memory_bytes(proxy.pid)
    cluster.call(master, "CLIENT", "PAUSE", 4000, "ALL")
    conn = proxy.raw(timeout=60)
    payload = b"".join(encode_command("SET", f"{key}:{i}", value) for i in range(1500))
    sender = threading.Thread(target=conn.send, args=(payload,), daemon=True)
    sender.start()
    time.sleep(2.5)
    grown = memory_bytes(proxy.pid) - before
    sender.join(30)
    replies = conn.read_replies(1500, timeout=60)
    conn.close()
    assert all(is_status(r) for r in replies), [r for r in replies if not is_status(r)][:3]
    assert grown < 60 << 20, f"proxy grew {grown >> 20} MB while the master was paused"
