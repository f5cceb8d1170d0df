"""Helpers for the integration tests: the proxy process and a raw RESP socket.

The cluster itself lives in scripts/cluster.py (imported here, scripts/ is put on
sys.path). Everything is on 127.0.0.1; every wait is bounded; every process is
stopped by its pid.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import cluster as cluster_mod  # noqa: E402
from cluster import (  # noqa: E402,F401  (re-exported for the tests)
    HOST,
    Cluster,
    Map,
    Push,
    RespError,
    RespParser,
    Set,
    Status,
    Verbatim,
    encode_command,
    free_port,
    key_for_slot,
    key_hash_slot,
)

DEFAULT_PROXY_BIN = REPO / ".build" / "debug" / "slotproxy"


# Under a sanitizer (`make test-sanitize`) the proxy's memory figures mean
# nothing (shadow memory and quarantine dominate): memory_bytes reads 0 then,
# so memory bounds are checked in normal runs only.
SANITIZED = bool(os.environ.get("SLOTPROXY_SANITIZER"))


def memory_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/PID/status (VmRSS, or VmHWM: the peak RSS)."""
    if SANITIZED:
        return 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


@contextlib.contextmanager
def out_of_file_descriptors(pid: int):
    """Within the block, process `pid` can open no new file descriptor (its
    soft RLIMIT_NOFILE is what it has open): a connect fails at once."""
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")), limits[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)


def proxy_binary() -> Path:
    """$SLOTPROXY_BIN, else <repo>/.build/debug/slotproxy."""
    return Path(os.environ.get("SLOTPROXY_BIN") or DEFAULT_PROXY_BIN)


class ProxyStartError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Raw RESP connection.
# ---------------------------------------------------------------------------


class ConnectionClosed(ConnectionError):
    """The peer closed the connection; `replies` holds what arrived before."""

    def __init__(self, message: str, replies: list):
        super().__init__(message)
        self.replies = replies


