/// A decoded RESP2/RESP3 value, for the few places off the data path that need
/// to look inside a reply: topology queries, the proxy's own commands, tests.
public indirect enum RESPValue: Equatable, Sendable {
    case simpleString(String)
    case error(String)
    case integer(Int)
    case bulkString([UInt8])
    case null
    case double(String)
    case boolean(Bool)
    case array([RESPValue])
    case map([(RESPValue, RESPValue)])
    case set([RESPValue])
    case push([RESPValue])

    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case let (.simpleString(a), .simpleString(b)), let (.error(a), .error(b)), let (.double(a), .double(b)):
            return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.bulkString(a), .bulkString(b)): return a == b
        case (.null, .null): return true
        case let (.boolean(a), .boolean(b)): return a == b
        case let (.array(a), .array(b)), let (.set(a), .set(b)), let (.push(a), .push(b)): return a == b
        case let (.map(a), .map(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Text of a string-like value (simple, bulk, verbatim), else nil.
    public var string: String? {
        switch self {
        case .simpleString(let s): return s
        case .bulkString(let b): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
    }

    public var integer: Int? {
        if case .integer(let i) = self { return i }
        return nil
    }

    /// Elements of an array or set; the flattened pairs of a map.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let a), .set(let a), .push(let a): return a
        case .map(let pairs): return pairs.flatMap { [$0.0, $0.1] }
        default: return nil
        }
    }

    /// Key/value pairs of a RESP3 map or of a RESP2 flat array of pairs.
    public var pairs: [(String, RESPValue)]? {
        switch self {
        case .map(let pairs):
            return pairs.compactMap { key, value in key.string.map { ($0, value) } }
        case .array(let items) where items.count % 2 == 0:
            return stride(from: 0, to: items.count, by: 2).compactMap { i in
                items[i].string.map { ($0, items[i + 1]) }
            }
        default: return nil
        }
    }

    /// Decodes one value from the front of `bytes`; nil when incomplete or invalid.
    public static func decode(_ bytes: [UInt8]) -> (value: RESPValue, length: Int)? {
        bytes.withUnsafeBytes { raw in
            var index = 0
            guard let value = decodeValue(raw, &index, depth: 0) else { return nil }
            return (value, index)
        }
    }

    static func decodeValue(_ b: UnsafeRawBufferPointer, _ i: inout Int, depth: Int) -> RESPValue? {
        guard depth < 512, i < b.count, let lineEnd = findCRLF(b, from: i + 1) else { return nil }
        let type = b[i]
        let line = String(decoding: UnsafeRawBufferPointer(rebasing: b[(i + 1)..<lineEnd]), as: UTF8.self)
        let lineValue = parseDecimal(b, i + 1, lineEnd)
        i = lineEnd + 2
        switch type {
        case UInt8(ascii: "+"): return .simpleString(line)
        case UInt8(ascii: "-"): return .error(line)
        case UInt8(ascii: ":"): return lineValue.map { .integer($0) }
        case UInt8(ascii: "_"): return .null
        case UInt8(ascii: ","), UInt8(ascii: "("): return .double(line)
        case UInt8(ascii: "#"): return .boolean(line == "t")
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            guard let length = lineValue else { return nil }
            if length < 0 { return .null }
            guard b.count >= i + length + 2 else { return nil }
            var payload = Array(UnsafeRawBufferPointer(rebasing: b[i..<(i + length)]))
            i += length + 2
            if type == UInt8(ascii: "=") && payload.count >= 4 { payload.removeFirst(4) }  // "txt:"
            return type == UInt8(ascii: "!") ? .error(String(decoding: payload, as: UTF8.self)) : .bulkString(payload)
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
            guard let count = lineValue else { return nil }
            if count < 0 { return .null }
            var items: [RESPValue] = []
            for _ in 0..<count {
                guard let item = decodeValue(b, &i, depth: depth + 1) else { return nil }
                items.append(item)
            }
            return type == UInt8(ascii: "*") ? .array(items) : type == UInt8(ascii: "~") ? .set(items) : .push(items)
        case UInt8(ascii: "%"), UInt8(ascii: "|"):
            guard let count = lineValue, count >= 0 else { return nil }
            var pairs: [(RESPValue, RESPValue)] = []
            for _ in 0..<count {
                guard let key = decodeValue(b, &i, depth: depth + 1),
                    let value = decodeValue(b, &i, depth: depth + 1)
                else { return nil }
                pairs.append((key, value))
            }
            // An attribute describes the value that follows; keep the value.
            if type == UInt8(ascii: "|") { return decodeValue(b, &i, depth: depth + 1) }
            return .map(pairs)
        default:
            return nil
        }
    }
}
