"""Running as a service: systemd's notify protocol (READY only with a complete
slot map, WATCHDOG while the loops turn, STOPPING on SIGTERM), socket
activation, SIGHUP re-reading the config file, SIGTERM draining without
dropping a request, and settings from SLOTPROXY_* environment variables."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import REPO, RawConnection, RespError, RespParser, encode_command, free_port, is_status, proxy_binary


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sp-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float, until=None) -> list[str]:
        """Datagrams for up to `seconds` (or until `until(message)` is true)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.messages.append((time.monotonic(), data))
            if until and until(data):
                break
        return [m for _, m in self.messages]

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_notify_ready_with_a_complete_map_then_watchdog_then_stopping(proxy_factory, notify):
    proxy = proxy_factory(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}, wait=False)
    messages = notify.collect(20, until=lambda m: "READY=1" in m)
    ready = [m for m in messages if "READY=1" in m]
    assert ready, f"no READY=1 in {messages}\n{proxy.log_tail()}"
    assert "STATUS=serving" in ready[0] and "16384 of 16384 slots" in ready[0], ready[0]
    # READY means servable now: every slot has an owner.
    with proxy.raw() as c:
        for i in range(50):
            reply = c.command("SET", f"notify:{i}", "v")
            assert is_status(reply), reply
    # WATCHDOG every 200 ms (half of WATCHDOG_USEC), from a turning loop.
    notify.messages.clear()
    watchdogs = [m for m in notify.collect(1.5) if m == "WATCHDOG=1"]
    assert len(watchdogs) >= 4, notify.messages
    notify.messages.clear()
    assert proxy.stop() == 0, proxy.log_tail()
    assert any("STOPPING=1" in m for m in notify.collect(2)), notify.messages


def test_notify_reloading_then_ready_around_a_reload(proxy_factory, notify):
    proxy = proxy_factory(env={"NOTIFY_SOCKET": notify.path})
    notify.collect(20, until=lambda m: "READY=1" in m)
    notify.messages.clear()
    proxy.proc.send_signal(signal.SIGHUP)
    messages = notify.collect(10, until=lambda m: "READY=1" in m)
    reloading = [i for i, m in enumerate(messages) if "RELOADING=1" in m]
    ready = [i for i, m in enumerate(messages) if "READY=1" in m]
    assert reloading and ready and reloading[0] < ready[-1], messages
    assert "MONOTONIC_USEC=" in messages[reloading[0]]


def test_no_ready_without_a_slot_map(proxy_factory, notify):
    dead = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory(seeds=dead, env={"NOTIFY_SOCKET": notify.path}, wait=False)
    messages = notify.collect(2.5)
    assert not any("READY=1" in m for m in messages), messages
    assert any(m.startswith("STATUS=") and "waiting" in m for m in messages), messages
    # A reload does not make it ready either.
    proxy.proc.send_signal(signal.SIGHUP)
    messages = notify.collect(1.5)
    assert any("RELOADING=1" in m for m in messages) and not any("READY=1" in m for m in messages), messages
    assert proxy.stop() == 0


def test_systemd_units_verify():
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = [REPO / "systemd" / "slotproxy.service", REPO / "systemd" / "slotproxy.socket"]
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    # (It also complains that /usr/local/bin/slotproxy is missing on a build machine.)
    problems = [line for line in result.stderr.splitlines() if "slotproxy" in line and "is not executable" not in line
                and "No such file" not in line and "Command /usr/local/bin/slotproxy" not in line]
    assert not problems, result.stderr


# systemd's part: the socket (argv[1]) as fd 3, LISTEN_FDS=1, LISTEN_PID =
# the daemon's pid, then exec the daemon (argv[2:]).
SYSTEMD_LAUNCHER = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
                    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); os.execv(sys.argv[2], sys.argv[2:])")


