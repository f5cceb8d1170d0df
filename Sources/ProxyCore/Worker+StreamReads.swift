import ClusterTopology
import CommandTable
import RESPWire

/// `XREAD` and `XREADGROUP` over streams in several slots: a consumer that
/// reads several streams at once (`XREAD STREAMS orders payments 0 0`)
/// works as on one server instead of getting `CROSSSLOT`.
///
/// - Without `BLOCK`: one command per slot with that slot's streams and
///   IDs (the options as given), all sent at once; the streams with
///   entries are merged in the client's order (null when none has any).
/// - With `BLOCK`: each slot's command blocks on a dedicated connection to
///   its master, all at once (and waits through a failover as a blocking
///   command of one slot does). The first to answer with entries (or an
///   error) decides: the others are woken with `CLIENT UNBLOCK`, those
///   held for a down master answer their null, and an `XREADGROUP`'s reply
///   merges every slot's entries once all have answered, so entries handed
///   to the consumer in that instant are not left pending unseen (an
///   `XREAD`, which hands nothing out, answers at once). All timed out:
///   the null.
///
/// Not atomic across slots: each slot's streams are read at their own
/// moment, as by a split `MGET`.
extension Worker {
    /// Where a stream read's streams and IDs lie, and how they group by slot.
    final class StreamRead {
        /// `xread` or `xreadgroup`, and the arguments before `STREAMS`.
        let head: [[UInt8]]
        /// The streams in the client's order, and their IDs.
        let keys: [[UInt8]]
        let ids: [[UInt8]]
        let resp3: Bool
        /// `XREADGROUP`: the entries it reads are the consumer's from then on.
        let handsOutEntries: Bool
        /// Per slot, the indices of its streams in `keys`.
        var groups: [(slot: Int, streams: [Int])] = []

        init(head: [[UInt8]], keys: [[UInt8]], ids: [[UInt8]], resp3: Bool) {
            self.head = head
            self.keys = keys
            self.ids = ids
            self.resp3 = resp3
            handsOutEntries = String(decoding: head[0], as: UTF8.self).lowercased() == "xreadgroup"
        }

        /// The command for group `index`: the client's options, then its
        /// streams and their IDs.
        func appendRequest(forGroup index: Int, to request: ByteBuffer) {
            let streams = groups[index].streams
            request.appendCommand(head + [Array("STREAMS".utf8)] + streams.map { keys[$0] } + streams.map { ids[$0] })
        }
    }

    /// A blocking read's groups, each on its dedicated connection.
    final class StreamRace {
        let read: StreamRead
        /// The client's record, answered once (`streamRaceStep`).
        let client: FanOutTarget
        var blocked: [BlockedStep]
        var replies: [[UInt8]?]
        var decided = false
        var delivered = false
        /// The groups woken when it was decided (not answered by then).
        var woken: [Bool] = []

        init(read: StreamRead, client: FanOutTarget) {
            self.read = read
            self.client = client
            blocked = Array(repeating: BlockedStep(), count: read.groups.count)
            replies = Array(repeating: nil, count: read.groups.count)
        }
    }

