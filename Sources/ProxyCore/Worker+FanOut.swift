import ClusterTopology
import CommandTable
import RESPWire

/// Commands that touch several slots or every master: split into parts,
/// sent to all owners at once (parts for one node share its connection, so
/// each node costs one round trip), and merged by the command's response
/// policy into the reply one server would give.
extension Worker {
    /// One part to send: the node, the slot it is for (-1: none), its bytes.
    struct Part {
        var pool: BackendPool
        var slot: Int
        var request: ByteBuffer
    }

    /// Sends `parts` and arranges for their merged reply to reach `target`.
    /// `continuingRetry`: they carry on a part being retried in order
    /// (`resplitPerKey`): they go out ahead of the client's requests waiting
    /// behind it, and those wait on for them in turn.
    @discardableResult
    func dispatch(
        _ parts: [Part], rule: MergeRule, target: FanOutTarget, session: ClientSession, continuingRetry: Bool = false
    ) -> FanOut {
        countAsShared(target, session: session)
        if case .client(let parent) = target, parent.session === session {
            session.countPartRequests(parts.reduce(0) { $0 + $1.request.readableBytes }, on: parent)
        }
        let fanOut = FanOut(target: target, rule: rule, parts: parts.count, resp3: session.resp3)
        fanOut.sessionForNextStage = session
        for (index, part) in parts.enumerated() {
            let record = partRecord(fanOut, index, request: part.request.readable, session: session)
            record.slot = part.slot
            if continuingRetry { startOrderedRetry(record) }
            send(record, to: part.pool, session: session, aheadOfWaiting: continuingRetry)
        }
        return fanOut
    }

    /// Sends a part's record to `pool`'s node, or holds it while that node is down.
    private func send(_ record: RequestRecord, to pool: BackendPool, session: ClientSession, aheadOfWaiting: Bool = false) {
        if !aheadOfWaiting && session.isRetrying(slot: record.slot) {
            session.behindRetry.append(record)  // its client's earlier request for the slot is being retried
            return
        }
        if pool.mustHold(now: loop.turnTime) {
            holdForFailover(record)
        } else {
            pool.connection(for: session).enqueue(record)
        }
    }

    /// A client reply that waits on shared connections (see `ClientSession.sharedInFlight`).
    func countAsShared(_ target: FanOutTarget, session: ClientSession) {
        guard case .client(let parent) = target, !parent.countsAsShared, parent.session === session else { return }
        parent.countsAsShared = true
        session.sharedInFlight += 1
    }

    /// The record that carries part `index` of `fanOut`.
    func partRecord(_ fanOut: FanOut, _ index: Int, request: UnsafeRawBufferPointer, session: ClientSession) -> RequestRecord {
        let record = partRecord(fanOut, index, session: session)
        record.request.append(request)
        return record
    }

    /// The same with its request left to write.
    func partRecord(_ fanOut: FanOut, _ index: Int, session: ClientSession) -> RequestRecord {
        let record = recordPool.acquire()
        record.session = session
        record.fanOut = fanOut
        record.part = index
        return record
    }

    /// A slot that shard `index`'s master serves. A part meant for one
    /// master (a broadcast's, SCAN's) carries it although it has no key: held
    /// while that master is down, it then waits for that master or the
    /// replica that takes over its slots, never for whichever master is up.
    func slotServed(byShard index: Int) -> Int {
        guard let map = slotMap, index < map.shards.count, let range = map.shards[index].slotRanges.first else {
            return -1
        }
        return range.lowerBound
    }

    /// The client's own record for a command answered by a fan-out.
    private func clientTarget(_ session: ClientSession) -> FanOutTarget {
        let parent = recordPool.acquire()
        session.expectReply(parent)
        return .client(parent)
    }

    /// `record`, a part of a fan-out, is answered (by its node or the proxy).
    func partAnswered(_ record: RequestRecord, reply: UnsafeRawBufferPointer) {
        guard let fanOut = record.fanOut else { return }
        let part = record.part
        endOrderedRetry(record)
        recordPool.release(record)
        partArrived(fanOut, part: part, reply: reply)
    }

