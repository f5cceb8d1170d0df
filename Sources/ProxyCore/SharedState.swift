import CommandTable
import EventLoop
import Synchronization
import TLS

#if canImport(Glibc)
    import Glibc
#endif

/// The little state all workers share: counters behind atomics and the
/// refresher's doorbell. Nothing here is touched per request except a
/// refresh request after a redirect or a lost connection.
final class SharedState: Sendable {
    private let clients = Atomic<Int>(0)
    private let clientIDs = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Bodies of the scripts clients loaded with `SCRIPT LOAD`, by SHA1, so
    /// a master that lacks one (promoted after a failover, newly added) gets
    /// it again instead of the client seeing `NOSCRIPT`. Touched only on
    /// `SCRIPT LOAD` and `NOSCRIPT`, never per request.
    private let scripts = Locked<[String: [UInt8]]>([:])
    /// Scripts clients ran with `EVAL`, by SHA1, the oldest dropped first
    /// past `eval-script-cache-bytes`: a master caches such a script only
    /// where it ran, and an `EVALSHA` of it elsewhere would say `NOSCRIPT`
    /// where one server would not. Touched on the first `EVAL` of a script
    /// per worker (`Worker.rememberEvaluatedScript`) and on `NOSCRIPT`.
    private let evaluatedScripts = Locked(EvaluatedScripts())
    /// Bumped when scripts are forgotten (`SCRIPT FLUSH`, or dropped for
    /// room): workers forget which scripts they passed on, and pass on
    /// again those still run.
    let scriptGeneration = Atomic<Int>(0)

    struct EvaluatedScripts {
        var bodies: [String: [UInt8]] = [:]
        var bytes = 0
        /// SHA1s, oldest first, from `oldest` on.
        var order: [String] = []
        var oldest = 0

        /// Drops the oldest until at most `limit` bytes are kept; true when any went.
        mutating func keep(within limit: Int) -> Bool {
            var dropped = false
            while bytes > limit, oldest < order.count {
                if let body = bodies.removeValue(forKey: order[oldest]) { bytes -= body.count }
                oldest += 1
                dropped = true
            }
            if oldest > 1024 && oldest * 2 > order.count {
                order.removeFirst(oldest)
                oldest = 0
            }
            return dropped
        }
    }

    /// Commands the built-in table (Redis 7.0's) lacks, learned from a
    /// node's `COMMAND` reply: newer releases' and modules'. Top-level rows
    /// by name, subcommands of known containers as `container|sub`. Read on
    /// a table miss only.
    private let learnedCommands = Locked<[String: CommandSpec]>([:])
    func learn(_ commands: [String: CommandSpec]) { learnedCommands.withLock { $0 = commands } }
    func learnedCommand(_ name: String) -> CommandSpec? { learnedCommands.withLock { $0[name] } }
    var learnedCommandCount: Int { learnedCommands.withLock { $0.count } }
    /// Written by any thread to ask for a topology refresh; the refresher
    /// polls the read end (a pipe coalesces many rings into one refresh).
    let refreshBellRead: CInt
    private let refreshBellWrite: CInt

    /// The TLS contexts new connections are made with: replaced when the
    /// certificates are re-read (SIGHUP); a connection keeps the one it began with.
    private let tlsContexts = Locked<TLSContexts>(TLSContexts())

    var tls: TLSContexts {
        get { tlsContexts.withLock { $0 } }
        set { tlsContexts.withLock { $0 = newValue } }
    }

    /// systemd's notify socket (READY, STATUS, WATCHDOG ...); inert outside systemd.
    let notifier: ServiceNotifier

    /// The settings in force, for the refresher (read once per refresh) and
    /// reloads; workers get their own copy through their mailbox.
    private let liveConfiguration: Locked<ProxyConfiguration>

    var configuration: ProxyConfiguration {
        get { liveConfiguration.withLock { $0 } }
        set { liveConfiguration.withLock { $0 = newValue } }
    }

    /// `SLOWLOG`'s entries, from every worker.
    let slowLog = SlowLog()

    /// Every worker's mailbox, by worker index (`PROXY CLIENTS` asks them all).
    let mailboxes: [Mailbox<WorkerMessage>]

    /// `PROXY CONFIG`'s access to the settings; set before the workers start.
    private let configControlSlot = Locked<(any ConfigControl)?>(nil)
    var configControl: (any ConfigControl)? {
        get { configControlSlot.withLock { $0 } }
        set { configControlSlot.withLock { $0 = newValue } }
    }

    init(configuration: ProxyConfiguration, notifier: ServiceNotifier) {
        mailboxes = (0..<max(1, configuration.effectiveWorkers)).map { _ in Mailbox<WorkerMessage>() }
        let workers = max(1, configuration.effectiveWorkers)
        commandCounts = (0..<workers).map { _ in PublishedCounter() }
        heartbeats = (0..<workers).map { _ in PublishedCounter() }
        metricsSnapshots = (0..<workers).map { _ in PublishedSnapshot() }
        liveConfiguration = Locked(configuration)
        self.notifier = notifier
        (refreshBellRead, refreshBellWrite) = Socket.makePipe()
    }