class RawConnection:
    """A plain TCP connection speaking RESP by hand, for pipelining and for
    malformed input. Replies are parsed by cluster.RespParser: simple strings are
    `Status` (a bytes subclass), errors are `RespError` values (returned, not
    raised), RESP3 maps are `Map` (a dict subclass), nulls are None.

        c = RawConnection(port)
        c.command("SET", "k", "v")                 # -> Status(b"OK")
        c.pipeline([("GET", k) for k in keys])     # -> list of replies, in order
        c.send(b"*abc\\r\\n"); c.read_reply()      # -> RespError(...)
    """

    def __init__(self, port: int, host: str = HOST, timeout: float = 30.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = RespParser()
        self.closed_by_peer = False

    # -- sending --
    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_command(self, *args) -> None:
        self.send(encode_command(*args))

    # -- receiving --
    def _fill(self, deadline: float, got: list) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"timed out on port {self.port} after {len(got)} replies "
                f"({self.parser.pending()} unparsed bytes buffered)"
            )
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError(
                f"timed out on port {self.port} after {len(got)} replies "
                f"({self.parser.pending()} unparsed bytes buffered)"
            ) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed_by_peer = True
            raise ConnectionClosed(f"port {self.port} closed the connection after {len(got)} replies", got)
        self.parser.feed(data)

    def read_replies(self, n: int, timeout: float | None = None) -> list:
        """Exactly n complete replies (bounded by timeout, default self.timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got: list = []
        while len(got) < n:
            v = self.parser.get()
            if v is RespParser.NOTHING:
                self._fill(deadline, got)
                continue
            got.append(v)
        return got

    def read_reply(self, timeout: float | None = None):
        return self.read_replies(1, timeout)[0]

    def command(self, *args, timeout: float | None = None):
        self.send_command(*args)
        return self.read_reply(timeout)

    def read_raw(self, nbytes: int, timeout: float | None = None) -> bytes:
        """Exactly `nbytes` raw bytes (for checking the wire form of a reply, e.g.
        RESP3 `_\r\n` versus RESP2 `$-1\r\n`), bypassing the parser."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.parser.pending() < nbytes:
            self._fill(deadline, [])
        p = self.parser
        data = bytes(p.buf[p.pos : p.pos + nbytes])
        p.pos += nbytes
        return data

    def read_until_closed(self, timeout: float = 5.0) -> tuple[list, bool]:
        """Read replies until the peer closes or `timeout` passes.
        Returns (replies, closed)."""
        deadline = time.monotonic() + timeout
        got: list = []
        while True:
            v = self.parser.get()
            if v is not RespParser.NOTHING:
                got.append(v)
                continue
            try:
                self._fill(deadline, got)
            except ConnectionClosed:
                return got, True
            except TimeoutError:
                return got, False

    def pipeline(self, commands, timeout: float | None = None, chunk: int = 256 * 1024) -> list:
        """Send many commands (a list of argument tuples, or pre-encoded bytes plus
        `count=`) from a background thread while reading their replies here, as a
        real pipelining client does, so neither side can block the other."""
        if isinstance(commands, (bytes, bytearray)):
            raise TypeError("use pipeline_bytes(payload, count) for pre-encoded input")
        payload = b"".join(encode_command(*c) for c in commands)
        return self.pipeline_bytes(payload, len(commands), timeout=timeout, chunk=chunk)

    def pipeline_bytes(self, payload: bytes, count: int, timeout: float | None = None, chunk: int = 256 * 1024) -> list:
        errors: list[BaseException] = []
        mv = memoryview(payload)

        def sender():
            try:
                for i in range(0, len(mv), chunk):
                    self.sock.sendall(mv[i : i + chunk])
            except BaseException as e:  # reported after the replies
                errors.append(e)

        # The socket timeout applies to the sender's sendall too.
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        t = threading.Thread(target=sender, name=f"pipeline-sender-{self.port}", daemon=True)
        t.start()
        try:
            replies = self.read_replies(count, timeout)
        finally:
            t.join(self.timeout if timeout is None else timeout)
        if errors:
            raise errors[0]
        if t.is_alive():
            raise TimeoutError("pipeline sender did not finish")
        return replies

    def hello(self, proto: int = 3):
        return self.command("HELLO", proto)

    # -- closing --
    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Close with RST (SO_LINGER 0): the abrupt disconnect of a crashed client."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pairs_to_dict(reply) -> dict:
    """HELLO 2 style flat [k1, v1, k2, v2, ...] (or a Map) as a dict with str keys."""
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        assert isinstance(reply, list) and len(reply) % 2 == 0, reply
        items = list(zip(reply[0::2], reply[1::2]))
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in items}


def is_status(reply, text: bytes = b"OK") -> bool:
    return isinstance(reply, Status) and bytes(reply) == text


# ---------------------------------------------------------------------------
# The proxy process.
# ---------------------------------------------------------------------------


