import EventLoop

/// A worker's connections to one node: `backend-connections` multiplexed
/// connections per protocol (RESP2 and RESP3 replies differ in shape, so a
/// RESP3 client's requests go over connections that said `HELLO 3`), opened
/// lazily and reopened after a failure. Clients using `CLIENT TRACKING` read
/// over RESP3 connections of their own that have tracking on, so the node's
/// invalidations name only keys such clients read.
final class BackendPool {
    // The worker owns this object and outlives it (closed objects are released
    // by the worker after the loop turn), so no reference counting is needed.
    unowned(unsafe) let worker: Worker
    let address: NodeAddress
    private var resp2: [BackendConnection?]
    private var resp3: [BackendConnection?]
    private var tracking: [BackendConnection?]
    private var nextResp2 = 0
    private var nextResp3 = 0

    init(worker: Worker, address: NodeAddress, connections: Int) {
        self.worker = worker
        self.address = address
        resp2 = Array(repeating: nil, count: max(1, connections))
        resp3 = Array(repeating: nil, count: max(1, connections))
        tracking = Array(repeating: nil, count: max(1, connections))
    }

    /// The connection for a request of `session`: with several
    /// (`backend-connections`), always the same one for the same client, so
    /// the node runs the client's requests in the order it sent them (spread
    /// over connections, its `SET` then `GET` of a key could run the other way).
    @inline(__always)
    func connection(for session: ClientSession) -> BackendConnection {
        if let identity = session.backendIdentity {
            return connection(as: identity, resp3: session.resp3, tracking: session.tracking)
        }
        if session.database != 0 { return connection(database: session.database, resp3: session.resp3) }
        return session.tracking
            ? trackingConnection(pinnedTo: session.id) : connection(resp3: session.resp3, pinnedTo: session.id)
    }

    /// Standalone backends: one connection per database other than 0 (and
    /// protocol), which `SELECT`ed it when it connected.
    private var otherDatabases: [Int: BackendConnection] = [:]

    private func connection(database: Int, resp3: Bool) -> BackendConnection {
        let key = database * 2 + (resp3 ? 1 : 0)
        if let existing = otherDatabases[key], existing.state != .closed { return existing }
        let fresh = BackendConnection(worker: worker, address: address, resp3: resp3, database: database, stats: stats)
        otherDatabases[key] = fresh
        return fresh
    }

    func trackingConnection(pinnedTo client: Int) -> BackendConnection {
        let index = tracking.count == 1 ? 0 : client % tracking.count
        if let existing = tracking[index], existing.state != .closed { return existing }
        let fresh = BackendConnection(worker: worker, address: address, resp3: true, tracking: true, stats: stats)
        tracking[index] = fresh
        return fresh
    }

    /// Connections of users with backend credentials of their own
    /// (`user-backend-credentials`): one per user, protocol and tracking.
    private var identityConnections: [IdentityKey: BackendConnection] = [:]

    private struct IdentityKey: Hashable {
        var identity: BackendIdentity
        var resp3: Bool
        var tracking: Bool
    }

    func connection(as identity: BackendIdentity, resp3: Bool, tracking: Bool) -> BackendConnection {
        let key = IdentityKey(identity: identity, resp3: resp3 || tracking, tracking: tracking)
        if let existing = identityConnections[key], existing.state != .closed { return existing }
        let fresh = BackendConnection(
            worker: worker, address: address, resp3: key.resp3, tracking: tracking, stats: stats, identity: identity)
        identityConnections[key] = fresh
        return fresh
    }

    /// A shared connection for `identity` (nil: the pool's own, the one
    /// `client`'s requests go over), without tracking.
    func connection(resp3: Bool, identity: BackendIdentity?, pinnedTo client: Int) -> BackendConnection {
        guard let identity else { return connection(resp3: resp3, pinnedTo: client) }
        return connection(as: identity, resp3: resp3, tracking: false)
    }

    /// A usable connection for the proxy's own requests, round robin over the pool.
    func connection(resp3 wantsResp3: Bool) -> BackendConnection {
        if wantsResp3 {
            nextResp3 = nextResp3 + 1 == resp3.count ? 0 : nextResp3 + 1
            return connection(resp3: true, at: nextResp3)
        }
        nextResp2 = nextResp2 + 1 == resp2.count ? 0 : nextResp2 + 1
        return connection(resp3: false, at: nextResp2)
    }

