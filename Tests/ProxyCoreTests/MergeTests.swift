import ClusterTopology
import RESPWire
import Testing

@testable import ProxyCore

func merged(_ rule: MergeRule, _ replies: [String]) -> String {
    // The target is never reached: merge() only computes the reply.
    let target = FanOut(target: .client(RequestRecord()), rule: .sum, parts: 1, resp3: false)
    let fanOut = FanOut(target: .part(target, 0), rule: rule, parts: replies.count, resp3: false)
    var done = false
    for (index, reply) in replies.enumerated() {
        done = Array(reply.utf8).withUnsafeBytes { fanOut.receive(part: index, reply: $0) }
    }
    #expect(done)
    let out = ByteBuffer()
    fanOut.merge(into: out) { _, cursor in cursor == 0 ? 0 : 42 }
    return String(decoding: out.readableArray(), as: UTF8.self)
}

@Suite struct MergeTests {
    @Test func sumsIntegers() {
        #expect(merged(.sum, [":1\r\n", ":0\r\n", ":41\r\n"]) == ":42\r\n")
    }

    @Test func firstErrorWins() {
        #expect(merged(.sum, [":1\r\n", "-ERR a\r\n", "-ERR b\r\n"]) == "-ERR a\r\n")
        #expect(merged(.allSucceeded, ["+OK\r\n", "-MOVED 1 x:1\r\n"]) == "-MOVED 1 x:1\r\n")
        #expect(merged(.firstSuccess, ["-NOTBUSY\r\n", "+OK\r\n"]) == "+OK\r\n")
        #expect(merged(.firstSuccess, ["-NOTBUSY a\r\n", "-NOTBUSY b\r\n"]) == "-NOTBUSY b\r\n")
    }

    @Test func putsValuesBackInKeyOrder() {
        // Keys 0,2 went to part 0; key 1 to part 1; key 3 to part 0 again.
        let rule = MergeRule.keyOrder([(0, 0), (1, 0), (0, 1), (0, 2)])
        let result = merged(rule, ["*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n", "*1\r\n$2\r\nbb\r\n"])
        #expect(result == "*4\r\n$1\r\na\r\n$2\r\nbb\r\n$-1\r\n*1\r\n:1\r\n")
    }

    @Test func keyOrderTakesElementsInAnyOrder() {
        // A cursor per part walks forward; going back restarts it.
        let rule = MergeRule.keyOrder([(0, 1), (0, 0), (1, 0), (0, 1)])
        #expect(merged(rule, ["*2\r\n$1\r\na\r\n$1\r\nb\r\n", "~1\r\n:7\r\n"]) == "*4\r\n$1\r\nb\r\n$1\r\na\r\n:7\r\n$1\r\nb\r\n")
    }

    @Test func keyOrderRefusesRepliesOfTheWrongShape() {
        let shapeError = "-ERR slotproxy: a node answered with an unexpected reply shape\r\n"
        // A part with fewer values than keys, a part that is no array, a null array.
        #expect(merged(.keyOrder([(0, 0), (0, 1)]), ["*1\r\n$1\r\na\r\n"]) == shapeError)
        #expect(merged(.keyOrder([(0, 0), (1, 0)]), ["*1\r\n$1\r\na\r\n", "+OK\r\n"]) == shapeError)
        #expect(merged(.keyOrder([(0, 0)]), ["*-1\r\n"]) == shapeError)
        // An error in any part is the reply.
        #expect(merged(.keyOrder([(0, 0), (1, 0)]), ["*1\r\n$1\r\na\r\n", "-TRYAGAIN x\r\n"]) == "-TRYAGAIN x\r\n")
    }

    @Test func sumsNegativeAndRefusesNonIntegers() {
        #expect(merged(.sum, [":-3\r\n", ":5\r\n"]) == ":2\r\n")
        #expect(merged(.sum, [":1\r\n", "+OK\r\n"]) == "-ERR slotproxy: expected an integer reply from every node\r\n")
        #expect(merged(.sum, [":1x\r\n"]) == "-ERR slotproxy: expected an integer reply from every node\r\n")
        #expect(merged(.sum, [":9223372036854775807\r\n", ":0\r\n"]) == ":9223372036854775807\r\n")
        #expect(merged(.sum, [":9223372036854775807\r\n", ":1\r\n"]) == "-ERR slotproxy: the nodes' integers overflow when added\r\n")
    }

    @Test func aPartRepliedTwiceKeepsTheLastReply() {
        let fanOut = FanOut(target: .client(RequestRecord()), rule: .allSucceeded, parts: 2, resp3: false)
        #expect(!Array("+first\r\n".utf8).withUnsafeBytes { fanOut.receive(part: 0, reply: $0) })
        #expect(!Array("+second\r\n".utf8).withUnsafeBytes { fanOut.receive(part: 0, reply: $0) })
        #expect(Array("+OK\r\n".utf8).withUnsafeBytes { fanOut.receive(part: 1, reply: $0) })
        #expect(fanOut.reply(0) == Array("+second\r\n".utf8))
        #expect(fanOut.replies.count == 2)
    }

