import ClusterTopology
import CommandTable
import EventLoop
import RESPWire

#if canImport(Glibc)
    import Glibc
#endif

/// Settings read and changed at run time (`PROXY CONFIG GET/SET`). Setting
/// names and values are the config file's, which the executable knows; it
/// hands the proxy one of these.
public protocol ConfigControl: Sendable {
    /// `(name, value)` of the settings matching a glob pattern, secrets masked.
    func get(matching pattern: String) -> [(String, String)]
    /// Applies one setting to every worker; the error text (`ERR ...`) when
    /// it is invalid or needs a restart.
    func set(_ name: String, to value: String) -> String?
}

/// What the `PROXY AUDIT` counts are about.
enum AuditKind: String, Sendable, CaseIterable {
    /// The proxy answered an error instead of running it (unknown, denied,
    /// unsupported, refused).
    case refused
    /// Keys in several slots, answered `CROSSSLOT` as a cluster node does.
    case crossSlot = "cross-slot"
    /// Keys in several slots, run by the proxy in parts or by emulation.
    case emulated
}

struct AuditKey: Hashable, Sendable {
    var kind: AuditKind
    var command: String
    var client: String
}

/// One worker's part of an answer that needs every worker (`PROXY CLIENTS`,
/// `PROXY AUDIT`).
enum GatheredPart: Sendable {
    case clients([String])
    case audit([AuditKey: Int])
    case killed(Int)
}

enum GatherKind: Sendable {
    /// `PROXY CLIENTS` (no filter) and `CLIENT LIST`.
    case clients(ClientListFilter)
    case audit
    /// `CLIENT KILL`: each worker closes its matching clients.
    case kill(ClientKillFilter)
}

/// `CLIENT LIST TYPE ... | ID ...`: which of the proxy's clients to list.
struct ClientListFilter: Sendable {
    /// Only these ids; nil: any.
    var ids: Set<Int>?
    /// Only subscribers (`TYPE pubsub`) or only the others (`TYPE normal`); nil: both.
    var subscribers: Bool?
    /// `TYPE master`/`replica`: no client of the proxy is either.
    var nothing = false

    /// Parses the arguments after `CLIENT LIST`; the error text otherwise.
    static func parse(_ command: Command) -> Result<ClientListFilter, ClientListFilterError> {
        var filter = ClientListFilter()
        guard command.count > 2 else { return .success(filter) }
        if command.argument(2, equals: "type") && command.count == 4 {
            switch command.string(3).lowercased() {
            case "normal": filter.subscribers = false
            case "pubsub": filter.subscribers = true
            case "master", "replica", "slave": filter.nothing = true
            default: return .failure(ClientListFilterError("ERR Unknown client type '\(command.string(3))'"))
            }
            return .success(filter)
        }
        if command.argument(2, equals: "id") && command.count > 3 {
            var ids = Set<Int>()
            for index in 3..<command.count {
                guard let id = Int(command.string(index)), id > 0 else {
                    return .failure(ClientListFilterError("ERR Invalid client ID"))
                }
                ids.insert(id)
            }
            filter.ids = ids
            return .success(filter)
        }
        return .failure(ClientListFilterError("ERR syntax error"))
    }

    func admits(_ session: ClientSession) -> Bool {
        !nothing && (ids?.contains(session.id) ?? true) && (subscribers.map { $0 == session.isSubscribed } ?? true)
    }
}

struct ClientListFilterError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A `PROXY` command waiting for the other workers' parts.
final class PendingGather {
    let record: RequestRecord
    let kind: GatherKind
    var remaining: Int
    var parts: [GatheredPart] = []
    let resp3: Bool
    init(record: RequestRecord, kind: GatherKind, remaining: Int, resp3: Bool) {
        self.record = record
        self.kind = kind
        self.remaining = remaining
        self.resp3 = resp3
    }
}

