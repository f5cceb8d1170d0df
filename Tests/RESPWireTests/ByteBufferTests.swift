import Testing

@testable import RESPWire

@Suite struct ByteBufferTests {
    @Test func growingKeepsTheReadableBytesWithOrWithoutConsumedOnes() {
        // From the front (realloc in place) and with consumed bytes ahead
        // of the readable ones (copied into new storage).
        for consumed in [0, 10] {
            let buffer = ByteBuffer(capacity: 64)
            let bytes = (0..<200).map { UInt8(truncatingIfNeeded: $0) }
            buffer.append(Array(bytes[0..<50]))
            buffer.consume(consumed)
            buffer.append(Array(bytes[50..<200]))
            buffer.reserveWritable(1 << 20)
            #expect(buffer.readableArray() == Array(bytes[consumed...]))
            #expect(buffer.allocatedCapacity >= (1 << 20) + buffer.readableBytes)
        }
    }

    @Test func decimalsMatchSwiftsOwn() {
        let values = Array(-101...101) + [999, 1000, 65536, Int.max, Int.min, Int.min + 1]
        let buffer = ByteBuffer(capacity: 8)
        for value in values {
            buffer.appendDecimal(value)
            buffer.append(byte: UInt8(ascii: " "))
        }
        #expect(String(decoding: buffer.readableArray(), as: UTF8.self) == values.map { "\($0) " }.joined())
    }

    @Test func swappingContentsHandsOverStorageAndBytes() {
        let big = ByteBuffer(capacity: 64)
        big.append(Array("frame|rest".utf8))
        let small = ByteBuffer(capacity: 64)
        small.append(Array("old".utf8))
        small.clear()
        let bigCapacity = big.allocatedCapacity
        small.swapContents(with: big)
        #expect(small.readableArray() == Array("frame|rest".utf8))
        #expect(small.allocatedCapacity == bigCapacity)
        #expect(big.isEmpty)
        small.keepReadable(5)
        #expect(small.readableArray() == Array("frame".utf8))
        small.swapContents(with: small)  // itself: nothing changes
        #expect(small.readableArray() == Array("frame".utf8))
    }
}
