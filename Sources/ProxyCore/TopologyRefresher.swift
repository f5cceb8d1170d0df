import ClusterTopology
import CommandTable
import EventLoop
import Logging
import RESPWire

#if canImport(Glibc)
    import Glibc
#endif

/// Learns the cluster's slot map and publishes every change to the workers.
///
/// Runs on its own thread with blocking, time-limited connections, so a slow
/// or dead node never stalls a worker loop. It asks the nodes of the last
/// known map first and the configured seeds after them (a seed that is down
/// is skipped), reading `CLUSTER SHARDS` and falling back to `CLUSTER SLOTS`
/// on servers older than 7. It refreshes every `topology-refresh-ms`, and at
/// once when a worker rings the bell (MOVED, lost connection); rings that
/// arrive while a refresh runs are coalesced into the next one.
final class TopologyRefresher {
    /// The settings as of this refresh (a reload may change seeds, timeouts,
    /// credentials and read-from between two refreshes).
    private var configuration: ProxyConfiguration
    private let shared: SharedState
    private let mailboxes: [Mailbox<WorkerMessage>]
    private let logger: Logger
    private var current: SlotMap?
    /// The seeds as they were when `current` was learnt. A reload naming
    /// others (another cluster) makes the next refreshes ask the new seeds
    /// first, and take their view whenever one answers.
    private var seedsOfCurrent: [NodeAddress] = []
    /// Minimum spacing of refreshes, so a burst of redirects costs one query round.
    private let minimumSpacingMs = 100

    init(shared: SharedState, mailboxes: [Mailbox<WorkerMessage>], logger: Logger) {
        self.configuration = shared.configuration
        self.shared = shared
        self.mailboxes = mailboxes
        self.logger = logger
    }

    func run() {
        while !shared.isStopping {
            configuration = shared.configuration
            refreshOnce()
            learnCommands()
            shared.refreshRan()
            resolveHostNames()
            let complete = current?.coversAllSlots ?? false
            let interval = complete ? configuration.topologyRefreshMs : min(configuration.topologyRefreshMs, 500)
            // Jitter, so many proxies started together do not ask in step.
            waitForBell(timeoutMs: interval * Int.random(in: 90...110) / 100)
            usleep(useconds_t(minimumSpacingMs * 1000))
        }
    }

    /// Whether the commands the table lacks were read (once: a cluster's
    /// nodes run one release).
    private var commandsLearned = false

    /// Rows for the commands the built-in table lacks (a newer Redis's, a
    /// module's), from a master's `COMMAND` reply; until one answers, such
    /// commands are unknown, as before.
    private func learnCommands() {
        guard !commandsLearned, let masters = current?.shards.map(\.master) else { return }
        var answer: (RESPValue, ClusterNode)?
        var failures: [String] = []
        for master in masters where answer == nil {
            do {
                answer = (try connect(to: master.host, port: master.port).call("COMMAND"), master)
            } catch {
                failures.append("\(master.endpoint): \(error)")
            }
        }
        guard let (reply, master) = answer else {
            logger.warning("could not read COMMAND from any master: \(failures.joined(separator: "; "))")
            return
        }
        commandsLearned = true
        if case .error(let message) = reply {
            logger.warning("\(master.endpoint) refused COMMAND (\(message)): commands the proxy's table lacks stay unknown")
            return
        }
        var learned: [String: CommandSpec] = [:]
        // (Not the connection's own commands, `CLIENT ...` included: on a
        // shared connection they would change it for everyone. Those the
        // proxy does not know stay unknown.)
        for spec in CommandInfoParser.specs(fromCommandReply: reply)
        where !spec.aclCategories.contains("connection") && spec.name != "client" {
            guard let known = CommandTable.lookup(name: spec.name) else {
                learned[spec.name] = spec
                continue
            }
            for sub in spec.subcommands where !sub.aclCategories.contains("connection") {
                let subName = Array((sub.name.split(separator: "|").last ?? "").utf8)
                if subName.withUnsafeBytes({ known.subcommand($0) }) == nil { learned[sub.name] = sub }
            }
        }
        shared.learn(learned)
        if learned.isEmpty {
            logger.info("every command of \(master.endpoint) is in the built-in table")
        } else {
            logger.info(
                "\(learned.count) command(s) the built-in table lacks, learned from \(master.endpoint): \(learned.keys.sorted().joined(separator: " "))"
            )
        }
    }

    /// Sleeps until the interval ends or a worker asks for a refresh.
    private func waitForBell(timeoutMs: Int) {
        var poller = pollfd(fd: shared.refreshBellRead, events: Int16(POLLIN), revents: 0)
        _ = poll(&poller, 1, Int32(timeoutMs))
        var scratch = [UInt8](repeating: 0, count: 256)
        while read(shared.refreshBellRead, &scratch, scratch.count) > 0 {}
    }

    private func freshestView(among addresses: [NodeAddress], failures: inout [String]) -> SlotMap? {
        var best: SlotMap?
        var bestScore = ViewScore.none
        var compared = 0
        for address in addresses where compared < TopologyRefresher.viewsCompared {
            if shared.isStopping { return nil }
            do {
                let (map, score) = try fetchScored(from: address)
                compared += 1
                if score > bestScore {
                    best = map
                    bestScore = score
                }
            } catch {
                failures.append("\(address): \(error)")
            }
        }
        return best
    }

