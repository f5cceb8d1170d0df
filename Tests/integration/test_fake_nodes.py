"""Retry semantics against a scripted fake node (faults a real server cannot
produce on cue): what is retried, what is not, and what the client hears
(issue 5, DESIGN.md "Redirects, topology and failover")."""

from __future__ import annotations

import time

from fake_node import FakeNode
from harness import RespError, is_status


def test_loading_and_tryagain_are_retried_until_the_node_serves(proxy_factory):
    with FakeNode() as node:
        refusals = {"n": 0}

        def script(command, conn):
            if command == [b"GET", b"k"] and refusals["n"] < 4:
                refusals["n"] += 1
                return b"-LOADING Redis is loading the dataset in memory\r\n" if refusals["n"] % 2 else \
                    b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
            return None

        node.script = script
        node.data[b"k"] = b"v"
        proxy = proxy_factory(seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            assert c.command("GET", "k") == b"v"
        assert refusals["n"] == 4


def test_transient_errors_give_up_after_the_failover_timeout(proxy_factory):
    with FakeNode() as node:
        node.script = lambda command, conn: (
            b"-CLUSTERDOWN The cluster is down\r\n" if command == [b"GET", b"k"] else None)
        proxy = proxy_factory("--failover-timeout-ms", "700", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            started = time.monotonic()
            reply = c.command("GET", "k")
            waited = time.monotonic() - started
        assert isinstance(reply, RespError) and reply.message.startswith("CLUSTERDOWN"), reply
        # (Past the timeout the client gets the node's own last answer.)
        assert 0.6 <= waited <= 3, waited


def test_connection_dying_mid_pipeline(proxy_factory):
    """The node drops the connection after reading a pipeline: the write in
    flight gets "may or may not have run" (never sent twice), the reads are
    sent again on a new connection and answered."""
    with FakeNode() as node:
        node.data[b"r"] = b"read-me"
        dropped = {"done": False}

        def script(command, conn):
            if command[0].upper() == b"INCR" and not dropped["done"]:
                dropped["done"] = True
                return FakeNode.CLOSE  # INCR received (maybe run), no reply
            return None

        node.script = script
        proxy = proxy_factory(seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            replies = c.pipeline([("GET", "r"), ("INCR", "n"), ("GET", "r"), ("GET", "r")])
        assert replies[0] == b"read-me"
        assert isinstance(replies[1], RespError) and "may or may not have run" in replies[1].message, replies
        assert replies[2:] == [b"read-me", b"read-me"]
        # The INCR reached the node once only.
        assert [c for c in node.commands if c[0].upper() == b"INCR"] == [[b"INCR", b"n"]]
