import ClusterTopology
import CommandTable

/// `read-from`: read-only commands may go to replicas.
///
/// Only commands the command table flags read-only (`GET`, `HGETALL`,
/// `EVAL_RO` ...) and that are routed by slot on shared connections; never
/// writes, scripts not marked `_RO`, or anything inside `MULTI`. Every shared
/// connection sends `READONLY` once after connecting, so a replica serves its
/// master's slots (and a master ignores it). A replica that the topology
/// thread found unhealthy (not answering, loading, link to its master down)
/// or whose connection failed is skipped until healthy again; a `MOVED` from
/// a replica is followed like any other.
///
/// With `read-your-writes-ms`, a client's reads go to the master for that
/// long after each of its writes, so it always sees its own writes; other
/// clients' writes reach replicas after the replication delay (usually
/// under a millisecond, unbounded when a replica lags).
extension Worker {
    /// Per shard (as in `slotMap.shards`): the pools of its replicas that can
    /// serve reads, and for `nearest` its nodes by round trip, nearest first.
    struct ReadTargets {
        var replicas: [BackendPool] = []
        var byRoundTrip: [BackendPool] = []
        var cursor = 0
    }

    func updateReadTargets(_ map: SlotMap) {
        guard readsFromReplicas else {
            readTargets = []
            return
        }
        readTargets = map.shards.enumerated().map { index, shard in
            let healthy = shard.replicas.filter { $0.health == "online" }
            var targets = ReadTargets()
            targets.replicas = healthy.map { pool(for: NodeAddress(host: $0.host, port: $0.port)) }
            let nodes = ([shard.master] + healthy).sorted { ($0.roundTrip == 0 ? Int.max : $0.roundTrip) < ($1.roundTrip == 0 ? Int.max : $1.roundTrip) }
            targets.byRoundTrip = nodes.map { $0.isMaster ? masterPools[index] : pool(for: NodeAddress(host: $0.host, port: $0.port)) }
            return targets
        }
    }

    /// Where a read of `slot` goes; nil after answering an error
    /// (`read-from: replica` and no healthy replica).
    func readTarget(slot: Int, session: ClientSession) -> BackendPool? {
        guard let map = slotMap, slot >= 0, let master = slotOwners[slot] else { return nil }
        if configuration.readYourWritesMs > 0 && loop.turnTime - session.lastWriteAt < Int64(configuration.readYourWritesMs) {
            return master
        }
        let shard = Int(map.shardForSlot[slot])
        guard shard < readTargets.count, master === masterPools[shard] else { return master }  // slot moved since the map
        let now = loop.turnTime
        switch configuration.readFrom {
        case .master:
            return master
        case .nearest:
            return readTargets[shard].byRoundTrip.first { !$0.mustHold(now: now) } ?? master
        case .preferReplica, .replica:
            let replicas = readTargets[shard].replicas
            for step in 0..<replicas.count {
                let candidate = replicas[(readTargets[shard].cursor + step) % replicas.count]
                if !candidate.mustHold(now: now) {
                    readTargets[shard].cursor = (readTargets[shard].cursor + step + 1) % replicas.count
                    return candidate
                }
            }
            if configuration.readFrom == .preferReplica { return master }
            session.replyError(
                "CLUSTERDOWN slotproxy: no healthy replica of \(master.address) for slot \(slot) (read-from replica)")
            return nil
        }
    }
}