    func partArrived(_ fanOut: FanOut, part: Int, reply: UnsafeRawBufferPointer) {
        guard fanOut.receive(part: part, reply: reply) else {
            // Held until the other parts are in: counted as the client's, so
            // a part stuck at a paused node cannot pile up the others' replies.
            if let session = fanOut.sessionForNextStage ?? fanOut.clientSession {
                session.partReplyBytesHeld += reply.count
                fanOut.countedReplyBytes += reply.count
                session.checkHardOutputLimit()
            }
            return
        }
        if fanOut.countedReplyBytes > 0, let session = fanOut.sessionForNextStage ?? fanOut.clientSession {
            session.partReplyBytesHeld -= fanOut.countedReplyBytes
            fanOut.countedReplyBytes = 0
        }
        if case .relaxedTransaction(let execution) = fanOut.rule {
            relaxedStageFinished(execution, fanOut)
            return
        }
        if case .listMove(let plan) = fanOut.rule {
            listMoveStep(plan, reply: fanOut.reply(0) ?? [], target: fanOut.target, session: fanOut.sessionForNextStage)
            return
        }
        if case .popRace(let race, let step) = fanOut.rule {
            popStep(race, step, reply: fanOut.reply(0) ?? [], session: fanOut.sessionForNextStage)
            return
        }
        if case .streamRace(let race, let group) = fanOut.rule {
            streamRaceStep(race, group, reply: fanOut.reply(0) ?? [])
            return
        }
        if case .streamRead(let read) = fanOut.rule {
            let merged = ByteBuffer(capacity: 256)
            StreamReadReplies.merge(fanOut.replies.map { $0 ?? [] }, of: read, into: merged)
            deliver(merged.readable, to: fanOut.target)
            return
        }
        if case .emulate(let plan) = fanOut.rule {
            let dumps = fanOut.replies.map { $0 ?? [] }
            if let error = dumps.first(where: isError) {
                error.withUnsafeBytes { deliver($0, to: fanOut.target) }
            } else if let session = fanOut.sessionForNextStage {
                computeEmulation(plan, dumps: dumps, target: fanOut.target, resp3: fanOut.resp3, session: session)
            }
            return
        }
        // The worker's merge buffer, unless a merge that delivers into this
        // one holds it.
        let merged = mergeScratch.take() ?? ByteBuffer(capacity: 256)
        fanOut.merge(into: merged) { [unowned self] position, nodeCursor in
            self.nextScanCursor(after: position, nodeCursor: nodeCursor)
        }
        if let body = fanOut.scriptBody, case .bulkString(let sha)? = RESPValue.decode(merged.readableArray())?.value {
            shared.rememberScript(sha: String(decoding: sha, as: UTF8.self), body: body)
        }
        deliver(merged.readable, to: fanOut.target)
        merged.clear()
        merged.shrinkIfIdle(above: 1 << 20, to: 4096)
        mergeScratch = merged
    }

    // MARK: split by slot

    /// `MGET`, `DEL`, `EXISTS`, `TOUCH`, `UNLINK`, `MSET` over several slots:
    /// one sub-command per slot with that slot's keys (and, for `MSET`, their
    /// values), in the client's order within each part.
    func split(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        let step = max(1, spec.keyStep)
        guard (command.count - 1) % step == 0 else {
            // `MSET a 1 b`: a key without its value.
            session.replyError("ERR wrong number of arguments for '\(spec.name)' command")
            return
        }
        let grouping = splitScratch.group(session.keyIndices, slotOf: { slotHasher.slot(of: command.argument($0)) })
        for slot in grouping.slots where slotOwners[slot] == nil {
            session.replyError("CLUSTERDOWN Hash slot not served")
            return
        }
        let target = clientTarget(session)
        if case .client(let parent) = target { parent.answersSplit = true }
        countAsShared(target, session: session)
        let fanOut = FanOut(
            target: target, rule: Worker.splitRule(spec, grouping), parts: grouping.slots.count, resp3: session.resp3)
        // Each part's request is written straight into its record.
        for (part, slot) in grouping.slots.enumerated() {
            let record = partRecord(fanOut, part, session: session)
            let request = record.request
            Worker.appendSplitPart(command, keys: grouping.keys(ofPart: part), step: step, into: request)
            record.slot = slot
            if case .client(let parent) = target { session.countPartRequests(request.readableBytes, on: parent) }
            if let pool = slotOwners[slot] {
                send(record, to: pool, session: session)
            } else {
                failRequest(record, message: "CLUSTERDOWN Hash slot not served")
            }
        }
    }

