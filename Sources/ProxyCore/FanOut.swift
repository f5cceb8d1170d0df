import RESPWire

/// How the parts' replies of a split or broadcast command become one reply,
/// as one Redis server would have answered the whole command.
enum MergeRule {
    /// Integers added up (`DEL`, `EXISTS`, `TOUCH`, `UNLINK`, `DBSIZE`).
    case sum
    /// The smallest integer (`WAIT`: replicas that acknowledged on every master).
    case minimum
    /// Every part must succeed; the reply is the first part's (`+OK` for
    /// `MSET` and `FLUSHALL`, the SHA for `SCRIPT LOAD`).
    case allSucceeded
    /// Array elements put back in the client's key order: entry `i` of
    /// `positions` says which part holds key `i`'s value and where (`MGET`).
    case keyOrder([(part: Int, index: Int)])
    /// Arrays joined, parts in order (`KEYS`).
    case concatenate
    /// Integer arrays combined element by element with AND (`SCRIPT EXISTS`).
    case logicalAnd
    /// The first reply that is not an error (`SCRIPT KILL`, `FUNCTION KILL`).
    case firstSuccess
    /// One non-null reply picked at random (`RANDOMKEY`).
    case randomNonNull
    /// A page of one master's `SCAN`, its cursor rewritten for the client.
    case scan(ScanCursor.Position)
    /// The proxy's own `INFO` sections, then the masters' keyspaces summed.
    case infoKeyspace(prefix: String)
    /// `DUMP`s of the sources of an emulated command, to be computed next.
    case emulate(Worker.EmulationPlan)
    /// The slot groups of a relaxed transaction's `EXEC` (see `Worker+RelaxedTransactions`).
    case relaxedTransaction(RelaxedExecution)
    /// A step of a list move between slots (see `Worker+ListMove`).
    case listMove(Worker.ListMovePlan)

    /// Whether a part that answers `TRYAGAIN` may be split further, key by key.
    var isSplitByKey: Bool {
        switch self {
        case .keyOrder, .sum, .allSucceeded: true
        default: false
        }
    }
}

/// Where a finished fan-out's reply goes: to the client, or into one part of
/// an enclosing fan-out (a part that was split further, key by key).
enum FanOutTarget {
    case client(RequestRecord)
    case part(FanOut, Int)
}

/// A command sent as several parts to several nodes. Each part travels as its
/// own `RequestRecord` (so a MOVED or ASK on one part is followed for that
/// part alone); their replies are kept here until the last one arrives, then
/// merged by `rule`.
final class FanOut {
    let target: FanOutTarget
    let rule: MergeRule
    let resp3: Bool
    /// For `SCRIPT LOAD`: the script, remembered under the SHA the masters return.
    var scriptBody: [UInt8]?
    /// The client, for fan-outs that send a second stage (emulated commands).
    var sessionForNextStage: ClientSession?
    private(set) var replies: [[UInt8]?]
    private var remaining: Int

    init(target: FanOutTarget, rule: MergeRule, parts: Int, resp3: Bool) {
        self.target = target
        self.rule = rule
        self.resp3 = resp3
        replies = Array(repeating: nil, count: parts)
        remaining = parts
    }

    /// Stores part `index`'s reply; true when it was the last one missing.
    func receive(part index: Int, reply: UnsafeRawBufferPointer) -> Bool {
        if replies[index] == nil { remaining -= 1 }
        replies[index] = Array(reply)
        return remaining == 0
    }