    // MARK: metrics

    /// Each worker's counters as of its last tick (see `WorkerMetrics`).
    private let metricsSnapshots: [PublishedSnapshot]

    /// Stores a worker's new snapshot and hands it back the one it replaces,
    /// to fill next time (see `MetricsSnapshot.update`).
    func exchange(_ snapshot: inout MetricsSnapshot, worker: Int) {
        metricsSnapshots[worker].value.withLock { swap(&$0, &snapshot) }
    }

    var workerMetrics: [MetricsSnapshot] { metricsSnapshots.map { $0.value.withLock { $0 } } }

    /// Topology refreshes the refresher ran (successful or not).
    private let refreshes = Atomic<Int>(0)
    func refreshRan() { refreshes.add(1, ordering: .relaxed) }
    var topologyRefreshes: Int { refreshes.load(ordering: .relaxed) }

    // MARK: watchdog

    /// Each worker's loop time at its last tick: the watchdog is only fed
    /// while every loop is turning.
    private let heartbeats: [PublishedCounter]

    func heartbeat(worker: Int, now: Int64) {
        heartbeats[worker].value.store(Int(now), ordering: .relaxed)
    }

    /// Whether every worker ticked within the last `ms` (loop clocks are
    /// monotonic milliseconds, the same clock in every thread).
    func allWorkersTicked(within ms: Int, now: Int64) -> Bool {
        heartbeats.allSatisfy { Int(now) - $0.value.load(ordering: .relaxed) <= ms }
    }

    deinit {
        close(refreshBellRead)
        close(refreshBellWrite)
    }

    func rememberScript(sha: String, body: [UInt8]) {
        scripts.withLock { $0[sha.lowercased()] = body }
    }

    func script(sha: String) -> [UInt8]? {
        let sha = sha.lowercased()
        return scripts.withLock { $0[sha] } ?? evaluatedScripts.withLock { $0.bodies[sha] }
    }

    func rememberEvaluatedScript(sha: String, body: [UInt8], keep limit: Int) {
        guard body.count <= limit else { return }
        let dropped = evaluatedScripts.withLock { kept in
            guard kept.bodies.updateValue(body, forKey: sha) == nil else { return false }
            kept.bytes += body.count
            kept.order.append(sha)
            return kept.keep(within: limit)
        }
        if dropped { scriptGeneration.add(1, ordering: .relaxed) }
    }

    /// `eval-script-cache-bytes` changed (a reload).
    func keepEvaluatedScripts(within limit: Int) {
        if evaluatedScripts.withLock({ $0.keep(within: limit) }) { scriptGeneration.add(1, ordering: .relaxed) }
    }

    func forgetScripts() {
        scripts.withLock { $0.removeAll() }
        evaluatedScripts.withLock { $0 = EvaluatedScripts() }
        scriptGeneration.add(1, ordering: .relaxed)
    }

    /// Each worker's count of routed commands, stored once per loop turn
    /// (the worker counts in a plain variable).
    private let commandCounts: [PublishedCounter]
    private let topologyEpochs = Atomic<Int>(0)
    let startedAt = ContinuousClock.now
    /// The proxy's node id in `CLUSTER SLOTS|NODES|SHARDS|MYID`: 40 random
    /// hex digits, as a node's.
    let nodeId: String = (0..<40).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()

    func publishCommandsProcessed(worker: Int, count: Int) {
        commandCounts[worker].value.store(count, ordering: .relaxed)
    }

    var commandsProcessed: Int { commandCounts.reduce(0) { $0 + $1.value.load(ordering: .relaxed) } }

    /// How many slot maps the refresher has published.
    var topologyEpoch: Int { topologyEpochs.load(ordering: .relaxed) }

    func topologyPublished() { topologyEpochs.add(1, ordering: .relaxed) }

    /// Relaxed transactions a WATCH aborted after some slot groups had
    /// committed (`relaxed_transactions_partial` in `INFO proxy`).
    private let relaxedPartialOutcomes = Atomic<Int>(0)
    func relaxedTransactionPartialOutcome() { relaxedPartialOutcomes.add(1, ordering: .relaxed) }
    var relaxedTransactionPartialOutcomes: Int { relaxedPartialOutcomes.load(ordering: .relaxed) }

    /// Elements a blocking pop over several slots took from a slot group
    /// that lost the race, and pushed back (`relaxed_pops_pushed_back`).
    private let popsPushedBack = Atomic<Int>(0)
    func popPushedBack() { popsPushedBack.add(1, ordering: .relaxed) }
    var relaxedPopsPushedBack: Int { popsPushedBack.load(ordering: .relaxed) }

    // MARK: host names

    /// Nodes named by host name (`cluster-announce-hostname`), resolved by
    /// the refresher thread to an address that accepted a connection, so a
    /// worker never waits on DNS.
    private let resolvedNodes = Locked<[NodeAddress: ResolvedAddress]>([:])
    private let unresolvedNodes = Locked<Set<NodeAddress>>([])