    /// How the parts' replies of a split command merge into its reply.
    static func splitRule(_ spec: CommandSpec, _ grouping: SlotGrouping.Groups) -> MergeRule {
        switch spec.responsePolicy {
        case .concatenateInKeyOrder: .keyOrder(grouping.positions())
        case .sum: .sum
        default: .allSucceeded
        }
    }

    /// One part of a split command: its name, then the part's keys (each
    /// with its `step - 1` values) in the client's order.
    static func appendSplitPart(_ command: Command, keys: ArraySlice<Int>, step: Int, into request: ByteBuffer) {
        request.appendArrayHeader(1 + keys.count * step)
        request.appendBulk(command.argument(0))
        for argument in keys {
            for offset in 0..<step where argument + offset < command.count {
                request.appendBulk(command.argument(argument + offset))
            }
        }
    }

    /// A part of a split command got `TRYAGAIN`: its slot is being migrated
    /// and its keys are partly on each side. Waiting would last as long as the
    /// migration, so the part is split further, one key per sub-command, and
    /// each key follows its own `ASK`. False when the part has a single key.
    func resplitPerKey(_ record: RequestRecord, connection: BackendConnection) -> Bool {
        guard let fanOut = record.fanOut, fanOut.rule.isSplitByKey else { return false }
        var parser = RequestParser()
        let bytes = record.request.readableArray()
        let arguments: [[UInt8]] = bytes.withUnsafeBytes { raw in
            guard case .complete = parser.parse(raw) else { return [] }
            return parser.arguments.map { Array(raw[$0.offset..<($0.offset + $0.length)]) }
        }
        let step = fanOut.rule.isPairwise ? 2 : 1
        let keyCount = (arguments.count - 1) / step
        guard keyCount > 1, let session = record.session else { return false }
        let rule: MergeRule
        switch fanOut.rule {
        case .keyOrder: rule = .keyOrder((0..<keyCount).map { ($0, 0) })
        case .sum: rule = .sum
        default: rule = .allSucceeded
        }
        let pool = self.pool(for: connection.address)
        var parts: [Part] = []
        for key in 0..<keyCount {
            let request = ByteBuffer(capacity: 128)
            request.appendArrayHeader(1 + step)
            request.appendBulk(arguments[0])
            for offset in 0..<step { request.appendBulk(arguments[1 + key * step + offset]) }
            parts.append(Part(pool: pool, slot: record.slot, request: request))
        }
        let target = FanOutTarget.part(fanOut, record.part)
        // (A part retried in order, after a MOVED say: its sub-commands take
        // its place ahead of the client's requests waiting behind it.)
        dispatch(parts, rule: rule, target: target, session: session, continuingRetry: record.orderedRetry)
        endOrderedRetry(record)
        recordPool.release(record)
        return true
    }

    // MARK: every master

    /// Commands that concern the whole data set (`DBSIZE`, `KEYS`,
    /// `FLUSHALL`, `SCRIPT LOAD`, `FUNCTION LOAD` ...): the same bytes to
    /// every master, replies merged.
    /// Broadcasts whose merge Redis's command tips do not give (they are
    /// meant for one node): `LASTSAVE` the oldest, so a backup job sees a
    /// save only once every master made one; Pub/Sub counts and names over
    /// the masters the proxy spreads subscribers on.
    static func broadcastMerge(byName name: String) -> MergeRule? {
        switch name {
        case "lastsave": .minimum
        case "pubsub|numsub", "pubsub|shardnumsub": .sumPairs
        case "pubsub|numpat": .sum
        case "pubsub|channels", "pubsub|shardchannels": .union
        default: nil
        }
    }