extension Worker {
    /// `PROXY <subcommand>`: the proxy's own view and controls, on the RESP
    /// port. Admin only: a restricted user needs `+@admin` (or `+proxy`).
    func proxyCommand(_ command: Command, session: ClientSession) {
        let sub = command.count >= 2 ? command.string(1).lowercased() : "help"
        switch sub {
        case "info":
            session.replyLocally { $0.appendBulk(proxyInfoText()) }
        case "config":
            proxyConfig(command, session: session)
        case "cluster":
            session.replyLocally { $0.appendBulk(proxyClusterText()) }
        case "clients":
            gather(.clients(ClientListFilter()), session: session)
        case "audit":
            if command.count >= 3 && command.argument(2, equals: "reset") {
                audit.removeAll()
                for mailbox in shared.mailboxes where mailbox !== self.mailbox { mailbox.send(.resetAudit) }
                session.replyLocally { $0.append("+OK\r\n") }
            } else {
                gather(.audit, session: session)
            }
        case "refresh":
            shared.requestTopologyRefresh()
            session.replyLocally { $0.append("+OK\r\n") }
        case "help":
            let lines = [
                "PROXY <subcommand> [<arg> ...]. Subcommands are:",
                "INFO -- the proxy's state: version, workers, clients, topology, readiness.",
                "CONFIG GET <pattern> -- settings matching a glob pattern (config file names).",
                "CONFIG SET <name> <value> -- change a setting that needs no restart, in every worker.",
                "CLUSTER -- the slot map and node states as this proxy sees them.",
                "CLIENTS -- connected clients of every worker, like CLIENT LIST.",
                "AUDIT [RESET] -- refused, cross-slot and emulated commands by command and client name.",
                "REFRESH -- re-read the slot map now.",
            ]
            session.replyLocally { $0.appendStatusLines(lines) }
        default:
            session.replyError("ERR unknown subcommand '\(CommandResolver.clipped(command.string(1)))'. Try PROXY HELP.")
        }
    }

    // MARK: INFO, CLUSTER

    private func proxyInfoText() -> String {
        let uptime = Int((ContinuousClock.now - shared.startedAt).components.seconds)
        let ready = shared.workerMetrics.allSatisfy(\.ready)
        var text = "# Proxy\r\nslotproxy_version:\(Worker.proxyVersion)\r\nprocess_id:\(getpid())\r\n"
        text += "uptime_in_seconds:\(uptime)\r\nworkers:\(configuration.effectiveWorkers)\r\n"
        text += "port:\(configuration.port)\r\ntls_port:\(configuration.tlsPort)\r\nadmin_port:\(configuration.adminPort)\r\n"
        text += "connected_clients:\(shared.connectedClients)\r\nmaxclients:\(configuration.maxClients)\r\n"
        text += "total_commands_processed:\(shared.commandsProcessed)\r\n"
        text += "topology_epoch:\(shared.topologyEpoch)\r\ntopology_refreshes:\(shared.topologyRefreshes)\r\n"
        text += "cluster_masters:\(slotMap?.shards.count ?? 0)\r\ncluster_slots_covered:\(slotMap?.assignedSlotCount ?? 0)\r\n"
        text += "ready:\(ready ? 1 : 0)\r\nread_from:\(configuration.readFrom.rawValue)\r\n"
        text += "draining:\(shared.isDraining || shared.isStopping ? 1 : 0)\r\n"
        return text
    }

    private func proxyClusterText() -> String {
        guard let map = slotMap else { return "no slot map yet\n" }
        var text = "slots_covered:\(map.assignedSlotCount) of \(clusterSlotCount)\n"
        let totals = nodeTotals()
        for (index, shard) in map.shards.enumerated() {
            let address = NodeAddress(host: shard.master.host, port: shard.master.port)
            let pool = pools[address]
            let node = totals[address.description] ?? NodeTotals()
            // (Down when any worker has it marked down; requests and errors of every worker.)
            let state = node.down ? "down" : (pool?.hasReadyConnection ?? false) ? "connected" : "idle"
            text += "\(address) master slots=\(slotRanges(of: index, in: map)) state=\(state)"
            text += " requests=\(node.requests) errors=\(node.errors)\n"
            for replica in shard.replicas {
                text += "  \(NodeAddress(host: replica.host, port: replica.port)) replica health=\(replica.health)\n"
            }
        }
        return text
    }

