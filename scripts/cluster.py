#!/usr/bin/env python3
"""A real local Redis Cluster for tests and benchmarks, on loopback only.

Six `redis-server` processes (3 masters, 3 replicas) on free 127.0.0.1 ports,
each with its own node directory under one base directory (a temporary one by
default), created with `redis-cli --cluster create ... --cluster-replicas 1`.
`start()` returns only once every node says `cluster_state:ok`, every replica's
link to its master is up, and all six nodes agree on the shards (`CLUSTER NODES`
and `CLUSTER SHARDS`). Every wait is bounded; every process is stopped by its
pid; nothing is ever stopped by name.

As a module (python3 stdlib only; `redis-server`/`redis-cli` as subprocesses):

    from cluster import Cluster
    with Cluster() as c:                 # or c = Cluster(); c.start(); ...; c.stop()
        c.seeds                          # "127.0.0.1:p1,127.0.0.1:p2,..."
        c.masters, c.replicas, c.ports   # lists of ports (masters in slot order)
        c.node_for_slot(key_hash_slot(b"user:1"))   # port of the owning master
        c.call(port, "CLUSTER", "INFO")  # one command over a socket, parsed reply
        c.cli(port, "get", "x")          # redis-cli output as text
        c.kill(port)                     # SIGKILL one node (a crash); c.restart(port)

    h = start_standalone()               # one plain redis-server; h.port, h.stop()

As a command:

    scripts/cluster.py start --dir DIR [--base-port N]   # prints the seed list, returns
    scripts/cluster.py stop  --dir DIR                   # stops the pids in DIR/cluster.json
    scripts/cluster.py run  [--dir DIR] [--base-port N]  # start, wait for SIGINT/SIGTERM, stop

Ports: node ports are drawn from 12000-22767 so that each cluster bus port
(port + 10000) stays below the kernel's ephemeral range (32768+), and both the
port and its bus port are checked free by binding them before use. Set
REDIS_SERVER / REDIS_CLI to use other binaries. A missing `redis-server` is an
error (RuntimeError), never a silent skip.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI", "redis-cli")
SLOTS = 16384

NODE_PORT_MIN = 12000
NODE_PORT_MAX = 22767  # + 10000 bus offset stays below 32768
BUS_OFFSET = 10000


# ---------------------------------------------------------------------------
# RESP: encoder and an incremental RESP2/RESP3 parser (shared with the tests).
# ---------------------------------------------------------------------------


class RespError(Exception):
    """An error reply (`-...` or RESP3 `!...`). Returned as a value, not raised,
    by the parser; `message` is the text without the leading '-'."""

    def __init__(self, message: str, raw: bytes = b""):
        super().__init__(message)
        self.message = message
        self.raw = raw

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]

    def __eq__(self, other):
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self):
        return hash(self.message)

    def __repr__(self):
        return f"RespError({self.message!r})"


class Status(bytes):
    """A simple string reply (`+OK`). Equal to the same bytes, so
    `reply == b"OK"` holds for `+OK` and `$2 OK`; use isinstance to tell."""

    def __repr__(self):
        return f"Status({bytes(self)!r})"


class Verbatim(bytes):
    """RESP3 verbatim string (`=`); `format` is the 3-letter type."""

    format: bytes = b"txt"


class Map(dict):
    """RESP3 map (`%`)."""


class Set(list):
    """RESP3 set (`~`), kept as a list (its items may be unhashable)."""


class Push(list):
    """RESP3 push (`>`)."""


class Incomplete(Exception):
    pass


class ProtocolViolation(Exception):
    pass


def encode_arg(arg) -> bytes:
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("bool is not a RESP argument")
    if isinstance(arg, (int, float)):
        return str(arg).encode()
    raise TypeError(f"cannot encode {type(arg).__name__} as a RESP argument")


def encode_command(*args) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        b = encode_arg(arg)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")
    return b"".join(parts)


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple((_hashable(k), _hashable(x)) for k, x in v.items())
    return v


class RespParser:
    """Incremental parser: feed() bytes, get() one complete reply at a time.

    get() returns the parser's NOTHING sentinel while the next reply is not
    complete. A partial reply is re-parsed from its start on the next get(),
    which is O(1) for big bulk strings (only the header is looked at)."""

    NOTHING = object()

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0

    def feed(self, data: bytes) -> None:
        if self.pos and self.pos >= len(self.buf):
            self.buf.clear()
            self.pos = 0
        elif self.pos > (1 << 20):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def pending(self) -> int:
        return len(self.buf) - self.pos

    def get(self):
        try:
            value, end = self._parse(self.pos)
        except Incomplete:
            return self.NOTHING
        self.pos = end
        return value

    def _line(self, pos: int):
        end = self.buf.find(b"\r\n", pos)
        if end < 0:
            raise Incomplete()
        return bytes(self.buf[pos:end]), end + 2

    def _parse(self, pos: int):
        buf = self.buf
        if pos >= len(buf):
            raise Incomplete()
        t = buf[pos : pos + 1]
        line, nxt = self._line(pos + 1)
        if t == b"+":
            return Status(line), nxt
        if t == b"-":
            return RespError(line.decode("utf-8", "replace"), line), nxt
        if t == b":" or t == b"(":
            return int(line), nxt
        if t == b"$" or t == b"!" or t == b"=":
            n = int(line)
            if n < 0:
                return None, nxt
            if len(buf) < nxt + n + 2:
                raise Incomplete()
            if buf[nxt + n : nxt + n + 2] != b"\r\n":
                raise ProtocolViolation(f"bulk of {n} bytes not followed by CRLF")
            data = bytes(buf[nxt : nxt + n])
            if t == b"!":
                return RespError(data.decode("utf-8", "replace"), data), nxt + n + 2
            if t == b"=":
                v = Verbatim(data[4:])
                v.format = data[:3]
                return v, nxt + n + 2
            return data, nxt + n + 2
        if t == b"_":
            return None, nxt
        if t == b"#":
            return line == b"t", nxt
        if t == b",":
            s = line.decode()
            return float({"inf": "inf", "-inf": "-inf"}.get(s, s)), nxt
        if t in (b"*", b"~", b">"):
            n = int(line)
            if n < 0:
                return None, nxt
            items = []
            p = nxt
            for _ in range(n):
                v, p = self._parse(p)
                items.append(v)
            if t == b"~":
                return Set(items), p
            if t == b">":
                return Push(items), p
            return items, p
        if t == b"%" or t == b"|":
            n = int(line)
            m = Map()
            p = nxt
            for _ in range(n):
                k, p = self._parse(p)
                v, p = self._parse(p)
                m[_hashable(k)] = v
            if t == b"|":  # attributes: dropped, the real reply follows
                return self._parse(p)
            return m, p
        raise ProtocolViolation(f"unknown RESP type byte {bytes(t)!r} at offset {pos}")


def read_reply(sock: socket.socket, parser: RespParser, deadline: float):
    while True:
        v = parser.get()
        if v is not RespParser.NOTHING:
            return v
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for a reply")
        sock.settimeout(remaining)
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("connection closed by peer")
        parser.feed(data)


def call(port: int, *args, timeout: float = 5.0, host: str = HOST, raise_errors: bool = True):
    """Send one command to host:port on a fresh connection; return the parsed reply.
    An error reply is raised as RespError unless raise_errors is False."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(encode_command(*args))
        reply = read_reply(s, RespParser(), deadline)
    if raise_errors and isinstance(reply, RespError):
        raise reply
    return reply


