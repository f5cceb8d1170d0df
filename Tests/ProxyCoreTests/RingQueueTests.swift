import XCTest

@testable import ProxyCore

final class RingQueueTests: XCTestCase {
    final class Tracked {
        let value: Int
        let onDeinit: () -> Void
        init(_ value: Int, onDeinit: @escaping () -> Void) {
            self.value = value
            self.onDeinit = onDeinit
        }
        deinit { onDeinit() }
    }

    func testKeepsOrderAcrossWrapAroundAndGrowth() {
        var queue = RingQueue<Int>(capacity: 4)
        var expected: [Int] = []
        var next = 0
        // Pushes outpace pops, so the ring wraps and then grows while wrapped.
        for round in 0..<50 {
            for _ in 0..<(round % 3 + 2) {
                queue.append(next)
                expected.append(next)
                next += 1
            }
            XCTAssertEqual(queue.popFirst(), expected.removeFirst())
            XCTAssertEqual(queue.count, expected.count)
            XCTAssertEqual(queue.first, expected.first)
            if let last = expected.last { XCTAssertEqual(queue[expected.count - 1], last) }
        }
        XCTAssertEqual(queue.removeAll(), expected)
        XCTAssertTrue(queue.isEmpty)
        XCTAssertNil(queue.popFirst())
    }

    func testOptionalElementsAndReleaseOfWhatIsLeft() {
        var released = 0
        do {
            var queue = RingQueue<Tracked?>(capacity: 2)
            for i in 0..<5 { queue.append(i == 2 ? nil : Tracked(i) { released += 1 }) }
            let popped = queue.popFirst()
            XCTAssertEqual(popped??.value, 0)
            XCTAssertEqual(queue.popFirst()??.value, 1)
            XCTAssertEqual(released, 1, "a popped element lives as long as its taker holds it")
            let third: Tracked?? = queue.popFirst()
            XCTAssertTrue(third.map { $0 == nil } ?? false, "the queued nil is an element")
            _ = popped
        }
        XCTAssertEqual(released, 4, "elements still queued (3 and 4) are released with the queue")
    }
}

final class CommandNameCacheTests: XCTestCase {
    private func key(_ name: String) -> UInt64 { Array(name.utf8).withUnsafeBytes { CommandNameCache.key($0) } }

    func testKeysTellNamesApartByBytesAndLength() {
        let names = ["get", "GET", "Get", "ge", "gett", "g", "set", "getex\u{0}", "a\u{0}", "a"]
        XCTAssertEqual(Set(names.map(key)).count, names.count)
        XCTAssertEqual(key("get"), key("get"))
        XCTAssertEqual(key(""), 0)
        XCTAssertEqual(key("getrange"), 0, "8 bytes and more are not cached")
        XCTAssertNotEqual(key("getrang"), 0)
    }
}