    struct ResolvedAddress: Sendable {
        var family: CInt
        var address: [UInt8]
    }

    func resolvedAddress(of node: NodeAddress) -> ResolvedAddress? {
        resolvedNodes.withLock { $0[node] }
    }

    func storeResolved(_ node: NodeAddress, _ address: ResolvedAddress) {
        resolvedNodes.withLock { $0[node] = address }
    }

    /// A worker met a host name not resolved yet: the refresher resolves it next.
    func needsResolution(_ node: NodeAddress) {
        unresolvedNodes.withLock { _ = $0.insert(node) }
        requestTopologyRefresh()
    }

    func takeUnresolvedNodes() -> Set<NodeAddress> {
        unresolvedNodes.withLock { nodes in
            defer { nodes.removeAll() }
            return nodes
        }
    }

    func nextClientID() -> Int { clientIDs.add(1, ordering: .relaxed).newValue }

    /// Counts a new client in, unless `limit` clients are already connected.
    func admitClient(limit: Int) -> Bool {
        let now = clients.add(1, ordering: .relaxed).newValue
        if now > limit {
            clients.subtract(1, ordering: .relaxed)
            return false
        }
        connectionsReceived.add(1, ordering: .relaxed)
        return true
    }

    /// Clients admitted since start (`total_connections_received`).
    private let connectionsReceived = Atomic<Int>(0)
    var totalConnectionsReceived: Int { connectionsReceived.load(ordering: .relaxed) }

    func clientLeft() { clients.subtract(1, ordering: .relaxed) }

    var connectedClients: Int { clients.load(ordering: .relaxed) }

    var isStopping: Bool { stopping.load(ordering: .acquiring) }

    private let finishedWorkerCount = Atomic<Int>(0)
    func workerFinished() { finishedWorkerCount.add(1, ordering: .releasing) }
    var finishedWorkers: Int { finishedWorkerCount.load(ordering: .acquiring) }

    func beginStopping() { stopping.store(true, ordering: .releasing) }

    /// SIGTERM received: workers drain their clients; `/readyz` says 503
    /// from now on, so load balancers stop sending new ones.
    private let draining = Atomic<Bool>(false)
    var isDraining: Bool { draining.load(ordering: .acquiring) }
    func beginDraining() { draining.store(true, ordering: .releasing) }

    func requestTopologyRefresh() {
        var byte: UInt8 = 1
        _ = write(refreshBellWrite, &byte, 1)
    }
}

/// One worker's metrics snapshot, readable from any thread.
final class PublishedSnapshot: Sendable {
    let value = Locked(MetricsSnapshot())
}

/// One worker's counter, readable from any thread. Each worker stores its
/// own every loop turn: the padding keeps the next worker's counter (the
/// next allocation) off this cache line, which would otherwise pass
/// between the cores at every turn of either worker.
final class PublishedCounter: Sendable {
    let value = Atomic<Int>(0)
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
}

/// The listener's and the node connections' TLS contexts (nil: plain TCP).
struct TLSContexts: Sendable {
    var server: TLSContext?
    var backend: TLSContext?

    init() {}

    /// Both, from the files the configuration names (certificates, keys,
    /// CAs read now).
    init(_ configuration: ProxyConfiguration) throws(TLSContext.Failure) {
        if configuration.tlsPort > 0 {
            guard let certificate = configuration.tlsCertFile, let key = configuration.tlsKeyFile else {
                throw TLSContext.Failure(description: "tls-port needs tls-cert-file and tls-key-file")
            }
            server = try .server(
                certificateFile: certificate, keyFile: key, caFile: configuration.tlsCACertFile,
                requireClientCertificate: configuration.tlsAuthClients, minimumVersion: configuration.tlsMinVersion)
        }
        if configuration.backendTLS {
            backend = try .client(
                caFile: configuration.backendTLSCACertFile, certificateFile: configuration.backendTLSCertFile,
                keyFile: configuration.backendTLSKeyFile, verifyPeer: configuration.backendTLSVerify,
                minimumVersion: configuration.tlsMinVersion)
        }
    }
}

extension ProxyConfiguration {
    /// What is wrong with the TLS settings or the files they name (checked
    /// by loading them), with the setting to blame; nil when nothing is.
    public var tlsProblem: (setting: String, message: String)? {
        if tlsPort > 0 && (tlsCertFile == nil || tlsKeyFile == nil) {
            return ("tls-port", "'tls-port' needs 'tls-cert-file' and 'tls-key-file'")
        }
        if tlsAuthClients && tlsCACertFile == nil {
            return ("tls-auth-clients", "'tls-auth-clients' needs 'tls-ca-cert-file' to check client certificates against")
        }
        if (backendTLSCertFile == nil) != (backendTLSKeyFile == nil) {
            return ("backend-tls-cert-file", "'backend-tls-cert-file' and 'backend-tls-key-file' go together")
        }
        do {
            _ = try TLSContexts(self)
        } catch {
            return (tlsPort > 0 ? "tls-cert-file" : "backend-tls", error.description)
        }
        return nil
    }
}