    /// Starts a stream read over several slots; false when `command` is not
    /// one the proxy can split (the caller answers `CROSSSLOT`).
    func readStreamsAcrossSlots(_ spec: CommandSpec, _ command: Command, session: ClientSession) -> Bool {
        guard spec.name == "xread" || spec.name == "xreadgroup", let read = streamRead(command, session: session)
        else { return false }
        for (index, key) in read.keys.enumerated() {
            let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
            if slotOwners[slot] == nil {
                session.replyError("CLUSTERDOWN Hash slot not served")
                return true
            }
            if let group = read.groups.firstIndex(where: { $0.slot == slot }) {
                read.groups[group].streams.append(index)
            } else {
                read.groups.append((slot, [index]))
            }
        }
        // IDs one server would refuse before reading anything: refused here
        // too, before any slot's read hands out entries.
        if let error = StreamReadReplies.refusal(ofIDs: read.ids, groupRead: spec.name == "xreadgroup") {
            session.replyError(error)
            return true
        }
        let parent = recordPool.acquire()
        parent.answersSplit = true  // (a later retry for any of its slots must not overtake it)
        session.expectReply(parent)
        let blocks = BlockingTimeout.streamBlockArgument(command, group: spec.name == "xreadgroup") != nil
        guard blocks else {
            let parts = read.groups.indices.map { index in
                let request = ByteBuffer(capacity: 64)
                read.appendRequest(forGroup: index, to: request)
                return Part(pool: slotOwners[read.groups[index].slot]!, slot: read.groups[index].slot, request: request)
            }
            dispatch(parts, rule: .streamRead(read), target: .client(parent), session: session)
            return true
        }
        session.barrier = parent  // the client waits for the whole read, as for one blocked command
        let race = StreamRace(read: read, client: .client(parent))
        for group in read.groups.indices {
            let fanOut = FanOut(target: race.client, rule: .streamRace(race, group), parts: 1, resp3: session.resp3)
            fanOut.sessionForNextStage = session
            let record = partRecord(fanOut, 0, session: session)
            read.appendRequest(forGroup: group, to: record.request)
            record.slot = read.groups[group].slot
            blockStreamGroup(race, group, record, on: slotOwners[record.slot]!.address, asking: false, session: session)
        }
        return true
    }

    /// The streams and IDs after `STREAMS`, past the options as Redis reads
    /// them; nil when they do not pair up (the node's own error, through
    /// `CROSSSLOT`, is not owed: a cluster node answers `CROSSSLOT` first too).
    private func streamRead(_ command: Command, session: ClientSession) -> StreamRead? {
        let group = command.argument(0, equals: "xreadgroup")
        guard let index = BlockingTimeout.streamReadOptions(command, group: group).streams else { return nil }
        let rest = command.count - index - 1
        guard rest > 0, rest % 2 == 0 else { return nil }
        let first = index + 1
        return StreamRead(
            head: (0..<index).map { command.bytes($0) },
            keys: (first..<(first + rest / 2)).map { command.bytes($0) },
            ids: ((first + rest / 2)..<command.count).map { command.bytes($0) },
            resp3: session.resp3)
    }

    /// Sends a group of a blocking read on a dedicated connection to
    /// `address`; also when it was redirected (its slot moved).
    func blockStreamGroup(
        _ race: StreamRace, _ group: Int, _ record: RequestRecord, on address: NodeAddress, asking: Bool,
        session: ClientSession
    ) {
        guard let connection = sendRaceStep(record, to: address, asking: asking, session: session) else { return }
        race.blocked[group] = BlockedStep(record: record, connection: connection)
        if race.decided { wakeBlockedSteps(race.blocked, answeredBy: race.replies.map { $0 != nil }) }
    }

    /// A group of a blocking read answered.
    func streamRaceStep(_ race: StreamRace, _ group: Int, reply: [UInt8]) {
        race.replies[group] = reply
        if !race.decided && (isError(reply) || !isNull(reply)) {
            race.decided = true
            race.woken = race.replies.map { $0 == nil }
            wakeBlockedSteps(race.blocked, answeredBy: race.replies.map { $0 != nil })
            // Groups held for their master (down, failing over) reached no
            // node: their timeout's null, now, rather than after the outage.
            let held = takeHeldRequests {
                if case .streamRace(let other, _)? = $0.fanOut?.rule { return other === race }
                return false
            }
            for record in held { answerLocally(record, reply: ByteBuffer.nullArray(resp3: race.read.resp3)) }
        }
        // XREAD hands nothing out: it need not wait for the woken groups
        // (a hung node's would never come), and what they read stays in
        // their streams. XREADGROUP waits, so no entry is left unseen.
        let complete = race.replies.allSatisfy { $0 != nil }
        guard !race.delivered, complete || (race.decided && !race.read.handsOutEntries) else { return }
        race.delivered = true
        let out = ByteBuffer(capacity: 256)
        // (A woken group's error, its connection lost say, must not hide
        // entries an XREADGROUP already handed out; one that answered on its
        // own, `WRONGTYPE` say, stands, as one server's would.)
        let null = ByteBuffer.nullArray(resp3: race.read.resp3).withUTF8Buffer { Array($0) }
        StreamReadReplies.merge(
            race.replies.map { $0 ?? null }, of: race.read, into: out, errorsHiddenByEntries: race.woken)
        deliver(out.readable, to: race.client)
    }
}