    /// The connection `client`'s requests go over (see `connection(for:)`).
    @inline(__always)
    func connection(resp3 wantsResp3: Bool, pinnedTo client: Int) -> BackendConnection {
        let count = wantsResp3 ? resp3.count : resp2.count
        return connection(resp3: wantsResp3, at: count == 1 ? 0 : client % count)
    }

    @inline(__always)
    private func connection(resp3 wantsResp3: Bool, at index: Int) -> BackendConnection {
        if wantsResp3 {
            if let existing = resp3[index], existing.state != .closed { return existing }
            let fresh = BackendConnection(worker: worker, address: address, resp3: true, stats: stats)
            resp3[index] = fresh
            return fresh
        }
        if let existing = resp2[index], existing.state != .closed { return existing }
        let fresh = BackendConnection(worker: worker, address: address, resp3: false, stats: stats)
        resp2[index] = fresh
        return fresh
    }

    /// Calls `body` with each open connection, without building an array
    /// (the worker's 100 ms tick checks every connection's timeouts).
    func forEachOpenConnection(_ body: (BackendConnection) -> Void) {
        func each(_ list: [BackendConnection?]) {
            var i = 0
            while i < list.count {
                if let connection = list[i], connection.state != .closed { body(connection) }
                i += 1
            }
        }
        each(resp2)
        each(resp3)
        each(tracking)
        for connection in otherDatabases.values where connection.state != .closed { body(connection) }
        for connection in identityConnections.values where connection.state != .closed { body(connection) }
    }

    var hasOpenConnection: Bool {
        var found = false
        forEachOpenConnection { _ in found = true }
        return found
    }

    var hasReadyConnection: Bool {
        var found = false
        forEachOpenConnection { if !$0.isEstablishing { found = true } }
        return found
    }

    var openConnections: [BackendConnection] {
        (resp2 + resp3 + tracking + otherDatabases.values.map { $0 } + identityConnections.values.map { $0 })
            .compactMap { $0 }.filter { $0.state != .closed }
    }

    // MARK: health

    /// Set when a connection to the node failed; requests for it are held
    /// (see `Worker+Failover`) until the node answers a connection again.
    private(set) var isDown = false
    private var consecutiveFailures = 0
    /// When the next connection attempt may be made (backoff with jitter,
    /// so a dead or flapping node is never hammered).
    private(set) var nextAttemptAt: Int64 = 0
    /// Held requests that will be sent here: new requests for the node wait
    /// behind them, so a slot's requests keep their order.
    var heldCount = 0

    /// What the worker sent this node, for `INFO nodes`.
    let stats = NodeStats()
    /// Failed redials while down since the last report (`logConnectionLost`).
    var failedRedials = 0
    var lastRedialReportAt: Int64 = 0

    func markDown(now: Int64) {
        isDown = true
        consecutiveFailures += 1
        let backoff = min(1000, 25 << min(consecutiveFailures, 6))
        nextAttemptAt = now + Int64(backoff / 2 + Int.random(in: 0...(backoff / 2)))
    }

    /// A connection to the node, found down, is being tried: the next waits
    /// for its outcome (or the connect timeout), so the clients that each
    /// need a connection of their own (blocked pops, transactions) do not
    /// all dial a dead node together. A refusal sets the backoff anew; the
    /// node's first answer marks it up.
    func attemptStarted(now: Int64, timeoutMs: Int) {
        guard isDown else { return }
        nextAttemptAt = max(nextAttemptAt, now + Int64(timeoutMs))
    }

    func markUp() {
        isDown = false
        consecutiveFailures = 0
    }

    /// Whether requests must wait instead of going to a connection now.
    @inline(__always)
    func mustHold(now: Int64) -> Bool {
        heldCount > 0 || (isDown && now < nextAttemptAt)
    }

    func closeAll() {
        for connection in openConnections { connection.close() }
    }
}

/// Requests a worker sent one node over its shared connections, the error
/// replies among them, and their total reply time (loop-clock milliseconds).
final class NodeStats {
    var requests = 0
    var errors = 0
    var latencyMsTotal = 0
}
