"""The command table and its key extraction, checked against a live redis-server.

Runs the commandtable-tool binary (env COMMANDTABLE_TOOL, else
.build/debug/commandtable-tool under the repo root; this test builds nothing):

(a) `dump` must agree with the live `COMMAND INFO` on every command and every
    subcommand: the same names, arity, flags, first/last/step, ACL categories,
    tips and key specs;
(b) `getkeys` must find the same keys as the live `COMMAND GETKEYS` for a set
    of commands chosen to reach every key spec shape and every command-specific
    key function, their odd corners included.

A missing redis-server or tool is a failure, not a skip.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import redis

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneRedis:
    """One redis-server on a free loopback port in its own temp dir, no persistence."""

    def __init__(self):
        self.server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(self.server, os.X_OK):
            pytest.fail("redis-server not found (install Debian's redis-server)")
        self.dir = tempfile.mkdtemp(prefix="cmdtable-redis-")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, protocol=2, decode_responses=True)
        # Raw replies: redis-py would reshape COMMAND INFO into dicts.
        self.client.set_response_callback("COMMAND", lambda reply, **_: reply)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("redis-server did not start on port %d" % self.port)
                time.sleep(0.05)

    def stop(self):
        self.client.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    instance = StandaloneRedis()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def tool():
    path = os.environ.get("COMMANDTABLE_TOOL") or os.path.join(REPO_ROOT, ".build", "debug", "commandtable-tool")
    if not os.path.isabs(path):
        path = os.path.join(REPO_ROOT, path)
    if not os.access(path, os.X_OK):
        pytest.fail("commandtable-tool not found at %s (swift build --product commandtable-tool)" % path)
    return path


def _pairs(flat):
    return dict(zip(flat[0::2], flat[1::2]))


def _key_spec(raw):
    """A COMMAND INFO key spec in the tool's shape; notes are prose, left out."""
    spec = _pairs(raw)
    begin, find = _pairs(spec["begin_search"]), _pairs(spec["find_keys"])
    return {
        "flags": spec["flags"],
        "begin_search": {"type": begin["type"], "spec": _pairs(begin["spec"])},
        "find_keys": {"type": find["type"], "spec": _pairs(find["spec"])},
    }


def _live_row(entry):
    name, arity, flags, first, last, step, acl, tips, key_specs, subcommands = entry
    return {
        "name": name, "arity": arity, "flags": sorted(flags),
        "first_key": first, "last_key": last, "step": step,
        "acl_categories": acl, "tips": tips,
        "key_specs": [_key_spec(k) for k in key_specs],
        "subcommands": sorted(sub[0] for sub in subcommands),
    }


def _tool_row(row):
    compared = {k: row[k] for k in ("name", "arity", "first_key", "last_key", "step",
                                    "acl_categories", "tips", "key_specs")}
    compared["flags"] = sorted(row["flags"])
    compared["subcommands"] = sorted(sub["name"] for sub in row["subcommands"])
    return compared


def _flatten(rows, key):
    out = {}
    for row in rows:
        out[row[0] if key is None else row[key]] = row
        out.update(_flatten(row[9] if key is None else row["subcommands"], key))
    return out


def test_dump_matches_command_info(server, tool):
    dump = json.loads(subprocess.run([tool, "dump"], check=True, capture_output=True, text=True).stdout)
    # COMMAND LIST names subcommands too (`object|encoding`); COMMAND COUNT does not.
    all_names = server.client.execute_command("COMMAND", "LIST")
    names = [name for name in all_names if "|" not in name]
    assert len(names) == server.client.execute_command("COMMAND", "COUNT")
    live_top = server.client.execute_command("COMMAND", "INFO", *names)

    live = _flatten(live_top, None)
    ours = _flatten(dump, "name")
    assert sorted(row["name"] for row in dump) == sorted(names)
    assert set(live) == set(all_names)
    assert set(ours) == set(live), "names differ: only ours %s, only live %s" % (
        sorted(set(ours) - set(live)), sorted(set(live) - set(ours)))
    assert len(live) > 300  # subcommands included

    mismatches = []
    for name in sorted(live):
        expected, actual = _live_row(live[name]), _tool_row(ours[name])
        if expected != actual:
            fields = [k for k in expected if expected[k] != actual[k]]
            mismatches.append("%s: %s live=%r ours=%r" % (
                name, fields, [expected[f] for f in fields], [actual[f] for f in fields]))
    assert not mismatches, "\n".join(mismatches)


