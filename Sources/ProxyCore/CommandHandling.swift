import CommandTable

/// What the proxy does with a command: the router dispatches on it, and the
/// README's compatibility table is printed from it (`slotproxy
/// --compatibility-table`), so the two cannot disagree.
enum CommandHandling: Equatable {
    /// Forwarded as is to the master of its keys' slot (keys must share a
    /// slot); keyless: to any master.
    case bySlot
    /// Keys in several slots are split into one part per slot, merged.
    case split
    /// Sent to every master, replies merged.
    case broadcast
    /// Keyless, about one hash slot given as its first argument
    /// (`CLUSTER COUNTKEYSINSLOT`): sent to that slot's master.
    case bySlotArgument
    /// Keys in several slots: sources gathered with `DUMP`, computed on one
    /// master by a script (see `Worker+Emulation.swift`).
    case emulated
    /// Answered by the proxy itself.
    case local
    /// `SCAN`: walks the masters one after the other.
    case scan
    /// `INFO`: the proxy's own sections and the summed keyspace.
    case info
    /// Blocks: runs on a dedicated connection to the owner of its slot.
    case blocking
    /// Pub/Sub: subscribe mode on a dedicated connection (sharded: one per
    /// master owning the channels).
    case subscribe
    /// `MULTI`/`EXEC`/`DISCARD`/`WATCH`/`UNWATCH` (see `Worker+Transactions.swift`).
    case transaction
    /// `WAIT`: see `Worker+Wait.swift`.
    case wait
    /// Needs a connection of its own; not supported yet.
    case pinned
    /// Never forwarded: `reason` says why.
    case refused(String)
    /// `DEBUG`: refused unless `allow-debug` is set.
    case debug

    /// Whether `handling(of:)` must be asked: the common case (a keyed command
    /// on a shared connection) is known from two fields, without comparing names.
    @inline(__always) static func isPlainBySlot(_ spec: CommandSpec) -> Bool {
        spec.requestPolicy == .singleSlot && spec.affinity == .multiplexed && spec.responsePolicy == .passthrough
    }

    /// Commands that act on one particular node (its role, its slots, its
    /// process): through the proxy they would hit an arbitrary master.
    static let nodeAdministration: Set<String> = [
        "shutdown", "replicaof", "slaveof", "failover", "cluster|setslot", "cluster|meet", "cluster|forget",
        "cluster|reset", "cluster|failover", "cluster|replicate", "cluster|addslots", "cluster|addslotsrange",
        "cluster|delslots", "cluster|delslotsrange", "cluster|flushslots", "cluster|bumpepoch",
        "cluster|set-config-epoch", "cluster|saveconfig", "acl|setuser", "acl|deluser", "acl|load", "acl|save",
        // A node's own client connections (the proxy's shared ones among
        // them); the proxy's clients are listed by CLIENT LIST and closed
        // by CLIENT KILL.
        "client|unblock", "client|pause", "client|unpause",
    ]

    static func of(_ spec: CommandSpec) -> CommandHandling {
        if nodeAdministration.contains(spec.name) {
            return .refused("it acts on one particular node: run it against that node")
        }
        switch spec.name {
        case "debug": return .debug
        case "scan": return .scan
        case "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ssubscribe", "sunsubscribe": return .subscribe
        case "multi", "exec", "discard", "watch", "unwatch": return .transaction
        case "wait": return .wait
        case "info": return .info
        case "slowlog|get", "slowlog|len", "slowlog|reset", "slowlog|help": return .local
        case "client|info", "client|list", "client|kill": return .local
        case "client|no-evict": return .refused("its backend connections are shared by many clients")
        // One standalone master, as `INFO replication` says (a random master's
        // ROLE would name one of its replicas, and its offset).
        case "role": return .local
        // The client's own user, not the proxy's backend connection's.
        case "acl|whoami": return .local
        case "cluster|slots", "cluster|shards", "cluster|nodes", "cluster|myid": return .local
        // Each master saves, counts and lists only its own: one random
        // master's answer is a fraction of the cluster's.
        case "bgsave", "save", "bgrewriteaof", "lastsave": return .broadcast
        case "pubsub|numsub", "pubsub|shardnumsub", "pubsub|numpat", "pubsub|channels", "pubsub|shardchannels":
            return .broadcast
        case "cluster|countkeysinslot", "cluster|getkeysinslot": return .bySlotArgument
        default: break
        }
        switch spec.requestPolicy {
        case .local: return .local
        case .allMasters, .allNodes:
            switch spec.responsePolicy {
            case .sum, .allSucceeded, .passthrough, .logicalAnd, .firstSuccess: return .broadcast
            case .special where spec.name == "keys" || spec.name == "randomkey": return .broadcast
            default:
                return spec.affinity == .pinned ? .pinned : .refused("cluster-wide reply merging not implemented yet")
            }
        case .splitByKey where spec.responsePolicy != .special:
            return .split
        default:
            if spec.affinity == .pinned
                && (spec.flags.contains(.blocking) || spec.name == "xread" || spec.name == "xreadgroup")
            {
                return .blocking
            }
            if Worker.emulatedCommands.contains(spec.name) { return .emulated }
            return spec.affinity == .pinned ? .pinned : .bySlot
        }
    }

