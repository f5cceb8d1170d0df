import ClusterTopology

/// Per hash slot, the pool of the master serving it.
///
/// Kept as one 16-bit index per slot (32 KB) into a short list of pools
/// rather than 16384 references (128 KB): every routed request reads the
/// entry of a slot that is as good as random, and on a machine whose cores
/// the proxy shares with Redis the bigger table missed the cache, which
/// `perf annotate` showed as half of `Worker.route`'s own time.
struct SlotOwners {
    private static let none = SlotMap.unassigned
    /// Index into `pools` per slot, or `none`.
    private var poolIndex: [UInt16]
    private var pools: [BackendPool]

    /// No slot served.
    init() {
        poolIndex = [UInt16](repeating: SlotOwners.none, count: clusterSlotCount)
        pools = []
    }

    /// The owners a topology names: `shardForSlot` indexes `masters`, as
    /// `SlotMap.shardForSlot` indexes its shards.
    init(masters: [BackendPool], shardForSlot: [UInt16]) {
        poolIndex = shardForSlot
        pools = masters
    }

    subscript(slot: Int) -> BackendPool? {
        @inline(__always) get {
            let index = poolIndex[slot]
            return index == SlotOwners.none ? nil : pools[Int(index)]
        }
        set {
            guard let pool = newValue else {
                poolIndex[slot] = SlotOwners.none
                return
            }
            // Only a MOVED patches one slot; the list stays as short as the
            // number of masters until the next topology replaces it.
            if let index = pools.firstIndex(where: { $0 === pool }) {
                poolIndex[slot] = UInt16(index)
            } else if pools.count < Int(SlotOwners.none) {
                pools.append(pool)
                poolIndex[slot] = UInt16(pools.count - 1)
            }
        }
    }
}