def _text(v) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


# ---------------------------------------------------------------------------
# Hash slots (CRC16-CCITT/XMODEM, as in Redis's src/crc16.c and cluster.c).
# ---------------------------------------------------------------------------


def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_hash_slot(key) -> int:
    """The hash slot of a key: crc16 of the key (or of the part between the first
    '{' and the next '}', when that part is not empty) modulo 16384."""
    key = encode_arg(key)
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1 : e]
    return crc16(key) & (SLOTS - 1)


def key_for_slot(slot: int, prefix: str = "k") -> bytes:
    """A key (with a hash tag) that hashes to `slot`: prefix + '{tag}'."""
    for i in range(10_000_000):
        tag = f"{i}"
        if crc16(tag.encode()) & (SLOTS - 1) == slot:
            return f"{prefix}{{{tag}}}".encode()
    raise RuntimeError(f"no tag found for slot {slot}")


# ---------------------------------------------------------------------------
# Ports and processes.
# ---------------------------------------------------------------------------


def _bindable(port: int) -> bool:
    if not (0 < port < 65536):
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Like redis-server (which sets SO_REUSEADDR), ignore TIME_WAIT leftovers;
        # an existing listener still makes the bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port() -> int:
    """A free loopback port chosen by the kernel (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_cluster_ports(count: int, base_port: int | None = None, exclude=()) -> list[int]:
    """`count` ports whose cluster bus ports (port + 10000) are free too."""
    if base_port is not None:
        ports = list(range(base_port, base_port + count))
        busy = [p for p in ports if not (_bindable(p) and _bindable(p + BUS_OFFSET))]
        if busy:
            raise RuntimeError(f"ports (or their bus ports +{BUS_OFFSET}) not free: {busy}")
        return ports
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(2000):
        p = rng.randint(NODE_PORT_MIN, NODE_PORT_MAX)
        if p in chosen or p in exclude:
            continue
        if _bindable(p) and _bindable(p + BUS_OFFSET):
            chosen.append(p)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("could not find free loopback ports for the cluster")


def _require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        var = "REDIS_SERVER" if name == REDIS_SERVER else "REDIS_CLI"
        raise RuntimeError(
            f"{name!r} not found (install Debian's redis-server and redis-tools, or set {var}); "
            f"cannot start redis"
        )
    return path


def _die_with_parent():
    """preexec_fn: ask the kernel to SIGKILL this child if its parent (the thread
    that started it) dies, so a crashed test run leaves no redis-server behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def stop_pid(pid: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; waits (bounded) for exit."""
    if proc is not None:
        if proc.poll() is not None:
            return
        try:
            proc.terminate()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return
    if not _pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _wait_ping(port: int, proc: subprocess.Popen | None, deadline: float, log: str = "") -> None:
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"redis-server on port {port} exited with {proc.returncode}\n{_tail(log)}"
            )
        try:
            if call(port, "PING", timeout=1) == b"PONG":
                return
        except (OSError, RespError, TimeoutError) as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer PING ({last})\n{_tail(log)}")


def _tail(path: str, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            data = f.read()[-20000:]
        return "--- " + path + " ---\n" + "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Standalone server.
# ---------------------------------------------------------------------------


class Standalone:
    """One plain `redis-server` (no cluster) on a free loopback port."""

    def __init__(self, directory: str | None = None, port: int | None = None, extra_args=()):
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="redis-standalone-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(self.dir, f"redis-{self.port}.log")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> "Standalone":
        try:
            server = _require_binary(REDIS_SERVER)
        except RuntimeError:
            self.stop()
            raise
        args = [
            server, "--port", str(self.port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", self.dir,
            "--logfile", self.log, *self.extra_args,
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_ping(self.port, self.proc, time.monotonic() + timeout, self.log)
        except BaseException:
            self.stop()
            raise
        _register(self)
        return self

    def call(self, *args, **kw):
        return call(self.port, *args, **kw)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, proc=self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        _unregister(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start_standalone(directory: str | None = None, port: int | None = None, extra_args=()) -> Standalone:
    """Start one plain redis-server; returns its handle (port, pid, call(), stop())."""
    return Standalone(directory, port, extra_args).start()


# ---------------------------------------------------------------------------
# Cluster.
# ---------------------------------------------------------------------------


class Node:
    def __init__(self, port: int, directory: str, log: str):
        self.port = port
        self.dir = directory
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # also set for nodes adopted from cluster.json

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def parse_cluster_nodes(text: str) -> list[dict]:
    """CLUSTER NODES lines as dicts: id, host, port, flags (set), master (id or None),
    link ('connected'/'disconnected'), slots (list of ints; migrating/importing
    markers ignored)."""
    nodes = []
    for line in text.strip().splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        addr = f[1].split("@", 1)[0]
        host, _, port = addr.rpartition(":")
        slots: list[int] = []
        for s in f[8:]:
            if s.startswith("["):
                continue
            if "-" in s:
                a, b = s.split("-")
                slots.extend(range(int(a), int(b) + 1))
            else:
                slots.append(int(s))
        nodes.append({
            "id": f[0],
            "host": host,
            "port": int(port) if port.isdigit() else 0,
            "flags": set(f[2].split(",")),
            "master": None if f[3] == "-" else f[3],
            "link": f[7],
            "slots": slots,
        })
    return nodes


class Cluster:
    """Six redis-server processes forming a Redis Cluster (3 masters + 3 replicas).

    `directory`: base directory (created if needed); a temporary one, removed by
    stop(), when None. `base_port`: use ports base..base+5 instead of free random
    ones. `die_with_parent`: nodes get SIGKILL if the starting thread dies (module
    use); the CLI's detached `start` turns it off."""

    def __init__(
        self,
        directory: str | None = None,
        base_port: int | None = None,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = 2000,
        extra_args=(),
        die_with_parent: bool = True,
        detach: bool = False,
        tls: dict | None = None,
    ):
        self._own_dir = directory is None
        self.dir = os.path.abspath(directory) if directory else tempfile.mkdtemp(prefix="redis-cluster-")
        self.base_port = base_port
        self.n_masters = masters
        self.initial_masters = masters  # what rebuild() goes back to
        self.n_replicas = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent
        self.detach = detach
        # TLS: {"cert": path, "key": path, "ca": path}. Each node then also
        # listens for TLS on `tls_ports[port]`, and the cluster bus and
        # replication use TLS (tls-cluster, tls-replication). The plain port
        # stays, for the harness's own calls.
        self.tls = tls
        self.tls_ports: dict[int, int] = {}
        self.nodes: dict[int, Node] = {}
        self._lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 90.0, attempts: int = 3) -> "Cluster":
        try:
            _require_binary(REDIS_SERVER)
            _require_binary(REDIS_CLI)
        except RuntimeError:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise
        os.makedirs(self.dir, exist_ok=True)
        count = self.n_masters * (1 + self.n_replicas)
        last: BaseException | None = None
        for attempt in range(attempts if self.base_port is None else 1):
            ports = free_cluster_ports(count, self.base_port)
            try:
                self._start_nodes(ports, timeout=15.0)
                self._create(timeout=60.0)
                self.wait_healthy(timeout=timeout)
                _register(self)
                return self
            except BaseException as e:  # noqa: BLE001 - retried or re-raised below
                last = e
                logs = "\n".join(_tail(n.log, 15) for n in self.nodes.values())
                self._stop_nodes()
                for p in ports:
                    shutil.rmtree(os.path.join(self.dir, str(p)), ignore_errors=True)
                self.nodes.clear()
                if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit
                    if self._own_dir:
                        shutil.rmtree(self.dir, ignore_errors=True)
                    raise
                last = RuntimeError(f"cluster start failed (attempt {attempt + 1}): {e}\n{logs}")
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        raise last  # type: ignore[misc]

    def _node_args(self, node: Node) -> list[str]:
        return [
            shutil.which(REDIS_SERVER) or REDIS_SERVER,
            "--port", str(node.port),
            "--bind", HOST,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", node.dir,
            "--logfile", node.log,
            "--enable-debug-command", "local",
            # Full syncs start at once instead of waiting 5 s for more replicas.
            "--repl-diskless-sync-delay", "0",
            *self._tls_args(node),
            *self.extra_args,
        ]

    def _tls_args(self, node: Node) -> list[str]:
        if not self.tls:
            return []
        if node.port not in self.tls_ports:
            self.tls_ports[node.port] = free_cluster_ports(1, exclude=[*self.nodes, *self.tls_ports.values()])[0]
        return [
            "--tls-port", str(self.tls_ports[node.port]),
            # The bus stays at port + 10000 (with tls-cluster it would follow the TLS port).
            "--cluster-port", str(node.port + BUS_OFFSET),
            "--tls-cluster", "yes",
            "--tls-replication", "yes",
            "--tls-cert-file", self.tls["cert"],
            "--tls-key-file", self.tls["key"],
            "--tls-ca-cert-file", self.tls["ca"],
            "--tls-auth-clients", "optional",
        ]

    @property
    def tls_seeds(self) -> str:
        return ",".join(f"{HOST}:{self.tls_ports[p]}" for p in self.masters)

    def _spawn(self, node: Node) -> None:
        os.makedirs(node.dir, exist_ok=True)
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                self._node_args(node),
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=self.detach,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        node.pid = node.proc.pid

    def _start_nodes(self, ports: list[int], timeout: float) -> None:
        for p in ports:
            node = Node(p, os.path.join(self.dir, str(p)), os.path.join(self.dir, f"redis-{p}.log"))
            self.nodes[p] = node
            self._spawn(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            _wait_ping(node.port, node.proc, deadline, node.log)

    def _create(self, timeout: float) -> None:
        cli = shutil.which(REDIS_CLI) or REDIS_CLI
        args = [cli, "--cluster", "create", *[n.address for n in self.nodes.values()],
                "--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        log = os.path.join(self.dir, "cluster-create.log")
        with open(log, "wb") as out:
            r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({r.returncode})\n{_tail(log, 40)}")

    def rebuild(self, timeout: float = 90.0) -> None:
        """Replace the cluster with a fresh one (new ports, empty data), for
        a test run to go on after one test left it broken."""
        self._stop_nodes()
        for p in list(self.nodes):
            shutil.rmtree(os.path.join(self.dir, str(p)), ignore_errors=True)
        self.nodes.clear()
        self.tls_ports.clear()
        # (A test that added a master and broke down did not remove it.)
        self.n_masters = self.initial_masters
        self.start(timeout=timeout)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove a temporary directory."""
        self._stop_nodes()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        _unregister(self)

    def _stop_nodes(self) -> None:
        nodes = [n for n in self.nodes.values() if n.pid]
        # Signal all first, then wait: six nodes stop in parallel.
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.proc.terminate()
                except OSError:
                    pass
            elif n.proc is None and _pid_alive(n.pid) and "redis-server" in _pid_cmdline(n.pid):
                try:
                    os.kill(n.pid, signal.SIGTERM)
                except OSError:
                    pass
        for n in nodes:
            if n.proc is not None:
                stop_pid(n.pid, timeout=10, proc=n.proc)
            elif "redis-server" in _pid_cmdline(n.pid):
                stop_pid(n.pid, timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- state -----------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    @property
    def pids(self) -> dict[int, int]:
        return {p: n.pid for p, n in self.nodes.items() if n.pid}

    @property
    def seeds(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.nodes)

    def alive(self, port: int) -> bool:
        n = self.nodes[port]
        if n.proc is not None:
            return n.proc.poll() is None
        return bool(n.pid) and _pid_alive(n.pid)

    def live_ports(self) -> list[int]:
        return [p for p in self.nodes if self.alive(p)]

    def call(self, port: int, *args, timeout: float = 5.0, raise_errors: bool = True):
        """One command to one node over a socket; the parsed reply."""
        return call(port, *args, timeout=timeout, raise_errors=raise_errors)

    def cli(self, port: int, *args, timeout: float = 10.0, check: bool = True) -> str:
        """Run `redis-cli -h 127.0.0.1 -p port args...`; its stdout without the
        trailing newline."""
        r = subprocess.run(
            [shutil.which(REDIS_CLI) or REDIS_CLI, "-h", HOST, "-p", str(port), *map(str, args)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"redis-cli -p {port} {args} failed: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode("utf-8", "replace").rstrip("\n")

    def cluster_nodes(self, port: int | None = None) -> list[dict]:
        """CLUSTER NODES as seen by `port` (default: the first live node)."""
        last = None
        for p in ([port] if port else self.live_ports()):
            try:
                return parse_cluster_nodes(_text(self.call(p, "CLUSTER", "NODES")))
            except (OSError, RespError, TimeoutError) as e:
                last = e
        raise RuntimeError(f"no node answered CLUSTER NODES ({last})")

    def node_id(self, port: int, timeout: float = 30.0) -> str:
        # A master emptied of its slots turns replica of the node that took
        # the last one (Redis 7), and answers LOADING while it syncs.
        deadline = time.monotonic() + timeout
        while True:
            reply = self.call(port, "CLUSTER", "MYID", raise_errors=False)
            if not isinstance(reply, RespError):
                return _text(reply)
            if not reply.message.startswith("LOADING") or time.monotonic() > deadline:
                raise reply
            time.sleep(0.1)

    def _healthy_view(self, port: int | None = None) -> list[dict]:
        return [n for n in self.cluster_nodes(port)
                if not ({"fail", "fail?", "handshake", "noaddr"} & n["flags"])]

    @property
    def masters(self) -> list[int]:
        """Ports of the current masters that own slots, in slot order (live view)."""
        ms = [n for n in self._healthy_view() if "master" in n["flags"] and n["slots"]]
        ms.sort(key=lambda n: min(n["slots"]))
        return [n["port"] for n in ms]

    @property
    def replicas(self) -> list[int]:
        """Ports of the current replicas (live view)."""
        return sorted(n["port"] for n in self._healthy_view() if "slave" in n["flags"])

    def replica_of(self, master_port: int) -> list[int]:
        view = self._healthy_view()
        mid = next(n["id"] for n in view if n["port"] == master_port)
        return sorted(n["port"] for n in view if n["master"] == mid)

    def slot_owners(self, port: int | None = None) -> list[int]:
        """A list of 16384 master ports, index = slot (0 where unassigned)."""
        owners = [0] * SLOTS
        for n in self.cluster_nodes(port):
            if "master" in n["flags"]:
                for s in n["slots"]:
                    owners[s] = n["port"]
        return owners

    def node_for_slot(self, slot: int) -> int:
        """Port of the master owning `slot`, from CLUSTER SLOTS of a live node."""
        last = None
        for p in self.live_ports():
            try:
                for entry in self.call(p, "CLUSTER", "SLOTS"):
                    if entry[0] <= slot <= entry[1]:
                        return int(entry[2][1])
                raise RuntimeError(f"slot {slot} is not assigned")
            except (OSError, RespError, TimeoutError) as e:
                last = e
        raise RuntimeError(f"no node answered CLUSTER SLOTS ({last})")

    def node_for_key(self, key) -> int:
        return self.node_for_slot(key_hash_slot(key))

    # ---- health ----------------------------------------------------------

    def check_healthy(self) -> str | None:
        """None when healthy, else a description of the first problem found."""
        ports = self.live_ports()
        want_masters = self.n_masters
        want_total = len(self.nodes)
        if len(ports) != want_total:
            return f"only {len(ports)} of {want_total} nodes alive"
        views = {}
        shard_views = {}
        for p in ports:
            try:
                fields = self.info_fields(p, "CLUSTER", "INFO")
                if fields.get("cluster_state") != "ok":
                    return f"{p}: cluster_state:{fields.get('cluster_state')}"
                if fields.get("cluster_slots_ok") != str(SLOTS):
                    return f"{p}: cluster_slots_ok:{fields.get('cluster_slots_ok')}"
                if fields.get("cluster_known_nodes") != str(want_total):
                    return f"{p}: cluster_known_nodes:{fields.get('cluster_known_nodes')}"
                nodes = parse_cluster_nodes(_text(self.call(p, "CLUSTER", "NODES")))
                shards = self.call(p, "CLUSTER", "SHARDS")
                repl = self.info_fields(p, "INFO", "replication")
            except (OSError, RespError, TimeoutError) as e:
                return f"{p}: {e}"
            for n in nodes:
                if n["flags"] & {"fail", "fail?", "handshake", "noaddr"} or n["link"] != "connected":
                    return f"{p} sees {n['port']} as {','.join(sorted(n['flags']))} {n['link']}"
            ms = [n for n in nodes if "master" in n["flags"]]
            if len(ms) != want_masters or sum(len(n["slots"]) for n in ms) != SLOTS:
                return f"{p}: {len(ms)} masters"
            ids = {n["id"] for n in ms}
            for m in ms:
                reps = [n for n in nodes if n["master"] == m["id"]]
                if len(reps) != self.n_replicas:
                    return f"{p}: master {m['port']} has {len(reps)} replicas"
            for n in nodes:
                if "slave" in n["flags"] and n["master"] not in ids:
                    return f"{p}: replica {n['port']} follows unknown {n['master']}"
            me = next(n for n in nodes if "myself" in n["flags"])
            if "slave" in me["flags"]:
                if repl.get("master_link_status") != "up" or repl.get("master_sync_in_progress") != "0":
                    return f"{p}: replica link {repl.get('master_link_status')}"
            views[p] = sorted(
                (n["id"], n["port"], "master" if "master" in n["flags"] else "slave",
                 n["master"] or "", tuple(n["slots"]))
                for n in nodes
            )
            norm = []
            for shard in shards:
                shard = dict(zip(shard[0::2], shard[1::2])) if isinstance(shard, list) else shard
                members = []
                for node in shard[b"nodes"]:
                    node = dict(zip(node[0::2], node[1::2])) if isinstance(node, list) else node
                    if node.get(b"health") != b"online":
                        return f"{p}: CLUSTER SHARDS says {node.get(b'port')} is {node.get(b'health')}"
                    members.append((node[b"id"], node[b"port"], node[b"role"]))
                norm.append((tuple(shard[b"slots"]), tuple(sorted(members))))
            shard_views[p] = sorted(norm)
        first = ports[0]
        for p in ports[1:]:
            if views[p] != views[first]:
                return f"CLUSTER NODES differ between {first} and {p}"
            if shard_views[p] != shard_views[first]:
                return f"CLUSTER SHARDS differ between {first} and {p}"
        return None

    def info_fields(self, port: int, *command: str) -> dict[str, str]:
        """The `field:value` lines of INFO / CLUSTER INFO on one node, as a dict."""
        text = _text(self.call(port, *command))
        return dict(l.split(":", 1) for l in text.split("\r\n") if ":" in l)

    def hand_back(self, master: int, timeout: float = 30.0) -> None:
        """After a planned failover of `master`'s shard: `master` takes its
        slots back (CLUSTER FAILOVER), and this returns once it has them,
        its replicas' ROLE agrees and the cluster is healthy. (CLUSTER
        FAILOVER only starts one: a healthy cluster before it happened would
        not wait for it, and a demoted master's ROLE says "master" a while
        after its cluster role changed, until it dials its new master.)"""
        if self.call(master, "ROLE")[0] != b"master":
            self.call(master, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = [self.call(node, "ROLE") for node in [master] + self.replica_of(master)]
            if roles[0][0] == b"master" and all(r[0] == b"slave" and r[3] == b"connected" for r in roles[1:]):
                break
            time.sleep(0.05)
        self.wait_healthy(timeout=60)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait (bounded) until check_healthy() passes on every node and every
        replica streams its master's writes (check_replicas_streaming)."""
        deadline = time.monotonic() + timeout
        problem = "not checked"
        poked = 0.0
        while time.monotonic() < deadline:
            problem = self.check_healthy() or self.check_replicas_streaming()
            if problem is None:
                return
            if "loading" in problem and time.monotonic() - poked > 1.0:
                # CLUSTER SHARDS calls a replica "loading" while its replication
                # offset is 0, which lasts until its master first writes to the
                # replication stream (a PING every 10 s): write once per master.
                self._poke_replication()
                poked = time.monotonic()
            time.sleep(0.1)
        raise TimeoutError(f"cluster not healthy after {timeout:.0f}s: {problem}")

    def check_replicas_streaming(self, timeout: float = 3.0) -> str | None:
        """None once every replica has applied a write its master made just
        now, else the first replica that lags.

        `master_link_status:up` is not enough before a test kills a master:
        after a diskless full sync, Redis 7.0 holds the replication stream
        back until the replica's next REPLCONF ACK (up to a second later), and
        writes the master acknowledges meanwhile die with it."""
        try:
            for m in self._healthy_view():
                if "master" not in m["flags"] or not m["slots"]:
                    continue
                self._poke(m)
                target = int(self.info_fields(m["port"], "INFO", "replication")["master_repl_offset"])
                for replica in [n["port"] for n in self._healthy_view() if n["master"] == m["id"]]:
                    deadline = time.monotonic() + timeout
                    while True:
                        fields = self.info_fields(replica, "INFO", "replication")
                        if int(fields.get("slave_repl_offset", -1)) >= target:
                            break
                        if time.monotonic() > deadline:
                            return f"replica {replica} at offset {fields.get('slave_repl_offset')}, master {m['port']} at {target}"
                        time.sleep(0.02)
        except (OSError, RespError, TimeoutError, RuntimeError, KeyError, ValueError) as e:
            return f"replication check: {e}"
        return None

    def _poke(self, master: dict) -> None:
        """One write (and its undoing) on a master, into its replication stream."""
        key = key_for_slot(min(master["slots"]), "__cluster_py_poke__")
        self.call(master["port"], "SET", key, "1")
        self.call(master["port"], "DEL", key)

    def _poke_replication(self) -> None:
        try:
            for n in self._healthy_view():
                if "master" in n["flags"] and n["slots"]:
                    self._poke(n)
        except (OSError, RespError, TimeoutError, RuntimeError):
            pass

    def wait_slot_agreement(self, timeout: float = 30.0) -> None:
        """Wait until every live node maps every slot to the same master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                maps = [self.slot_owners(p) for p in self.live_ports()]
                if all(m == maps[0] for m in maps) and 0 not in maps[0]:
                    return
            except (RuntimeError, OSError, RespError):
                pass
            time.sleep(0.1)
        raise TimeoutError("nodes do not agree on the slot map")

    # ---- faults and resharding --------------------------------------------

    def kill(self, port: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send `sig` (default SIGKILL: a crash) to the node on `port` and wait
        (bounded) for it to exit."""
        n = self.nodes[port]
        if n.proc is not None:
            if n.proc.poll() is None:
                n.proc.send_signal(sig)
                try:
                    n.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait(10)
            return
        if n.pid and _pid_alive(n.pid) and "redis-server" in _pid_cmdline(n.pid):
            os.kill(n.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _pid_alive(n.pid):
                time.sleep(0.05)

    def restart(self, port: int, timeout: float = 15.0) -> None:
        """Start a stopped node again with its old nodes.conf (it rejoins)."""
        n = self.nodes[port]
        if self.alive(port):
            raise RuntimeError(f"node {port} is still running")
        self._spawn(n)
        _wait_ping(port, n.proc, time.monotonic() + timeout, n.log)

    def add_master(self, timeout: float = 60.0) -> int:
        """Start one more node and join it as an empty master (redis-cli
        --cluster add-node); returns its port once every node knows it."""
        port = free_cluster_ports(1, exclude=set(self.nodes))[0]
        node = Node(port, os.path.join(self.dir, str(port)), os.path.join(self.dir, f"redis-{port}.log"))
        self.nodes[port] = node
        self._spawn(node)
        _wait_ping(port, node.proc, time.monotonic() + 15, node.log)
        anchor = self.masters[0]
        self.cli(anchor, "--cluster", "add-node", f"{HOST}:{port}", f"{HOST}:{anchor}", timeout=timeout)
        self.n_masters += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Every node knows it, and it knows the cluster is up (a node that
            # still says CLUSTERDOWN refuses the keys a rebalance migrates).
            state = _text(self.call(port, "CLUSTER", "INFO"))
            if "cluster_state:ok" in state and all(
                len(self.cluster_nodes(p)) == len(self.nodes) for p in self.live_ports()
            ):
                return port
            time.sleep(0.1)
        raise TimeoutError(f"node {port} not known to every node after {timeout} s")

    def remove_master(self, port: int, timeout: float = 120.0) -> None:
        """Move every slot off master `port` (rebalance with weight 0), make
        every node forget it (redis-cli --cluster del-node) and stop it."""
        self.empty_master(port, timeout=timeout)
        self.forget_master(port, timeout=timeout)

    def empty_master(self, port: int, timeout: float = 120.0) -> None:
        """Move every slot off master `port` (rebalance with weight 0)."""
        anchor = next(p for p in self.masters if p != port)
        self.cli(anchor, "--cluster", "rebalance", f"{HOST}:{anchor}", "--cluster-weight",
                 f"{self.node_id(port)}=0", timeout=timeout)

    def forget_master(self, port: int, timeout: float = 120.0) -> None:
        """Make every node forget master `port`, which serves no slot any
        more (redis-cli --cluster del-node), and stop it."""
        anchor = next(p for p in self.masters if p != port)
        node_id = self.node_id(port)
        self._wait_done_loading(port, timeout=timeout)
        self.cli(anchor, "--cluster", "del-node", f"{HOST}:{anchor}", node_id, timeout=timeout)
        node = self.nodes.pop(port)
        if node.pid is not None and _pid_alive(node.pid):
            stop_pid(node.pid, proc=node.proc)
        self.n_masters -= 1

    def _wait_done_loading(self, port: int, timeout: float) -> None:
        """A master emptied by a rebalance turns itself into a replica of the
        node that took its last slot (cluster-allow-replica-migration) and
        syncs from it: until the sync is done it answers LOADING, and
        del-node, which resets it, fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.call(port, "INFO", "replication", raise_errors=False)
            if not isinstance(info, RespError):
                text = _text(info)
                if "role:master" in text or ("master_link_status:up" in text and "master_sync_in_progress:0" in text):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"node {port} still syncing after {timeout} s")

    def migrate_slot(self, slot: int, dst_port: int, batch: int = 100, timeout: float = 30.0) -> None:
        """Move `slot` with all its keys from its owner to master `dst_port`, the
        way redis-cli --cluster reshard does, and wait until all nodes agree."""
        src_port = self.node_for_slot(slot)
        if src_port == dst_port:
            return
        src_id, dst_id = self.node_id(src_port), self.node_id(dst_port)
        self.call(dst_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        self.call(src_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        self.migrate_keys(slot, src_port, dst_port, batch=batch)
        self.finish_slot(slot, dst_port, timeout=timeout)

    def migrate_keys(self, slot: int, src_port: int, dst_port: int, keys=None, batch: int = 100) -> int:
        """MIGRATE `keys` (default: every key of the slot on the source) from
        src to dst; returns how many were moved."""
        moved = 0
        if keys is not None:
            keys = list(keys)
            for i in range(0, len(keys), batch):
                part = keys[i : i + batch]
                self.call(src_port, "MIGRATE", HOST, dst_port, "", 0, 5000, "KEYS", *part, timeout=15)
                moved += len(part)
            return moved
        for _ in range(1_000_000):
            part = self.call(src_port, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not part:
                return moved
            self.call(src_port, "MIGRATE", HOST, dst_port, "", 0, 5000, "KEYS", *part, timeout=15)
            moved += len(part)
        raise RuntimeError("slot never emptied")

    def finish_slot(self, slot: int, dst_port: int, timeout: float = 30.0) -> None:
        """CLUSTER SETSLOT slot NODE dst on the destination, then on every other
        master (the source last but one), then wait for agreement."""
        dst_id = self.node_id(dst_port)
        self.call(dst_port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for p in self.masters_including_empty():
            if p != dst_port:
                self.call(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_slot_agreement(timeout)

    def masters_including_empty(self) -> list[int]:
        return [n["port"] for n in self._healthy_view() if "master" in n["flags"]]

    # ---- cluster.json ------------------------------------------------------

    def state(self) -> dict:
        return {
            "dir": self.dir,
            "host": HOST,
            "seeds": self.seeds,
            "ports": self.ports,
            "pids": {str(p): pid for p, pid in self.pids.items()},
            "masters": self.masters,
            "replicas": self.replicas,
        }

    def write_state(self, path: str | None = None) -> str:
        path = path or os.path.join(self.dir, "cluster.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_state(cls, directory: str) -> "Cluster":
        """A handle on a cluster started by `cluster.py start` (its cluster.json)."""
        with open(os.path.join(directory, "cluster.json")) as f:
            st = json.load(f)
        c = cls(directory=directory)
        for p in st["ports"]:
            n = Node(int(p), os.path.join(directory, str(p)), os.path.join(directory, f"redis-{p}.log"))
            n.pid = int(st["pids"][str(p)])
            c.nodes[int(p)] = n
        return c


# Clusters and servers started by this process, stopped at interpreter exit if
# their owner forgot (detached CLI clusters are never registered).
_LIVE: list = []
_LIVE_LOCK = threading.Lock()


def _register(obj) -> None:
    if getattr(obj, "detach", False):
        return
    with _LIVE_LOCK:
        if obj not in _LIVE:
            _LIVE.append(obj)


def _unregister(obj) -> None:
    with _LIVE_LOCK:
        if obj in _LIVE:
            _LIVE.remove(obj)


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for obj in live:
        try:
            obj.stop()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------


def _cmd_start(args) -> int:
    os.makedirs(args.dir, exist_ok=True)
    if os.path.exists(os.path.join(args.dir, "cluster.json")):
        old = Cluster.from_state(args.dir)
        if any(old.alive(p) for p in old.ports):
            print(f"a cluster from {args.dir}/cluster.json is still running; stop it first", file=sys.stderr)
            return 1
    c = Cluster(directory=args.dir, base_port=args.base_port, die_with_parent=False, detach=True)
    c.start(timeout=args.timeout)
    path = c.write_state()
    print(c.seeds)
    print(f"cluster.json: {path}", file=sys.stderr)
    return 0


def _cmd_stop(args) -> int:
    path = os.path.join(args.dir, "cluster.json")
    if not os.path.exists(path):
        print(f"no {path}", file=sys.stderr)
        return 1
    c = Cluster.from_state(args.dir)
    c._own_dir = False
    c.stop()
    still = [p for p in c.ports if c.alive(p) and "redis-server" in _pid_cmdline(c.nodes[p].pid)]
    if still:
        print(f"still running: {still}", file=sys.stderr)
        return 1
    os.remove(path)
    print(f"stopped {len(c.ports)} nodes", file=sys.stderr)
    return 0


def _cmd_run(args) -> int:
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    c = Cluster(directory=args.dir, base_port=args.base_port)
    try:
        c.start(timeout=args.timeout)
        if args.dir:
            c.write_state()
        print(c.seeds, flush=True)
        print(f"masters {c.masters} replicas {c.replicas}; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        c.stop()
        if args.dir:
            try:
                os.remove(os.path.join(args.dir, "cluster.json"))
            except OSError:
                pass
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Local 6-node Redis Cluster (3 masters + 3 replicas) on 127.0.0.1.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start a cluster, write DIR/cluster.json, print the seeds, return")
    p.add_argument("--dir", required=True)
    p.add_argument("--base-port", type=int)
    p.add_argument("--timeout", type=float, default=90.0)
    p = sub.add_parser("stop", help="stop the cluster described by DIR/cluster.json")
    p.add_argument("--dir", required=True)
    p = sub.add_parser("run", help="start a cluster, wait for SIGINT/SIGTERM, stop it")
    p.add_argument("--dir")
    p.add_argument("--base-port", type=int)
    p.add_argument("--timeout", type=float, default=90.0)
    args = ap.parse_args(argv)
    try:
        return {"start": _cmd_start, "stop": _cmd_stop, "run": _cmd_run}[args.cmd](args)
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"cluster.py {args.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