    @Test func concatenatesAndAnds() {
        #expect(merged(.concatenate, ["*1\r\n$1\r\na\r\n", "*0\r\n", "*2\r\n$1\r\nb\r\n$1\r\nc\r\n"])
            == "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
        #expect(merged(.logicalAnd, ["*2\r\n:1\r\n:1\r\n", "*2\r\n:1\r\n:0\r\n"]) == "*2\r\n:1\r\n:0\r\n")
    }

    @Test func rewritesScanCursor() {
        let position = ScanCursor.Position(slot: 5461, tag: 7, nodeCursor: 0)
        #expect(merged(.scan(position), ["*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"]) == "*2\r\n$2\r\n42\r\n*1\r\n$1\r\nk\r\n")
        #expect(merged(.scan(position), ["*2\r\n$1\r\n0\r\n*0\r\n"]) == "*2\r\n$1\r\n0\r\n*0\r\n")
    }

    @Test func findsArrayElements() {
        let reply = Array("*3\r\n$3\r\nabc\r\n*2\r\n:1\r\n+x\r\n_\r\n".utf8)
        let ranges = arrayElements(reply)
        #expect(ranges?.count == 3)
        #expect(ranges.map { $0.map { String(decoding: reply[$0], as: UTF8.self) } } == ["$3\r\nabc\r\n", "*2\r\n:1\r\n+x\r\n", "_\r\n"])
        #expect(arrayElements(Array(":1\r\n".utf8)) == nil)
    }
}

@Suite struct ScanCursorTests {
    @Test func roundTrips() {
        for (slot, tag, cursor) in [(0, 0, UInt64(1)), (16383, 65535, (1 << 34) - 1), (5461, 1234, 987_654)] {
            let position = ScanCursor.Position(slot: slot, tag: UInt16(tag), nodeCursor: cursor)
            let encoded = ScanCursor.encode(position)!
            let decoded = ScanCursor.decode(encoded)
            #expect(decoded.slot == slot && decoded.tag == UInt16(tag) && decoded.nodeCursor == cursor)
        }
        #expect(ScanCursor.encode(ScanCursor.Position(slot: 0, tag: 0, nodeCursor: 1 << 34)) == nil)
    }

    @Test func tagsDifferByNode() {
        let a = ClusterNode(id: "a", host: "127.0.0.1", port: 7001, isMaster: true)
        let b = ClusterNode(id: "b", host: "127.0.0.1", port: 7004, isMaster: true)
        #expect(ScanCursor.tag(of: a) != ScanCursor.tag(of: b))
        #expect(ScanCursor.tag(of: a) == ScanCursor.tag(of: a))
    }

    private func node(_ port: Int, master: Bool = true) -> ClusterNode {
        ClusterNode(id: "n\(port)", host: "127.0.0.1", port: port, isMaster: master)
    }

    private func shard(_ master: Int, _ replica: Int, _ ranges: [ClosedRange<Int>]) -> Shard {
        Shard(master: node(master), replicas: [node(replica, master: false)], slotRanges: ranges)
    }

    /// Every shard of the map once, from cursor 0 back to 0.
    private func walk(_ map: SlotMap, startingAfter start: Int? = nil) -> [Int] {
        var visited: [Int] = []
        var shard = start.flatMap { ScanCursor.next(after: $0, in: map) } ?? (start == nil ? ScanCursor.first(in: map) : nil)
        while let current = shard, visited.count <= map.shards.count {
            visited.append(current)
            shard = ScanCursor.next(after: current, in: map)
        }
        return visited
    }

    @Test func walkVisitsEveryShardOnce() {
        let map = SlotMap(shards: [
            shard(7002, 7005, [10923...16383]), shard(7000, 7003, [0...5460]), shard(7001, 7004, [5461...10922]),
        ])
        #expect(walk(map).map { map.shards[$0].master.port } == [7000, 7001, 7002])
    }

    /// Resharding moved slot 1 from the first shard to the last while the
    /// cursor was on the second: the last is still ahead (ordered by first
    /// slot it fell behind the cursor and was never scanned).
    @Test func aMovedSlotPutsNoShardBehindTheCursor() {
        let before = SlotMap(shards: [
            shard(7000, 7003, [0...5460]), shard(7001, 7004, [5461...10922]), shard(7002, 7005, [10923...16383]),
        ])
        let onSecond = ScanCursor.start(of: 1, in: before)
        let after = SlotMap(shards: [
            shard(7002, 7005, [1...1, 10923...16383]), shard(7000, 7003, [0...0, 2...5460]),
            shard(7001, 7004, [5461...10922]),
        ])
        let located = ScanCursor.locate(onSecond, in: after)
        #expect(located?.continues == true && after.shards[located!.shard].master.port == 7001)
        #expect(walk(after, startingAfter: located!.shard).map { after.shards[$0].master.port } == [7002])
        // The master's own slot moved away too: found by its tag, cursor kept.
        let moved = SlotMap(shards: [
            shard(7000, 7003, [0...5461]), shard(7001, 7004, [5462...10922]), shard(7002, 7005, [10923...16383]),
        ])
        let relocated = ScanCursor.locate(onSecond, in: moved)
        #expect(relocated?.continues == true && moved.shards[relocated!.shard].master.port == 7001)
    }

