"""Retry semantics against a scripted fake node (faults a real server cannot
produce on cue): what is retried, what is not, and what the client hears
(issue 5, DESIGN.md "Redirects, topology and failover")."""

from __future__ import annotations

import time

from fake_node import FakeNode
from harness import RespError, encode_command, is_status, key_hash_slot


def _refuse_once(refused_command, error):
    """A node script that answers `refused_command` with `error` the first
    time, and every command normally."""
    refused = {"done": False}

    def script(command, conn):
        if command == refused_command and not refused["done"]:
            refused["done"] = True
            return error
        return None

    return script


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


def test_a_loading_node_retries_a_whole_pipeline_in_order(proxy_factory):
    """LOADING refuses every request: a pipeline's requests for one slot are
    all retried, in order, none handed the raw error (only TRYAGAIN, where a
    later request may have run, gives the earlier one its error)."""
    with FakeNode() as node:
        loading = {"until": time.monotonic() + 0.5}

        def script(command, conn):
            if command[0].upper() in (b"SET", b"GET") and time.monotonic() < loading["until"]:
                return b"-LOADING Redis is loading the dataset in memory\r\n"
            return None

        node.script = script
        proxy = proxy_factory("--workers", "1", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            loading["until"] = time.monotonic() + 0.5
            replies = c.pipeline([("SET", "k", "1"), ("SET", "k", "2"), ("GET", "k"), ("SET", "k", "3")])
            assert replies == [b"OK", b"OK", b"2", b"OK"], replies
            assert c.command("GET", "k") == b"3"


def test_a_refusal_is_not_retried_after_a_later_request_that_ran(proxy_factory):
    """The node refuses a pipelined SET k 1 (CLUSTERDOWN, LOADING or
    MASTERDOWN) and has recovered by the time it reads SET k 2, which runs.
    A retry of SET k 1 would now run after it: the client gets the node's
    error instead, and k keeps 2. (Both refused: both retried, in order,
    as the test above shows.)"""
    for error in (b"-CLUSTERDOWN The cluster is down\r\n", b"-LOADING Redis is loading the dataset in memory\r\n",
                  b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n"):
        with FakeNode() as node:
            node.script = _refuse_once([b"SET", b"k", b"1"], error)
            proxy = proxy_factory("--workers", "1", seeds=node.seed)
            with proxy.raw(timeout=10) as c:
                replies = c.pipeline([("SET", "k", "1"), ("SET", "k", "2")])
                assert isinstance(replies[0], RespError) and error.startswith(b"-" + replies[0].message.encode()[:8])
                assert is_status(replies[1])
                assert c.command("GET", "k") == b"2"
            with node.lock:
                assert [cmd for cmd in node.commands if cmd[0] == b"SET"] == [[b"SET", b"k", b"1"], [b"SET", b"k", b"2"]]
            proxy.stop()


def test_moved_to_a_new_master_keeps_the_clients_order(proxy_factory):
    """SET k 1 is moved to a node the map does not name yet (a new master
    taking the slot): held for a retry once the map names it. The client's
    SET k 2, sent 80 ms later, waits behind it instead of going straight to
    the new master (which the refreshed map names by then) and running first."""
    slot = key_hash_slot(b"k")
    with FakeNode() as n1, FakeNode() as n2:
        state = {"moved": False, "trigger": False}

        def script(command, conn):
            if command == [b"GET", b"trigger"] and not state["trigger"]:
                state["trigger"] = True  # a refresh under way when SET k 1 is moved
                return b"-MOVED %d 127.0.0.1:%d\r\n" % (key_hash_slot(b"trigger"), n1.port)
            if command[0].upper() == b"SET" and command[1] == b"k":
                if not state["moved"]:
                    state["moved"] = True
                    n1.topology = n2.topology = [(0, slot - 1, n1.port), (slot, slot, n2.port), (slot + 1, 16383, n1.port)]
                return b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, n2.port)
            return None

        n1.script = script
        proxy = proxy_factory("--workers", "1", seeds=n1.seed)
        with proxy.raw(timeout=10) as c:
            c.send(encode_command("GET", "trigger"))
            time.sleep(0.04)
            c.send(encode_command("SET", "k", "1"))
            time.sleep(0.08)
            c.send(encode_command("SET", "k", "2"))
            assert all(is_status(r) for r in c.read_replies(3)[1:])
            assert c.command("GET", "k") == b"2"
        with n2.lock:
            assert [cmd for cmd in n2.commands if cmd[0] == b"SET"] == [[b"SET", b"k", b"1"], [b"SET", b"k", b"2"]]


def test_moved_requests_are_not_overtaken_by_the_clients_next_one(proxy_factory):
    """SET k 1 and SET k 2 reach the old master, which answers both MOVED,
    the second 150 ms late (read in a later read, say). The first MOVED
    patches the slot's owner, so the client's SET k 3 would go straight to
    the new master, ahead of SET k 2: it waits until both moved ones are in."""
    slot = key_hash_slot(b"k")
    with FakeNode() as n1, FakeNode() as n2:
        n1.topology = n2.topology = [(0, 8000, n1.port), (8001, 16383, n2.port)]
        assert slot <= 8000
        moved = b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, n2.port)

        def script(command, conn):
            if command[:2] == [b"SET", b"k"] and command[2] in (b"1", b"2"):
                if command[2] == b"2":
                    time.sleep(0.15)
                conn.sendall(moved)
                return b""
            return None

        n1.script = script
        proxy = proxy_factory("--workers", "1", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=10) as c:
            c.send(encode_command("SET", "k", "1") + encode_command("SET", "k", "2"))
            time.sleep(0.07)
            c.send(encode_command("SET", "k", "3"))
            assert all(is_status(r) for r in c.read_replies(3))
            assert c.command("GET", "k") == b"3"
        with n2.lock:
            assert [cmd[2] for cmd in n2.commands if cmd[0] == b"SET"] == [b"1", b"2", b"3"]