    /// One line of the compatibility table.
    static func describe(_ spec: CommandSpec) -> String {
        if Worker.listMoveCommands.contains(spec.name) {
            return describeHandling(spec)
                + "; with `cross-slot-transactions: relaxed`, across slots: popped, then pushed (not atomic)"
        }
        if Worker.popAcrossSlotsCommands.contains(spec.name) {
            return describeHandling(spec)
                + "; with `cross-slot-transactions: relaxed`, across slots: keys tried in order, then blocked on every slot's master, the first element wins (not atomic)"
        }
        return describeHandling(spec)
    }

    private static func describeHandling(_ spec: CommandSpec) -> String {
        let multiKey = spec.keyStep > 0 && (spec.lastKey < 0 || spec.lastKey > spec.firstKey)
        let severalKeys = multiKey || spec.keySpecs.count > 1 || spec.flags.contains(.movablekeys)
        switch of(spec) {
        case .bySlot:
            if spec.keySpecs.isEmpty && spec.firstKey == 0 { return "forwarded to any master" }
            if spec.name == "sort" || spec.name == "sort_ro" {
                return
                    "forwarded by slot; keys in several slots (`STORE`): `CROSSSLOT`; `BY`/`GET` patterns only as far as a cluster node allows them (Redis 7.0 refuses them all)"
            }
            if spec.runsScript {
                return
                    "forwarded by slot; keys in several slots: `CROSSSLOT`; no keys (`numkeys` 0): to any master, in turn"
            }
            if severalKeys { return "forwarded by slot; keys in several slots: `CROSSSLOT`" }
            return "forwarded by slot"
        case .split:
            switch spec.responsePolicy {
            case .concatenateInKeyOrder: return "split by slot, values merged in key order"
            case .sum: return "split by slot, counts summed"
            default: return "split by slot, `OK` when every part succeeded"
            }
        case .bySlotArgument: return "sent to the master of the slot it names"
        case .broadcast:
            if spec.name == "flushall" || spec.name == "flushdb" {
                return "sent to every master, `OK` when all succeed; needs `allow-flush: true`"
            }
            switch Worker.broadcastMerge(byName: spec.name) {
            case .minimum?: return "sent to every master, the smallest (oldest) reply"
            case .sum?: return "sent to every master, replies summed"
            case .sumPairs?:
                return "sent to every master, counts summed per channel (a keyspace notification channel's: the most on one master)"
            case .union?: return "sent to every master, names merged without repeats"
            default: break
            }
            switch spec.responsePolicy {
            case .sum: return "sent to every master, replies summed"
            case .logicalAnd: return "sent to every master, true only where every master says so"
            case .firstSuccess: return "sent to every master, first success returned"
            case .special where spec.name == "keys": return "sent to every master, replies concatenated"
            case .special: return "sent to every master, one non-empty reply picked at random"
            default: return "sent to every master, succeeds when all succeed"
            }
        case .emulated where Worker.destinationArgument(of: spec.name) != nil:
            return "emulated across slots: sources gathered, stored by a script on the destination's master"
        case .emulated: return "emulated across slots: sources gathered, computed on one master by a script"
        case .local where spec.name.hasPrefix("cluster|"):
            return "answered by the proxy: itself as the one node serving all 16384 slots"
        case .local: return "answered by the proxy"
        case .scan: return "walks every master in turn (cursor encodes master and position)"
        case .info: return "answered by the proxy: its own sections, keyspace summed over masters"
        case .blocking:
            let crossSlot = severalKeys ? "; keys in several slots: `CROSSSLOT`" : ""
            if spec.name == "xread" || spec.name == "xreadgroup" {
                return
                    "with `BLOCK`: on a dedicated connection to the owner of its slot; without: forwarded by slot; streams in several slots: read per slot, merged in the client's order (with `BLOCK`: blocked on each slot's master, the first to answer wakes the others; not atomic)"
            }
            return "on a dedicated connection to the owner of its slot (never stalls shared connections)\(crossSlot)"
        case .subscribe:
            if spec.name == "ssubscribe" {
                return "subscribe mode; one dedicated connection per master owning the channels' slots, counts kept as one server's; follows slot migrations"
            }
            return spec.name.hasSuffix("unsubscribe")
                ? "answered by the proxy outside subscribe mode; inside, sent to the subscription's connection"
                : "subscribe mode on a dedicated connection to one master; messages and replies streamed as Redis sends them"
        case .transaction:
            return "binds the client to a pooled dedicated connection to the transaction's master until EXEC/DISCARD/UNWATCH"
        case .wait:
            return "every master, each on a dedicated connection after a 1 ms scratch write; the smallest count"
        case .pinned: return "not yet (an error says so): needs a backend connection of the client's own"
        case .refused(let reason): return "refused: \(reason)"
        case .debug: return "refused unless `allow-debug: yes`; then `DEBUG OBJECT key` by slot, the rest to any master"
        }
    }

    /// The README's table: every command and subcommand of the table, in order.
    static func compatibilityTable() -> String {
        var lines = ["| command | handling |", "|---|---|"]
        for spec in CommandTable.all {
            let rows = spec.subcommands.isEmpty ? [spec] : spec.subcommands
            for row in rows {
                let name = String(row.name.map { $0 == "|" ? " " : $0 }).uppercased()
                lines.append("| `\(name)` | \(describe(row)) |")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Entry point for the executable's `--compatibility-table`.
public enum CompatibilityTable {
    public static func markdown() -> String { CommandHandling.compatibilityTable() }
}