    /// A failover swaps master and replica: same place in the walk, and the
    /// new master scans from 0.
    @Test func aFailoverKeepsTheOrderAndRestartsThatMaster() {
        let before = SlotMap(shards: [
            shard(7000, 7003, [0...5460]), shard(7001, 7004, [5461...10922]), shard(7002, 7005, [10923...16383]),
        ])
        let onSecond = ScanCursor.start(of: 1, in: before)
        let after = SlotMap(shards: [
            shard(7000, 7003, [0...5460]), shard(7004, 7001, [5461...10922]), shard(7002, 7005, [10923...16383]),
        ])
        let located = ScanCursor.locate(onSecond, in: after)
        #expect(located?.continues == false && after.shards[located!.shard].master.port == 7004)
        #expect(walk(after, startingAfter: located!.shard).map { after.shards[$0].master.port } == [7002])
    }
}

@Suite struct MemorySummerTests {
    func bulk(_ text: String) -> [UInt8] { Array("$\(text.utf8.count)\r\n\(text)\r\n".utf8) }

    @Test func sizesAddUpAndThePolicyIsTheFirsts() {
        let a = bulk("# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:1000\r\nmaxmemory_policy:allkeys-lru\r\n")
        let b = bulk("# Memory\r\nused_memory:524288\r\nmaxmemory:2000\r\nmaxmemory_policy:noeviction\r\n")
        #expect(
            MemorySummer.sum([a, b])
                == "# Memory\r\nused_memory:1572864\r\nused_memory_human:1.50M\r\nmaxmemory:3000\r\nmaxmemory_human:2.93K\r\nmaxmemory_policy:allkeys-lru\r\n\r\n")
    }

    @Test func oneMasterWithoutALimitMeansNoLimit() {
        let a = bulk("maxmemory:1000\r\n")
        let b = bulk("maxmemory:0\r\n")
        #expect(MemorySummer.sum([a, b]).contains("maxmemory:0\r\n"))
        #expect(MemorySummer.sum([]) == "# Memory\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n\r\n")
    }

    @Test func humanSizesAsRedisWritesThem() {
        #expect(MemorySummer.human(512) == "512B")
        #expect(MemorySummer.human(1024 * 1.5) == "1.50K")
        #expect(MemorySummer.human(1024 * 1024 * 12.34) == "12.34M")
        #expect(MemorySummer.human(1024 * 1024 * 1024 * 2.05) == "2.05G")
    }
}

@Suite struct KeyspaceSummerTests {
    @Test func sumsPerDatabase() {
        func bulk(_ text: String) -> [UInt8] { Array("$\(text.utf8.count)\r\n\(text)\r\n".utf8) }
        let a = bulk("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n")
        let b = bulk("# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=300\r\n")
        let text = KeyspaceSummer.sum([a, b])
        #expect(text == "# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=200\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n")
    }

    /// Keys with TTLs decades away (`PXAT` far ahead) make avg_ttl times
    /// expires overflow an Int: the sum must not trap.
    @Test func hugeTTLsDoNotOverflow() {
        func bulk(_ text: String) -> [UInt8] { Array("$\(text.utf8.count)\r\n\(text)\r\n".utf8) }
        let a = bulk("# Keyspace\r\ndb0:keys=100,expires=100,avg_ttl=99999999999999999\r\n")
        let b = bulk("# Keyspace\r\ndb0:keys=100,expires=100,avg_ttl=99999999999999999\r\n")
        let text = KeyspaceSummer.sum([a, b])
        #expect(text.hasPrefix("# Keyspace\r\ndb0:keys=200,expires=200,avg_ttl="))
        let average = Int(String(text.split(separator: "=").last!.prefix(while: \.isNumber)))!
        #expect(abs(average - 99_999_999_999_999_999) < 100)
    }
}

@Test func numsubCountsAKeyspaceNotificationChannelOnce() {
    // Every listening client is subscribed to it on every master.
    let master = "*4\r\n$18\r\n__keyevent@0__:set\r\n:2\r\n$2\r\nch\r\n:1\r\n"
    let other = "*4\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n$2\r\nch\r\n:0\r\n"
    #expect(merged(.sumPairs, [master, master, other]) == "*4\r\n$18\r\n__keyevent@0__:set\r\n:2\r\n$2\r\nch\r\n:2\r\n")
}