    private func slotRanges(of shard: Int, in map: SlotMap) -> String {
        var ranges: [String] = []
        var start = -1
        for slot in 0...clusterSlotCount {
            let owned = slot < clusterSlotCount && Int(map.shardForSlot[slot]) == shard && map.shardForSlot[slot] != SlotMap.unassigned
            if owned && start < 0 { start = slot }
            if !owned && start >= 0 {
                ranges.append(start == slot - 1 ? "\(start)" : "\(start)-\(slot - 1)")
                start = -1
            }
        }
        return ranges.isEmpty ? "none" : ranges.joined(separator: ",")
    }

    // MARK: CONFIG

    private func proxyConfig(_ command: Command, session: ClientSession) {
        guard let control = shared.configControl else {
            session.replyError("ERR PROXY CONFIG is not available in this process")
            return
        }
        guard command.count >= 3 else {
            session.replyError("ERR wrong number of arguments for 'proxy|config' command")
            return
        }
        if command.argument(2, equals: "get"), command.count == 4 {
            let pairs = control.get(matching: command.string(3))
            session.replyLocally { out in
                out.appendMapHeader(pairs.count, resp3: session.resp3)
                for (name, value) in pairs {
                    out.appendBulk(name)
                    out.appendBulk(value)
                }
            }
        } else if command.argument(2, equals: "set"), command.count == 5 {
            if let error = control.set(command.string(3), to: command.string(4)) {
                session.replyError(error)
                return
            }
            // This worker applies it before the client's next request; the
            // others get it through their mailboxes, within a loop turn.
            reconfigure(shared.configuration)
            session.replyLocally { $0.append("+OK\r\n") }
        } else {
            session.replyError("ERR PROXY CONFIG takes GET <pattern> or SET <name> <value>")
        }
    }

    // MARK: CLIENTS, AUDIT (every worker's part)

    /// Asks every worker for its part; the client's reply waits in its queue
    /// as any other, and is written when the last part is in.
    func gather(_ kind: GatherKind, session: ClientSession) {
        let record = recordPool.acquire()
        session.expectReply(record)
        gatherCounter += 1
        let id = gatherCounter
        // While draining, a worker that has finished no longer answers its
        // mailbox: this worker's part alone, rather than a reply never sent.
        let asked = shared.isDraining ? [workerIndex] : Array(shared.mailboxes.indices)
        let pending = PendingGather(record: record, kind: kind, remaining: asked.count, resp3: session.resp3)
        pendingGathers[id] = pending
        for index in asked {
            let mailbox = shared.mailboxes[index]
            if index == workerIndex {
                gathered(id: id, part: part(of: kind))
            } else {
                mailbox.send(.gather(kind, id: id, origin: workerIndex))
            }
        }
    }

    /// This worker's part of a gather.
    func part(of kind: GatherKind) -> GatheredPart {
        switch kind {
        case .clients(let filter): return .clients(sessions.values.filter(filter.admits).map(describe))
        case .audit: return .audit(audit)
        case .kill(let filter):
            let victims = sessions.values.filter(filter.admits)
            for session in victims {
                // The client that asked gets its reply first, as from Redis.
                if session.id == filter.requester { session.closeWhenDrained() } else { session.close() }
            }
            return .killed(victims.count)
        }
    }

