"""Start-up behaviour: seeds that are down, no topology yet, configuration checks."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from harness import REPO, RawConnection, RespError, free_port, is_status, proxy_binary


def test_dead_seed_is_skipped(cluster, proxy_factory):
    dead = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(seeds=f"{dead},{cluster.seeds}")
    c = proxy.raw()
    assert is_status(c.command("SET", "startup:k", "v"))
    assert c.command("GET", "startup:k") == b"v"
    assert "16384 of 16384 slots covered" in proxy.log_text()
    # A 7.0 cluster has no command the built-in (7.0) table lacks.
    deadline = time.monotonic() + 10
    while "in the built-in table" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "is in the built-in table" in proxy.log_text(), proxy.log_tail()


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


def test_check_config_refuses_a_misspelt_acl_rule(tmp_path):
    # Taken as written, "-@dangerus" would deny nothing (Redis's ACL SETUSER
    # refuses it too); the same rules spelt right pass.
    rules = "app on >x ~* +@all -@dangerus"
    bad = tmp_path / "acl.yaml"
    bad.write_text(f'cluster: 127.0.0.1:7000\nusers:\n  - "{rules}"\n')
    result = run_binary("--check-config", str(bad))
    assert result.returncode != 0
    assert "line 3" in result.stderr and "-@dangerus" in result.stderr, result.stderr
    flag = run_binary("--cluster", "127.0.0.1:7000", "--user", "app on >x ~* +@all -flushal", "--check-config", "/dev/null")
    assert flag.returncode != 0 and "-flushal" in flag.stderr, flag.stderr
    bad.write_text(f'cluster: 127.0.0.1:7000\nusers:\n  - "{rules.replace("dangerus", "dangerous")} +json.get"\n')
    result = run_binary("--check-config", str(bad))
    assert result.returncode == 0, result.stderr


def test_missing_seeds_is_one_line_naming_flag_and_key():
    result = run_binary("--port", str(free_port()))
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert "--cluster" in lines[0] and "'cluster'" in lines[0]


def _proxy_info(proxy) -> dict[str, str]:
    with RawConnection(proxy.port) as c:
        text = c.command("PROXY", "INFO").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_auto_workers_follow_cpu_affinity(proxy_factory):
    """`workers: auto` counts the cores the process may run on (taskset,
    systemd CPUAffinity), not every online core."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs 2 CPUs to tell an affinity of 1 from all cores")
    pinned = proxy_factory("--workers", "auto", preexec=lambda: os.sched_setaffinity(0, {allowed[0]}))
    assert _proxy_info(pinned)["workers"] == "1"
    assert "(auto: " in pinned.log_text() and "CPU affinity 1)" in pinned.log_text()
    free = proxy_factory("--workers", "auto")
    assert _proxy_info(free)["workers"] == str(min(len(allowed), os.cpu_count()))


def _cpu_cgroup_with_quota(cpus: float):
    """A new cgroup limited to `cpus` CPUs, as (directory, tasks file), on
    the v1 `cpu` hierarchy or a v2 one with the cpu controller; None when
    this machine does not let us make one (not root, read-only cgroupfs)."""
    name = f"slotproxy-test-{os.getpid()}"
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        dash = fields.index("-")
        fstype, point, options = fields[dash + 1], fields[4], fields[dash + 3].split(",")
        directory = os.path.join(point, name)
        try:
            if fstype == "cgroup" and "cpu" in options:
                os.mkdir(directory)
                with open(os.path.join(directory, "cpu.cfs_period_us"), "w") as f:
                    f.write("100000")
                with open(os.path.join(directory, "cpu.cfs_quota_us"), "w") as f:
                    f.write(str(int(cpus * 100000)))
                return directory
            if fstype == "cgroup2":
                with open(os.path.join(point, "cgroup.controllers")) as f:
                    if "cpu" not in f.read().split():
                        continue
                with open(os.path.join(point, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu")
                os.mkdir(directory)
                with open(os.path.join(directory, "cpu.max"), "w") as f:
                    f.write(f"{int(cpus * 100000)} 100000")
                return directory
        except OSError:
            if os.path.isdir(directory):
                os.rmdir(directory)
    return None


def test_auto_workers_follow_the_cgroup_cpu_quota(proxy_factory):
    """A container's CPU limit (Docker --cpus, a Kubernetes limit, systemd
    CPUQuota) bounds `workers: auto`: 0.5 CPU gets one worker, not one per
    host core."""
    if os.cpu_count() < 2:
        pytest.skip("needs 2 CPUs to tell a quota of 1 from all cores")
    directory = _cpu_cgroup_with_quota(0.5)
    if directory is None:
        pytest.skip("cannot create a cgroup with a CPU quota here (needs root and a writable cgroupfs)")

    def join_cgroup():
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    try:
        proxy = proxy_factory("--workers", "auto", preexec=join_cgroup)
        assert _proxy_info(proxy)["workers"] == "1"
        assert "cgroup CPU quota 0.5" in proxy.log_text()
        proxy.stop()
    finally:
        for _ in range(50):  # the cgroup empties once the proxy is reaped
            try:
                os.rmdir(directory)
                break
            except OSError:
                time.sleep(0.1)


def test_a_port_in_use_is_refused_not_shared(cluster, proxy_factory):
    """Listeners use SO_REUSEPORT (one per worker), which would let a second
    proxy of the same user join a port already served and take half its
    clients without a word; like redis-server, it must fail to start."""
    first = proxy_factory()
    second = run_binary("--cluster", cluster.seeds, "--bind", "127.0.0.1", "--port", str(first.port))
    assert second.returncode != 0
    assert f"bind 127.0.0.1:{first.port}: Address already in use" in second.stderr
    assert first.alive() and is_status(first.raw().command("SET", "startup:port", "v"))