def test_tryagain_is_not_retried_after_a_later_split_command(proxy_factory):
    """MSET {t}a 1 {t}b 1 is answered TRYAGAIN; the client's pipelined
    cross-slot MSET {t}a 2 zz 3 is split, and its part for {t}a runs. A
    retry of the first would now run after it: the client gets TRYAGAIN,
    and {t}a keeps 2 (the split command's record has no slot of its own,
    and was not seen as a later request for the slot)."""
    with FakeNode() as node:
        node.script = _refuse_once([b"MSET", b"{t}a", b"1", b"{t}b", b"1"],
                                   b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n")
        proxy = proxy_factory("--workers", "1", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            replies = c.pipeline([("MSET", "{t}a", "1", "{t}b", "1"), ("MSET", "{t}a", "2", "zz", "3")])
            assert isinstance(replies[0], RespError) and replies[0].message.startswith("TRYAGAIN"), replies
            assert is_status(replies[1])
            assert c.command("GET", "{t}a") == b"2"


def test_a_split_commands_refused_part_is_not_overtaken_by_the_clients_next_request(proxy_factory):
    """MSET {t}a 1 zz 1 is split; the node refuses its part for {t}a
    (CLUSTERDOWN, LOADING), which is retried after a backoff. The client's
    SET {t}a 2, sent 10 ms later, waits behind the retried part instead of
    running first and leaving {t}a at 1."""
    for error in (b"-CLUSTERDOWN The cluster is down\r\n", b"-LOADING Redis is loading the dataset in memory\r\n"):
        with FakeNode() as node:
            node.script = _refuse_once([b"MSET", b"{t}a", b"1"], error)
            proxy = proxy_factory("--workers", "1", seeds=node.seed)
            with proxy.raw(timeout=10) as c:
                c.send(encode_command("MSET", "{t}a", "1", "zz", "1"))
                time.sleep(0.01)
                c.send(encode_command("SET", "{t}a", "2"))
                assert all(is_status(r) for r in c.read_replies(2))
                assert c.command("GET", "{t}a") == b"2"
            with node.lock:
                writes = [cmd[:3] for cmd in node.commands if cmd[0] in (b"MSET", b"SET") and cmd[1] == b"{t}a"]
            assert writes == [[b"MSET", b"{t}a", b"1"]] * 2 + [[b"SET", b"{t}a", b"2"]], writes
            proxy.stop()


def test_a_split_command_waiting_behind_a_retry_does_not_stall_it(proxy_factory):
    """The node, loading, refuses the pipelined SET {t}a 1 and SET {t}a 2;
    the first waits for the second's outcome before its retry. The
    client's MSET {t}a 3 zz 3 arrives after the refusals, so its part for
    {t}a waits behind the retry and cannot have run: the retry must not
    wait for the MSET's outcome too (it would, until the failover timeout)."""
    with FakeNode() as node:
        loading = {"until": 0.0}

        def script(command, conn):
            if command[0] == b"SET" and time.monotonic() < loading["until"]:
                return b"-LOADING Redis is loading the dataset in memory\r\n"
            return None

        node.script = script
        proxy = proxy_factory("--workers", "1", "--failover-timeout-ms", "5000", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            started = time.monotonic()
            loading["until"] = started + 0.03
            c.send(encode_command("SET", "{t}a", "1") + encode_command("SET", "{t}a", "2"))
            time.sleep(0.01)
            c.send(encode_command("MSET", "{t}a", "3", "zz", "3"))
            replies = c.read_replies(3)
            assert all(is_status(r) for r in replies), replies
            assert time.monotonic() - started < 2, "the retry waited for the MSET behind it"
            assert c.command("GET", "{t}a") == b"3"
        with node.lock:
            writes = [cmd[:3] for cmd in node.commands if cmd[0] in (b"MSET", b"SET") and cmd[1] == b"{t}a"]
        assert writes == [[b"SET", b"{t}a", b"1"], [b"SET", b"{t}a", b"2"]] * 2 + [[b"MSET", b"{t}a", b"3"]], writes


def _loading_for(seconds_from_now, *prefixes):
    """A node script answering LOADING, for a while, to commands whose first
    arguments are one of `prefixes` (tuples of bytes); `state["until"]` may be
    moved later."""
    state = {"until": time.monotonic() + seconds_from_now}

    def script(command, conn):
        if any(tuple(command[:len(p)]) == p for p in prefixes) and time.monotonic() < state["until"]:
            return b"-LOADING Redis is loading the dataset in memory\r\n"
        return None

    return state, script


def test_refused_parts_of_two_split_commands_are_retried_in_order(proxy_factory):
    """MSET {t}a 1 zz 1 (or SET {t}a 1) and MSET {t}a 2 yy 2, pipelined; a
    loading node refuses both for {t}a for 60 ms. The first part's retry waits for
    the second command's outcome, whose part is held behind it: refused
    too, so both are retried, in order (not a wait for each other until
    the failover timeout)."""
    for first in (("MSET", "{t}a", "1", "zz", "1"), ("SET", "{t}a", "1")):
        with FakeNode() as node:
            state, node.script = _loading_for(0, (b"MSET", b"{t}a"), (b"SET", b"{t}a"))
            proxy = proxy_factory("--workers", "1", "--failover-timeout-ms", "3000", seeds=node.seed)
            with proxy.raw(timeout=10) as c:
                started = time.monotonic()
                state["until"] = started + 0.06
                c.send(encode_command(*first) + encode_command("MSET", "{t}a", "2", "yy", "2"))
                replies = c.read_replies(2)
                assert all(is_status(r) for r in replies), (first, replies)
                assert time.monotonic() - started < 2
                assert c.command("GET", "{t}a") == b"2"
            proxy.stop()


def test_a_long_refusal_is_not_stalled_by_a_split_command_behind_it(proxy_factory):
    """SET {t}a 1 is refused (LOADING) for 300 ms, several retries; the
    client's MSET {t}a 3 zz 3, sent 10 ms later, waits behind the retry.
    Later refusals must not count it as a request that may have run (it
    was made after the retry began): both succeed once loading ends."""
    with FakeNode() as node:
        state, node.script = _loading_for(0, (b"SET", b"{t}a"), (b"MSET", b"{t}a"))
        proxy = proxy_factory("--workers", "1", "--failover-timeout-ms", "3000", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            started = time.monotonic()
            state["until"] = started + 0.3
            c.send(encode_command("SET", "{t}a", "1"))
            time.sleep(0.01)
            c.send(encode_command("MSET", "{t}a", "3", "zz", "3"))
            replies = c.read_replies(2)
            assert all(is_status(r) for r in replies), replies
            assert time.monotonic() - started < 2
            assert c.command("GET", "{t}a") == b"3"


def test_a_moved_part_meeting_tryagain_is_split_per_key(proxy_factory):
    """MSET {t}a 1 {t}b 1 zz 1: the part for {t} is moved to n2, which is
    importing the slot and answers the two-key part TRYAGAIN. The part is
    split key by key there, as any part meeting TRYAGAIN, though it was
    holding the client's later requests for the slot behind it."""
    slot = key_hash_slot(b"{t}a")
    with FakeNode() as n1, FakeNode() as n2:
        n1.topology = n2.topology = [(0, 100, n2.port), (101, 16383, n1.port)]
        assert slot > 100 and key_hash_slot(b"zz") > 100
        n1.script = lambda command, conn: (
            b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, n2.port) if command[:2] == [b"MSET", b"{t}a"] else None)
        n2.script = lambda command, conn: (
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
            if command[0] == b"MSET" and len(command) > 3 else None)
        proxy = proxy_factory("--workers", "1", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=10) as c:
            c.send(encode_command("MSET", "{t}a", "1", "{t}b", "1", "zz", "1"))
            time.sleep(0.05)  # (the MOVED is in: the SET goes to n2, behind the part)
            c.send(encode_command("SET", "{t}a", "2"))
            replies = c.read_replies(2)
            assert all(is_status(r) for r in replies), replies
        with n2.lock:
            writes = [cmd[:3] for cmd in n2.commands if cmd[0] in (b"MSET", b"SET") and cmd[1] == b"{t}a"]
        # (The per-key retry keeps its place ahead of the client's SET.)
        assert writes == [[b"MSET", b"{t}a", b"1"], [b"MSET", b"{t}a", b"1"], [b"SET", b"{t}a", b"2"]], writes


def test_a_subscriber_whose_connection_dies_before_a_confirmation_is_disconnected(proxy_factory):
    """SUBSCRIBE a is confirmed; the node drops the subscription connection
    on SUBSCRIBE b, unconfirmed. The subscription could move to another
    master (as it does when nothing is owed), but the client would wait
    for b's confirmation forever: it is disconnected, to reconnect."""

    def subscribe_mode(command, conn):
        if command == [b"SUBSCRIBE", b"b"]:
            return FakeNode.CLOSE
        if command[0] == b"SUBSCRIBE":
            return b"".join(b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(ch), ch) for ch in command[1:])
        if command[0] == b"PING" and len(command) > 1:
            return b"*2\r\n$4\r\npong\r\n$%d\r\n%s\r\n" % (len(command[1]), command[1])
        return None

    with FakeNode() as n1, FakeNode() as n2:
        n1.topology = n2.topology = [(0, 8000, n1.port), (8001, 16383, n2.port)]
        n1.script = n2.script = subscribe_mode
        proxy = proxy_factory("--workers", "1", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=5) as c:
            assert c.command("SUBSCRIBE", "a") == [b"subscribe", b"a", 1]
            c.send(encode_command("SUBSCRIBE", "b"))
            replies, closed = c.read_until_closed(timeout=5)
            assert closed and replies == [], replies
        with proxy.raw() as c:
            assert c.command("PING") == b"PONG"


def test_a_redirect_loop_while_a_failover_settles_is_retried_by_the_map(proxy_factory):
    """Two nodes that each say the other owns the slot (their views of a
    failover not yet agreed) send a request back and forth past
    max-redirects: nothing ran, so it is tried again after a backoff, in
    order with the client's next request, until one node serves the slot.
    A loop that never ends gives the client an error after
    failover-timeout-ms."""
    slot = key_hash_slot(b"k")
    with FakeNode() as n1, FakeNode() as n2:
        n1.topology = n2.topology = [(0, 8000, n1.port), (8001, 16383, n2.port)]
        assert slot <= 8000
        loop = {"until": 0.0}

        def bounce_to(other, host):
            def script(command, conn):
                if command[:2] == [b"SET", b"k"] and time.monotonic() < loop["until"]:
                    return b"-MOVED %d %s:%d\r\n" % (slot, host, other.port)
                return None
            return script

        # (n2 names n1 as a node that does not know its own address does:
        # an empty host means the one the request went to.)
        n1.script, n2.script = bounce_to(n2, b"127.0.0.1"), bounce_to(n1, b"")
        proxy = proxy_factory("--workers", "1", "--failover-timeout-ms", "1500", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=10) as c:
            loop["until"] = time.monotonic() + 0.4
            c.send(encode_command("SET", "k", "1"))
            time.sleep(0.05)
            c.send(encode_command("SET", "k", "2"))
            assert c.read_replies(2) == [b"OK", b"OK"]
            assert c.command("GET", "k") == b"2"

            loop["until"] = time.monotonic() + 60
            started = time.monotonic()
            reply = c.command("SET", "k", "3")
            waited = time.monotonic() - started
        # (CLUSTERDOWN when the timeout passes while it waits, the node's
        # MOVED when it passes during a round of redirects.)
        assert isinstance(reply, RespError) and reply.message.split()[0] in ("CLUSTERDOWN", "MOVED"), reply
        assert 1.4 <= waited <= 4, waited
        # Which node served SET k 1 and 2 depends on where the loop ended:
        # the value says they ran once each, in order.
        assert (n1.data.get(b"k") or n2.data.get(b"k")) == b"2"


def test_a_scripts_moved_error_is_not_retried_as_a_redirect_loop(proxy_factory):
    """A script can return any error text, `MOVED` too, after it ran: its
    redirects are followed at most max-redirects times, never retried on
    and on like the cluster's own (each round would run the script again)."""
    slot = key_hash_slot(b"k")
    with FakeNode() as n1, FakeNode() as n2:
        n1.topology = n2.topology = [(0, 8000, n1.port), (8001, 16383, n2.port)]
        runs = {"n": 0}

        def script_to(other):
            def script(command, conn):
                if command[0].upper() == b"EVAL":
                    runs["n"] += 1
                    return b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, other.port)
                return None
            return script

        n1.script, n2.script = script_to(n2), script_to(n1)
        proxy = proxy_factory("--workers", "1", "--failover-timeout-ms", "3000", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=10) as c:
            started = time.monotonic()
            reply = c.command("EVAL", "return redis.error_reply('MOVED ...')", 1, "k")
            waited = time.monotonic() - started
        assert isinstance(reply, RespError) and reply.message.startswith("MOVED"), reply
        assert waited < 1, waited
        assert runs["n"] == 6, runs  # the first try and max-redirects (5) redirects


def test_a_redialled_node_still_loading_is_up_not_refusing(proxy_factory):
    """A node back from a restart answers everything LOADING while it loads,
    the PING that checks a redial too: that is an answer (the node is there),
    not a refused set-up, so the node is not taken down and up again every
    second; the request held for it is retried until the node serves."""
    with FakeNode() as node:
        state = {"drop": False, "loading_until": 0.0}

        def script(command, conn):
            if command == [b"GET", b"k"] and state["drop"]:
                state["drop"] = False
                state["loading_until"] = time.monotonic() + 1.0
                return FakeNode.CLOSE
            if time.monotonic() < state["loading_until"] and command[0].upper() != b"CLUSTER":
                return b"-LOADING Redis is loading the dataset in memory\r\n"
            return None

        node.script = script
        node.data[b"k"] = b"v"
        proxy = proxy_factory("--workers", "1", seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            assert c.command("GET", "k") == b"v"
            state["drop"] = True
            started = time.monotonic()
            assert c.command("GET", "k") == b"v"  # (a read: sent again after the lost connection)
            assert time.monotonic() - started >= 0.9
        log = proxy.log_text()
        assert "refused the connection's set-up" not in log, log
        assert log.count("reachable again") == 1, log


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


def test_writes_held_for_a_dead_master_keep_their_order_through_redials(proxy_factory):
    """Five pipelined SETs of one key are held while their master is down
    and refuses every redial (4 s of them); a new master then takes the
    slots. It runs them in the order sent. (Each refused redial used to put
    the request it carried behind the others, rotating the queue.)"""
    from harness import encode_command

    with FakeNode() as n1, FakeNode() as n2:
        n2.topology = [(0, 16383, n1.port)]
        proxy = proxy_factory("--workers", "1", seeds=f"{n1.seed},{n2.seed}")
        with proxy.raw(timeout=20) as c:
            assert is_status(c.command("SET", "k", "0"))
            n1.close()  # the master dies: refused from now on
            time.sleep(0.3)
            c.send(b"".join(encode_command("SET", "k", str(i)) for i in range(1, 6)))
            time.sleep(4)  # the proxy redials n1 meanwhile
            n2.topology = [(0, 16383, n2.port)]  # a failover: n2 is the master now
            assert all(is_status(r) for r in c.read_replies(5, timeout=15))
            assert c.command("GET", "k") == b"5"
        with n2.lock:
            assert [cmd[2] for cmd in n2.commands if cmd[0] == b"SET"] == [b"1", b"2", b"3", b"4", b"5"]


def test_held_part_waits_for_its_own_master(proxy_factory):
    """A part meant for one master (DBSIZE's, on every master) whose
    connection dropped is read-only, so it is held and sent again: to that
    master once it answers, not to whichever master is reachable first."""
    with FakeNode() as first, FakeNode() as second:
        first.topology = second.topology = [(0, 8191, first.port), (8192, 16383, second.port)]
        first.data = {b"a": b"1"}
        second.data = {b"b": b"1", b"c": b"1"}
        dropped = {"done": False}

        def script(command, conn):
            if command[0].upper() == b"DBSIZE" and not dropped["done"]:
                dropped["done"] = True
                return FakeNode.CLOSE
            return None

        second.script = script
        proxy = proxy_factory(seeds=first.seed)
        with proxy.raw(timeout=10) as c:
            assert c.command("DBSIZE") == 3
        assert [cmd for cmd in first.commands if cmd[0].upper() == b"DBSIZE"] == [[b"DBSIZE"]]
        assert [cmd for cmd in second.commands if cmd[0].upper() == b"DBSIZE"] == [[b"DBSIZE"], [b"DBSIZE"]]


def test_relaxed_transaction_group_is_never_sent_outside_its_multi(proxy_factory):
    """A relaxed EXEC's group for a master that cannot be reached waits for
    it as a group (nothing was written) within failover-timeout-ms, then
    fails (the client hears so per command); its commands are never held
    and sent alone, outside MULTI, to another master."""
    with FakeNode() as first, FakeNode() as second:
        first.topology = second.topology = [(0, 8191, first.port), (8192, 16383, second.port)]
        key = next(f"rt:{i}" for i in range(1000) if key_hash_slot(f"rt:{i}") >= 8192)
        proxy = proxy_factory(
            "--cross-slot-transactions", "relaxed", "--failover-timeout-ms", "1500", seeds=first.seed)
        with proxy.raw(timeout=10) as c:
            assert is_status(c.command("SET", key, "0"))  # (a connection to the second node is up)
            second.close()  # its connections drop; new ones are refused
            started = time.monotonic()
            replies = c.pipeline([("MULTI",), ("SET", key, "1"), ("INCR", key), ("EXEC",)])
            assert 1.4 <= time.monotonic() - started < 5
        assert is_status(replies[0]) and all(is_status(r, b"QUEUED") for r in replies[1:3]), replies
        results = replies[3]
        assert isinstance(results, list) and len(results) == 2, replies
        assert all(isinstance(r, RespError) and "cannot connect" in r.message for r in results), results
        time.sleep(0.5)  # (held requests went out at the next 100 ms tick)
        assert [cmd for cmd in first.commands if cmd[0].upper() in (b"SET", b"INCR", b"EXEC")] == [], first.commands


def test_absurd_bulk_length_from_a_node_fails_the_request_not_the_proxy(proxy_factory):
    """A node announcing a bulk bigger than client-output-limit-hard inside
    a reply the proxy must hold whole: that request gets an error and the
    connection is dropped; nothing is allocated for it and the proxy serves on."""
    with FakeNode() as node:
        node.data[b"k"] = b"v"
        node.script = lambda command, conn: (
            b"*1\r\n$999999999999999999\r\n" if command[0].upper() == b"LRANGE" else None)
        proxy = proxy_factory(seeds=node.seed)
        with proxy.raw(timeout=10) as c:
            reply = c.command("LRANGE", "k", "0", "-1")
            assert isinstance(reply, RespError) and "client-output-limit-hard" in reply.message, reply
            assert c.command("GET", "k") == b"v"
        assert proxy.alive()


def test_a_client_that_left_never_has_a_held_request_run_late(proxy_factory):
    """A request held for a retry (the node answered LOADING) whose client
    has closed its connection is dropped, not sent again: the client may
    have retried it elsewhere already."""
    import socket

    with FakeNode() as node:
        node.script = lambda command, conn: (
            b"-LOADING Redis is loading the dataset in memory\r\n" if command[0].upper() == b"INCR" else None)
        proxy = proxy_factory(seeds=node.seed)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n")
            deadline = time.monotonic() + 5
            while not any(c[0].upper() == b"INCR" for c in node.commands):
                assert time.monotonic() < deadline
                time.sleep(0.01)
        time.sleep(1.0)  # (retries would come every 40 to 1000 ms)
        assert [c for c in node.commands if c[0].upper() == b"INCR"] == [[b"INCR", b"n"]], node.commands


def _bulk(text: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text.encode())


def _array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


# HEXPIRE as a Redis 7.4 node describes it in COMMAND (the built-in table is
# 7.0's), and a CLIENT subcommand of 7.2 that must not be learned.
HEXPIRE_INFO = _array(
    _bulk("hexpire"), b":-6\r\n", _array(b"+write\r\n", b"+denyoom\r\n", b"+fast\r\n"),
    b":1\r\n", b":1\r\n", b":1\r\n", _array(_bulk("@write"), _bulk("@hash"), _bulk("@fast")), _array(),
    _array(_array(
        _bulk("flags"), _array(_bulk("RW"), _bulk("update")),
        _bulk("begin_search"), _array(_bulk("type"), _bulk("index"), _bulk("spec"), _array(_bulk("index"), b":1\r\n")),
        _bulk("find_keys"), _array(_bulk("type"), _bulk("range"), _bulk("spec"),
                                   _array(_bulk("lastkey"), b":0\r\n", _bulk("keystep"), b":1\r\n", _bulk("limit"), b":0\r\n")))),
    _array())
CLIENT_INFO = _array(
    _bulk("client"), b":-2\r\n", _array(), b":0\r\n", b":0\r\n", b":0\r\n", _array(_bulk("@slow")), _array(), _array(),
    _array(_array(_bulk("client|no-touch"), b":3\r\n", _array(b"+noscript\r\n"), b":0\r\n", b":0\r\n", b":0\r\n",
                  _array(_bulk("@slow"), _bulk("@connection")), _array(), _array(), _array())))


def test_commands_the_table_lacks_are_learned_from_the_nodes(proxy_factory):
    """A newer Redis (or a module) has commands the proxy's 7.0 table does
    not: they are read from a node's COMMAND reply at start-up and routed by
    their key specs, instead of answered `unknown command`."""
    with FakeNode() as first, FakeNode() as second:
        first.topology = second.topology = [(0, 8191, first.port), (8192, 16383, second.port)]
        for node in (first, second):
            node.script = lambda command, conn: (
                _array(HEXPIRE_INFO, CLIENT_INFO) if [w.upper() for w in command] == [b"COMMAND"] else None)
        proxy = proxy_factory("--workers", "1", seeds=first.seed)
        deadline = time.monotonic() + 10
        while "learned from" not in proxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "1 command(s) the built-in table lacks, learned from" in proxy.log_text(), proxy.log_tail()
        key = next(f"h{i}" for i in range(100) if key_hash_slot(f"h{i}") >= 8192)
        with proxy.raw() as c:
            reply = c.command("HEXPIRE", key, "10", "FIELDS", "1", "f")
            # Forwarded to the owner of the key's slot (which, being fake, does not know it either).
            assert isinstance(reply, RespError) and reply.message.startswith("ERR fake node"), reply
            assert [cmd for cmd in second.commands if cmd[0].upper() == b"HEXPIRE"] == [
                [b"HEXPIRE", key.encode(), b"10", b"FIELDS", b"1", b"f"]]
            assert not [cmd for cmd in first.commands if cmd[0].upper() == b"HEXPIRE"]
            assert c.command("HEXPIRE", key, "10").message == "ERR wrong number of arguments for 'hexpire' command"
            # A connection's own command is never learned: it would change a shared connection.
            assert "unknown subcommand" in c.command("CLIENT", "NO-TOUCH", "ON").message


def test_a_slow_node_still_answering_is_not_timed_out(proxy_factory):
    """request-timeout-ms is how long a node may owe replies and send
    nothing. A pipeline of 400 GETs a node answers one every 5 ms takes 2 s,
    far past the 500 ms timeout for the last of them, yet the node never
    went quiet: every GET is answered. A node that goes quiet is still timed out."""
    with FakeNode() as node:
        node.data[b"k"] = b"v"
        quiet = {"on": False}

        def script(command, conn):
            if command[0].upper() != b"GET":
                return None
            if quiet["on"]:
                time.sleep(1.5)  # (past the timeout, without a byte)
                return None
            time.sleep(0.005)
            conn.sendall(b"$1\r\nv\r\n")  # each reply as soon as it is ready
            return b""

        node.script = script
        proxy = proxy_factory("--request-timeout-ms", "500", seeds=node.seed)
        with proxy.raw(timeout=30) as c:
            started = time.monotonic()
            assert c.pipeline([("GET", "k")] * 400, timeout=30) == [b"v"] * 400
            assert time.monotonic() - started > 1.5  # (it did take longer than the timeout)
            quiet["on"] = True
            reply = c.command("GET", "k", timeout=10)
            assert isinstance(reply, RespError) and "request-timeout-ms 500" in reply.message, reply
