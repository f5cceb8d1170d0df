"""The admin HTTP endpoint: /metrics parsed by Prometheus' own text parser
after a known workload, /healthz, and /readyz before and after the slot map."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import RespError, free_port, is_status


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
    samples = _wait_metrics(
        admin, lambda s: _value(s, "slotproxy_commands_total", command="get", result="ok") >= base["get"] + 300)
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
