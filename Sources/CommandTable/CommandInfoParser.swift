import RESPWire

/// Table rows read from a live node's `COMMAND` reply, for the commands the
/// built-in table (Redis 7.0's) lacks: those of newer Redis releases
/// (`HEXPIRE`, `WAITAOF` ...) and of modules (`JSON.SET` ...). Their key
/// specs say where the keys are, their tips where they go, as for the
/// built-in rows (`scripts/gen_command_table.py` applies the same rules,
/// plus the hand-made exceptions only known commands need).
public enum CommandInfoParser {
    /// Every row of a `COMMAND` (or `COMMAND INFO ...`) reply that parses.
    public static func specs(fromCommandReply reply: RESPValue) -> [CommandSpec] {
        (reply.elements ?? []).compactMap { spec(from: $0) }
    }

    /// One `COMMAND INFO` entry: name, arity, flags, first key, last key,
    /// step, ACL categories, tips, key specs, subcommands (the last four
    /// from Redis 7 on); nil when it is not one.
    public static func spec(from entry: RESPValue) -> CommandSpec? {
        guard let fields = entry.elements, fields.count >= 6, let name = fields[0].string?.lowercased(),
            let arity = fields[1].integer, let first = fields[3].integer, let last = fields[4].integer,
            let step = fields[5].integer
        else { return nil }
        var flags = CommandFlags()
        for flag in fields[2].elements ?? [] {
            if let text = flag.string, let known = CommandFlags.names.first(where: { $0.0 == text }) {
                flags.insert(known.1)
            }
        }
        let categories = (fields.count > 6 ? fields[6].elements ?? [] : []).compactMap { $0.string }.map {
            $0.hasPrefix("@") ? String($0.dropFirst()) : $0
        }
        let tips = (fields.count > 7 ? fields[7].elements ?? [] : []).compactMap { $0.string }
        let keySpecs = (fields.count > 8 ? fields[8].elements ?? [] : []).compactMap(keySpec)
        let subcommands = (fields.count > 9 ? fields[9].elements ?? [] : []).compactMap { spec(from: $0) }

        var request: RequestPolicy = keySpecs.isEmpty && first == 0 ? .anyNode : .singleSlot
        var response: ResponsePolicy = .passthrough
        var responseTip = false
        for tip in tips {
            switch tip {
            case "request_policy:all_shards": request = .allMasters
            case "request_policy:all_nodes": request = .allNodes
            case "request_policy:multi_shard": request = .splitByKey
            case "response_policy:agg_sum": (response, responseTip) = (.sum, true)
            case "response_policy:all_succeeded": (response, responseTip) = (.allSucceeded, true)
            case "response_policy:one_succeeded": (response, responseTip) = (.firstSuccess, true)
            case "response_policy:agg_logical_and": (response, responseTip) = (.logicalAnd, true)
            case "response_policy:special", "response_policy:agg_min", "response_policy:agg_max",
                "response_policy:agg_logical_or":
                (response, responseTip) = (.special, true)
            default: break
            }
        }
        // One node's reply to a fan-out with no merge rule is not the answer;
        // a split with none (MGET's needs the table's own rule) is not made.
        if !responseTip && (request == .allMasters || request == .allNodes) { response = .special }
        if !responseTip && request == .splitByKey { request = .singleSlot }
        return CommandSpec(
            name: name, arity: arity, flags: flags, aclCategories: categories, firstKey: first, lastKey: last,
            keyStep: step, tips: tips, keySpecs: keySpecs, requestPolicy: request, responsePolicy: response,
            affinity: flags.contains(.blocking) ? .pinned : .multiplexed, subcommands: subcommands)
    }

    /// `{flags, begin_search: {type, spec}, find_keys: {type, spec}}` (maps in
    /// RESP3, flat key/value arrays in RESP2).
    static func keySpec(_ value: RESPValue) -> KeySpec? {
        guard let fields = dictionary(value) else { return nil }
        let flags = (fields["flags"]?.elements ?? []).compactMap { $0.string }
        var begin = BeginSearch.unknown
        if let search = fields["begin_search"].flatMap(dictionary), let spec = search["spec"].flatMap(dictionary) {
            switch search["type"]?.string {
            case "index":
                if let index = spec["index"]?.integer { begin = .index(index) }
            case "keyword":
                if let keyword = spec["keyword"]?.string, let start = spec["startfrom"]?.integer {
                    begin = .keyword(keyword, startFrom: start)
                }
            default: break
            }
        }
        var find = FindKeys.unknown
        if let keys = fields["find_keys"].flatMap(dictionary), let spec = keys["spec"].flatMap(dictionary) {
            switch keys["type"]?.string {
            case "range":
                if let last = spec["lastkey"]?.integer, let step = spec["keystep"]?.integer, let limit = spec["limit"]?.integer {
                    find = .range(lastKey: last, keyStep: step, limit: limit)
                }
            case "keynum":
                if let index = spec["keynumidx"]?.integer, let first = spec["firstkey"]?.integer,
                    let step = spec["keystep"]?.integer
                {
                    find = .keyNum(keyNumIndex: index, firstKey: first, keyStep: step)
                }
            default: break
            }
        }
        return KeySpec(beginSearch: begin, findKeys: find, incomplete: flags.contains("incomplete"), flags: flags)
    }

    private static func dictionary(_ value: RESPValue) -> [String: RESPValue]? {
        guard let pairs = value.pairs else { return nil }
        return Dictionary(pairs, uniquingKeysWith: { first, _ in first })
    }
}
