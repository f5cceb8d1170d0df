/// A node of the cluster as the topology reports it.
public struct ClusterNode: Hashable, Sendable {
    public var id: String
    public var host: String
    public var port: Int
    public var isMaster: Bool
    /// `online`, `loading`, `failed` (from `CLUSTER SHARDS` health; `online`
    /// otherwise); `unhealthy` when the proxy's own check found a replica
    /// loading, cut off from its master, or not answering.
    public var health: String
    /// Round trip of the proxy's last health check, in 100 µs steps (0: not measured).
    public var roundTrip: Int = 0

    public init(id: String, host: String, port: Int, isMaster: Bool, health: String = "online") {
        self.id = id
        self.host = host
        self.port = port
        self.isMaster = isMaster
        self.health = health
    }

    public var endpoint: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A master and its replicas, and the slot ranges the master serves.
public struct Shard: Hashable, Sendable {
    public var master: ClusterNode
    public var replicas: [ClusterNode]
    public var slotRanges: [ClosedRange<Int>]

    public init(master: ClusterNode, replicas: [ClusterNode], slotRanges: [ClosedRange<Int>]) {
        self.master = master
        self.replicas = replicas
        self.slotRanges = slotRanges
    }
}

/// An immutable snapshot of which shard serves each slot. Workers hold one and
/// swap it whole when the refresher publishes a new one.
public struct SlotMap: Sendable, Equatable {
    /// No shard serves this slot.
    public static let unassigned: UInt16 = .max

    public let shards: [Shard]
    /// For each of the 16384 slots, the index into `shards`, or `unassigned`.
    public private(set) var shardForSlot: [UInt16]
    /// The backend is one plain Redis server, not a cluster.
    public let isStandalone: Bool

    public init(shards: [Shard], isStandalone: Bool = false) {
        self.shards = shards
        self.isStandalone = isStandalone
        var table = [UInt16](repeating: SlotMap.unassigned, count: clusterSlotCount)
        for (index, shard) in shards.enumerated() {
            for range in shard.slotRanges where range.lowerBound >= 0 && range.upperBound < clusterSlotCount {
                for slot in range { table[slot] = UInt16(index) }
            }
        }
        shardForSlot = table
    }

    /// True when every slot has an owner: the proxy serves keys only then.
    public var coversAllSlots: Bool { !shardForSlot.contains(SlotMap.unassigned) }

    public var assignedSlotCount: Int { shardForSlot.lazy.filter { $0 != SlotMap.unassigned }.count }

    public var masters: [ClusterNode] { shards.map(\.master) }

    /// One plain Redis server serving everything (no cluster).
    public static func standalone(host: String, port: Int) -> SlotMap {
        let node = ClusterNode(id: "standalone", host: host, port: port, isMaster: true)
        return SlotMap(shards: [Shard(master: node, replicas: [], slotRanges: [0...(clusterSlotCount - 1)])], isStandalone: true)
    }

    /// Every node, masters first: candidates to ask for the next refresh.
    public var allNodes: [ClusterNode] { shards.map(\.master) + shards.flatMap(\.replicas) }

    /// A summary for logs and equality of meaning: each master with its ranges.
    public var summary: String {
        shards.map { shard in
            let ranges = shard.slotRanges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            return "\(shard.master.endpoint)[\(ranges.joined(separator: ","))]+\(shard.replicas.count)r"
        }.joined(separator: " ")
    }
}
