#if canImport(Glibc)
    import Glibc
#endif

/// Redis Cluster's 16384 hash slots.
public let clusterSlotCount = 16384

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), table-driven,
/// as in Redis's `crc16.c`.
@usableFromInline let crc16Table: [UInt16] = (0..<256).map { byte -> UInt16 in
    var crc = UInt16(byte) << 8
    for _ in 0..<8 {
        crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1
    }
    return crc
}

@inlinable public func crc16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
    var crc: UInt16 = 0
    crc16Table.withUnsafeBufferPointer { table in
        for byte in bytes {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
    }
    return crc
}

/// The hash slot of a key is the least significant 14 bits of the CRC16 of
/// the key. If the key contains a `{`, and a `}` follows it with at least one
/// byte between them, only the bytes between the first `{` and the first `}`
/// after it are hashed: that "hash tag" lets related keys share a slot.
@inlinable public func hashSlot(_ key: UnsafeRawBufferPointer) -> Int {
    Int(crc16(UnsafeRawBufferPointer(rebasing: key[hashedPart(of: key)])) & 0x3FFF)
}

/// The bytes of a key that are hashed: its hash tag, or all of it. (memchr:
/// libc's vectorised search looks at 16+ bytes per step; a byte loop cost
/// about as much as the CRC itself.)
@inlinable public func hashedPart(of key: UnsafeRawBufferPointer) -> Range<Int> {
    let count = key.count
    guard count > 1, let base = key.baseAddress, let openAt = memchr(base, Int32(UInt8(ascii: "{")), count) else {
        return 0..<count
    }
    let tagStart = base.distance(to: UnsafeRawPointer(openAt)) + 1
    guard tagStart < count, let closeAt = memchr(base + tagStart, Int32(UInt8(ascii: "}")), count - tagStart) else {
        return 0..<count
    }
    let tagEnd = base.distance(to: UnsafeRawPointer(closeAt))
    return tagEnd > tagStart ? tagStart..<tagEnd : 0..<count
}

public func hashSlot(_ key: String) -> Int {
    Array(key.utf8).withUnsafeBytes { hashSlot($0) }
}

/// `crc16Table` followed by the table that feeds two bytes per step: entry
/// `b` is the CRC state `b << 8` reaches after 16 more zero bits (by the
/// CRC's linearity, the high byte's share of a two-byte step; the low byte's
/// is `crc16Table`). Two table loads per two bytes that do not depend on
/// each other, where the byte loop chains one load per byte.
@usableFromInline let crc16PairTables: [UInt16] = crc16Table + crc16Table.map { entry in
    (entry << 8) ^ crc16Table[Int(entry >> 8)]
}

/// `hashSlot` for the data path: keeps the CRC tables in a stored property,
/// so a lookup skips the global initialiser check (`swift_once`, a runtime
/// call on Linux) that reading a global table costs, and hashes two bytes
/// per step (see `crc16PairTables`).
public struct SlotHasher: Sendable {
    @usableFromInline let tables: [UInt16]
    /// A standalone (non-cluster) backend: every key is in slot 0, so no
    /// command is ever split or refused for crossing slots.
    @usableFromInline let everyKeyInOneSlot: Bool

    public init(everyKeyInOneSlot: Bool = false) {
        tables = crc16PairTables
        self.everyKeyInOneSlot = everyKeyInOneSlot
    }

    // Always inlined: `route` hashes every key, and outlined it costs a call
    // and the loop's setup per request (about 25 instructions, callgrind).
    @inlinable @inline(__always) public func slot(of key: UnsafeRawBufferPointer) -> Int {
        if everyKeyInOneSlot { return 0 }
        let hashed = hashedPart(of: key)
        return tables.withUnsafeBufferPointer { tables in
            let low = tables.baseAddress!
            let high = low + 256
            var crc: UInt16 = 0
            var i = hashed.lowerBound
            while i + 1 < hashed.upperBound {
                let state = crc ^ (UInt16(key[i]) << 8 | UInt16(key[i + 1]))
                crc = high[Int(state >> 8)] ^ low[Int(state & 0xFF)]
                i += 2
            }
            if i < hashed.upperBound {
                crc = (crc << 8) ^ low[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ key[i])]
            }
            return Int(crc & 0x3FFF)
        }
    }
}
