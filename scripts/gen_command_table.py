#!/usr/bin/env python3
"""Generates Sources/CommandTable/RedisCommands.swift from a live redis-server.

The command table is data that Redis already publishes: `COMMAND` (the same as
`COMMAND INFO` of every command) gives each command's arity, flags, legacy
first/last/step, ACL categories, tips, key specs and subcommands. This script
starts a throwaway standalone redis-server on a free loopback port in a temp
directory, reads that reply, stops the server by its pid, and writes one
`CommandSpec(...)` literal per command, sorted by name, subcommands nested in
their container's `subcommands:` array.

Usage: python3 scripts/gen_command_table.py [--redis-server PATH] [--output PATH]

What COMMAND does not say, and this script adds:

Request policy (where the proxy sends the command), from the
`request_policy:` tip:
  all_shards  -> .allMasters
  all_nodes   -> .allNodes
  multi_shard -> .splitByKey
otherwise a command with key specs -> .singleSlot and a keyless one
-> .anyNode (that includes SCAN, whose tip is `request_policy:special`: its
cursor is per node, so the router treats it on its own). Commands in
LOCAL_COMMANDS are answered by the proxy itself (.local), whatever their tips.

Response policy (how replies from several nodes are merged), from the
`response_policy:` tip:
  agg_sum         -> .sum
  all_succeeded   -> .allSucceeded
  one_succeeded   -> .firstSuccess
  agg_logical_and -> .logicalAnd
  special         -> .special
  agg_min         -> .special  (MSETNX, WAIT: there is no `min` merge)
no tip -> .passthrough, except:
  MGET -> .concatenateInKeyOrder
  a fan-out command (all_shards / all_nodes) without a response tip
  (KEYS, RANDOMKEY, SLOWLOG GET) and SCAN (`request_policy:special`)
  -> .special: one node's reply is not the answer, the router must merge.

Affinity: .pinned for every command flagged `blocking` and for PINNED_COMMANDS
(transactions, subscribe mode, MONITOR, CLIENT TRACKING/REPLY, WAIT, and
XREAD/XREADGROUP, which block with BLOCK); .multiplexed otherwise.

Key finder: Redis falls back to a command-specific `get_keys_function`
(named in its src/commands/*.json, not in COMMAND) when the key specs cannot
find every key or their flags vary; GET_KEYS_FUNCTIONS mirrors that column.
The script fails if a `movablekeys` command has no entry, so a new Redis
version cannot slip one through.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "Sources", "CommandTable", "RedisCommands.swift")

LOCAL_COMMANDS = {
    "ping", "echo", "quit", "select", "hello", "reset", "auth",
    "client|setname", "client|getname", "client|id",
    "client|setinfo",  # Redis 7.2+; absent from 7.0, kept for when the table is regenerated
    # Commands that would change the state of a backend connection many
    # clients share: answered (or refused) by the proxy, never forwarded.
    "asking", "readonly", "readwrite", "sync", "psync", "replconf", "client|no-evict",
    # Client-side caching: the proxy tracks keys per client (Worker+Tracking.swift).
    "client|tracking", "client|caching", "client|getredir", "client|trackinginfo",
}

PINNED_COMMANDS = {
    "multi", "exec", "discard", "watch", "unwatch",
    "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
    "monitor", "client|reply", "wait", "xread", "xreadgroup",
}

REQUEST_TIPS = {
    "request_policy:all_shards": ".allMasters",
    "request_policy:all_nodes": ".allNodes",
    "request_policy:multi_shard": ".splitByKey",
}

RESPONSE_TIPS = {
    "response_policy:agg_sum": ".sum",
    "response_policy:all_succeeded": ".allSucceeded",
    "response_policy:one_succeeded": ".firstSuccess",
    "response_policy:agg_logical_and": ".logicalAnd",
    "response_policy:special": ".special",
    "response_policy:agg_min": ".special",
}

# `get_keys_function` of Redis 7.0's command JSON files, as GetKeysFunction cases.
_NUMKEYS_0_1_2 = ".keyCount(storeKeyIndex: 0, keyCountIndex: 1, firstKeyIndex: 2, keyStep: 1)"
_NUMKEYS_0_2_3 = ".keyCount(storeKeyIndex: 0, keyCountIndex: 2, firstKeyIndex: 3, keyStep: 1)"
_NUMKEYS_1_2_3 = ".keyCount(storeKeyIndex: 1, keyCountIndex: 2, firstKeyIndex: 3, keyStep: 1)"
GET_KEYS_FUNCTIONS = {
    # sintercardGetKeys, lmpopGetKeys, zmpopGetKeys, zunionInterDiffGetKeys
    "sintercard": _NUMKEYS_0_1_2, "lmpop": _NUMKEYS_0_1_2, "zmpop": _NUMKEYS_0_1_2,
    "zunion": _NUMKEYS_0_1_2, "zinter": _NUMKEYS_0_1_2, "zdiff": _NUMKEYS_0_1_2,
    "zintercard": _NUMKEYS_0_1_2,
    # blmpopGetKeys, bzmpopGetKeys, evalGetKeys, functionGetKeys
    "blmpop": _NUMKEYS_0_2_3, "bzmpop": _NUMKEYS_0_2_3,
    "eval": _NUMKEYS_0_2_3, "eval_ro": _NUMKEYS_0_2_3,
    "evalsha": _NUMKEYS_0_2_3, "evalsha_ro": _NUMKEYS_0_2_3,
    "fcall": _NUMKEYS_0_2_3, "fcall_ro": _NUMKEYS_0_2_3,
    # zunionInterDiffStoreGetKeys
    "zunionstore": _NUMKEYS_1_2_3, "zinterstore": _NUMKEYS_1_2_3, "zdiffstore": _NUMKEYS_1_2_3,
    "sort": ".sort",
    "sort_ro": ".sortReadOnly",
    "migrate": ".migrate",
    "georadius": ".georadius", "georadiusbymember": ".georadius",
    "xread": ".xread", "xreadgroup": ".xread",
    # setGetKeys, bitfieldGetKeys: only the key's flags vary, it is always argument 1
    "set": ".firstArgument", "bitfield": ".firstArgument",
}

FLAG_CASES = {
    "write": "write", "readonly": "readonly", "denyoom": "denyoom", "module": "module",
    "admin": "admin", "pubsub": "pubsub", "noscript": "noscript", "blocking": "blocking",
    "loading": "loading", "stale": "stale", "skip_monitor": "skipMonitor",
    "skip_slowlog": "skipSlowlog", "asking": "asking", "fast": "fast", "no_auth": "noAuth",
    "may_replicate": "mayReplicate", "no_mandatory_keys": "noMandatoryKeys",
    "no_async_loading": "noAsyncLoading", "no_multi": "noMulti", "movablekeys": "movablekeys",
    "allow_busy": "allowBusy",
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_command_reply(server_path):
    """Starts a standalone server, returns (version, COMMAND reply), stops it."""
    workdir = tempfile.mkdtemp(prefix="gen-command-table-")
    port = free_port()
    proc = subprocess.Popen(
        [server_path, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, protocol=2, decode_responses=True)
        # Keep the raw reply: redis-py would reshape COMMAND into dicts.
        client.set_response_callback("COMMAND", lambda reply, **_: reply)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        version = client.info("server")["redis_version"]
        reply = client.execute_command("COMMAND")
        client.close()
        return version, reply
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def pairs(flat):
    """A RESP2 map (flat key/value list) as a dict."""
    return dict(zip(flat[0::2], flat[1::2]))


def swift_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def swift_strings(items):
    return "[" + ", ".join(swift_string(i) for i in items) + "]"


def key_spec_literal(raw):
    spec = pairs(raw)
    begin = pairs(spec["begin_search"])
    find = pairs(spec["find_keys"])
    bspec, fspec = pairs(begin["spec"]), pairs(find["spec"])
    if begin["type"] == "index":
        begin_text = ".index(%d)" % bspec["index"]
    elif begin["type"] == "keyword":
        begin_text = ".keyword(%s, startFrom: %d)" % (swift_string(bspec["keyword"]), bspec["startfrom"])
    elif begin["type"] == "unknown":
        begin_text = ".unknown"
    else:
        raise ValueError("unknown begin_search type %r" % begin["type"])
    if find["type"] == "range":
        find_text = ".range(lastKey: %d, keyStep: %d, limit: %d)" % (
            fspec["lastkey"], fspec["keystep"], fspec["limit"])
    elif find["type"] == "keynum":
        find_text = ".keyNum(keyNumIndex: %d, firstKey: %d, keyStep: %d)" % (
            fspec["keynumidx"], fspec["firstkey"], fspec["keystep"])
    elif find["type"] == "unknown":
        find_text = ".unknown"
    else:
        raise ValueError("unknown find_keys type %r" % find["type"])
    flags = spec["flags"]
    incomplete = ", incomplete: true" if "incomplete" in flags else ""
    notes = spec.get("notes")
    literal = "KeySpec(beginSearch: %s, findKeys: %s%s, flags: %s)" % (
        begin_text, find_text, incomplete, swift_strings(flags))
    return notes, literal


def policies(name, flags, tips, has_keys):
    request = None
    for tip in tips:
        if tip in REQUEST_TIPS:
            request = REQUEST_TIPS[tip]
    if request is None:
        request = ".singleSlot" if has_keys else ".anyNode"
    if name in LOCAL_COMMANDS:
        request = ".local"

    response = None
    for tip in tips:
        if tip.startswith("response_policy:"):
            if tip not in RESPONSE_TIPS:
                raise ValueError("%s: unmapped tip %s" % (name, tip))
            response = RESPONSE_TIPS[tip]
    if name == "mget":
        response = ".concatenateInKeyOrder"
    elif response is None:
        fans_out = request in (".allMasters", ".allNodes")
        response = ".special" if fans_out or "request_policy:special" in tips else ".passthrough"

    affinity = ".pinned" if ("blocking" in flags or name in PINNED_COMMANDS) else ".multiplexed"
    return request, response, affinity


def command_literal(entry, indent, seen):
    name, arity, flags, first, last, step, acl, tips, key_specs, subcommands = entry
    seen.add(name)
    for flag in flags:
        if flag not in FLAG_CASES:
            raise ValueError("%s: unknown flag %s" % (name, flag))
    if "movablekeys" in flags and name not in GET_KEYS_FUNCTIONS:
        raise ValueError("%s: movablekeys without a get_keys_function mapping" % name)
    pad = " " * indent
    inner = " " * (indent + 4)
    request, response, affinity = policies(name, flags, tips, bool(key_specs))
    lines = [pad + "CommandSpec("]
    flag_text = "[" + ", ".join("." + FLAG_CASES[f] for f in flags) + "]"
    acl_text = swift_strings(c.lstrip("@") for c in acl)
    lines.append(inner + "name: %s, arity: %d, flags: %s," % (swift_string(name), arity, flag_text))
    lines.append(inner + "aclCategories: %s," % acl_text)
    if first or last or step:
        lines.append(inner + "firstKey: %d, lastKey: %d, keyStep: %d," % (first, last, step))
    if tips:
        lines.append(inner + "tips: %s," % swift_strings(tips))
    if key_specs:
        lines.append(inner + "keySpecs: [")
        for raw in key_specs:
            notes, literal = key_spec_literal(raw)
            if notes:
                lines.append(inner + "    // " + notes)
            if len(inner) + 4 + len(literal) < 120:
                lines.append(inner + "    " + literal + ",")
            else:
                # KeySpec(beginSearch: ..., findKeys: ..., flags: [...]) over three lines.
                head, rest = literal.split("(", 1)
                begin_find, flags = rest[:-1].rsplit(", flags: ", 1)
                lines.append(inner + "    " + head + "(")
                lines.append(inner + "        " + begin_find + ",")
                lines.append(inner + "        flags: " + flags)
                lines.append(inner + "    ),")
        lines.append(inner + "],")
    if name in GET_KEYS_FUNCTIONS:
        lines.append(inner + "getKeysFunction: %s," % GET_KEYS_FUNCTIONS[name])
    tail = "requestPolicy: %s, responsePolicy: %s, affinity: %s" % (request, response, affinity)
    if subcommands:
        lines.append(inner + tail + ",")
        lines.append(inner + "subcommands: [")
        for sub in sorted(subcommands, key=lambda e: e[0]):
            lines.extend(command_literal(sub, indent + 8, seen))
        lines.append(inner + "]")
    else:
        lines.append(inner + tail)
    lines.append(pad + "),")
    return lines


# Rows per generated function. One array literal of every row makes the
# optimizer take minutes in release builds; small functions take seconds.
ROWS_PER_GROUP = 16


def render(version, reply):
    seen = set()
    entries = sorted(reply, key=lambda e: e[0])
    groups = [entries[i:i + ROWS_PER_GROUP] for i in range(0, len(entries), ROWS_PER_GROUP)]
    body = []
    for number, group in enumerate(groups):
        body.append("    private static func rows%d() -> [CommandSpec] {" % number)
        body.append("        [")
        for entry in group:
            body.extend(command_literal(entry, 12, seen))
        body.append("        ]")
        body.append("    }")
        body.append("")
    for name in sorted((LOCAL_COMMANDS | PINNED_COMMANDS) - seen):
        print("note: %s is not a command of redis %s" % (name, version), file=sys.stderr)
    header = [
        "// Generated by scripts/gen_command_table.py from the COMMAND reply of",
        "// redis-server %s (Redis 7.0). Do not edit by hand: rerun the script." % version,
        "// Tests/integration/test_command_table.py compares every row with the live",
        "// server's COMMAND INFO and the key extraction with COMMAND GETKEYS.",
        "//",
        "// Request/response policies, affinity and `getKeysFunction` are derived by the script;",
        "// its docstring says how. Rows come in groups of %d per function: one" % ROWS_PER_GROUP,
        "// literal of every row takes the optimizer minutes.",
        "",
        "extension CommandTable {",
        "    /// Every Redis 7.0 command, sorted by name.",
        "    static let redisCommands: [CommandSpec] = [",
        "        %s," % ", ".join("rows%d()" % n for n in range(len(groups))),
        "    ].flatMap { $0 }",
        "",
    ]
    footer = ["}", ""]
    return "\n".join(header + body + footer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    version, reply = read_command_reply(args.redis_server)
    text = render(version, reply)
    with open(args.output, "w") as f:
        f.write(text)
    print("wrote %d commands to %s" % (len(reply), args.output))


if __name__ == "__main__":
    main()