    func broadcast(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        guard slotMap != nil, !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        if (spec.name == "flushall" || spec.name == "flushdb") && !configuration.allowFlush {
            session.replyError(
                "ERR \(spec.name.uppercased()) through slotproxy wipes every master and is disabled: set 'allow-flush: true' in the configuration (or pass --allow-flush) to allow it"
            )
            return
        }
        var rule: MergeRule
        switch spec.responsePolicy {
        case .sum: rule = .sum
        case .logicalAnd: rule = .logicalAnd
        case .firstSuccess: rule = .firstSuccess
        case .special where spec.name == "keys": rule = .concatenate
        case .special: rule = .randomNonNull  // RANDOMKEY (CommandHandling admits no other)
        default: rule = .allSucceeded
        }
        if let byName = Worker.broadcastMerge(byName: spec.name) { rule = byName }
        let parts = masterPools.enumerated().map { shard, pool in
            let request = ByteBuffer(capacity: command.frame.count)
            request.append(command.frame)
            return Part(pool: pool, slot: slotServed(byShard: shard), request: request)
        }
        let fanOut = dispatch(parts, rule: rule, target: clientTarget(session), session: session)
        if spec.name == "script|load" && command.count == 3 { fanOut.scriptBody = command.bytes(2) }
        if spec.name == "script|flush" { shared.forgetScripts() }
    }

    // MARK: SCAN

    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`: one page from the master the
    /// cursor points at (see `ScanCursor`), options passed through.
    func scan(_ command: Command, session: ClientSession) {
        guard let map = slotMap, !map.shards.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        guard let cursor = UInt64(command.string(1)) else {
            session.replyError("ERR invalid cursor")
            return
        }
        let shardIndex: Int
        var nodeCursor: UInt64 = 0
        if cursor == 0 {
            shardIndex = ScanCursor.first(in: map) ?? 0
        } else {
            let position = ScanCursor.decode(cursor)
            guard let located = ScanCursor.locate(position, in: map) else {
                session.replyError("CLUSTERDOWN Hash slot not served")
                return
            }
            shardIndex = located.shard
            // The same master: carry on; another node (a failover): its
            // cursor means nothing here, start it over.
            if located.continues { nodeCursor = position.nodeCursor }
        }
        let request = ByteBuffer(capacity: 128)
        request.appendArrayHeader(command.count)
        request.appendBulk(command.argument(0))
        request.appendBulk(String(nodeCursor))
        for index in 2..<max(2, command.count) { request.appendBulk(command.argument(index)) }
        let position = ScanCursor.start(of: shardIndex, in: map)
        dispatch(
            [Part(pool: masterPools[shardIndex], slot: slotServed(byShard: shardIndex), request: request)],
            rule: .scan(position),
            target: clientTarget(session), session: session)
    }

    /// The client cursor after a page: the same master further on, else the
    /// start of the next master in slot order, else 0 (the scan is complete).
    func nextScanCursor(after position: ScanCursor.Position, nodeCursor: UInt64) -> UInt64? {
        if nodeCursor != 0 {
            var next = position
            next.nodeCursor = nodeCursor
            return ScanCursor.encode(next)
        }
        guard let map = slotMap, let current = ScanCursor.locate(position, in: map)?.shard,
            let next = ScanCursor.next(after: current, in: map)
        else { return 0 }
        return ScanCursor.encode(ScanCursor.start(of: next, in: map))
    }
}

extension MergeRule {
    /// Parts carry key/value pairs (`MSET`), so a re-split keeps pairs together.
    var isPairwise: Bool {
        if case .allSucceeded = self { return true }
        return false
    }
}
