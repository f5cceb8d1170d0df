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
/// Cursor 0 starts at the master serving the lowest slots and ends the scan.
/// The slot, not a master index, names the master, so the cursor survives a
/// topology change: the master serving that slot now carries on. If the tag
/// says it is another node than the one the cursor came from (a failover),
/// that master is scanned again from 0: `SCAN` allows duplicates, never
/// missing keys. Masters are visited in the order of their first slot.
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

    /// FNV-1a of `host:port`, folded to 16 bits.
    static func tag(of node: ClusterNode) -> UInt16 {
        var hash: UInt32 = 2_166_136_261
        for byte in node.endpoint.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return UInt16(truncatingIfNeeded: hash ^ (hash >> 16))
    }
}
