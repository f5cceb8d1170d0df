import RESPWire
import Testing

@testable import ClusterTopology

@Suite struct HashSlotTests {
    @Test func crc16Vector() {
        #expect(Array("123456789".utf8).withUnsafeBytes { crc16($0) } == 0x31C3)
    }

    // Expected slots as a Redis 7.0 node reports them (`CLUSTER KEYSLOT`).
    @Test(arguments: [
        ("foo", 12182), ("{user1000}.following", 3443), ("{user1000}.followers", 3443), ("bar", 5061),
        ("{}x", 10595), ("{x", 11068), ("a{}{b}", 15033), ("foo{}{bar}", 8363), ("foo{{bar}}zap", 4015),
        ("{a}{b}", 15495), ("", 0),
    ])
    func knownSlots(key: String, slot: Int) {
        #expect(hashSlot(key) == slot)
    }

    @Test func hashTagRules() {
        // An empty tag `{}` hashes the whole key; `{x` has no closing brace.
        #expect(hashSlot("{}x") == Int(Array("{}x".utf8).withUnsafeBytes { crc16($0) } & 0x3FFF))
        #expect(hashSlot("{x") == Int(Array("{x".utf8).withUnsafeBytes { crc16($0) } & 0x3FFF))
        // Only the first `{` counts: `a{}{b}` has an empty first tag, so the whole key is hashed.
        #expect(hashSlot("a{}{b}") == Int(Array("a{}{b}".utf8).withUnsafeBytes { crc16($0) } & 0x3FFF))
        #expect(hashSlot("x{user}y") == hashSlot("user"))
        #expect(hashSlot("{a}{b}") == hashSlot("a"))
    }
}

/// The hash tag rule written out byte by byte, as Redis's `keyHashSlot`
/// does: the oracle for the library's memchr version.
func referenceHashedPart(_ key: [UInt8]) -> Range<Int> {
    guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return 0..<key.count }
    guard let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 else { return 0..<key.count }
    return (open + 1)..<close
}

/// A pseudo-random key of `length` bytes where one byte in `braceOneIn`
/// is `{` and as many are `}`, so hash tags of every shape occur.
func braceHeavyKey(length: Int, braceOneIn: UInt8, rng: inout UInt64) -> [UInt8] {
    var key: [UInt8] = []
    for _ in 0..<length {
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        let r = UInt8(truncatingIfNeeded: rng >> 33)
        key.append(r % braceOneIn == 0 ? UInt8(ascii: "{") : r % braceOneIn == 1 ? UInt8(ascii: "}") : r)
    }
    return key
}

@Suite struct HashTagTests {
    @Test func matchesTheByteByByteRule() {
        var rng: UInt64 = 11
        for length in 0..<80 {
            for _ in 0..<20 {
                let key = braceHeavyKey(length: length, braceOneIn: 7, rng: &rng)
                key.withUnsafeBytes { #expect(hashedPart(of: $0) == referenceHashedPart(key), "key \(key)") }
            }
        }
    }
}

@Suite struct SlotHasherTests {
    @Test func agreesWithHashSlot() {
        let hasher = SlotHasher()
        var rng: UInt64 = 7
        for length in 0..<64 {
            let key = braceHeavyKey(length: length, braceOneIn: 5, rng: &rng)
            key.withUnsafeBytes { #expect(hasher.slot(of: $0) == hashSlot($0)) }
        }
        // Whole keys of every length, odd and even (braces rare).
        for length in 0..<200 {
            let key = braceHeavyKey(length: length, braceOneIn: 255, rng: &rng)
            key.withUnsafeBytes { #expect(hasher.slot(of: $0) == hashSlot($0), "key \(key)") }
        }
        for key in ["foo", "{user1000}.following", "{}x", "{x", "a{}{b}", ""] {
            Array(key.utf8).withUnsafeBytes { #expect(hasher.slot(of: $0) == hashSlot(key)) }
        }
    }
}
