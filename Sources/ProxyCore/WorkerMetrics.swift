import CommandTable

/// One worker's counters. Only its own thread writes them, with plain
/// increments (no lock, no atomic read-modify-write on the data path); once
/// per tick the worker copies them into `SharedState`, where a scrape sums
/// the workers' copies.
final class WorkerMetrics {
    /// Upper bounds of the latency buckets, in microseconds (Prometheus `le`).
    static let latencyBucketsMicros: [Int64] = [100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000, 1_000_000]
    static var bucketCount: Int { latencyBucketsMicros.count + 1 }  // + Inf

    /// Per command row (`CommandSpec.metricsSlot`): calls, error replies,
    /// latency buckets (not cumulative) and latency sum.
    let slots: Int
    let calls: UnsafeMutableBufferPointer<Int>
    let errors: UnsafeMutableBufferPointer<Int>
    let latencyBuckets: UnsafeMutableBufferPointer<Int>
    let latencySumMicros: UnsafeMutableBufferPointer<Int>
    /// `latencyBucketsMicros`, held here: a static is a `swift_once` check per read.
    private let bounds: UnsafeMutableBufferPointer<Int64>
    private let bucketCount: Int

    var counters = WorkerCounters()
    /// Changes since the last publication: nothing is copied while idle.
    var dirty = true

    /// The command being routed (its metrics slot), so an error the proxy
    /// answers itself is counted against it; -1 between commands.
    var currentSlot = -1

    init() {
        // Every row exists by now (the table is built, the proxy's own rows
        // are touched here); a row made later would go uncounted, not crash.
        _ = CommandTable.all
        _ = LocalCommands.ownRows
        slots = CommandSpec.metricsSlotCount
        calls = .allocate(capacity: slots)
        errors = .allocate(capacity: slots)
        latencyBuckets = .allocate(capacity: slots * WorkerMetrics.bucketCount)
        latencySumMicros = .allocate(capacity: slots)
        for buffer in [calls, errors, latencyBuckets, latencySumMicros] { buffer.initialize(repeating: 0) }
        bounds = .allocate(capacity: WorkerMetrics.latencyBucketsMicros.count)
        _ = bounds.initialize(from: WorkerMetrics.latencyBucketsMicros)
        bucketCount = WorkerMetrics.bucketCount
    }

    deinit {
        for buffer in [calls, errors, latencyBuckets, latencySumMicros] { buffer.deallocate() }
        bounds.deallocate()
    }

    @inline(__always) func commandStarted(_ spec: CommandSpec) {
        currentSlot = spec.metricsSlot
        if currentSlot < slots { calls[currentSlot] &+= 1 }
        dirty = true
    }

    /// A reply reached the client's queue `micros` after its request was read.
    @inline(__always) func replied(slot: Int, micros: Int64, isError: Bool) {
        guard slot >= 0 && slot < slots else { return }
        if isError { errors[slot] &+= 1 }
        var bucket = 0
        while bucket < bounds.count && micros > bounds[bucket] { bucket += 1 }
        latencyBuckets[slot * bucketCount + bucket] &+= 1
        latencySumMicros[slot] &+= Int(micros)
    }

    /// An error the proxy answered itself while routing a command.
    func localError() {
        guard currentSlot >= 0 && currentSlot < slots else { return }
        errors[currentSlot] &+= 1
    }
}

/// A worker's totals besides the per-command arrays.
struct WorkerCounters: Sendable {
    var bytesIn = 0
    var bytesOut = 0
    var redirectsMoved = 0
    var redirectsAsk = 0
    var retries = 0
    var failoverWaits = 0
    /// Clients turned away at `maxclients`.
    var rejectedConnections = 0
}

/// A worker's counters as published for a scrape.
struct MetricsSnapshot: Sendable {
    var calls: [Int] = []
    var errors: [Int] = []
    var latencyBuckets: [Int] = []
    var latencySumMicros: [Int] = []
    var counters = WorkerCounters()
    var nodes: [NodeSnapshot] = []
    /// Requests held now for want of a reachable master; slots the map
    /// covers and masters it names.
    var heldRequests = 0
    var blockedClients = 0
    var slotsCovered = 0
    var masters = 0
    /// Whether this worker holds a complete slot map and a ready connection
    /// to every master (`/readyz`).
    var ready = false

    init() {}

    /// Copies the counters in, into the arrays it has when nothing else
    /// holds them: a worker publishing every tick then allocates nothing.
    mutating func update(from metrics: WorkerMetrics) {
        Self.overwrite(&calls, with: metrics.calls)
        Self.overwrite(&errors, with: metrics.errors)
        Self.overwrite(&latencyBuckets, with: metrics.latencyBuckets)
        Self.overwrite(&latencySumMicros, with: metrics.latencySumMicros)
        counters = metrics.counters
    }

    private static func overwrite(_ array: inout [Int], with source: UnsafeMutableBufferPointer<Int>) {
        guard array.count == source.count else {
            array = Array(source)
            return
        }
        array.withUnsafeMutableBufferPointer { target in
            target.baseAddress!.update(from: source.baseAddress!, count: source.count)
        }
    }
}

/// One node's counters in one worker (`NodeStats`).
/// One node's counters summed over workers (`/metrics`, `INFO nodes`).
struct NodeTotals {
    var requests = 0
    var errors = 0
    var latencyMsTotal = 0
    /// Marked down by any worker.
    var down = false

    mutating func add(requests: Int, errors: Int, latencyMs: Int, down: Bool) {
        self.requests += requests
        self.errors += errors
        latencyMsTotal += latencyMs
        self.down = self.down || down
    }

    /// Every node the snapshots name, by address.
    static func sum(_ snapshots: [MetricsSnapshot]) -> [String: NodeTotals] {
        var totals: [String: NodeTotals] = [:]
        for snapshot in snapshots {
            for node in snapshot.nodes {
                totals[node.address, default: NodeTotals()].add(
                    requests: node.requests, errors: node.errors, latencyMs: node.latencyMsTotal, down: node.isDown)
            }
        }
        return totals
    }
}

struct NodeSnapshot: Sendable {
    var address: String
    var requests: Int
    var errors: Int
    var latencyMsTotal: Int
    var isMaster: Bool
    /// Marked down: its last connection failed and none is up yet.
    var isDown: Bool
}

/// Command names by metrics slot (`CommandSpec.metricsSlot`), for output.
enum CommandNames {
    /// Every row of the table (subcommands included) and the proxy's own.
    static let bySlot: [String] = {
        var names = [String](repeating: "?", count: CommandSpec.metricsSlotCount)
        func add(_ spec: CommandSpec) {
            if spec.metricsSlot < names.count { names[spec.metricsSlot] = spec.name }
            spec.subcommands.forEach(add)
        }
        (CommandTable.all + LocalCommands.ownRows).forEach(add)
        return names
    }()

    static func name(ofSlot slot: Int) -> String { slot >= 0 && slot < bySlot.count ? bySlot[slot] : "?" }
}
