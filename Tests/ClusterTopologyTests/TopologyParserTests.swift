import RESPWire
import Testing

@testable import ClusterTopology

func decoded(_ text: String) -> RESPValue {
    RESPValue.decode(Array(text.utf8))!.value
}

func bulk(_ s: String) -> String { "$\(s.utf8.count)\r\n\(s)\r\n" }

func shardNode(id: String, port: Int, ip: String, endpoint: String, role: String, health: String = "online") -> String {
    "*14\r\n" + bulk("id") + bulk(id) + bulk("port") + ":\(port)\r\n" + bulk("ip") + bulk(ip) + bulk("endpoint")
        + bulk(endpoint) + bulk("role") + bulk(role) + bulk("replication-offset") + ":100\r\n" + bulk("health")
        + bulk(health)
}

@Suite struct TopologyParserTests {
    @Test func parsesClusterShards() throws {
        let shard1 =
            "*4\r\n" + bulk("slots") + "*4\r\n:0\r\n:100\r\n:200\r\n:300\r\n" + bulk("nodes") + "*2\r\n"
            + shardNode(id: "a", port: 7001, ip: "127.0.0.1", endpoint: "127.0.0.1", role: "master")
            + shardNode(id: "b", port: 7004, ip: "127.0.0.1", endpoint: "127.0.0.1", role: "replica")
        let shard2 =
            "*4\r\n" + bulk("slots") + "*2\r\n:101\r\n:199\r\n" + bulk("nodes") + "*1\r\n"
            + shardNode(id: "c", port: 7002, ip: "::1", endpoint: "redis-b.internal", role: "master")
        let empty = "*4\r\n" + bulk("slots") + "*0\r\n" + bulk("nodes") + "*1\r\n"
            + shardNode(id: "d", port: 7009, ip: "127.0.0.1", endpoint: "?", role: "master")
        let map = try TopologyParser.parseShards(decoded("*3\r\n" + shard1 + shard2 + empty), queriedHost: "seed")
        #expect(map.shards.count == 2)
        #expect(map.shards[0].master.endpoint == "127.0.0.1:7001")
        #expect(map.shards[0].replicas.map(\.port) == [7004])
        #expect(map.shards[0].slotRanges == [0...100, 200...300])
        #expect(map.shards[1].master.host == "redis-b.internal")
        #expect(map.shardForSlot[150] == 1)
        #expect(map.shardForSlot[250] == 0)
        #expect(map.shardForSlot[301] == SlotMap.unassigned)
        #expect(!map.coversAllSlots)
        #expect(map.assignedSlotCount == 301)
    }

    @Test func afterAFailoverTheOnlineMasterOwnsTheShard() throws {
        // The old master, failed, is still listed next to its promoted replica.
        let shard =
            "*4\r\n" + bulk("slots") + "*2\r\n:0\r\n:16383\r\n" + bulk("nodes") + "*2\r\n"
            + shardNode(id: "old", port: 7001, ip: "127.0.0.1", endpoint: "127.0.0.1", role: "master", health: "failed")
            + shardNode(id: "new", port: 7004, ip: "127.0.0.1", endpoint: "127.0.0.1", role: "master")
        let map = try TopologyParser.parseShards(decoded("*1\r\n" + shard), queriedHost: "seed")
        #expect(map.shards[0].master.port == 7004)
        // A failed master with no successor yet keeps its slots: requests wait for it.
        let alone =
            "*4\r\n" + bulk("slots") + "*2\r\n:0\r\n:16383\r\n" + bulk("nodes") + "*1\r\n"
            + shardNode(id: "old", port: 7001, ip: "127.0.0.1", endpoint: "127.0.0.1", role: "master", health: "failed")
        let waiting = try TopologyParser.parseShards(decoded("*1\r\n" + alone), queriedHost: "seed")
        #expect(waiting.shards[0].master.health == "failed" && waiting.coversAllSlots)
    }

    @Test func unknownEndpointMeansTheQueriedHost() throws {
        let shard =
            "*4\r\n" + bulk("slots") + "*2\r\n:0\r\n:16383\r\n" + bulk("nodes") + "*1\r\n"
            + shardNode(id: "a", port: 7001, ip: "?", endpoint: "?", role: "master")
        let map = try TopologyParser.parseShards(decoded("*1\r\n" + shard), queriedHost: "10.0.0.5")
        #expect(map.shards[0].master.host == "10.0.0.5")
        #expect(map.coversAllSlots)
    }

    @Test func parsesClusterSlots() throws {
        func node(_ host: String, _ port: Int, _ id: String) -> String { "*3\r\n" + bulk(host) + ":\(port)\r\n" + bulk(id) }
        let reply =
            "*4\r\n"
            + "*4\r\n:0\r\n:5460\r\n" + node("127.0.0.1", 7001, "a") + node("127.0.0.1", 7004, "d")
            + "*3\r\n:5461\r\n:9999\r\n" + node("::1", 7002, "b")
            + "*3\r\n:10001\r\n:16383\r\n" + node("::1", 7002, "b")
            + "*3\r\n:10000\r\n:10000\r\n" + node("127.0.0.1", 7001, "a")
        let map = try TopologyParser.parseSlots(decoded(reply), queriedHost: "seed")
        #expect(map.shards.count == 2)
        #expect(map.shards[0].slotRanges == [0...5460, 10000...10000])
        #expect(map.shards[0].replicas.map(\.port) == [7004])
        #expect(map.shards[1].master.endpoint == "[::1]:7002")
        #expect(map.shards[1].slotRanges == [5461...9999, 10001...16383])
        #expect(map.shardForSlot[10000] == 0)
        #expect(map.coversAllSlots)
    }

    @Test func rejectsGarbage() {
        #expect(throws: TopologyParseError.self) { try TopologyParser.parseShards(.integer(1), queriedHost: "x") }
        #expect(throws: TopologyParseError.self) {
            try TopologyParser.parseSlots(decoded("*1\r\n*1\r\n:0\r\n"), queriedHost: "x")
        }
    }
}

@Suite struct RedirectTests {
    @Test(arguments: [
        ("MOVED 3999 127.0.0.1:6381", Redirect(kind: .moved, slot: 3999, host: "127.0.0.1", port: 6381)),
        ("ASK 3999 127.0.0.1:6381", Redirect(kind: .ask, slot: 3999, host: "127.0.0.1", port: 6381)),
        ("-MOVED 1 redis-b.internal:6379\r\n", Redirect(kind: .moved, slot: 1, host: "redis-b.internal", port: 6379)),
        ("MOVED 16383 ::1:7002", Redirect(kind: .moved, slot: 16383, host: "::1", port: 7002)),
        ("MOVED 7 [fe80::1]:7002", Redirect(kind: .moved, slot: 7, host: "fe80::1", port: 7002)),
        ("MOVED 7 :7002", Redirect(kind: .moved, slot: 7, host: "sender", port: 7002)),
        ("ASK 7 ?:7002", Redirect(kind: .ask, slot: 7, host: "sender", port: 7002)),
    ])
    func parses(text: String, expected: Redirect) {
        #expect(Redirect(errorText: text, defaultHost: "sender") == expected)
    }

    @Test(arguments: ["MOVED", "MOVED x 1.2.3.4:5", "MOVED 16384 a:1", "MOVED 1 a", "MOVED 1 a:0", "ERR 1 a:1", "ASK 1 a:99999"])
    func rejects(text: String) {
        #expect(Redirect(errorText: text, defaultHost: "x") == nil)
    }
}
