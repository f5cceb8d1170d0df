import CommandTable
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
    /// Arrays joined without repeated elements (`PUBSUB CHANNELS`).
    case union
    /// Flat [name, count, ...] arrays of the same names: counts added
    /// (`PUBSUB NUMSUB`).
    case sumPairs
    /// Integer arrays combined element by element with AND (`SCRIPT EXISTS`).
    case logicalAnd
    /// The first reply that is not an error (`SCRIPT KILL`, `FUNCTION KILL`).
    case firstSuccess
    /// One non-null reply picked at random (`RANDOMKEY`).
    case randomNonNull
    /// A page of one master's `SCAN`, its cursor rewritten for the client.
    case scan(ScanCursor.Position)
    /// The proxy's own `INFO` sections, then the masters' memory and
    /// keyspaces summed (those asked for).
    case info(prefix: String, memory: Bool, keyspace: Bool)
    /// `DUMP`s of the sources of an emulated command, to be computed next.
    case emulate(Worker.EmulationPlan)
    /// The slot groups of a relaxed transaction's `EXEC` (see `Worker+RelaxedTransactions`).
    case relaxedTransaction(RelaxedExecution)
    /// A step of a list move between slots (see `Worker+ListMove`).
    case listMove(Worker.ListMovePlan)
    /// A step of a blocking pop over several slots (see `Worker+PopAcrossSlots`).
    case popRace(Worker.PopRace, Worker.PopStep)
    /// `XREAD`/`XREADGROUP` over several slots: without `BLOCK`, all
    /// groups at once; with it, one blocked group (see `Worker+StreamReads`).
    case streamRead(Worker.StreamRead)
    case streamRace(Worker.StreamRace, Int)

    /// Whether a part that answers `TRYAGAIN` may be split further, key by key.
    var isSplitByKey: Bool {
        switch self {
        case .keyOrder, .sum, .allSucceeded: true
        default: false
        }
    }

    /// Whether `FanOut.merge` reads the parts' replies where they lie: the
    /// split commands' rules (and broadcasts that merge the same way), the
    /// same set as `isSplitByKey` today.
    var mergesInPlace: Bool { isSplitByKey }
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
    /// Part reply bytes counted in the client's `partReplyBytesHeld`.
    var countedReplyBytes = 0
    /// The client its merged reply goes to, when it goes straight to one.
    var clientSession: ClientSession? {
        if case .client(let parent) = target { return parent.session }
        return nil
    }
    /// The client's record its merged reply answers in the end (through
    /// the fan-outs it is a part of), if any.
    var clientRecord: RequestRecord? {
        switch target {
        case .client(let parent): parent
        case .part(let outer, _): outer.clientRecord
        }
    }
    /// The parts' replies back to back, and where each lies (nil: not yet):
    /// one buffer for all parts rather than an array each.
    private var storage: [UInt8] = []
    private var spans: [Range<Int>?]
    private var remaining: Int
    private static let noReply = Array("-ERR slotproxy: a part of the command got no reply\r\n".utf8)

    init(target: FanOutTarget, rule: MergeRule, parts: Int, resp3: Bool) {
        self.target = target
        self.rule = rule
        self.resp3 = resp3
        spans = Array(repeating: nil, count: parts)
        remaining = parts
    }

    /// Stores part `index`'s reply; true when it was the last one missing.
    func receive(part index: Int, reply: UnsafeRawBufferPointer) -> Bool {
        // (A part answered twice keeps its last reply; the first stays as dead bytes.)
        if spans[index] == nil { remaining -= 1 }
        if storage.isEmpty {
            // Room for parts of about this size, within reason.
            storage.reserveCapacity(min(reply.count * spans.count, 64 * 1024))
        }
        let start = storage.count
        storage.append(contentsOf: reply)
        spans[index] = start..<storage.count
        return remaining == 0
    }

    /// Part `index`'s reply, nil while it has none.
    func reply(_ index: Int) -> [UInt8]? {
        spans[index].map { Array(storage[$0]) }
    }

    /// Every part's reply, in part order.
    var replies: [[UInt8]?] { (0..<spans.count).map(reply) }

    /// The merged reply. The first error among the parts (in part order) wins,
    /// except for `firstSuccess`.
    func merge(into out: ByteBuffer, scanCursor: (ScanCursor.Position, UInt64) -> UInt64?) {
        if rule.mergesInPlace {
            storage.withUnsafeBytes { mergeInPlace($0, into: out) }
            return
        }
        let parts = replies.map { $0 ?? FanOut.noReply }
        if case .firstSuccess = rule {
            out.append(parts.first(where: { !isError($0) }) ?? parts[parts.count - 1])
            return
        }
        if let error = parts.first(where: isError) {
            out.append(error)
            return
        }
        switch rule {
        case .minimum:
            let values = parts.compactMap(integerValue)
            guard values.count == parts.count, let smallest = values.min() else {
                out.appendError("ERR slotproxy: expected an integer reply from every node")
                return
            }
            out.appendInteger(smallest)
        case .concatenate:
            let elements = parts.map(arrayElements)
            out.appendArrayHeader(elements.reduce(0) { $0 + ($1?.count ?? 0) })
            for (part, ranges) in zip(parts, elements) {
                for range in ranges ?? [] { out.append(part[range]) }
            }
        case .union:
            var seen = Set<ArraySlice<UInt8>>()
            var unique: [ArraySlice<UInt8>] = []
            for (part, ranges) in zip(parts, parts.map(arrayElements)) {
                for range in ranges ?? [] where seen.insert(part[range]).inserted { unique.append(part[range]) }
            }
            out.appendArrayHeader(unique.count)
            for element in unique { out.append(element) }
        case .sumPairs:
            let elements = parts.map(arrayElements)
            guard let first = elements[0], first.count % 2 == 0, elements.allSatisfy({ $0?.count == first.count })
            else {
                out.appendError("ERR slotproxy: the nodes' replies do not line up")
                return
            }
            out.appendArrayHeader(first.count)
            for name in stride(from: 0, to: first.count, by: 2) {
                let channel = parts[0][first[name]]
                out.append(channel)
                let counts = zip(parts, elements).map { part, ranges in integerValue(Array(part[ranges![name + 1]])) ?? 0 }
                // A client listening to a keyspace notification channel is
                // subscribed on every master (`KeyspaceListeners`): the most
                // on one master counts it once.
                let notifications = KeyspaceListeners.isNotificationChannel(bulk: channel)
                out.appendInteger(notifications ? counts.max() ?? 0 : counts.reduce(0, &+))
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
        case .info(let prefix, let memory, let keyspace):
            let text = prefix + (memory ? MemorySummer.sum(parts) : "") + (keyspace ? KeyspaceSummer.sum(parts) : "")
            Worker.appendInfo(text, resp3: resp3, to: out)
        case .sum, .allSucceeded, .keyOrder:
            break  // mergeInPlace
        case .emulate, .relaxedTransaction, .listMove, .popRace, .streamRead, .streamRace:
            break  // handled by the worker before merging
        case .firstSuccess:
            break
        }
    }

    /// The split commands' rules (`sum`, `allSucceeded`, `keyOrder`) read
    /// each part's reply where it lies in `bytes`: a cross-slot `MGET` is
    /// merged without a copy per part.
    private func mergeInPlace(_ bytes: UnsafeRawBufferPointer, into out: ByteBuffer) {
        func replyOf(_ part: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: bytes[spans[part]!])
        }
        for span in spans {
            guard let span else {
                out.append(FanOut.noReply)
                return
            }
            let reply = UnsafeRawBufferPointer(rebasing: bytes[span])
            if isError(reply) {
                out.append(reply)
                return
            }
        }
        switch rule {
        case .sum:
            var total = 0
            for part in spans.indices {
                guard let value = integerValue(replyOf(part)) else {
                    out.appendError("ERR slotproxy: expected an integer reply from every node")
                    return
                }
                let (sum, overflow) = total.addingReportingOverflow(value)
                guard !overflow else {
                    out.appendError("ERR slotproxy: the nodes' integers overflow when added")
                    return
                }
                total = sum
            }
            out.appendInteger(total)
        case .allSucceeded:
            out.append(replyOf(0))
        case .keyOrder(let positions):
            let start = out.readableBytes
            out.appendArrayHeader(positions.count)
            // Each part is an array of its keys' values, taken in order: a
            // cursor per part (element number and offset) walks it once.
            var scanner = ReplyScanner()
            let complete = withUnsafeTemporaryAllocation(of: ArrayCursor.self, capacity: spans.count) { cursors in
                for part in spans.indices {
                    guard let header = arrayHeader(replyOf(part)) else { return false }
                    cursors[part] = ArrayCursor(count: header.count, bodyStart: header.length, next: 0, offset: header.length)
                }
                for position in positions {
                    let reply = replyOf(position.part)
                    guard let element = cursors[position.part].element(position.index, in: reply, scanner: &scanner)
                    else { return false }
                    out.append(UnsafeRawBufferPointer(rebasing: reply[element]))
                }
                return true
            }
            if !complete {
                out.keepReadable(start)
                out.appendError("ERR slotproxy: a node answered with an unexpected reply shape")
            }
        default:
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
    reply.withUnsafeBytes { isError($0) }
}

func isError(_ reply: UnsafeRawBufferPointer) -> Bool {
    reply.first == UInt8(ascii: "-") || reply.first == UInt8(ascii: "!")
}

func isNull(_ reply: [UInt8]) -> Bool {
    reply.starts(with: Array("$-1\r\n".utf8)) || reply.starts(with: Array("_\r\n".utf8))
        || reply.starts(with: Array("*-1\r\n".utf8))
}

/// The value of an integer reply (`:42\r\n`).
func integerValue(_ reply: [UInt8]) -> Int? {
    reply.withUnsafeBytes { integerValue($0) }
}

func integerValue(_ reply: UnsafeRawBufferPointer) -> Int? {
    guard reply.first == UInt8(ascii: ":"), let end = reply.firstIndex(of: 13) else { return nil }
    return parseStrictInteger(UnsafeRawBufferPointer(rebasing: reply[1..<end])).map(Int.init)
}

/// An array or set reply's element count and header length; nil when the
/// reply is not an aggregate of that kind (a null array counts 0).
func arrayHeader(_ reply: UnsafeRawBufferPointer) -> (count: Int, length: Int)? {
    guard let type = reply.first, type == UInt8(ascii: "*") || type == UInt8(ascii: "~"),
        let headerEnd = reply.firstIndex(of: 13), headerEnd + 1 < reply.count,
        let count = parseStrictInteger(UnsafeRawBufferPointer(rebasing: reply[1..<headerEnd])).map(Int.init)
    else { return nil }
    return (max(count, 0), headerEnd + 2)
}

/// Walks an array reply's elements in order (see `FanOut.mergeInPlace`).
struct ArrayCursor {
    let count: Int
    let bodyStart: Int
    /// The element at `offset`.
    var next: Int
    var offset: Int

    /// Where element `index` lies in `reply`; nil past the end or when the
    /// bytes are not whole elements.
    mutating func element(_ index: Int, in reply: UnsafeRawBufferPointer, scanner: inout ReplyScanner) -> Range<Int>? {
        guard index < count else { return nil }
        if index < next {
            next = 0
            offset = bodyStart
        }
        while offset < reply.count {
            scanner.reset()
            guard case .complete(let length, _) = scanner.scan(UnsafeRawBufferPointer(rebasing: reply[offset...])) else {
                return nil
            }
            let start = offset
            offset += length
            next += 1
            if next - 1 == index { return start..<offset }
        }
        return nil
    }
}

/// Where each element of an array or set reply lies in its bytes; nil when
/// the reply is not an aggregate of that kind.
func arrayElements(_ reply: [UInt8]) -> [Range<Int>]? {
    reply.withUnsafeBytes { bytes in arrayHeader(bytes).flatMap { elements(of: bytes, after: $0) } }
}

/// The same for a RESP3 map (`%n`): its keys and values, alternately.
func mapElements(_ reply: [UInt8]) -> [Range<Int>]? {
    reply.withUnsafeBytes { bytes in
        guard bytes.first == UInt8(ascii: "%"), let headerEnd = bytes.firstIndex(of: 13), headerEnd + 1 < bytes.count,
            let count = parseStrictInteger(UnsafeRawBufferPointer(rebasing: bytes[1..<headerEnd])).map(Int.init),
            count >= 0, count <= bytes.count
        else { return nil }
        return elements(of: bytes, after: (count * 2, headerEnd + 2))
    }
}

/// Where the `header.count` elements after an aggregate's header lie.
private func elements(of bytes: UnsafeRawBufferPointer, after header: (count: Int, length: Int)) -> [Range<Int>]? {
    var ranges: [Range<Int>] = []
    ranges.reserveCapacity(min(header.count, bytes.count / 3))  // each element takes 3 bytes at least
    var offset = header.length
    var scanner = ReplyScanner()
    for _ in 0..<header.count {
        guard offset < bytes.count,
            case .complete(let length, _) = scanner.scan(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
        else { return nil }
        ranges.append(offset..<(offset + length))
        offset += length
    }
    return ranges
}
