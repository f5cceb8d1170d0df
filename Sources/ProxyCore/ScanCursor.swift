import ClusterTopology

/// The cursor a client sees for a `SCAN` that walks every master in turn.
///
/// A node's own cursor means nothing on another node, so the client cursor
/// says which master it belongs to. As a 64-bit unsigned number:
///
///     bits  0..13  a slot of the master being scanned (its first slot)
///     bits 14..29  a 16-bit tag of that master's address
///     bits 30..63  the master's own SCAN cursor (Redis cursors of tables up
///                  to 2^34 buckets fit)
///
/// Shards are visited in the order of `orderKey`, the smallest address among
/// their nodes: slots move during resharding and a failover swaps a master
/// and its replica, but a shard's nodes stay, so no shard is passed over
/// (in the order of their first slots, moving one slot could put a shard
/// not yet visited behind the cursor). The tag names the master being
/// scanned, wherever its slots went; if no master has it any more (a
/// failover), the master now serving the slot scans again from 0: `SCAN`
/// allows duplicates, never missing keys. Cursor 0 starts the walk and ends
/// it.
enum ScanCursor {
    struct Position {
        /// The first slot of the master being scanned.
        var slot: Int
        var tag: UInt16
        var nodeCursor: UInt64
    }

    static let nodeCursorLimit: UInt64 = 1 << 34

    static func encode(_ position: Position) -> UInt64? {
        guard position.nodeCursor < nodeCursorLimit else { return nil }
        return position.nodeCursor << 30 | UInt64(position.tag) << 14 | UInt64(position.slot)
    }

    static func decode(_ cursor: UInt64) -> Position {
        Position(slot: Int(cursor & 0x3FFF), tag: UInt16(truncatingIfNeeded: cursor >> 14), nodeCursor: cursor >> 30)
    }

    /// A shard's place in the walk.
    static func orderKey(of shard: Shard) -> String {
        ([shard.master] + shard.replicas).map(\.endpoint).min() ?? shard.master.endpoint
    }

    /// Where a cursor goes on: the shard of the master it names (the slot's
    /// owner first, should two tags collide), continuing its cursor; that
    /// master gone, the slot's owner from 0; nil when no one serves it.
    static func locate(_ position: Position, in map: SlotMap) -> (shard: Int, continues: Bool)? {
        let owner = map.shardForSlot[position.slot]
        if owner != SlotMap.unassigned && tag(of: map.shards[Int(owner)].master) == position.tag {
            return (Int(owner), true)
        }
        if let moved = map.shards.firstIndex(where: { tag(of: $0.master) == position.tag }) {
            return (moved, true)
        }
        return owner == SlotMap.unassigned ? nil : (Int(owner), false)
    }

    /// The shard the walk starts with.
    static func first(in map: SlotMap) -> Int? {
        map.shards.indices.min { orderKey(of: map.shards[$0]) < orderKey(of: map.shards[$1]) }
    }

    /// The shard after `shard` in the walk; nil after the last.
    static func next(after shard: Int, in map: SlotMap) -> Int? {
        let current = orderKey(of: map.shards[shard])
        return map.shards.indices.filter { orderKey(of: map.shards[$0]) > current }
            .min { orderKey(of: map.shards[$0]) < orderKey(of: map.shards[$1]) }
    }

    /// The cursor that starts scanning `shard`.
    static func start(of shard: Int, in map: SlotMap) -> Position {
        Position(slot: map.shards[shard].slotRanges[0].lowerBound, tag: tag(of: map.shards[shard].master), nodeCursor: 0)
    }

    /// FNV-1a of `host:port`, folded to 16 bits.
    static func tag(of node: ClusterNode) -> UInt16 {
        var hash: UInt32 = 2_166_136_261
        for byte in node.endpoint.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return UInt16(truncatingIfNeeded: hash ^ (hash >> 16))
    }
}