    func gathered(id: Int, part: GatheredPart) {
        guard let pending = pendingGathers[id] else { return }
        pending.parts.append(part)
        pending.remaining -= 1
        guard pending.remaining == 0 else { return }
        pendingGathers.removeValue(forKey: id)
        let reply = ByteBuffer(capacity: 256)
        switch pending.kind {
        case .clients:
            var lines: [String] = []
            for case .clients(let part) in pending.parts { lines += part }
            // In id order, as a server lists them (not as text: id=10 after id=9).
            func id(_ line: String) -> Int { Int(line.dropFirst(3).prefix { $0 != " " }) ?? 0 }
            reply.appendVerbatimText(Array(lines.sorted { id($0) < id($1) }.joined().utf8), resp3: pending.resp3)
        case .kill(let filter):
            var killed = 0
            for case .killed(let count) in pending.parts { killed += count }
            if !filter.oldStyle {
                reply.appendInteger(killed)
            } else if killed > 0 {
                reply.append("+OK\r\n")
            } else {
                reply.appendError("ERR No such client")
            }
        case .audit:
            var counts: [AuditKey: Int] = [:]
            for case .audit(let part) in pending.parts { counts.merge(part, uniquingKeysWith: +) }
            let sorted = counts.sorted {
                ($0.key.kind.rawValue, $0.key.command, $0.key.client) < ($1.key.kind.rawValue, $1.key.command, $1.key.client)
            }
            reply.appendArrayHeader(sorted.count)
            for (key, count) in sorted {
                reply.appendArrayHeader(4)
                reply.appendBulk(key.kind.rawValue)
                reply.appendBulk(key.command)
                reply.appendBulk(key.client)
                reply.appendInteger(count)
            }
        }
        if let session = pending.record.session {
            session.complete(pending.record, reply: reply.readable)
        } else {
            recordPool.release(pending.record)
        }
    }

    /// One client as a line of `CLIENT LIST` / `CLIENT INFO`: every field of
    /// Redis 7.0's, in its order (clients parse them: redis-py's
    /// `client_info()` needs `qbuf-free`, `tot-mem` ...; what the proxy has no
    /// counterpart for is 0), then its worker and the replies it is owed.
    func describe(_ session: ClientSession) -> String {
        let now = loop.turnTime
        let names = CommandNames.bySlot
        let name = session.clientName.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let slot = session.lastCommandSlot
        let last = slot >= 0 && slot < names.count ? names[slot] : "NULL"
        let age = (now - session.connectedAt) / 1000
        let idle = (now - session.lastReadAt) / 1000
        let multi = session.transaction.map { $0.inMulti ? $0.queuedCommands : -1 } ?? -1
        var flags = ""
        if session.isSubscribed { flags += "P" }
        if multi >= 0 { flags += "x" }
        if session.isBlocked { flags += "b" }
        if session.tracking { flags += "t" }
        let output = session.output
        var line = "id=\(session.id) addr=\(Socket.peerAddress(session.fd)) laddr=\(Socket.localAddress(session.fd))"
        line += " fd=\(session.fd) name=\(name) age=\(age) idle=\(idle) flags=\(flags.isEmpty ? "N" : flags)"
        line += " db=\(session.database) sub=\(session.subscribedChannels.count) psub=\(session.subscribedPatterns.count)"
        line += " ssub=\(session.shards?.confirmed.count ?? 0) multi=\(multi)"
        line += " qbuf=\(session.queryBufferBytes) qbuf-free=\(session.queryBufferFree) argv-mem=0 multi-mem=0"
        line += " rbs=\(output.allocatedCapacity) rbp=\(output.allocatedCapacity) obl=\(output.readableBytes)"
        line += " oll=\(session.owedReplies) omem=\(session.unreadBytes) tot-mem=\(session.bufferMemory)"
        line += " events=r\(output.readableBytes > 0 ? "w" : "") cmd=\(last) user=\(session.userName) redir=-1"
        line += " resp=\(session.resp3 ? 3 : 2) worker=\(workerIndex) owed=\(session.owedReplies)\n"
        return line
    }

    /// Counts a command the audit is about, under the client's name.
    func noteAudit(_ kind: AuditKind, _ name: String, session: ClientSession) {
        let client = session.clientName.map { String(decoding: $0, as: UTF8.self) } ?? ""
        var key = AuditKey(kind: kind, command: name, client: client)
        if audit[key] == nil && audit.count >= configuration.auditMaxEntries {
            key = AuditKey(kind: kind, command: "(other)", client: "(other)")
        }
        audit[key, default: 0] += 1
    }
}
