"""The admin HTTP endpoint: /metrics parsed by Prometheus' own text parser
after a known workload, /healthz, and /readyz before and after the slot map."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import RespError, encode_command, free_port, is_status, key_hash_slot, memory_bytes, pairs_to_dict


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} for every sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _wait_metrics(port: int, predicate, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, text = _get(port, "/metrics")
        assert status == 200
        samples = _samples(text)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_refused_and_blocked_clients_are_counted(proxy_factory):
    # Clients turned away at maxclients: INFO's rejected_connections, the
    # metric, and the log, where a burst's last refusals are logged by the
    # tick once the 10 s rate limit is up (not only by a later refusal).
    admin = free_port()
    proxy = proxy_factory("--maxclients", "3", "--set", f"admin-port={admin}", "--workers", "1")
    held = [proxy.raw() for _ in range(3)]
    for c in held:
        assert c.command("PING") == b"PONG"
    started = time.monotonic()
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            assert s.recv(100) == b"-ERR max number of clients reached\r\n"
    info = held[0].command("INFO", "stats").decode()
    assert "rejected_connections:4\r\n" in info, info
    assert "maxclients:3\r\n" in held[0].command("INFO", "clients").decode()
    assert _value(_wait_metrics(admin, lambda s: _value(s, "slotproxy_rejected_connections_total") == 4),
                  "slotproxy_rejected_connections_total") == 4
    held[1].send(encode_command("BLPOP", "admin:queue", 0))
    assert _value(_wait_metrics(admin, lambda s: _value(s, "slotproxy_blocked_clients") == 1),
                  "slotproxy_blocked_clients") == 1
    deadline = started + 15
    while "refused 3 client(s)" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = proxy.log_text()
    assert "refused 1 client(s): maxclients (3) reached" in log and "refused 3 client(s)" in log, log
    assert held[0].command("RPUSH", "admin:queue", "x") == 1
    assert held[1].read_reply() == [b"admin:queue", b"x"]
    for c in held:
        c.close()


def test_node_counts_are_the_whole_proxys(cluster, proxy_factory):
    # INFO nodes and PROXY CLUSTER sum every worker's requests: asked on a
    # connection of the other worker, they count GETs sent through this one
    # (one worker's own counts were a different fraction on each call).
    proxy = proxy_factory("--workers", "2")
    by_worker: dict[str, object] = {}
    opened = []
    while len(by_worker) < 2 and len(opened) < 40:
        c = proxy.raw()
        opened.append(c)
        by_worker.setdefault(c.command("CLIENT", "INFO").decode().split(" worker=")[1].split(" ")[0], c)
    assert len(by_worker) == 2, "SO_REUSEPORT never picked the second worker"
    busy, other = by_worker["0"], by_worker["1"]
    key = "nodecount:k"
    master = cluster.node_for_slot(key_hash_slot(key))

    def counted(text: str, marker: str, field: str) -> int:
        line = next(l for l in text.splitlines() if l.startswith(marker))
        return int(line.split(field)[1].split(",")[0].split(" ")[0])

    def both() -> tuple[int, int]:
        nodes = other.command("INFO", "nodes").decode()
        clustered = other.command("PROXY", "CLUSTER").decode()
        return (counted(nodes, f"node:127.0.0.1:{master},", "requests="),
                counted(clustered, f"127.0.0.1:{master} master", "requests="))

    start = both()
    for _ in range(500):
        busy.command("GET", key)
    deadline = time.monotonic() + 5
    while min(b - a for a, b in zip(start, both())) < 500 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert min(b - a for a, b in zip(start, both())) >= 500, (start, both())
    for c in opened:
        c.close()


def test_metrics_count_a_known_workload(proxy_factory):
    admin = free_port()
    proxy = proxy_factory("--set", f"admin-port={admin}")
    # (The harness's readiness probe sent a GET or two already.)
    before = _wait_metrics(admin, lambda s: _value(s, "slotproxy_commands_total", command="get", result="ok") >= 1)
    base = {name: _value(before, "slotproxy_commands_total", command=name, result="ok") for name in ("get", "set")}
    base_count = _value(before, "slotproxy_command_duration_seconds_count", command="get")
    with proxy.raw() as c:
        for i in range(200):
            assert is_status(c.command("SET", f"metrics:{i}", "v"))
        for i in range(300):
            assert c.command("GET", f"metrics:{i}") in (b"v", None)
        for _ in range(7):
            assert isinstance(c.command("INCR", "metrics:0"), RespError)  # not an integer
        assert isinstance(c.command("NOSUCHCOMMAND"), RespError)
    # (Workers publish once per tick: wait for a snapshot with the last command in it.)
    samples = _wait_metrics(
        admin, lambda s: _value(s, "slotproxy_commands_total", command="get", result="ok") >= base["get"] + 300
        and _value(s, "slotproxy_commands_total", command="incr", result="error") >= 7
        and _value(s, "slotproxy_ready") == 1)
    assert _value(samples, "slotproxy_commands_total", command="set", result="ok") == base["set"] + 200
    assert _value(samples, "slotproxy_commands_total", command="get", result="ok") == base["get"] + 300
    assert _value(samples, "slotproxy_commands_total", command="incr", result="error") == 7
    assert _value(samples, "slotproxy_command_duration_seconds_count", command="get") == base_count + 300
    assert _value(samples, "slotproxy_command_duration_seconds_bucket", command="get", le="+Inf") == base_count + 300
    assert _value(samples, "slotproxy_command_duration_seconds_sum", command="get") > 0
    backend = sum(v for (name, labels), v in samples.items() if name == "slotproxy_backend_requests_total")
    assert backend >= 507, backend
    assert _value(samples, "slotproxy_client_bytes_received_total") > 500 * 20
    assert _value(samples, "slotproxy_client_bytes_sent_total") > 500 * 4
    assert _value(samples, "slotproxy_topology_epoch") >= 1
    assert _value(samples, "slotproxy_topology_refreshes_total") >= 1
    assert _value(samples, "slotproxy_ready") == 1
    assert _value(samples, "slotproxy_resident_memory_bytes") > 1 << 20
    assert ("slotproxy_redirects_total", frozenset({("kind", "moved")})) in samples
    assert _value(samples, "slotproxy_connected_clients") >= 0
    assert _get(admin, "/healthz") == (200, "ok\n")
    assert _get(admin, "/nope")[0] == 404


def test_readyz_false_without_a_map_true_with_one(proxy_factory):
    admin = free_port()
    dead = f"127.0.0.1:{free_port()}"
    waiting = proxy_factory("--set", f"admin-port={admin}", seeds=dead, wait=False)
    deadline = time.monotonic() + 10
    while True:
        try:
            status, body = _get(admin, "/readyz")
            break
        except OSError:
            assert time.monotonic() < deadline, waiting.log_tail()
            time.sleep(0.1)
    assert status == 503 and "not ready" in body
    assert _get(admin, "/healthz")[0] == 200
    waiting.stop()

    admin2 = free_port()
    proxy = proxy_factory("--set", f"admin-port={admin2}")
    deadline = time.monotonic() + 10
    while _get(admin2, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, proxy.log_tail()
        time.sleep(0.1)
    assert _get(admin2, "/readyz") == (200, "ready\n")


# -- PROXY commands, SLOWLOG, log-format --------------------------------------

def test_proxy_config_set_takes_effect_on_the_next_request(proxy_factory):
    proxy = proxy_factory()
    with proxy.raw() as c:
        assert pairs_to_dict(c.command("PROXY", "CONFIG", "GET", "max-multibulk-length")) == {"max-multibulk-length": b"1048576"}
        got = pairs_to_dict(c.command("PROXY", "CONFIG", "GET", "client-*"))
        assert "client-output-limit-hard" in got and "client-read-pause-replies" in got
        assert is_status(c.command("PROXY", "CONFIG", "SET", "max-multibulk-length", "5"))
        assert pairs_to_dict(c.command("PROXY", "CONFIG", "GET", "max-multibulk-length")) == {"max-multibulk-length": b"5"}
        assert is_status(c.command("MSET", "cfg:{a}1", "1", "cfg:{a}2", "2"))  # 5 arguments: still fine
        c.send(encode_command("MSET", "cfg:{a}1", "1", "cfg:{a}2", "2", "cfg:{a}3", "3"))
        replies, closed = c.read_until_closed(timeout=5)
        assert replies and "invalid multibulk length" in replies[0].message and closed, replies
    # Every worker has it: new connections, whichever worker takes them.
    for _ in range(4):
        with proxy.raw() as other:
            other.send(encode_command("DEL", "a", "b", "c", "d", "e"))
            assert "invalid multibulk length" in other.read_reply().message
    with proxy.raw() as c:
        reply = c.command("PROXY", "CONFIG", "SET", "port", "1234")
        assert isinstance(reply, RespError) and "restart" in reply.message
        reply = c.command("PROXY", "CONFIG", "SET", "request-timeout-ms", "soon")
        assert isinstance(reply, RespError) and "request-timeout-ms" in reply.message
        reply = c.command("PROXY", "CONFIG", "SET", "no-such-setting", "1")
        assert isinstance(reply, RespError) and "unknown setting" in reply.message
        assert is_status(c.command("PROXY", "CONFIG", "SET", "max-multibulk-length", "1048576"))
        assert c.command("DEL", "a", "b", "c", "d", "e") == 0


def test_proxy_config_hides_passwords_and_needs_admin(proxy_factory):
    proxy = proxy_factory("--set", "requirepass=top-secret", "--set", "users=reader on >pw ~* +@read", wait=False)
    proxy.wait_for_log("16384 of 16384 slots covered", timeout=20)
    with proxy.raw() as c:
        assert is_status(c.command("AUTH", "top-secret"))
        assert pairs_to_dict(c.command("PROXY", "CONFIG", "GET", "requirepass")) == {"requirepass": b"(set)"}
    with proxy.raw() as c:
        assert is_status(c.command("AUTH", "reader", "pw"))
        reply = c.command("PROXY", "INFO")
        assert isinstance(reply, RespError) and reply.message.startswith("NOPERM"), reply


def test_proxy_info_cluster_clients_refresh(proxy_factory):
    proxy = proxy_factory("--workers", "2")
    clients = [proxy.raw() for _ in range(6)]
    try:
        for i, c in enumerate(clients):
            assert is_status(c.command("CLIENT", "SETNAME", f"legacy-{i}"))
            c.command("GET", f"clients:{i}")
        with proxy.raw() as c:
            deadline = time.monotonic() + 5  # (readiness is published within a worker tick)
            while "ready:1" not in (info := c.command("PROXY", "INFO").decode()):
                assert time.monotonic() < deadline, info
                time.sleep(0.05)
            assert "ready:1" in info and "workers:2" in info and "cluster_slots_covered:16384" in info, info
            cluster = c.command("PROXY", "CLUSTER").decode()
            assert cluster.count(" master slots=") == 3 and cluster.count(" replica ") == 3, cluster
            assert "slots_covered:16384 of 16384" in cluster
            listing = c.command("PROXY", "CLIENTS").decode()
            lines = listing.strip().split("\n")
            assert len(lines) >= 7, listing
            for i in range(6):
                assert f"name=legacy-{i} " in listing
            assert "cmd=get" in listing and "addr=127.0.0.1:" in listing
            assert {line.split(" worker=")[1].split(" ")[0] for line in lines} <= {"0", "1"}
            before = int(info.split("topology_refreshes:")[1].split("\r\n")[0])
            assert is_status(c.command("PROXY", "REFRESH"))
            deadline = time.monotonic() + 10
            while True:
                info = c.command("PROXY", "INFO").decode()
                if int(info.split("topology_refreshes:")[1].split("\r\n")[0]) > before:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert isinstance(c.command("PROXY", "NOPE"), RespError)
    finally:
        for c in clients:
            c.close()


def test_proxy_audit_after_a_legacy_workload(proxy_factory):
    proxy = proxy_factory("--workers", "2")
    for worker_round in range(2):
        with proxy.raw() as c:
            assert is_status(c.command("CLIENT", "SETNAME", "legacy-app"))
            c.command("MGET", "audit:{a}", "audit:{b}")  # split across slots
            c.command("SUNION", "audit:{a}", "audit:{b}")  # emulated
            assert c.command("RENAME", "audit:{a}", "audit:{b}").message.startswith("CROSSSLOT")
            assert isinstance(c.command("NOSUCHCOMMAND"), RespError)
            assert isinstance(c.command("CONFIG", "SET", "maxmemory", "1"), RespError)  # denied
    with proxy.raw() as c:
        audit = {(k.decode(), cmd.decode(), client.decode()): n for k, cmd, client, n in c.command("PROXY", "AUDIT")}
        assert audit[("emulated", "mget", "legacy-app")] == 2
        assert audit[("emulated", "sunion", "legacy-app")] == 2
        assert audit[("cross-slot", "rename", "legacy-app")] == 2
        assert audit[("refused", "nosuchcommand", "legacy-app")] == 2
        assert audit[("refused", "config|set", "legacy-app")] == 2
        assert is_status(c.command("PROXY", "AUDIT", "RESET"))
        deadline = time.monotonic() + 5
        while c.command("PROXY", "AUDIT") != []:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_proxy_audit_is_bounded(proxy_factory):
    """Random command names (or garbage sent to the port) cannot grow the
    audit without bound: past audit-max-entries, rows count under (other)."""
    proxy = proxy_factory("--workers", "1", "--set", "audit-max-entries=3")
    with proxy.raw() as c:
        for reply in c.pipeline([(f"nosuch{i}",) for i in range(50)]):
            assert isinstance(reply, RespError)
        rows = {(k.decode(), cmd.decode(), client.decode()): n for k, cmd, client, n in c.command("PROXY", "AUDIT")}
    assert len(rows) == 4, rows
    assert rows[("refused", "(other)", "(other)")] == 47
    assert sum(rows.values()) == 50


def test_slowlog_splits_proxy_and_backend_time(proxy_factory):
    proxy = proxy_factory()
    busy = "local t0 = redis.call('TIME'); while true do local t = redis.call('TIME'); " \
           "if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 30000 then break end end; return 1"
    with proxy.raw() as c:
        assert is_status(c.command("SLOWLOG", "RESET"))
        assert c.command("SLOWLOG", "LEN") == 0
        c.command("GET", "slow:fast")
        assert c.command("EVAL", busy, "1", "slow:key") == 1
        entries = c.command("SLOWLOG", "GET")
        assert len(entries) == 1, entries
        entry = entries[0]
        assert len(entry) == 8
        id_, when, total, args, addr, name, proxy_us, backend_us = entry
        assert args[0] == b"EVAL" and args[2] == b"1" and args[3] == b"slow:key"
        assert total >= 30000 and backend_us >= 30000 and proxy_us >= 0 and proxy_us + backend_us == total
        assert abs(when - time.time()) < 60 and addr.startswith(b"127.0.0.1:")
        assert is_status(c.command("PROXY", "CONFIG", "SET", "slowlog-log-slower-than", "0"))
        c.command("GET", "slow:logged")
        assert c.command("SLOWLOG", "LEN") >= 2
        assert c.command("SLOWLOG", "GET", "1")[0][3] == [b"GET", b"slow:logged"]
        assert is_status(c.command("PROXY", "CONFIG", "SET", "slowlog-log-slower-than", "-1"))
        assert is_status(c.command("SLOWLOG", "RESET"))
        c.command("GET", "slow:not-logged")
        assert c.command("SLOWLOG", "LEN") == 0


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_log_format(proxy_factory, fmt):
    import json
    proxy = proxy_factory("--set", f"log-format={fmt}")
    proxy.stop()
    lines = [line for line in proxy.log_text().splitlines() if line.strip()]
    assert len(lines) >= 3, lines
    for line in lines:
        if fmt == "json":
            record = json.loads(line)
            assert {"time", "level", "source", "msg"} <= record.keys(), record
        else:
            assert line.startswith("time=") and " level=" in line and " msg=" in line, line
    assert any("topology" in line for line in lines)


def test_readyz_stays_ready_while_one_master_is_down(proxy_factory):
    """One master unreachable (its shard failing over): the others serve, so
    the proxy stays ready; with no master reachable it is not."""
    from fake_node import FakeNode

    admin = free_port()
    with FakeNode() as first, FakeNode() as second:
        first.topology = second.topology = [(0, 8191, first.port), (8192, 16383, second.port)]
        proxy = proxy_factory("--set", f"admin-port={admin}", seeds=first.seed)
        deadline = time.monotonic() + 10
        while _get(admin, "/readyz")[0] != 200:
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.1)
        samples = _samples(_get(admin, "/metrics")[1])
        assert _value(samples, "slotproxy_node_up", node=f"127.0.0.1:{second.port}", role="master") == 1
        assert _value(samples, "slotproxy_cluster_slots_covered") == 16384
        assert _value(samples, "slotproxy_cluster_masters") == 2
        second.close()
        time.sleep(1.5)  # (worker 0 re-checks its master connections every second)
        assert _get(admin, "/readyz")[0] == 200
        # Ready, yet a shard is down: the metrics say which, for alerts.
        samples = _samples(_get(admin, "/metrics")[1])
        down = ("slotproxy_node_up", frozenset({"node": f"127.0.0.1:{second.port}", "role": "master"}.items()))
        assert samples.get(down) == 0
        assert _value(samples, "slotproxy_node_up", node=f"127.0.0.1:{first.port}", role="master") == 1
        first.close()
        deadline = time.monotonic() + 5
        while _get(admin, "/readyz")[0] != 503:
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.1)


def test_admin_requests_are_capped_in_size_and_time(proxy_factory):
    """Whoever reaches the admin port cannot make the proxy buffer without
    bound (endless header lines) or hold a connection open by trickling a
    request: admin-max-request-bytes and admin-timeout-ms."""
    admin = free_port()
    proxy = proxy_factory("--set", f"admin-port={admin}", "--set", "admin-timeout-ms=500")
    assert _get(admin, "/healthz")[0] == 200
    before = memory_bytes(proxy.pid)

    # 64 MB of header lines: refused past 8 KB (libevent's 400), connection closed.
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the proxy gives up on it
            while sent < 64 << 20:
                s.sendall(line)
                sent += len(line)
    assert sent < 32 << 20, "the proxy read on far past the cap"
    assert memory_bytes(proxy.pid) - before < 16 << 20

    # A request never finished is dropped after admin-timeout-ms.
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        assert s.recv(4096) == b""  # EOF: closed by the proxy, not by our timeout
        assert time.monotonic() - started < 4

    # Scrapes go on.
    assert _get(admin, "/metrics")[0] == 200