def test_socket_activation_serves_on_the_inherited_socket(cluster, workdir):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    unused_port = free_port()
    log = open(os.path.join(workdir, "activation.log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", SYSTEMD_LAUNCHER, str(fd), str(proxy_binary()), "--cluster", cluster.seeds,
         "--bind", "127.0.0.1", "--port", str(unused_port), "--workers", "2"],
        pass_fds=(fd,), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with RawConnection(port, timeout=2) as c:
                    if is_status(c.command("SET", "activated", "yes")):
                        break
            except (OSError, TimeoutError):
                pass
            assert time.monotonic() < deadline and proc.poll() is None, open(log.name).read()
            time.sleep(0.1)
        with RawConnection(port) as c:
            assert c.command("GET", "activated") == b"yes"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", unused_port), timeout=1).close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
    # The socket is systemd's: still listening after the daemon is gone.
    probe = socket.create_connection(("127.0.0.1", port), timeout=2)
    probe.close()
    listener.close()


def test_protected_mode_judges_the_socket_from_systemd_not_bind(cluster, workdir):
    # systemd's socket on the wildcard address while `bind` says loopback:
    # clients reach the socket, so with no password the proxy must refuse.
    # (Bound, never listening: nothing outside loopback can connect to it.)
    wildcard = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    wildcard.bind(("0.0.0.0", 0))
    fd = wildcard.fileno()
    try:
        run = subprocess.run(
            [sys.executable, "-c", SYSTEMD_LAUNCHER, str(fd), str(proxy_binary()), "--cluster", cluster.seeds,
             "--bind", "127.0.0.1", "--port", str(free_port())],
            pass_fds=(fd,), capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    finally:
        wildcard.close()
    output = (run.stdout + run.stderr).decode(errors="replace")
    assert run.returncode == 1, output
    assert "protected mode: the socket from systemd is 0.0.0.0" in output, output
    assert "set requirepass or users" in output, output


def test_a_reload_cannot_open_systemds_wildcard_socket_to_everyone(cluster, workdir):
    """Started on systemd's 0.0.0.0 socket with a password (bind says
    loopback): a re-read file without requirepass is refused, for what
    clients reach is the socket, not bind. (Bound, never listening.)"""
    wildcard = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    wildcard.bind(("0.0.0.0", 0))
    fd = wildcard.fileno()
    config = Path(workdir) / "protected-reload.yaml"
    _write(config, "requirepass: secret\n")
    log_path = os.path.join(workdir, "protected-reload.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", SYSTEMD_LAUNCHER, str(fd), str(proxy_binary()), "--config", str(config),
         "--cluster", cluster.seeds, "--bind", "127.0.0.1", "--port", str(free_port())],
        pass_fds=(fd,), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while "slots covered" not in open(log_path).read():
            assert time.monotonic() < deadline and proc.poll() is None, open(log_path).read()
            time.sleep(0.1)
        _write(config, "log-level: info\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "configuration not re-read" not in open(log_path).read():
            assert time.monotonic() < deadline, open(log_path).read()
            time.sleep(0.05)
        assert "the socket from systemd is 0.0.0.0" in open(log_path).read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
        wildcard.close()


def _read_replies(sock: socket.socket, count: int, timeout: float) -> tuple[list, bool]:
    """Up to `count` replies; (replies, whether the proxy closed first)."""
    parser = RespParser()
    replies: list = []
    sock.settimeout(timeout)
    while len(replies) < count:
        data = sock.recv(1 << 20)
        if not data:
            return replies, True
        parser.feed(data)
        while len(replies) < count:
            reply = parser.get()
            if reply is RespParser.NOTHING:
                break
            replies.append(reply)
    return replies, False


def test_sigterm_during_a_pipelined_load_answers_every_command(proxy_factory, cluster):
    proxy = proxy_factory()
    total, batch = 100_000, 500
    keys = [f"drain:{{{i}}}" for i in range(16)]
    with proxy.raw() as c:
        for key in keys:
            c.command("DEL", key)
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    signalled = threading.Event()

    def sender():
        for start in range(0, total, batch):
            sock.sendall(b"".join(encode_command("INCR", keys[i % 16]) for i in range(start, start + batch)))
            if start >= total // 5 and not signalled.is_set():
                proxy.proc.send_signal(signal.SIGTERM)
                signalled.set()

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    replies, closed = _read_replies(sock, total, timeout=60)
    thread.join(30)
    sock.close()
    assert signalled.is_set()
    assert len(replies) == total, f"{len(replies)} replies of {total} (closed: {closed})\n{proxy.log_tail()}"
    assert not any(isinstance(r, RespError) for r in replies), [r for r in replies if isinstance(r, RespError)][:3]
    assert proxy.proc.wait(30) == 0, proxy.log_tail()
    # Every INCR ran once: the counters add up on the cluster itself.
    counted = sum(int(cluster.call(cluster.node_for_key(key), "GET", key)) for key in keys)
    assert counted == total


def test_draining_refuses_new_clients_and_closes_a_busy_one_at_a_reply_boundary(proxy_factory):
    """SIGTERM: /readyz says 503 at once and new connections are refused (the
    listener is closed, not left with a backlog no one accepts from); a
    client that never pauses is closed between two replies before the
    deadline, never with a request unanswered."""
    import urllib.error
    import urllib.request

    admin = free_port()
    proxy = proxy_factory("--set", f"admin-port={admin}", "--set", "shutdown-timeout=4")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    parser = RespParser()
    answered, stop = [], threading.Event()

    def busy_client():
        try:
            while not stop.is_set():
                sock.sendall(encode_command("INCR", "drain:busy"))
                while (reply := parser.get()) is RespParser.NOTHING:
                    data = sock.recv(65536)
                    if not data:
                        return
                    parser.feed(data)
                answered.append(reply)
        except OSError:
            return

    thread = threading.Thread(target=busy_client, daemon=True)
    thread.start()
    time.sleep(0.3)
    proxy.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    time.sleep(0.3)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5)
    assert refused.value.code == 503
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    thread.join(10)
    stop.set()
    closed_after = time.monotonic() - started
    sock.close()
    assert not thread.is_alive()
    assert closed_after < 4, closed_after
    assert answered and all(isinstance(r, int) for r in answered), answered[-3:]
    assert proxy.proc.wait(10) == 0, proxy.log_tail()
    assert "requests unanswered" not in proxy.log_text()


def test_proxy_clients_answers_while_draining(proxy_factory):
    """PROXY CLIENTS from a client still being served while another worker
    has already finished draining: an answer, not a wait for that worker."""
    proxy = proxy_factory("--workers", "2", "--set", "shutdown-timeout=6")
    with proxy.raw(timeout=5) as c:
        assert is_status(c.command("PING"), b"PONG")
        proxy.proc.send_signal(signal.SIGTERM)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # (busy: never quiet long enough to be closed)
            assert is_status(c.command("PING"), b"PONG")
        listing = c.command("PROXY", "CLIENTS", timeout=3)
        assert isinstance(listing, bytes) and b"id=" in listing, listing
    assert proxy.proc.wait(15) == 0


def test_sighup_with_other_seeds_moves_to_them(cluster, workdir):
    """`cluster:` changed in the file and SIGHUP: the proxy asks the new seeds
    and serves what they name (here a standalone server), instead of going
    on with the nodes it already knew."""
    from cluster import start_standalone

    server = start_standalone()
    config = Path(workdir) / "seeds.yaml"
    _write(config, f"cluster: {cluster.seeds}\ntopology-refresh-ms: 200\n")
    port = free_port()
    log_path = os.path.join(workdir, "seeds.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(proxy_binary()), "--config", str(config), "--bind", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        with RawConnection(server.port) as direct:
            assert is_status(direct.command("SET", "seeds:moved", "standalone"))
        deadline = time.monotonic() + 20
        while "16384 of 16384 slots covered" not in open(log_path).read():
            assert time.monotonic() < deadline and proc.poll() is None, open(log_path).read()
            time.sleep(0.1)
        _write(config, f"cluster: 127.0.0.1:{server.port}\ntopology-refresh-ms: 200\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            try:
                with RawConnection(port, timeout=2) as c:
                    if c.command("GET", "seeds:moved") == b"standalone":
                        break
            except (OSError, TimeoutError):
                pass
            assert time.monotonic() < deadline, open(log_path).read()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
        server.stop()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _auth(proxy, password: str):
    with proxy.raw() as c:
        return c.command("AUTH", password)


def test_sighup_rereads_the_file_and_keeps_connections(proxy_factory, workdir):
    config = Path(workdir) / "reload.yaml"
    _write(config, "requirepass: first-secret\nclient-read-pause-replies: 10000\n")
    proxy = proxy_factory("--config", str(config), wait=False)
    proxy.wait_for_log("16384 of 16384 slots covered", timeout=20)
    old = proxy.raw()
    assert is_status(old.command("AUTH", "first-secret"))
    assert is_status(old.command("SET", "reload:key", "1"))

    _write(config, "requirepass: second-secret\nbackend-connections: 3\n")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_for_log("configuration re-read")
    assert "needs a restart to change, kept as running: backend-connections" in proxy.log_text()
    assert isinstance(_auth(proxy, "first-secret"), RespError)
    assert is_status(_auth(proxy, "second-secret"))
    # The session authenticated before the reload goes on.
    assert old.command("GET", "reload:key") == b"1"

    # A broken file is refused with its reason; everything stays as it was.
    _write(config, "requirepass: [unclosed\n")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_for_log("configuration not re-read")
    assert is_status(_auth(proxy, "second-secret"))
    _write(config, "requirepass: third\nrequest-timeout-ms: -5\n")
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while proxy.log_text().count("configuration not re-read") < 2:
        assert time.monotonic() < deadline, proxy.log_tail()
        time.sleep(0.05)
    assert "request-timeout-ms" in proxy.log_text()
    assert is_status(_auth(proxy, "second-secret"))
    assert old.command("GET", "reload:key") == b"1"
    old.close()
    assert proxy.alive()


def test_sighup_applies_user_changes_to_open_connections(proxy_factory, workdir):
    """As Redis's ACL SETUSER / DELUSER: a signed-in client follows its
    user's new rules at once, and a removed user's clients are disconnected."""
    config = Path(workdir) / "users.yaml"
    _write(config, 'users:\n  - "alice on >a-pw ~* +@all"\n  - "bob on >b-pw ~* +@all"\n')
    proxy = proxy_factory("--config", str(config), wait=False)
    proxy.wait_for_log("16384 of 16384 slots covered", timeout=20)
    with proxy.raw() as alice, proxy.raw() as bob:
        assert is_status(alice.command("AUTH", "alice", "a-pw"))
        assert is_status(bob.command("AUTH", "bob", "b-pw"))
        assert is_status(alice.command("SET", "users:k", "1"))
        _write(config, 'users:\n  - "alice on >a-pw ~* +@read"\n')
        proxy.proc.send_signal(signal.SIGHUP)
        proxy.wait_for_log("configuration re-read")
        reply = alice.command("SET", "users:k", "2")
        assert isinstance(reply, RespError) and reply.message.startswith("NOPERM"), reply
        assert alice.command("GET", "users:k") == b"1"
        replies, closed = bob.read_until_closed(timeout=5)
        assert closed and replies == [], replies
    assert "its user 'bob' was removed" in proxy.log_text()


def test_sighup_changes_a_limit_for_the_next_request(proxy_factory, workdir):
    config = Path(workdir) / "limits.yaml"
    _write(config, "proto-max-bulk-len: 1mb\n")
    proxy = proxy_factory("--config", str(config))
    with proxy.raw() as c:
        assert is_status(c.command("SET", "reload:big", b"x" * (600 << 10)))
    _write(config, "proto-max-bulk-len: 1mb\nmax-multibulk-length: 3\n")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_for_log("configuration re-read")
    with proxy.raw() as c:
        c.send(encode_command("MSET", "a{x}", "1", "b{x}", "2"))
        replies, closed = c.read_until_closed(timeout=5)
        assert replies and isinstance(replies[0], RespError) and "multibulk" in replies[0].message, replies


def test_settings_from_environment_variables(proxy_factory, workdir):
    proxy = proxy_factory(env={"SLOTPROXY_REQUIREPASS": "from-env", "SLOTPROXY_MAXCLIENTS": "1"}, wait=False)
    deadline = time.monotonic() + 20
    while True:
        try:
            first = proxy.raw(timeout=2)
            reply = first.command("GET", "env:key")
            break
        except (OSError, TimeoutError):
            assert time.monotonic() < deadline, proxy.log_tail()
            time.sleep(0.1)
    assert isinstance(reply, RespError) and reply.message.startswith("NOAUTH"), reply
    assert is_status(first.command("AUTH", "from-env"))
    with proxy.raw(timeout=5) as second:  # maxclients 1
        replies, closed = second.read_until_closed(timeout=5)
        assert closed and "max number of clients" in str(replies), replies
    first.close()
    assert proxy.stop() == 0

    # Flags win over the environment; a bad value names the variable.
    result = subprocess.run(
        [str(proxy_binary()), "--cluster", "127.0.0.1:7000", "--check-config", "/dev/null"],
        env={**os.environ, "SLOTPROXY_REQUEST_TIMEOUT_MS": "soon"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "SLOTPROXY_REQUEST_TIMEOUT_MS" in result.stderr, result.stderr


def test_make_install_puts_files_where_a_package_would(tmp_path):
    if not (REPO / ".build" / "release" / "slotproxy").is_file():
        pytest.skip("no release build (make release)")
    dest = tmp_path / "root"
    result = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr", "SWIFT=true"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    binary = dest / "usr/bin/slotproxy"
    assert os.access(binary, os.X_OK)
    unit = (dest / "usr/lib/systemd/system/slotproxy.service").read_text()
    assert "ExecStart=/usr/bin/slotproxy --config /etc/slotproxy/slotproxy.yaml" in unit
    assert "Type=notify" in unit
    assert (dest / "usr/lib/systemd/system/slotproxy.socket").is_file()
    config = dest / "etc/slotproxy/slotproxy.yaml"
    check = subprocess.run([str(binary), "--check-config", str(config), "--cluster", "127.0.0.1:7000"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # An operator's config is never overwritten.
    config.write_text("cluster: 10.0.0.1:7000\n")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr", "SWIFT=true"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    assert config.read_text() == "cluster: 10.0.0.1:7000\n"
    # On a production host it installs the build dependencies only: no
    # redis-server (Debian's starts a service on 6379), no test packages.
    plan = subprocess.run(["make", "-n", "install"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "install-deps --build" in plan and "install-deps\n" not in plan, plan
    deps = subprocess.run(["bash", "-x", "scripts/install-deps", "--build"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert deps.returncode == 0, deps.stderr
    calls = [line for line in deps.stderr.splitlines() if line.startswith("+ apt_install") or "-m pip" in line]
    assert calls == ["+ apt_install libevent-dev libssl-dev pkg-config"], deps.stderr
