import ClusterTopology
import RESPWire

#if canImport(Glibc)
    import Glibc
#endif

/// `INFO [section ...]`: the proxy describes itself as the single server its
/// clients think they talk to. `# Cluster` says `cluster_enabled:0`, so
/// clients that sniff it stay in standalone mode; `# Keyspace` is summed over
/// the masters; `# Proxy` has the proxy's own figures.
extension Worker {
    static let proxyVersion = "0.1.0"

    func info(_ command: Command, session: ClientSession) {
        var requested = Set<String>()
        for index in 1..<max(1, command.count) { requested.insert(command.string(index).lowercased()) }
        let everything = requested.isEmpty || !requested.isDisjoint(with: ["default", "all", "everything"])
        func wants(_ section: String) -> Bool { everything || requested.contains(section) }

        var text = ""
        if wants("server") { text += serverSection() }
        // (`blocked_clients` and `rejected_connections`: this worker's now,
        // the others' as of their last publication, at most a second old.
        // redis-cli --stat reads them.)
        var others = wants("clients") || wants("stats") ? shared.workerMetrics : []
        if workerIndex < others.count { others.remove(at: workerIndex) }
        if wants("clients") {
            text += "# Clients\r\nconnected_clients:\(shared.connectedClients)\r\n"
                + "maxclients:\(configuration.maxClients)\r\n"
                + "blocked_clients:\(others.reduce(blockedClients) { $0 + $1.blockedClients })\r\n\r\n"
        }
        if wants("stats") {
            let rejected = others.reduce(metrics.counters.rejectedConnections) { $0 + $1.counters.rejectedConnections }
            text += "# Stats\r\ntotal_connections_received:\(shared.totalConnectionsReceived)\r\n"
                + "total_commands_processed:\(shared.commandsProcessed)\r\n"
                + "rejected_connections:\(rejected)\r\n\r\n"
        }
        // The clients' one server is a master (libraries that find a replica
        // refuse to write to it).
        if wants("replication") { text += "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n" }
        // (ioredis's ready check reads `loading`; a loading master's requests wait.)
        if wants("persistence") { text += "# Persistence\r\nloading:0\r\nasync_loading:0\r\n\r\n" }
        if wants("proxy") { text += proxySection() }
        if wants("cluster") { text += "# Cluster\r\ncluster_enabled:0\r\n\r\n" }
        if requested.contains("nodes") || requested.contains("all") || requested.contains("everything") {
            text += nodesSection()
        }
        let memory = wants("memory")
        let keyspace = wants("keyspace")
        guard memory || keyspace, slotMap != nil, !masterPools.isEmpty else {
            session.replyLocally { Worker.appendInfo(text, resp3: session.resp3, to: $0) }
            return
        }
        let sections = (memory ? ["memory"] : []) + (keyspace ? ["keyspace"] : [])
        // A master known to be down is left out rather than waited for: a
        // plain INFO is many clients' ready check (ioredis sends one on every
        // connect), which must not stall for a shard's whole failover.
        let parts = masterPools.enumerated().filter { !$0.element.isDown }.map { shard, pool in
            let request = ByteBuffer(capacity: 64)
            request.appendCommand((["INFO"] + sections).map { Array($0.utf8) })
            return Part(pool: pool, slot: slotServed(byShard: shard), request: request)
        }
        if parts.isEmpty {
            let summed = (memory ? MemorySummer.sum([]) : "") + (keyspace ? KeyspaceSummer.sum([]) : "")
            session.replyLocally { Worker.appendInfo(text + summed, resp3: session.resp3, to: $0) }
            return
        }
        let parent = recordPool.acquire()
        session.expectReply(parent)
        dispatch(parts, rule: .info(prefix: text, memory: memory, keyspace: keyspace), target: .client(parent), session: session)
    }