class ProxyProcess:
    """One slotproxy process:
    `slotproxy --cluster SEEDS --bind 127.0.0.1 --port PORT --log-level info [extra...]`
    with stdout/stderr in files under `workdir`."""

    _instances = itertools.count(1)

    def __init__(self, seeds: str, workdir: str, extra_args=(), port: int | None = None,
                 binary: Path | None = None, env: dict | None = None, log_level: str = "info",
                 preexec=None):
        self.binary = Path(binary or proxy_binary())
        self.preexec = preexec  # run in the child before exec (CPU affinity, cgroup)
        self.seeds = seeds
        self.port = port or free_port()
        self.workdir = workdir
        self.extra_args = [str(a) for a in extra_args]
        self.env = env
        self.log_level = log_level
        # Named per instance too: a later proxy given a port an earlier one
        # had must not read that one's log (a restart appends to its own).
        name = f"slotproxy-{self.port}-{next(ProxyProcess._instances)}"
        self.stderr_path = os.path.join(workdir, f"{name}.stderr.log")
        self.stdout_path = os.path.join(workdir, f"{name}.stdout.log")
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def argv(self) -> list[str]:
        # $SLOTPROXY_TEST_WORKERS runs every proxy of the suite with that many
        # workers (default: the proxy's own, one per core); a test's own
        # --workers comes later and wins.
        workers = os.environ.get("SLOTPROXY_TEST_WORKERS")
        return [str(self.binary), "--cluster", self.seeds, "--bind", HOST, "--port", str(self.port),
                "--log-level", self.log_level, *(["--workers", workers] if workers else []), *self.extra_args]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, wait: bool = True, ready_timeout: float = 20.0) -> "ProxyProcess":
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            raise ProxyStartError(
                f"slotproxy binary not found or not executable at {self.binary} "
                f"(build it with `swift build`, or point SLOTPROXY_BIN at it)"
            )
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                preexec_fn=self._before_exec,
            )
        if wait:
            try:
                self.wait_ready(ready_timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _before_exec(self) -> None:
        cluster_mod._die_with_parent()
        if self.preexec:
            self.preexec()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until PING answers PONG and `GET __probe__` is not a CLUSTERDOWN error
        (i.e. the proxy has a slot map), bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProxyStartError(
                    f"slotproxy exited with code {self.proc.returncode} before it was ready\n"
                    f"argv: {' '.join(self.argv)}\n{self.log_tail()}"
                )
            try:
                with RawConnection(self.port, timeout=2.0) as c:
                    pong = c.command("PING")
                    if pong != b"PONG":
                        last = f"PING -> {pong!r}"
                    else:
                        probe = c.command("GET", "__probe__")
                        if isinstance(probe, RespError) and probe.message.startswith("CLUSTERDOWN"):
                            last = f"GET __probe__ -> {probe!r}"
                        else:
                            return
            except (OSError, TimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise ProxyStartError(
            f"slotproxy on port {self.port} not ready after {timeout:.0f}s (last: {last})\n"
            f"argv: {' '.join(self.argv)}\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the proxy drains its clients, within its shutdown-timeout),
        then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        self.returncode = self.proc.returncode
        return self.returncode

    def log_text(self) -> str:
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if data:
                parts.append(data.decode("utf-8", "replace"))
        return "".join(parts)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Until `text` is in the proxy's log, bounded by `timeout` (for proxies
        whose readiness the harness cannot probe: passwords, dead seeds)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            assert time.monotonic() < deadline, f"{text!r} not logged\n{self.log_tail()}"
            time.sleep(0.05)

    def log_tail(self, max_chars: int = 20000) -> str:
        text = self.log_text()
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return f"--- slotproxy :{self.port} log ({self.stderr_path}) ---\n{text}"

    # -- clients --
    def raw(self, timeout: float = 30.0) -> RawConnection:
        return RawConnection(self.port, timeout=timeout)

    def client(self, protocol: int = 2, **kw):
        """A redis-py client on the proxy."""
        import redis

        kw.setdefault("socket_timeout", 30)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=HOST, port=self.port, protocol=protocol, **kw)


# ---------------------------------------------------------------------------
# Checks against the cluster directly (not through the proxy).
# ---------------------------------------------------------------------------


def group_by_owner(keys, owners: list[int]) -> dict[int, list[int]]:
    """Indexes of `keys` grouped by the port owning each key's slot."""
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(owners[key_hash_slot(k)], []).append(i)
    return groups


def verify_on_masters(cluster: Cluster, keys, values, timeout: float = 60.0) -> dict[int, int]:
    """GET every key directly on the master owning its slot (pipelined per
    master) and compare with `values`. Returns {master port: key count}."""
    owners = cluster.slot_owners()
    counts = {}
    for port, idx in group_by_owner(keys, owners).items():
        assert port != 0, "a key maps to an unassigned slot"
        with RawConnection(port, timeout=timeout) as c:
            replies = c.pipeline([("GET", keys[i]) for i in idx], timeout=timeout)
        for i, r in zip(idx, replies):
            assert r == values[i], (
                f"key {keys[i]!r} on master {port}: expected {values[i]!r:.80}, got {r!r:.80}"
            )
        counts[port] = len(idx)
    return counts


def keys_on_each_master(cluster, prefix: str) -> list[str]:
    """One name `prefix:N` owned by each master (its own slot), in
    `cluster.masters` order: keys or shard channels spread over every master."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(cluster.masters):
        name = f"{prefix}:{i}"
        found.setdefault(cluster.node_for_slot(cluster_mod.key_hash_slot(name)), name)
        i += 1
    return [found[m] for m in cluster.masters]
