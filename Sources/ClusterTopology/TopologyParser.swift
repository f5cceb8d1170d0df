import RESPWire

public struct TopologyParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Parsers for the two topology replies. `queriedHost` fills in endpoints a
/// node reports as empty or `?` (it means "the address you reached me at").
public enum TopologyParser {
    /// `CLUSTER SHARDS` (Redis 7+): per shard a map with `slots` (flat list of
    /// range bounds) and `nodes` (maps with id, port/tls-port, ip, endpoint,
    /// hostname, role, replication-offset, health). Shards without slots are
    /// skipped. A shard listing two masters (the old one failed, its replica
    /// promoted) is owned by the online one; a shard whose only master has
    /// failed keeps it, so requests for its slots wait for the failover
    /// rather than finding no owner.
    public static func parseShards(_ reply: RESPValue, queriedHost: String, overTLS: Bool = false) throws -> SlotMap {
        guard let shardValues = reply.elements else {
            throw TopologyParseError("CLUSTER SHARDS: expected an array, got \(reply)")
        }
        var shards: [Shard] = []
        for shardValue in shardValues {
            guard let fields = shardValue.pairs else { throw TopologyParseError("CLUSTER SHARDS: shard is not a map") }
            var ranges: [ClosedRange<Int>] = []
            var master: ClusterNode?
            var replicas: [ClusterNode] = []
            for (key, value) in fields {
                switch key {
                case "slots":
                    let bounds = (value.elements ?? []).compactMap(\.integer)
                    guard bounds.count % 2 == 0 else { throw TopologyParseError("CLUSTER SHARDS: odd slot bound list") }
                    for i in stride(from: 0, to: bounds.count, by: 2) where bounds[i] <= bounds[i + 1] {
                        ranges.append(bounds[i]...bounds[i + 1])
                    }
                case "nodes":
                    for nodeValue in value.elements ?? [] {
                        guard let node = try parseShardNode(nodeValue, queriedHost: queriedHost, overTLS: overTLS) else { continue }
                        if node.isMaster {
                            // After a failover the old master may still be listed
                            // (failed): the online one owns the slots.
                            if master == nil || master!.health != "online" && node.health == "online" { master = node }
                        } else {
                            replicas.append(node)
                        }
                    }
                default: break
                }
            }
            if let master, !ranges.isEmpty {
                shards.append(Shard(master: master, replicas: replicas, slotRanges: ranges.sorted { $0.lowerBound < $1.lowerBound }))
            }
        }
        return SlotMap(shards: shards.sorted { $0.slotRanges[0].lowerBound < $1.slotRanges[0].lowerBound })
    }

    /// `overTLS`: the proxy reaches the nodes over TLS, at their `tls-port`.
    static func parseShardNode(_ value: RESPValue, queriedHost: String, overTLS: Bool = false) throws -> ClusterNode? {
        guard let fields = value.pairs else { throw TopologyParseError("CLUSTER SHARDS: node is not a map") }
        var id = "", endpoint = "", ip = "", hostname = "", role = "", health = "online"
        var port = 0
        for (key, field) in fields {
            switch key {
            case "id": id = field.string ?? ""
            case "port" where !overTLS, "tls-port" where overTLS: port = field.integer ?? 0
            case "endpoint": endpoint = field.string ?? ""
            case "ip": ip = field.string ?? ""
            case "hostname": hostname = field.string ?? ""
            case "role": role = field.string ?? ""
            case "health": health = field.string ?? "online"
            default: break
            }
        }
        guard port > 0 else { return nil }  // not reachable the way the proxy connects
        var host = endpoint
        if host.isEmpty || host == "?" { host = !ip.isEmpty && ip != "?" ? ip : !hostname.isEmpty ? hostname : queriedHost }
        return ClusterNode(id: id, host: host, port: port, isMaster: role == "master", health: health)
    }

    /// `CLUSTER SLOTS`: per range `[start, end, master, replica...]`, each node
    /// `[host, port, id, {metadata}]`. Ranges of one master are merged into one shard.
    public static func parseSlots(_ reply: RESPValue, queriedHost: String) throws -> SlotMap {
        guard let rangeValues = reply.elements else {
            throw TopologyParseError("CLUSTER SLOTS: expected an array, got \(reply)")
        }
        var shards: [Shard] = []
        var shardIndexByMaster: [String: Int] = [:]
        for rangeValue in rangeValues {
            guard let items = rangeValue.elements, items.count >= 3,
                let start = items[0].integer, let end = items[1].integer, start <= end
            else { throw TopologyParseError("CLUSTER SLOTS: malformed range entry") }
            let nodes = try items[2...].map { try parseSlotsNode($0, queriedHost: queriedHost) }
            let masterNode = ClusterNode(
                id: nodes[0].id, host: nodes[0].host, port: nodes[0].port, isMaster: true)
            let key = masterNode.id.isEmpty ? masterNode.endpoint : masterNode.id
            if let index = shardIndexByMaster[key] {
                shards[index].slotRanges.append(start...end)
            } else {
                shardIndexByMaster[key] = shards.count
                let replicas = nodes.dropFirst().map {
                    ClusterNode(id: $0.id, host: $0.host, port: $0.port, isMaster: false)
                }
                shards.append(Shard(master: masterNode, replicas: Array(replicas), slotRanges: [start...end]))
            }
        }
        for i in shards.indices { shards[i].slotRanges.sort { $0.lowerBound < $1.lowerBound } }
        return SlotMap(shards: shards.sorted { $0.slotRanges[0].lowerBound < $1.slotRanges[0].lowerBound })
    }

    static func parseSlotsNode(_ value: RESPValue, queriedHost: String) throws -> ClusterNode {
        guard let fields = value.elements, fields.count >= 2, let port = fields[1].integer else {
            throw TopologyParseError("CLUSTER SLOTS: malformed node entry")
        }
        var host = fields[0].string ?? ""
        if host.isEmpty || host == "?" { host = queriedHost }
        let id = fields.count > 2 ? fields[2].string ?? "" : ""
        return ClusterNode(id: id, host: host, port: port, isMaster: false)
    }
}