    private func serverSection() -> String {
        let uptime = Int((ContinuousClock.now - shared.startedAt).components.seconds)
        return "# Server\r\nredis_version:\(LocalCommands.reportedVersion)\r\nredis_mode:standalone\r\n"
            + "slotproxy_version:\(Worker.proxyVersion)\r\nprocess_id:\(getpid())\r\n"
            + "tcp_port:\(configuration.port)\r\nuptime_in_seconds:\(uptime)\r\nuptime_in_days:\(uptime / 86400)\r\n\r\n"
    }

    private func proxySection() -> String {
        let uptime = Int((ContinuousClock.now - shared.startedAt).components.seconds)
        return "# Proxy\r\nslotproxy_version:\(Worker.proxyVersion)\r\nuptime_in_seconds:\(uptime)\r\n"
            + "workers:\(configuration.effectiveWorkers)\r\nconnected_clients:\(shared.connectedClients)\r\n"
            + "total_commands_processed:\(shared.commandsProcessed)\r\ntopology_epoch:\(shared.topologyEpoch)\r\n"
            + "cluster_masters:\(slotMap?.shards.count ?? 0)\r\ncluster_slots_covered:\(slotMap?.assignedSlotCount ?? 0)\r\n"
            + "cross_slot_transactions:\(configuration.crossSlotTransactions.rawValue)\r\n"
            + "relaxed_transactions_partial:\(shared.relaxedTransactionPartialOutcomes)\r\n"
            + "relaxed_pops_pushed_back:\(shared.relaxedPopsPushedBack)\r\n\r\n"
    }

    /// `INFO nodes`: per node this worker talks to, its role and what was
    /// sent to it over shared connections (so an operator sees the read split).
    private func nodesSection() -> String {
        var roles: [String: String] = [:]
        for shard in slotMap?.shards ?? [] {
            roles[NodeAddress(host: shard.master.host, port: shard.master.port).description] = "master"
            for replica in shard.replicas {
                roles[NodeAddress(host: replica.host, port: replica.port).description] =
                    replica.health == "online" ? "replica" : "replica-unhealthy"
            }
        }
        var text = "# Nodes\r\n"
        let totals = nodeTotals()
        for address in totals.keys.sorted() {
            let node = totals[address]!
            // (Reply times come from the loop's millisecond clock: coarse.)
            let averageMicros = node.requests == 0 ? 0 : node.latencyMsTotal * 1000 / node.requests
            let role = roles[address] ?? "unknown"
            text += "node:\(address),role=\(role),requests=\(node.requests),errors=\(node.errors),"
            text += "avg_latency_us=\(averageMicros),down=\(node.down ? 1 : 0)\r\n"
        }
        return text + "\r\n"
    }

    /// Each node's counters over every worker (`INFO nodes`, `PROXY
    /// CLUSTER`): this worker's now, the others' as last published (at most
    /// a second old). A client's connection lands on one worker; its own
    /// counts alone were a different fraction on each call.
    func nodeTotals() -> [String: NodeTotals] {
        var others = shared.workerMetrics
        if workerIndex < others.count { others.remove(at: workerIndex) }
        var totals = NodeTotals.sum(others)
        for (address, pool) in pools {
            totals[address.description, default: NodeTotals()].add(
                requests: pool.stats.requests, errors: pool.stats.errors, latencyMs: pool.stats.latencyMsTotal,
                down: pool.isDown)
        }
        return totals
    }

    /// A bulk string in RESP2; a verbatim `txt` string in RESP3, as Redis answers `INFO`.
    static func appendInfo(_ text: String, resp3: Bool, to out: ByteBuffer) {
        var body = text
        // (Sections end with a blank line; the reply, like a server's, ends
        // after the last field's CRLF. "\r\n" is one Character.)
        if body.hasSuffix("\r\n\r\n") { body.removeLast() }
        out.appendVerbatimText(Array(body.utf8), resp3: resp3)
    }
}

/// Sums the `# Keyspace` sections of the masters' `INFO keyspace` replies:
/// keys and expires add up per database; `avg_ttl` is weighted by expires
/// (in floating point: TTLs of a century times millions of keys overflow
/// an Int, and a node's numbers must never trap the proxy).
enum MemorySummer {
    /// Fields that add up over the masters.
    static let additive = [
        "used_memory", "used_memory_rss", "used_memory_peak", "used_memory_overhead", "used_memory_startup",
        "used_memory_dataset", "used_memory_lua", "used_memory_scripts", "mem_not_counted_for_evict",
    ]

