import ClusterTopology
import RESPWire

/// `WAIT numreplicas timeout` through the proxy.
///
/// On one server, WAIT blocks until that many replicas acknowledged the
/// client's writes. The client's writes went to the masters over shared
/// connections, so the proxy asks every master, each on a dedicated
/// connection: it first makes a tiny write there (a scratch key that expires
/// after 1 ms), which puts that connection's replication offset at or past
/// every write already answered on that master, the client's included; the
/// master's own WAIT then waits for replicas to acknowledge it (asking them
/// with `REPLCONF GETACK`, as WAIT does). The reply is the smallest count over
/// the masters: how many replicas have the client's writes everywhere.
/// The client's next command waits for it, as on a server.
extension Worker {
    func wait(_ command: Command, session: ClientSession) {
        guard let map = slotMap, !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        guard Int(command.string(1)) != nil, let timeout = Int(command.string(2)) else {
            session.replyError("ERR value is not an integer or out of range")
            return
        }
        guard timeout >= 0 else {
            session.replyError("ERR timeout is negative")
            return
        }
        let parent = recordPool.acquire()
        session.expectReply(parent)
        session.barrier = parent
        let fanOut = FanOut(target: .client(parent), rule: .minimum, parts: masterPools.count, resp3: session.resp3)
        fanOut.sessionForNextStage = session
        for (index, pool) in masterPools.enumerated() {
            let record = partRecord(fanOut, index, request: command.frame, session: session)
            guard index < map.shards.count, let key = scratchKey(servedBy: map.shards[index]),
                let connection = dedicated.acquire(pool.address, for: session)
            else {
                failRequest(record, message: "ERR slotproxy: no connection for WAIT on \(pool.address)")
                continue
            }
            connection.servedSession = session
            connection.servesBlocking = true
            session.waitConnections.append(connection)
            connection.enqueueInternal([Array("SET".utf8), key, Array("1".utf8), Array("PX".utf8), Array("1".utf8)])
            connection.enqueue(record)
        }
    }

    /// A key in a slot `shard` serves, for the scratch write of `WAIT`.
    private func scratchKey(servedBy shard: Shard) -> [UInt8]? {
        for n in 0..<200_000 {
            let key = Array("{slotproxy-wait-\(n)}".utf8)
            let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
            if shard.slotRanges.contains(where: { $0.contains(slot) }) { return key }
        }
        return nil
    }
}