    private func candidates() -> [NodeAddress] {
        var seen = Set<NodeAddress>()
        var ordered: [NodeAddress] = []
        let known = (current?.allNodes ?? []).map { NodeAddress(host: $0.host, port: $0.port) }
        for address in known + configuration.seeds where seen.insert(address).inserted {
            ordered.append(address)
        }
        return ordered
    }

    /// Asks up to `viewsCompared` reachable nodes and keeps the freshest
    /// view: from a node that says the cluster is up (a node cut off in a
    /// minority says `cluster_state:fail`), with the highest current epoch
    /// (it has seen the latest failover or slot move), then most slots
    /// covered by online masters. Nodes learn of a failover at slightly
    /// different times; this keeps a lagging node's view from winning.
    func refreshOnce() {
        var failures: [String] = []
        var best: SlotMap?
        // The first map, or seeds a reload changed (another cluster, maybe):
        // the seeds' view wins whenever one of them answers.
        let seedsFirst = current == nil || configuration.seeds != seedsOfCurrent
        if seedsFirst {
            best = freshestView(among: configuration.seeds, failures: &failures)
            if best != nil { seedsOfCurrent = configuration.seeds }
        }
        if best == nil {
            let others = seedsFirst ? candidates().filter { !configuration.seeds.contains($0) } : candidates()
            best = freshestView(among: others, failures: &failures)
        }
        guard let map = best else {
            logger.warning("topology refresh failed on every node: \(failures.joined(separator: "; "))")
            if current == nil { shared.notifier.status("waiting for the cluster: no seed or node answered") }
            return
        }
        publish(configuration.readFrom == .master || map.isStandalone ? map : checkingHealth(of: map))
    }

    /// Resolves the nodes named by host name (and those a worker asked
    /// for, met in a `MOVED`), keeping for each the first address that
    /// accepts a connection; again every round, as DNS may change.
    private func resolveHostNames() {
        var nodes = shared.takeUnresolvedNodes()
        for node in current?.allNodes ?? [] { nodes.insert(NodeAddress(host: node.host, port: node.port)) }
        for node in nodes where (try? Socket.resolve(host: node.host, port: node.port, numericOnly: true)) == nil {
            do {
                let probe = try BlockingConnection(host: node.host, port: node.port, timeoutMs: configuration.connectTimeoutMs)
                shared.storeResolved(node, .init(family: probe.connectedTo.family, address: probe.connectedTo.address))
            } catch {
                // Down, or not resolvable now: use the first address, if any.
                if let first = try? Socket.resolve(host: node.host, port: node.port).first {
                    shared.storeResolved(node, .init(family: first.family, address: first.address))
                }
                logger.debug("resolving \(node): \(error)")
            }
        }
    }

    static let viewsCompared = 3

    /// A connection to a node, authenticated with the backend credentials.
    private func connect(to host: String, port: Int) throws -> BlockingConnection {
        let connection = try BlockingConnection(
            host: host, port: port, timeoutMs: configuration.connectTimeoutMs, tls: shared.tls.backend,
            serverName: configuration.backendTLSServerName)
        if let password = configuration.backendPassword {
            let reply =
                if let user = configuration.backendUser {
                    try connection.call("AUTH", user, password)
                } else {
                    try connection.call("AUTH", password)
                }
            if case .error(let message) = reply { throw BlockingConnection.Failure(description: "AUTH refused: \(message)") }
        }
        return connection
    }