    /// `# Memory` of the masters (what tools read: `redis-cli --stat`'s
    /// used_memory, BullMQ's maxmemory_policy): sizes summed, `maxmemory` 0
    /// (no limit) if any master has none, the policy of the first.
    static func sum(_ replies: [[UInt8]]) -> String {
        var totals: [String: Double] = [:]
        var maxmemory: Double? = 0
        var policy: String?
        var first = true
        for reply in replies {
            guard let value = RESPValue.decode(reply)?.value, let text = value.string else { continue }
            var fields: [Substring: Substring] = [:]
            for line in text.split(whereSeparator: \.isNewline) {
                let pair = line.split(separator: ":", maxSplits: 1)
                if pair.count == 2 { fields[pair[0]] = pair[1] }
            }
            for name in additive { if let number = fields[Substring(name)].flatMap({ Double($0) }) { totals[name, default: 0] += number } }
            let limit = fields["maxmemory"].flatMap { Double($0) } ?? 0
            maxmemory = limit == 0 || maxmemory == nil ? nil : (first ? limit : maxmemory! + limit)
            if first, let name = fields["maxmemory_policy"] { policy = String(name) }
            first = false
        }
        var text = "# Memory\r\n"
        for name in additive {
            guard let total = totals[name] else { continue }
            text += "\(name):\(Int(exactly: total.rounded()) ?? 0)\r\n"
            if name == "used_memory" || name == "used_memory_rss" || name == "used_memory_peak" {
                text += "\(name)_human:\(human(total))\r\n"
            }
        }
        let limit = maxmemory ?? 0
        text += "maxmemory:\(Int(exactly: limit.rounded()) ?? 0)\r\nmaxmemory_human:\(human(limit))\r\n"
        if let policy { text += "maxmemory_policy:\(policy)\r\n" }
        return text + "\r\n"
    }

    /// As Redis writes sizes: `512B`, `1.50K`, `12.34M`, `2.00G`.
    static func human(_ bytes: Double) -> String {
        guard bytes.isFinite && bytes >= 0 && bytes < 0x1p62 else { return "0B" }  // a node's nonsense never traps
        let units: [(Double, String)] = [(0x1p50, "P"), (0x1p40, "T"), (0x1p30, "G"), (0x1p20, "M"), (0x1p10, "K")]
        for (size, unit) in units where bytes >= size {
            let hundredths = Int((bytes / size * 100).rounded())
            return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)\(unit)"
        }
        return "\(Int(bytes))B"
    }
}

enum KeyspaceSummer {
    static func sum(_ replies: [[UInt8]]) -> String {
        var totals: [String: (keys: Int, expires: Int, ttlWeighted: Double)] = [:]
        for reply in replies {
            guard let value = RESPValue.decode(reply)?.value, let text = value.string else { continue }
            for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix("db") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                var fields: [String: Int] = [:]
                for field in parts[1].split(separator: ",") {
                    let pair = field.split(separator: "=")
                    if pair.count == 2, let number = Int(pair[1]) { fields[String(pair[0])] = number }
                }
                var entry = totals[String(parts[0])] ?? (0, 0, 0)
                entry.keys &+= fields["keys"] ?? 0
                entry.expires &+= fields["expires"] ?? 0
                entry.ttlWeighted += Double(fields["avg_ttl"] ?? 0) * Double(fields["expires"] ?? 0)
                totals[String(parts[0])] = entry
            }
        }
        var text = "# Keyspace\r\n"
        for (db, entry) in totals.sorted(by: { $0.key < $1.key }) {
            let averageTTL = entry.expires > 0 ? Int(exactly: (entry.ttlWeighted / Double(entry.expires)).rounded(.down)) ?? 0 : 0
            text += "\(db):keys=\(entry.keys),expires=\(entry.expires),avg_ttl=\(averageTTL)\r\n"
        }
        return text
    }
}