    /// The merged reply. The first error among the parts (in part order) wins,
    /// except for `firstSuccess`.
    func merge(into out: ByteBuffer, scanCursor: (ScanCursor.Position, UInt64) -> UInt64?) {
        let parts = replies.map { $0 ?? Array("-ERR slotproxy: a part of the command got no reply\r\n".utf8) }
        if case .firstSuccess = rule {
            out.append(parts.first(where: { !isError($0) }) ?? parts[parts.count - 1])
            return
        }
        if let error = parts.first(where: isError) {
            out.append(error)
            return
        }
        switch rule {
        case .sum:
            var total = 0
            for part in parts {
                guard let value = integerValue(part) else {
                    out.appendError("ERR slotproxy: expected an integer reply from every node")
                    return
                }
                total += value
            }
            out.appendInteger(total)
        case .minimum:
            let values = parts.compactMap(integerValue)
            guard values.count == parts.count, let smallest = values.min() else {
                out.appendError("ERR slotproxy: expected an integer reply from every node")
                return
            }
            out.appendInteger(smallest)
        case .allSucceeded:
            out.append(parts[0])
        case .keyOrder(let positions):
            let elements = parts.map(arrayElements)
            out.appendArrayHeader(positions.count)
            for position in positions {
                guard let ranges = elements[position.part], position.index < ranges.count else {
                    out.clear()
                    out.appendError("ERR slotproxy: a node answered with an unexpected reply shape")
                    return
                }
                out.append(parts[position.part][ranges[position.index]])
            }
        case .concatenate:
            let elements = parts.map(arrayElements)
            out.appendArrayHeader(elements.reduce(0) { $0 + ($1?.count ?? 0) })
            for (part, ranges) in zip(parts, elements) {
                for range in ranges ?? [] { out.append(part[range]) }
            }
        case .logicalAnd:
            let elements = parts.map(arrayElements)
            let count = elements.map { $0?.count ?? 0 }.min() ?? 0
            out.appendArrayHeader(count)
            for i in 0..<count {
                let all = zip(parts, elements).allSatisfy { part, ranges in
                    integerValue(Array(part[ranges![i]])) ?? 0 != 0
                }
                out.appendInteger(all ? 1 : 0)
            }
        case .randomNonNull:
            let candidates = parts.filter { !isNull($0) }
            out.append(candidates.randomElement() ?? parts[0])
        case .scan(let position):
            scanPage(parts[0], position: position, into: out, scanCursor: scanCursor)
        case .infoKeyspace(let prefix):
            Worker.appendInfo(prefix + KeyspaceSummer.sum(parts), resp3: resp3, to: out)
        case .emulate, .relaxedTransaction, .listMove:
            break  // handled by the worker before merging
        case .firstSuccess:
            break
        }
    }

    /// `SCAN` replies `[cursor, [keys...]]`; the node's cursor is replaced by
    /// the client cursor that continues from it.
    private func scanPage(
        _ reply: [UInt8], position: ScanCursor.Position, into out: ByteBuffer,
        scanCursor: (ScanCursor.Position, UInt64) -> UInt64?
    ) {
        guard let ranges = arrayElements(reply), ranges.count == 2,
            case .bulkString(let cursorBytes)? = RESPValue.decode(Array(reply[ranges[0]]))?.value,
            let nodeCursor = UInt64(String(decoding: cursorBytes, as: UTF8.self))
        else {
            out.appendError("ERR slotproxy: unexpected SCAN reply from a node")
            return
        }
        guard let clientCursor = scanCursor(position, nodeCursor) else {
            out.appendError("ERR slotproxy: the node's SCAN cursor is too large to encode")
            return
        }
        out.appendArrayHeader(2)
        out.appendBulk(String(clientCursor))
        out.append(reply[ranges[1]])
    }
}

// MARK: reading replies

func isError(_ reply: [UInt8]) -> Bool {
    reply.first == UInt8(ascii: "-") || reply.first == UInt8(ascii: "!")
}

func isNull(_ reply: [UInt8]) -> Bool {
    reply.starts(with: Array("$-1\r\n".utf8)) || reply.starts(with: Array("_\r\n".utf8))
        || reply.starts(with: Array("*-1\r\n".utf8))
}

/// The value of an integer reply (`:42\r\n`).
func integerValue(_ reply: [UInt8]) -> Int? {
    guard reply.first == UInt8(ascii: ":"), let end = reply.firstIndex(of: 13) else { return nil }
    return Int(String(decoding: reply[1..<end], as: UTF8.self))
}

/// Where each element of an array or set reply lies in its bytes; nil when
/// the reply is not an aggregate of that kind.
func arrayElements(_ reply: [UInt8]) -> [Range<Int>]? {
    guard let type = reply.first, type == UInt8(ascii: "*") || type == UInt8(ascii: "~"),
        let headerEnd = reply.firstIndex(of: 13),
        let count = Int(String(decoding: reply[1..<headerEnd], as: UTF8.self))
    else { return nil }
    if count <= 0 { return [] }
    var ranges: [Range<Int>] = []
    ranges.reserveCapacity(count)
    var offset = headerEnd + 2
    var scanner = ReplyScanner()
    return reply.withUnsafeBytes { bytes in
        for _ in 0..<count {
            guard offset < bytes.count,
                case .complete(let length, _) = scanner.scan(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            else { return nil }
            ranges.append(offset..<(offset + length))
            offset += length
        }
        return ranges
    }
}