    /// For reads from replicas: every node's round trip, and whether each
    /// replica can serve reads (answers, not loading, link to its master up).
    private func checkingHealth(of map: SlotMap) -> SlotMap {
        func check(_ node: ClusterNode) -> ClusterNode {
            var node = node
            let started = ContinuousClock.now
            guard
                let connection = try? connect(to: node.host, port: node.port),
                case .bulkString(let bytes)? = try? connection.call("INFO", "replication", "persistence")
            else {
                node.health = "unhealthy"
                return node
            }
            let elapsed = ContinuousClock.now - started
            let micros = Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000)
            node.roundTrip = max(1, micros / 100)
            let info = String(decoding: bytes, as: UTF8.self)
            let linkDown = !node.isMaster && !info.contains("master_link_status:up")
            if info.contains("loading:1") || linkDown { node.health = "unhealthy" }
            return node
        }
        let shards = map.shards.map { shard in
            Shard(master: check(shard.master), replicas: shard.replicas.map(check), slotRanges: shard.slotRanges)
        }
        return SlotMap(shards: shards)
    }

    struct ViewScore: Comparable {
        var stateOK: Int
        var currentEpoch: Int
        var covered: Int
        var onlineMasters: Int
        static let none = ViewScore(stateOK: -1, currentEpoch: -1, covered: -1, onlineMasters: -1)
        static func < (a: ViewScore, b: ViewScore) -> Bool {
            (a.stateOK, a.currentEpoch, a.covered, a.onlineMasters) < (b.stateOK, b.currentEpoch, b.covered, b.onlineMasters)
        }
    }

    /// One node's slot map with what says how fresh it is.
    func fetchScored(from address: NodeAddress) throws -> (SlotMap, ViewScore) {
        let connection = try connect(to: address.host, port: address.port)
        let map = try fetch(address, over: connection)
        let online = map.shards.filter { $0.master.health == "online" }.count
        var score = ViewScore(stateOK: 1, currentEpoch: 0, covered: map.assignedSlotCount, onlineMasters: online)
        if !map.isStandalone, case .bulkString(let bytes)? = try? connection.call("CLUSTER", "INFO") {
            let info = String(decoding: bytes, as: UTF8.self)
            for line in info.split(whereSeparator: { $0 == "\r" || $0 == "\n" }) {
                if line.hasPrefix("cluster_state:") { score.stateOK = line.hasSuffix(":ok") ? 1 : 0 }
                if line.hasPrefix("cluster_current_epoch:") { score.currentEpoch = Int(line.dropFirst(22)) ?? 0 }
            }
        }
        return (map, score)
    }

    /// Asks one node for the slot map.
    func fetch(_ address: NodeAddress, over connection: BlockingConnection) throws -> SlotMap {
        let shards = try connection.call("CLUSTER", "SHARDS")
        if case .error(let message) = shards, message.contains("cluster support disabled") {
            // A plain Redis server: standalone mode, everything goes to it.
            return SlotMap.standalone(host: address.host, port: address.port)
        }
        if case .error(let message) = shards {
            guard message.contains("unknown subcommand") || message.contains("Unknown subcommand") else {
                throw TopologyParseError(message)
            }
            let slots = try connection.call("CLUSTER", "SLOTS")
            if case .error(let message) = slots { throw TopologyParseError(message) }
            return try TopologyParser.parseSlots(slots, queriedHost: address.host)
        }
        return try TopologyParser.parseShards(shards, queriedHost: address.host, overTLS: configuration.backendTLS)
    }

    /// Whether `map` changes where requests go. Round trips differ every
    /// time they are measured: they count only when they change which node
    /// is nearest, and only with `read-from: nearest`, the one policy that
    /// follows them.
    private func isNews(_ map: SlotMap) -> Bool {
        guard let current else { return true }
        if map.withoutRoundTrips != current.withoutRoundTrips { return true }
        return configuration.readFrom == .nearest && map.nearestFirst != current.nearestFirst
    }

    private func publish(_ map: SlotMap) {
        guard isNews(map) else { return }
        let first = current == nil
        // Health and round trips change often: logged only when they change what serves reads.
        let healthOnly = !first && current!.summary == map.summary
        let unhealthy = map.shards.flatMap(\.replicas).filter { $0.health != "online" }.map(\.endpoint)
        let wasUnhealthy = (current?.shards.flatMap(\.replicas) ?? []).filter { $0.health != "online" }.map(\.endpoint)
        current = map
        if healthOnly {
            if unhealthy != wasUnhealthy {
                logger.info("replicas not serving reads: \(unhealthy.isEmpty ? "none" : unhealthy.joined(separator: ", "))")
            }
        } else if map.isStandalone {
            logger.info("standalone backend (cluster support disabled on \(map.summary)): every command goes to it")
        } else if map.coversAllSlots {
            logger.info(
                "\(first ? "topology" : "topology changed"): \(map.shards.count) masters, \(map.assignedSlotCount) of \(clusterSlotCount) slots covered: \(map.summary)"
            )
        } else {
            logger.warning(
                "topology incomplete: \(map.assignedSlotCount) of \(clusterSlotCount) slots covered: \(map.summary)")
        }
        shared.topologyPublished()
        for mailbox in mailboxes { mailbox.send(.topology(map)) }
        if map.isStandalone || map.coversAllSlots {
            shared.notifier.serving(
                status: "serving: \(map.shards.count) master(s), \(map.assignedSlotCount) of \(clusterSlotCount) slots, topology epoch \(shared.topologyEpoch)")
        } else {
            shared.notifier.status(
                "topology incomplete: \(map.assignedSlotCount) of \(clusterSlotCount) slots covered")
        }
    }
}

extension SlotMap {
    /// The same map with its round trips forgotten.
    fileprivate var withoutRoundTrips: SlotMap {
        func forget(_ node: ClusterNode) -> ClusterNode {
            var node = node
            node.roundTrip = 0
            return node
        }
        let shards = shards.map {
            Shard(master: forget($0.master), replicas: $0.replicas.map(forget), slotRanges: $0.slotRanges)
        }
        return SlotMap(shards: shards, isStandalone: isStandalone)
    }

    /// Per shard, its nodes nearest first (what `read-from: nearest` follows).
    fileprivate var nearestFirst: [[String]] {
        shards.map { shard in
            ([shard.master] + shard.replicas)
                .sorted { ($0.roundTrip == 0 ? Int.max : $0.roundTrip) < ($1.roundTrip == 0 ? Int.max : $1.roundTrip) }
                .map(\.endpoint)
        }
    }
}
