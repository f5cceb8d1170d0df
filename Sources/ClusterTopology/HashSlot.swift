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
    if let open = key.firstIndex(of: UInt8(ascii: "{")) {
        var close = open + 1
        while close < key.count && key[close] != UInt8(ascii: "}") { close += 1 }
        if close < key.count && close > open + 1 {
            return Int(crc16(UnsafeRawBufferPointer(rebasing: key[(open + 1)..<close])) & 0x3FFF)
        }
    }
    return Int(crc16(key) & 0x3FFF)
}

public func hashSlot(_ key: String) -> Int {
    Array(key.utf8).withUnsafeBytes { hashSlot($0) }
}
