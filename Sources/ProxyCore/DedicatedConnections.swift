import EventLoop

/// Backend connections that serve one client at a time: blocking commands
/// (`BLPOP`, `XREAD ... BLOCK` ...) run on them so they never hold up the
/// multiplexed connections other clients share.
///
/// A connection is taken from the node's idle list (or opened) when a client
/// blocks, and goes back when its reply has arrived, so a busy queue consumer
/// costs no connect per command. A client that disconnects while blocked
/// takes its connection down with it: the node would otherwise keep it
/// blocked, and its late reply would belong to no one.
final class DedicatedConnections {
    struct Key: Hashable {
        var address: NodeAddress
        var resp3: Bool
        var database: Int
        var identity: BackendIdentity?
    }

    unowned(unsafe) let worker: Worker
    let limitPerNode: Int
    private var idle: [Key: [BackendConnection]] = [:]
    private var inUse: [NodeAddress: Int] = [:]
    /// Connections serving a client now (checked for connect timeouts).
    private(set) var busy: [ObjectIdentifier: BackendConnection] = [:]

    init(worker: Worker, limitPerNode: Int) {
        self.worker = worker
        self.limitPerNode = limitPerNode
    }

    /// An idle connection to `address`, or a new one; nil past the limit.
    func acquire(_ address: NodeAddress, for session: ClientSession) -> BackendConnection? {
        let resp3 = session.resp3
        let key = Key(address: address, resp3: resp3, database: session.database, identity: session.backendIdentity)
        while let connection = idle[key]?.popLast() {
            if connection.state != .closed {
                inUse[address, default: 0] += 1
                busy[ObjectIdentifier(connection)] = connection
                return connection
            }
        }
        guard inUse[address, default: 0] < limitPerNode else { return nil }
        inUse[address, default: 0] += 1
        let connection = BackendConnection(
            worker: worker, address: address, resp3: resp3, database: session.database, identity: session.backendIdentity,
            dedicated: true)
        busy[ObjectIdentifier(connection)] = connection
        return connection
    }

    /// Its client is done with `connection`: keep it for the next one if it
    /// is healthy and has nothing in flight, else let it go.
    func release(_ connection: BackendConnection) {
        guard busy.removeValue(forKey: ObjectIdentifier(connection)) != nil else { return }
        inUse[connection.address, default: 1] -= 1
        if let session = connection.servedSession {
            if session.blockedOn === connection { session.blockedOn = nil }
            session.waitConnections.removeAll { $0 === connection }
        }
        connection.servedSession = nil
        connection.servesBlocking = false
        connection.transactionBound = false
        connection.transactionLog = nil
        connection.releaseWhenIdle = false
        connection.unblockOnceIdKnown = false
        guard connection.state != .closed, connection.outstandingRequests == 0, !connection.unblockSent else {
            connection.close()
            // This may run inside the connection's own callback: it is freed
            // after the loop turn, not now.
            worker.keepUntilTurnEnds(connection)
            return
        }
        idle[
            Key(
                address: connection.address, resp3: connection.resp3, database: connection.database,
                identity: connection.identity), default: []]
            .append(connection)
    }

    var all: [BackendConnection] { idle.values.flatMap { $0 } }

    func closeAll() {
        for connection in all + busy.values { connection.close() }
        idle.removeAll()
        busy.removeAll()
    }
}