/// Merges the replies of a stream read's groups into one server's reply.
enum StreamReadReplies {
    /// The streams with entries, in the client's order: RESP2 an array of
    /// [stream, entries] pairs, RESP3 a map; null when none has any; or the
    /// first group's error (except, where some group has entries, the
    /// errors of groups flagged in `errorsHiddenByEntries`).
    static func merge(
        _ replies: [[UInt8]], of read: Worker.StreamRead, into out: ByteBuffer, errorsHiddenByEntries: [Bool] = []
    ) {
        var found: [[UInt8]: [(key: ArraySlice<UInt8>, entries: ArraySlice<UInt8>)]] = [:]
        var total = 0
        for reply in replies where !isError(reply) {
            guard let pairs = pairs(reply) else {
                out.appendError("ERR slotproxy: a node's stream read reply is not streams and entries")
                return
            }
            for pair in pairs {
                guard case .bulkString(let name)? = RESPValue.decode(Array(pair.key))?.value else { continue }
                found[name, default: []].append(pair)
                total += 1
            }
        }
        func hidden(_ group: Int) -> Bool {
            total > 0 && group < errorsHiddenByEntries.count && errorsHiddenByEntries[group]
        }
        if let group = replies.indices.first(where: { isError(replies[$0]) && !hidden($0) }) {
            out.append(replies[group])
            return
        }
        if total == 0 {
            if read.resp3 { out.append("_\r\n") } else { out.append("*-1\r\n") }
            return
        }
        if read.resp3 { out.appendMapHeader(total, resp3: true) } else { out.appendArrayHeader(total) }
        for key in read.keys {
            guard var queue = found[key], !queue.isEmpty else { continue }
            let pair = queue.removeFirst()
            found[key] = queue
            if !read.resp3 { out.appendArrayHeader(2) }
            out.append(pair.key)
            out.append(pair.entries)
        }
    }

    /// The error one server answers for these IDs before reading anything
    /// (the first refused, in the client's order), as far as every Redis
    /// version agrees; nil when the nodes may accept them.
    static func refusal(ofIDs ids: [[UInt8]], groupRead: Bool) -> String? {
        for id in ids {
            if id == Array("$".utf8) && groupRead {
                return
                    "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."
            }
            if id == Array(">".utf8) && !groupRead {
                return
                    "ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."
            }
            if !isPlausibleID(id) { return "ERR Invalid stream ID specified as stream command argument" }
        }
        return nil
    }

    /// `$`, `>`, `+` (Redis 7.4), or digits with an optional `-` and digits
    /// (leading blanks allowed, as `strtoull` skips them).
    private static func isPlausibleID(_ id: [UInt8]) -> Bool {
        if id.count == 1 && (id[0] == UInt8(ascii: "$") || id[0] == UInt8(ascii: ">") || id[0] == UInt8(ascii: "+")) {
            return true
        }
        let text = id.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        let parts = text.split(separator: UInt8(ascii: "-"), maxSplits: 1, omittingEmptySubsequences: false)
        return !parts.isEmpty && parts.count <= 2
            && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } }
    }

    /// A stream read reply's (stream, entries) pairs, where they lie in
    /// `reply`: [] for a null; nil when it is not such a reply.
    static func pairs(_ reply: [UInt8]) -> [(key: ArraySlice<UInt8>, entries: ArraySlice<UInt8>)]? {
        if isNull(reply) { return [] }
        // RESP3: `%n`, then stream and entries n times.
        if let elements = mapElements(reply) {
            return stride(from: 0, to: elements.count, by: 2).map { (reply[elements[$0]], reply[elements[$0 + 1]]) }
        }
        // RESP2: `*n` of [stream, entries] pairs.
        guard let elements = arrayElements(reply) else { return nil }
        var pairs: [(key: ArraySlice<UInt8>, entries: ArraySlice<UInt8>)] = []
        for element in elements {
            let pair = Array(reply[element])
            guard let inner = arrayElements(pair), inner.count == 2 else { return nil }
            pairs.append((pair[inner[0]], pair[inner[1]]))
        }
        return pairs
    }
}