def _resp(value) -> bytes:
    """A decoded COMMAND reply back as RESP2 (strings as bulk strings)."""
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(_resp(v) for v in value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_rows_learned_from_command_match_the_table(server, tool):
    """Commands the table lacks (newer Redis, modules) are learned from a
    node's COMMAND reply at start-up. Read that way, every 7.0 command must
    come out as the built-in table has it, key specs and routing included."""
    raw = _resp(server.client.execute_command("COMMAND"))
    learned = json.loads(subprocess.run([tool, "learn"], input=raw, check=True, capture_output=True).stdout)
    dump = json.loads(subprocess.run([tool, "dump"], check=True, capture_output=True, text=True).stdout)
    ours, theirs = _flatten(dump, "name"), _flatten(learned, "name")
    assert set(theirs) == set(ours)
    mismatches = []
    for name in sorted(ours):
        expected, actual = _tool_row(ours[name]), _tool_row(theirs[name])
        # Where a node's reply says it, routing too (the table's hand-made
        # exceptions are not for learned rows: commands answered by the proxy,
        # MGET's merge in key order).
        if ours[name]["request_policy"] != "local" and ours[name]["response_policy"] != "concatenateInKeyOrder":
            expected["request_policy"], actual["request_policy"] = ours[name]["request_policy"], theirs[name]["request_policy"]
        if expected != actual:
            fields = [k for k in expected if expected[k] != actual[k]]
            mismatches.append("%s: %s table=%r learned=%r" % (
                name, fields, [expected[f] for f in fields], [actual[f] for f in fields]))
    assert not mismatches, "\n".join(mismatches)


# Commands for COMMAND GETKEYS: every key spec shape (index, keyword forwards and
# backwards, range with lastkey/keystep/limit, keynum), every command-specific
# key function and its corners, subcommands, and arity errors.
GETKEYS_CASES = [
    # plain index + range
    ["GET", "k"], ["get", "k"], ["SET", "k", "v"], ["SET", "k", "v", "GET"], ["SET", "k", "v", "EX", "10", "NX"],
    ["INCR", "n"], ["APPEND", "k", "v"], ["GETRANGE", "k", "0", "-1"], ["SETRANGE", "k", "0", "x"],
    ["HSET", "h", "f", "v", "f2", "v2"], ["HGETALL", "h"], ["LPUSH", "l", "a", "b"], ["LRANGE", "l", "0", "-1"],
    ["SADD", "s", "m"], ["ZADD", "z", "1", "m"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    ["XADD", "x", "*", "f", "v"], ["XRANGE", "x", "-", "+"], ["PFADD", "p", "a"], ["SETBIT", "b", "7", "1"],
    ["BITFIELD", "b", "GET", "u8", "0"], ["BITFIELD", "b", "SET", "u8", "0", "1"], ["BITFIELD_RO", "b", "GET", "u8", "0"],
    ["EXPIRE", "k", "10"], ["TTL", "k"], ["TYPE", "k"], ["DUMP", "k"], ["RESTORE", "k", "0", "x"],
    ["GEOADD", "g", "13.3", "38.1", "m"], ["GEOSEARCH", "g", "FROMMEMBER", "m", "BYRADIUS", "10", "km"],
    # several keys, steps and negative lastkey
    ["DEL", "a", "b", "c"], ["EXISTS", "a", "a"], ["UNLINK", "a"], ["TOUCH", "a", "b"],
    ["MGET", "a", "b", "c"], ["MSET", "a", "1", "b", "2", "c", "3"], ["MSET", "a", "1", "b"],
    ["MSETNX", "a", "1", "b", "2"], ["RENAME", "a", "b"], ["RENAMENX", "a", "b"], ["COPY", "a", "b", "REPLACE"],
    ["SMOVE", "a", "b", "m"], ["LMOVE", "a", "b", "LEFT", "RIGHT"], ["RPOPLPUSH", "a", "b"],
    ["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], ["BRPOPLPUSH", "a", "b", "0"],
    ["BLPOP", "a", "b", "0"], ["BRPOP", "a", "0"], ["BZPOPMIN", "a", "b", "1.5"],
    ["SINTER", "a", "b"], ["SUNIONSTORE", "d", "a", "b"], ["SDIFFSTORE", "d", "a"], ["PFMERGE", "d", "a", "b"],
    ["PFCOUNT", "a", "b"], ["BITOP", "AND", "d", "a", "b"], ["BITOP", "NOT", "d", "a"],
    ["ZRANGESTORE", "d", "z", "0", "-1"], ["GEOSEARCHSTORE", "d", "g", "FROMMEMBER", "m", "BYBOX", "1", "1", "km"],
    ["LCS", "a", "b"], ["WATCH", "a", "b"],
    # keynum: EVAL family, functions, *MPOP, SINTERCARD, ZUNION family
    ["EVAL", "return 1", "0"], ["EVAL", "s", "0", "x"], ["EVAL", "s", "2", "a", "b", "x"], ["EVAL", "s", "1"],
    ["EVAL", "s", "3", "a", "b"], ["EVAL", "s", "-1", "a"], ["EVAL", "s", "01", "a"], ["EVAL", "s", "+1", "a"],
    ["EVAL", "s", " 1", "a"], ["EVAL", "s", "1x", "a"], ["EVAL", "s", "4294967297", "a"], ["EVAL", "s", "x", "a"],
    ["EVAL_RO", "s", "1", "a"], ["EVALSHA", "abc", "2", "a", "b"], ["EVALSHA_RO", "abc", "0"],
    ["FCALL", "f", "1", "k", "arg"], ["FCALL_RO", "f", "0"],
    ["LMPOP", "2", "a", "b", "LEFT"], ["LMPOP", "3", "a", "b", "LEFT"], ["LMPOP", "4", "a", "b", "LEFT"],
    ["BLMPOP", "0", "2", "a", "b", "RIGHT", "COUNT", "2"], ["ZMPOP", "1", "z", "MIN"], ["BZMPOP", "0", "2", "a", "b", "MAX"],
    ["SINTERCARD", "2", "a", "b"], ["SINTERCARD", "1", "a", "LIMIT", "3"], ["ZINTERCARD", "2", "a", "b"],
    ["ZUNION", "2", "a", "b", "WITHSCORES"], ["ZUNION", "2", "a"], ["ZINTER", "1", "a"], ["ZDIFF", "2", "a", "b"],
    ["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"], ["ZUNIONSTORE", "d", "+2", "a", "b"],
    ["ZINTERSTORE", "d", "1", "a"], ["ZDIFFSTORE", "d", "3", "a", "b"],
    # keyword: XREAD / XREADGROUP ... STREAMS
    ["XREAD", "STREAMS", "a", "0"], ["XREAD", "COUNT", "2", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"],
    ["XREAD", "STREAMS", "a", "b", "0"], ["XREAD", "streams", "a"], ["XREAD", "COUNT", "streams", "STREAMS", "a", "0"],
    ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"],
    ["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "NOACK", "STREAMS", "a", "b", ">", ">"],
    # keyword: GEORADIUS ... STORE / STOREDIST
    ["GEORADIUS", "g", "0", "0", "10", "km"], ["GEORADIUS", "g", "0", "0", "10", "km", "STORE", "d"],
    ["GEORADIUS", "g", "0", "0", "10", "km", "storedist", "d"],
    ["GEORADIUS", "g", "0", "0", "10", "km", "STORE", "d1", "STOREDIST", "d2"],
    ["GEORADIUS", "g", "0", "0", "10", "km", "STORE"], ["GEORADIUS_RO", "g", "0", "0", "10", "km"],
    ["GEORADIUSBYMEMBER", "g", "m", "10", "km", "STORE", "d"], ["GEORADIUSBYMEMBER", "g", "m", "10", "km"],
    # SORT / SORT_RO (unknown specs: sortGetKeys, sortROGetKeys)
    ["SORT", "l"], ["SORT", "l", "STORE", "d"], ["SORT", "l", "store", "d1", "STORE", "d2"],
    ["SORT", "l", "BY", "w_*", "LIMIT", "0", "10", "GET", "#", "GET", "o_*", "ALPHA", "DESC", "STORE", "d"],
    ["SORT", "l", "GET", "store", "STORE", "d"], ["SORT", "l", "BY", "store"], ["SORT", "l", "LIMIT", "0", "STORE", "d"],
    ["SORT", "l", "STORE"], ["SORT", "l", "STORE", "limit", "x", "y"], ["SORT_RO", "l", "BY", "x", "STORE", "d"],
    # MIGRATE (incomplete KEYS spec: migrateGetKeys)
    ["MIGRATE", "h", "6379", "k", "0", "1000"], ["MIGRATE", "h", "6379", "", "0", "1000"],
    ["MIGRATE", "h", "6379", "k", "0", "1000", "COPY", "REPLACE"],
    ["MIGRATE", "h", "6379", "", "0", "1000", "KEYS", "a", "b"],
    ["MIGRATE", "h", "6379", "", "0", "1000", "COPY", "REPLACE", "AUTH", "keys", "KEYS", "a", "b", "c"],
    ["MIGRATE", "h", "6379", "", "0", "1000", "AUTH2", "u", "keys", "KEYS", "a"],
    ["MIGRATE", "h", "6379", "k", "0", "1000", "KEYS", "a"], ["MIGRATE", "keys", "6379", "k", "0", "1000"],
    ["MIGRATE", "h", "6379", "", "0", "1000", "KEYS"],
    # subcommands
    ["OBJECT", "ENCODING", "k"], ["OBJECT", "FREQ", "k"], ["MEMORY", "USAGE", "k", "SAMPLES", "5"],
    ["XINFO", "STREAM", "x", "FULL"], ["XGROUP", "CREATE", "x", "g", "$", "MKSTREAM"],
    ["CONFIG", "GET", "maxmemory"], ["CLIENT", "LIST"], ["OBJECT", "HELP"],
    # keyless, pubsub and sharded pubsub
    ["PING", "hi"], ["INFO", "server"], ["DBSIZE", "x"], ["KEYS", "*"], ["SCAN", "0"], ["PUBLISH", "ch", "m"],
    ["SPUBLISH", "ch", "m"], ["SSUBSCRIBE", "a", "b"], ["SUBSCRIBE", "a"],
    # arity errors and unknown commands
    ["GET"], ["GET", "a", "b"], ["OBJECT"], ["OBJECT", "ENCODING"], ["MSET", "a"], ["NOSUCHCOMMAND", "a"],
    ["OBJECT", "NOSUCH", "k"], ["EVAL", "s"],
]


def _live_getkeys(client, words):
    try:
        return client.execute_command("COMMAND", "GETKEYS", *words)
    except redis.ResponseError as error:
        return {"error": str(error)}


def test_getkeys_matches_command_getkeys(server, tool):
    lines = "".join(json.dumps(words) + "\n" for words in GETKEYS_CASES)
    out = subprocess.run([tool, "getkeys"], input=lines, check=True, capture_output=True, text=True).stdout
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == len(GETKEYS_CASES)

    mismatches = []
    for words, ours in zip(GETKEYS_CASES, answers):
        live = _live_getkeys(server.client, words)
        live_error = isinstance(live, dict)
        if isinstance(ours, dict):
            ok = live_error  # unknown command or wrong arity: the server refuses too
        elif live_error:
            # Redis refuses GETKEYS for a command without keys, or when it finds
            # none and the command has keys it must have; we answer [].
            # It also refuses every one-word command (GETKEYS's own arity).
            refused = ("Invalid command" in live["error"] or "Invalid number of arguments" in live["error"])
            ok = ours == [] and not refused
        else:
            ok = ours == live
        if not ok:
            mismatches.append("%s: live=%r ours=%r" % (" ".join(words), live, ours))
    assert not mismatches, "\n".join(mismatches)
    assert len(GETKEYS_CASES) >= 100
