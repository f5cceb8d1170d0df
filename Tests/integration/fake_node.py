"""A scripted fake cluster node, for faults a real server cannot be made to
produce on cue (answer LOADING for a while, die in the middle of a reply).

It listens on a free loopback port, says it owns all 16384 slots (CLUSTER
SHARDS; or set `node.topology` to [(first slot, last slot, port), ...] for
a cluster of several fake masters), keeps a dict for GET/SET/MSET/DBSIZE, and
lets a test script every reply:
`node.script = lambda command, conn: ...` returns bytes to send, `None` for
the normal answer, or `FakeNode.CLOSE` to drop the connection there."""

from __future__ import annotations

import socket
import threading

from cluster import RespParser, encode_command  # noqa: F401 (re-exported for tests)


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


class FakeNode:
    CLOSE = object()

    def __init__(self):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.data: dict[bytes, bytes] = {}
        self.topology: list[tuple[int, int, int]] = [(0, 16383, self.port)]
        self.script = lambda command, conn: None
        self.commands: list[list[bytes]] = []  # every data command received, in order
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def seed(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        # shutdown() wakes the threads blocked in accept() and recv().
        for s in [self.server, *self._conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _shards(self) -> bytes:
        out = b"*%d\r\n" % len(self.topology)
        for first, last, port in self.topology:
            node = (b"*14\r\n" + _bulk(b"id") + _bulk(b"%040x" % port) + _bulk(b"port") + b":%d\r\n" % port
                    + _bulk(b"ip") + _bulk(b"127.0.0.1") + _bulk(b"endpoint") + _bulk(b"127.0.0.1")
                    + _bulk(b"role") + _bulk(b"master") + _bulk(b"replication-offset") + b":0\r\n"
                    + _bulk(b"health") + _bulk(b"online"))
            out += (b"*4\r\n" + _bulk(b"slots") + b"*2\r\n:%d\r\n:%d\r\n" % (first, last)
                    + _bulk(b"nodes") + b"*1\r\n" + node)
        return out

    def _answer(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        if name == b"CLUSTER" and len(command) > 1 and command[1].upper() == b"SHARDS":
            return self._shards()
        if name == b"HELLO":
            return b"%1\r\n" + _bulk(b"proto") + b":3\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"CLIENT" and len(command) > 1 and command[1].upper() == b"ID":
            return b":%d\r\n" % id(command)
        if name == b"SET":
            with self.lock:
                self.data[command[1]] = command[2]
            return b"+OK\r\n"
        if name == b"MSET" and len(command) % 2 == 1:
            with self.lock:
                for i in range(1, len(command), 2):
                    self.data[command[i]] = command[i + 1]
            return b"+OK\r\n"
        if name == b"GET":
            with self.lock:
                value = self.data.get(command[1])
            return _bulk(value) if value is not None else b"$-1\r\n"
        if name == b"DBSIZE":
            with self.lock:
                return b":%d\r\n" % len(self.data)
        if name == b"INCR":
            with self.lock:
                value = int(self.data.get(command[1], b"0")) + 1
                self.data[command[1]] = str(value).encode()
            return b":%d\r\n" % value
        return b"-ERR fake node: unknown command '%s'\r\n" % name.lower()

    def _serve(self, conn: socket.socket) -> None:
        parser = RespParser()
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                parser.feed(data)
                out = b""
                while parser.pending():
                    command = parser.get()
                    if command is RespParser.NOTHING:
                        break
                    if command[0].upper() not in (b"CLUSTER", b"HELLO", b"PING"):
                        with self.lock:
                            self.commands.append(command)
                    scripted = self.script(command, conn)
                    if scripted is FakeNode.CLOSE:
                        if out:
                            conn.sendall(out)
                        return
                    out += scripted if scripted is not None else self._answer(command)
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        return
