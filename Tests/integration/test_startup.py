"""Start-up behaviour: seeds that are down, no topology yet, configuration checks."""

from __future__ import annotations

import subprocess
import time

import pytest

from harness import REPO, RespError, free_port, is_status, proxy_binary


def test_dead_seed_is_skipped(cluster, proxy_factory):
    dead = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(seeds=f"{dead},{cluster.seeds}")
    c = proxy.raw()
    assert is_status(c.command("SET", "startup:k", "v"))
    assert c.command("GET", "startup:k") == b"v"
    assert "16384 of 16384 slots covered" in proxy.log_text()


def test_clusterdown_until_a_map_is_known(proxy_factory):
    """With no reachable seed the proxy still accepts clients: local commands
    work, keyed commands answer CLUSTERDOWN (not a hang, not a crash)."""
    proxy = proxy_factory(seeds=f"127.0.0.1:{free_port()}", wait=False)
    deadline = time.monotonic() + 10
    c = None
    while time.monotonic() < deadline:
        try:
            c = proxy.raw(timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    assert c is not None, "proxy never accepted a connection"
    assert c.command("PING") == b"PONG"
    reply = c.command("GET", "k")
    assert isinstance(reply, RespError) and reply.message.startswith("CLUSTERDOWN"), reply
    assert proxy.alive()


def run_binary(*args, timeout=20):
    return subprocess.run([str(proxy_binary()), *args], capture_output=True, text=True, timeout=timeout)


def test_check_config_accepts_the_shipped_file():
    result = run_binary("--check-config", str(REPO / "config" / "slotproxy.yaml"))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_check_config_names_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster:\n  - 127.0.0.1:7000\nport: 7777\nmax-redirect: 3\n")
    result = run_binary("--check-config", str(bad))
    assert result.returncode != 0
    assert "line 4" in result.stderr and "max-redirect" in result.stderr


def test_missing_seeds_is_one_line_naming_flag_and_key():
    result = run_binary("--port", str(free_port()))
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert "--cluster" in lines[0] and "'cluster'" in lines[0]
