import ClusterTopology
import CommandTable
import RESPWire

/// `cross-slot-transactions: relaxed`: a transaction may touch any slots.
///
/// The proxy answers `+QUEUED` itself (after the checks a server makes when
/// queuing: unknown command, arity, and a single command's keys in one slot)
/// and keeps the commands. At `EXEC` they are grouped by slot (a cluster node
/// refuses an `EXEC` over several slots), and each group runs as one
/// `MULTI` ... `EXEC` written in one piece to its master's connection, all
/// groups at once. The client gets one `EXEC` reply with the results in its
/// own order, errors per command as Redis reports them. A transaction within
/// one slot is therefore exactly one atomic `MULTI`/`EXEC`; across slots,
/// each slot's part is atomic and the parts are not.
///
/// `WATCH` goes at once to each watched key's master, on a dedicated
/// connection per master. At `EXEC`, first each such master runs its group
/// (or an empty `MULTI`/`EXEC` that only checks the watch) on that
/// connection; only if none of them aborted do the other groups run. If one
/// aborted, the client gets a null reply as for a failed `WATCH`; groups that
/// had already committed on other masters cannot be undone: they are counted
/// (`relaxed_transactions_partial` in `INFO proxy`) and logged.
final class RelaxedTransaction {
    struct Queued {
        var frame: [UInt8]
        /// The slot of its keys; -1 for a command without keys.
        var slot: Int
    }

    /// What the nodes run: the client's commands, a split one as its parts.
    var commands: [Queued] = []
    /// The client's commands, in order: where each is in `commands` (one
    /// entry, or the parts of a `DEL`, `MGET`, `MSET` ... over several slots,
    /// whose replies `rule` merges into its one reply).
    var clientCommands: [ClientCommand] = []
    struct ClientCommand {
        var parts: Range<Int>
        var rule: MergeRule?
        /// Its reply, known at queuing (`MSET a 1 b`: a server queues it and
        /// answers the arity error inside `EXEC`).
        var reply: [UInt8]?
    }
    /// A watch connection died: what it watched is unknown, EXEC answers null.
    var watchLost = false
    /// Dedicated connections holding the client's `WATCH`es, by master.
    var watchConnections: [NodeAddress: BackendConnection] = [:]
    /// The masters that confirmed a `WATCH` on those connections.
    var watching: Set<NodeAddress> = []
}

/// The `EXEC` of a relaxed transaction on its way: groups sent in stages,
/// results gathered in the client's order.
final class RelaxedExecution {
    struct Group {
        var slot: Int
        var address: NodeAddress
        var commandIndices: [Int]
        /// The `WATCH` connection it runs on, for a group that checks a watch.
        var watchConnection: BackendConnection?
        var attempts = 0
        /// Where its parts start in the stage's fan-out: one per command, then `EXEC`.
        var firstPart = 0
    }

    let frames: [[UInt8]]
    var results: [[UInt8]?]
    let clientCommands: [RelaxedTransaction.ClientCommand]
    /// Groups for after the watch checks, or to retry after a `MOVED`.
    var later: [Group] = []
    var current: [Group] = []
    var committedGroups = 0
    var watchFailed = false
    /// The error of a watch check that could not run.
    var watchError: [UInt8]?
    let resp3: Bool
    /// When `EXEC` came (loop clock, ms): groups the cluster refused for a
    /// failover are sent again within `failover-timeout-ms` of it.
    let startedAt: Int64
    /// The next stage waits out a backoff (it sends such a group again).
    var backsOffBeforeNextStage = false
    var refusedStages = 0

    init(frames: [[UInt8]], clientCommands: [RelaxedTransaction.ClientCommand], resp3: Bool, startedAt: Int64) {
        self.frames = frames
        self.clientCommands = clientCommands
        self.resp3 = resp3
        self.startedAt = startedAt
        results = Array(repeating: nil, count: frames.count)
    }
}

/// A relaxed `EXEC`'s next stage, waiting out its backoff (`Worker.tick`).
struct DelayedRelaxedStage {
    let execution: RelaxedExecution
    let target: FanOutTarget
    let session: ClientSession
    let runAt: Int64
}

extension Worker {
    /// `WATCH` in relaxed mode: each slot's keys to their master, on the
    /// transaction's dedicated connection to it.
    func relaxedWatch(_ spec: CommandSpec, _ command: Command, _ transaction: Transaction, session: ClientSession) {
        guard slotMap != nil else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        let groups = argumentsBySlot(command, from: 1)
        let parent = recordPool.acquire()
        session.expectReply(parent)
        // The next command waits: it must not overtake the WATCH.
        session.barrier = parent
        let fanOut = FanOut(target: .client(parent), rule: .allSucceeded, parts: groups.count, resp3: session.resp3)
        for (index, group) in groups.enumerated() {
            let record = partRecord(fanOut, index, session: session)
            record.request.appendCommand([Array("WATCH".utf8)] + group.arguments)
            record.slot = group.slot
            record.watch = true
            sendRelaxedWatchPart(record)
        }
    }

    /// Sends one slot's part of a relaxed `WATCH` to the slot's master, on
    /// the transaction's connection to it. While that master is down (no
    /// owner, or refusing connections) nothing is watched yet, so the part
    /// waits for it or its successor, as a `WATCH` of one slot does.
    func sendRelaxedWatchPart(_ record: RequestRecord) {
        guard let session = record.session, !session.isGone, let transaction = session.transaction,
            let relaxed = transaction.relaxed, !transaction.inMulti
        else {
            failRequest(record, message: "ERR slotproxy: the transaction ended before its WATCH was sent")
            return
        }
        guard let pool = slotOwners[record.slot], !pool.mustHold(now: loop.nowMilliseconds) else {
            holdForFailover(record)
            return
        }
        guard let connection = watchConnection(relaxed, pool.address, session: session) else {
            failRequest(record, message: tooManyDedicatedMessage(pool.address))
            return
        }
        connection.enqueue(record)
    }

    /// A relaxed `WATCH` part's reply: `+OK` notes its master as watching;
    /// refused for the failover of its slot or a finished move (`MOVED`,
    /// `CLUSTERDOWN`, `TRYAGAIN` ...), it watched nothing and goes again
    /// (`retryRelaxedWatchPart`). True when handled here.
    func relaxedWatchPartAnswered(
        _ record: RequestRecord, reply: UnsafeRawBufferPointer, kind: ReplyKind, on connection: BackendConnection
    ) -> Bool {
        guard let relaxed = record.session?.transaction?.relaxed else { return false }
        guard case .error(let errorClass) = kind else {
            relaxed.watching.insert(connection.address)
            return false
        }
        // (Not ASK: its slot is being migrated, and the key may be on
        // either side; the client is told to retry, as in a transaction of
        // one slot.)
        guard errorClass == .moved || Worker.replayableRefusals.contains(errorClass) else { return false }
        // (Sent again at once to a new owner the map knows; else after the
        // cluster was asked.)
        if errorClass == .moved,
            let redirect = Redirect(errorText: UnsafeRawBufferPointer(rebasing: reply[1...]), defaultHost: connection.address.host),
            redirect.slot == record.slot, knownNodes.contains(NodeAddress(host: redirect.host, port: redirect.port))
        {
            learnSlotOwner(redirect.slot, NodeAddress(host: redirect.host, port: redirect.port))
            return retryRelaxedWatchPart(record, from: connection, at: .now)
        }
        shared.requestTopologyRefresh()
        return retryRelaxedWatchPart(record, from: connection, at: .afterBackoff)
    }

    enum RetryTime { case now, afterBackoff }

    /// A relaxed `WATCH` part that watched nothing (refused, or its
    /// connection lost) waits for its slot's master and is sent again.
    /// When that connection had already watched other keys, they may have
    /// left with the slot: `EXEC` will answer null, as for a changed key
    /// (nothing runs; an optimistic loop tries again), and the part is
    /// answered `+OK`. False when the transaction is gone.
    func retryRelaxedWatchPart(_ record: RequestRecord, from connection: BackendConnection, at time: RetryTime) -> Bool {
        guard let session = record.session, !session.isGone, let relaxed = session.transaction?.relaxed else {
            return false
        }
        if relaxed.watchConnections[connection.address] === connection {
            if relaxed.watching.contains(connection.address) {
                relaxed.watchLost = true
                answerLocally(record, reply: "+OK\r\n")
                return true
            }
            if connection.state == .closed {
                relaxed.watchConnections[connection.address] = nil  // (released by its failure)
            } else if connection.outstandingRequests == 0 {
                relaxed.watchConnections[connection.address] = nil
                endTransaction(connection)
            }
        }
        if time == .now && record.redirects < configuration.maxRedirects {
            record.redirects += 1
            sendRelaxedWatchPart(record)
        } else {
            retryBlocking(record)  // (the backoff of a blocking command's retries)
        }
        return true
    }

    /// The transaction's dedicated connection to `address` (nil past
    /// `blocking-connections-per-node`).
    private func watchConnection(_ relaxed: RelaxedTransaction, _ address: NodeAddress, session: ClientSession)
        -> BackendConnection?
    {
        if let connection = relaxed.watchConnections[address] {
            if connection.state != .closed { return connection }
            // The node forgot the watch with the connection: EXEC must fail.
            relaxed.watchLost = true
        }
        guard let connection = dedicated.acquire(address, for: session) else { return nil }
        connection.servedSession = session
        connection.transactionBound = true
        relaxed.watchConnections[address] = connection
        return connection
    }

    /// A command inside a relaxed `MULTI`: kept, answered `+QUEUED`.
    func relaxedQueue(_ spec: CommandSpec, _ command: Command, _ transaction: Transaction, session: ClientSession) {
        let relaxed = transaction.relaxed!
        session.keyIndices.clearKeepingCapacity()
        spec.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices, includeNotKeys: true)
        var slot = -1
        for index in session.keyIndices {
            let keySlot = slotHasher.slot(of: command.argument(index))
            if slot != -1 && keySlot != slot {
                // A command that splits outside a transaction (DEL, UNLINK,
                // EXISTS, TOUCH, MGET, MSET: arq finishes a job with a DEL
                // over three keys) is split here too, each part run in its
                // slot's group. Any other is refused, as a node refuses it.
                guard relaxedQueueSplit(spec, command, relaxed, session: session) else {
                    session.replyError("CROSSSLOT Keys in request don't hash to the same slot")
                    transaction.aborted = true
                    return
                }
                session.replyLocally { $0.append("+QUEUED\r\n") }
                return
            }
            slot = keySlot
        }
        relaxed.clientCommands.append(.init(parts: relaxed.commands.count..<(relaxed.commands.count + 1), rule: nil))
        relaxed.commands.append(.init(frame: Array(command.frame), slot: slot))
        session.replyLocally { $0.append("+QUEUED\r\n") }
    }

    /// Queues a splittable command over several slots as one part per
    /// slot; false when `spec` does not split.
    private func relaxedQueueSplit(
        _ spec: CommandSpec, _ command: Command, _ relaxed: RelaxedTransaction, session: ClientSession
    ) -> Bool {
        let step = max(1, spec.keyStep)
        guard CommandHandling.of(spec) == .split else { return false }
        guard (command.count - 1) % step == 0 else {
            // `MSET a 1 b`: as a server, queued, and the error in EXEC's reply.
            let error = ByteBuffer(capacity: 64)
            error.appendError("ERR wrong number of arguments for '\(spec.name)' command")
            let at = relaxed.commands.count
            relaxed.clientCommands.append(.init(parts: at..<at, rule: nil, reply: error.readableArray()))
            return true
        }
        let grouping = splitScratch.group(session.keyIndices, slotOf: { slotHasher.slot(of: command.argument($0)) })
        let first = relaxed.commands.count
        let part = ByteBuffer(capacity: command.frame.count + 32)
        for (index, slot) in grouping.slots.enumerated() {
            part.clear()
            Worker.appendSplitPart(command, keys: grouping.keys(ofPart: index), step: step, into: part)
            relaxed.commands.append(.init(frame: part.readableArray(), slot: slot))
        }
        relaxed.clientCommands.append(.init(parts: first..<relaxed.commands.count, rule: Worker.splitRule(spec, grouping)))
        return true
    }

    /// `UNWATCH`, `DISCARD`, `RESET`, or a client gone: the watches are
    /// dropped and their connections go back to the idle list.
    func releaseWatches(_ relaxed: RelaxedTransaction) {
        for connection in relaxed.watchConnections.values {
            connection.enqueueInternal([Array("UNWATCH".utf8)])
            endTransaction(connection)
        }
        relaxed.watchConnections.removeAll()
        relaxed.watching.removeAll()
    }

    /// `EXEC` of a relaxed transaction.
    func relaxedExec(_ transaction: Transaction, session: ClientSession) {
        let relaxed = transaction.relaxed!
        guard !transaction.aborted else {
            releaseWatches(relaxed)
            session.replyError("EXECABORT Transaction discarded because of previous errors.")
            return
        }
        if relaxed.watchLost || relaxed.watchConnections.values.contains(where: { $0.state == .closed }) {
            // A watch could not be kept: as if the watched key had changed.
            releaseWatches(relaxed)
            session.replyLocally { $0.append(ByteBuffer.nullArray(resp3: session.resp3)) }
            return
        }
        guard slotMap != nil, !masterPools.isEmpty else {
            releaseWatches(relaxed)
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        let execution = RelaxedExecution(
            frames: relaxed.commands.map(\.frame), clientCommands: relaxed.clientCommands, resp3: session.resp3,
            startedAt: loop.nowMilliseconds)
        var groups: [RelaxedExecution.Group] = []
        // A command without keys joins the group of the keyed command before
        // it (or after it, for leading ones): it needs some master.
        let firstKeyed = relaxed.commands.first(where: { $0.slot >= 0 })?.slot ?? -1
        var lastSlot = firstKeyed
        var groupOfSlot: [Int: Int] = [:]  // (a DEL over thousands of slots: no scan per command)
        for (index, queued) in relaxed.commands.enumerated() {
            if queued.slot >= 0 { lastSlot = queued.slot }
            if let group = groupOfSlot[lastSlot] {
                groups[group].commandIndices.append(index)
            } else {
                guard let address = groupAddress(slot: lastSlot, relaxed) else {
                    releaseWatches(relaxed)
                    session.replyError("CLUSTERDOWN Hash slot not served")
                    return
                }
                groupOfSlot[lastSlot] = groups.count
                groups.append(.init(slot: lastSlot, address: address, commandIndices: [index]))
            }
        }
        // Each watched master checks its watch with the first group it owns
        // (or with an empty MULTI/EXEC); the rest wait for the verdict.
        for (address, connection) in relaxed.watchConnections.sorted(by: { $0.key.description < $1.key.description }) {
            if let index = groups.firstIndex(where: { $0.address == address }) {
                var group = groups.remove(at: index)
                group.watchConnection = connection
                execution.current.append(group)
            } else {
                execution.current.append(.init(slot: -1, address: address, commandIndices: [], watchConnection: connection))
            }
        }
        relaxed.watchConnections.removeAll()
        if execution.current.isEmpty {
            execution.current = groups
        } else {
            execution.later = groups
        }
        if execution.current.isEmpty {
            // Nothing for a node, nothing watched: EXEC of nothing, or of
            // commands whose replies were known at queuing.
            session.replyLocally { out in
                out.appendArrayHeader(relaxed.clientCommands.count)
                for command in relaxed.clientCommands { out.append(command.reply ?? []) }
            }
            return
        }
        let parent = recordPool.acquire()
        session.expectReply(parent)
        // (The client's next commands wait: a group sent again after a
        // MOVED or a failover's refusal must not run after them.)
        session.barrier = parent
        runStage(execution, target: .client(parent), session: session)
    }

    /// The master for a group of `slot` (-1: the watched master, or any).
    private func groupAddress(slot: Int, _ relaxed: RelaxedTransaction) -> NodeAddress? {
        if slot >= 0 { return slotOwners[slot]?.address }
        if let watched = relaxed.watchConnections.keys.sorted(by: { $0.description < $1.description }).first {
            return watched
        }
        return masterPools.first?.address
    }

    /// Sends the groups of `execution.current`, each as one `MULTI` ... `EXEC`.
    private func runStage(_ execution: RelaxedExecution, target: FanOutTarget, session: ClientSession) {
        countAsShared(target, session: session)
        var partCount = 0
        for index in execution.current.indices {
            execution.current[index].firstPart = partCount
            partCount += execution.current[index].commandIndices.count + 1
        }
        let fanOut = FanOut(
            target: target, rule: .relaxedTransaction(execution), parts: partCount, resp3: session.resp3)
        fanOut.sessionForNextStage = session
        for group in execution.current {
            let connection = group.watchConnection ?? pool(for: group.address).connection(
                resp3: session.resp3, identity: session.backendIdentity, pinnedTo: session.id)
            // Written back to back on one connection, nothing of another
            // client's can come between MULTI and EXEC.
            connection.enqueueInternal([Array("MULTI".utf8)])
            var part = group.firstPart
            for command in group.commandIndices {
                connection.enqueue(groupRecord(fanOut, part, execution.frames[command], session: session))
                part += 1
            }
            connection.enqueue(groupRecord(fanOut, part, Worker.execFrame, session: session))
        }
    }

    static let execFrame: [UInt8] = Array("*1\r\n$4\r\nEXEC\r\n".utf8)

    private func groupRecord(_ fanOut: FanOut, _ part: Int, _ frame: [UInt8], session: ClientSession) -> RequestRecord {
        let record = frame.withUnsafeBytes { partRecord(fanOut, part, request: $0, session: session) }
        // Inside MULTI a redirect is never followed alone: the group's EXEC
        // fails, and the group is retried as a whole. Nor is it held after a
        // lost connection or a CLUSTERDOWN: it fails, and the EXEC tells
        // (`relaxedStageFinished` sends a group again that did not run).
        record.redirects = configuration.maxRedirects
        record.insideMulti = true
        return record
    }

    /// Every part of a stage is in: results gathered, the next stage sent,
    /// or the client answered.
    func relaxedStageFinished(_ execution: RelaxedExecution, _ fanOut: FanOut) {
        let replies = fanOut.replies
        for group in execution.current {
            if let connection = group.watchConnection { endTransaction(connection) }
            let exec = replies[group.firstPart + group.commandIndices.count] ?? []
            if Worker.isNullReply(exec) {
                execution.watchFailed = true
            } else if group.watchConnection != nil, Worker.arrayElements(exec) == nil {
                let queued = (0..<group.commandIndices.count).map { replies[group.firstPart + $0] ?? [] }
                if ([exec] + queued).contains(where: Worker.isFailoverRefusal) {
                    // Its master was demoted, gave the slot away or is failing
                    // over: nothing of the group ran, and the watch can no
                    // longer be checked. As in a transaction of one slot, as
                    // for a changed key (null): the client's loop tries again.
                    execution.watchFailed = true
                } else {
                    // A watch check that could not run (connection lost: it
                    // may have run); the client hears why.
                    execution.watchError = exec
                }
            } else if let elements = Worker.arrayElements(exec), elements.count == group.commandIndices.count {
                for (command, element) in zip(group.commandIndices, elements) { execution.results[command] = element }
                if !group.commandIndices.isEmpty { execution.committedGroups += 1 }
            } else {
                let queued = (0..<group.commandIndices.count).map { replies[group.firstPart + $0] ?? [] }
                if group.slot >= 0,
                    let moved = queued.lazy.compactMap({ Worker.movedTarget($0, defaultHost: group.address.host) }).first,
                    group.attempts < 3
                {
                    // The slot moved before the group ran: nothing of it ran, send it again.
                    learnSlotOwner(group.slot, moved)
                    var retry = group
                    retry.address = moved
                    retry.watchConnection = nil
                    retry.attempts += 1
                    execution.later.append(retry)
                    continue
                }
                if ([exec] + queued).contains(where: Worker.didNotRun),
                    loop.nowMilliseconds - execution.startedAt < Int64(configuration.failoverTimeoutMs)
                {
                    // Refused for a failover (CLUSTERDOWN, TRYAGAIN, LOADING,
                    // MASTERDOWN: its EXEC aborted), or its master could not
                    // be reached (nothing was written): nothing of it ran.
                    // Sent again after a backoff (to the slot's master by
                    // then), as a transaction of one slot is replayed.
                    var retry = group
                    if retry.slot >= 0, let owner = slotOwners[retry.slot] { retry.address = owner.address }
                    retry.watchConnection = nil
                    execution.later.append(retry)
                    execution.backsOffBeforeNextStage = true
                    shared.requestTopologyRefresh()
                    continue
                }
                for (offset, command) in group.commandIndices.enumerated() {
                    execution.results[command] = isError(queued[offset]) ? queued[offset] : exec
                }
            }
        }
        execution.current = []
        if execution.watchFailed || execution.watchError != nil {
            if execution.committedGroups > 0 {
                shared.relaxedTransactionPartialOutcome()
                logger.warning(
                    "relaxed transaction: a WATCH check stopped it after \(execution.committedGroups) slot group(s) had committed on other masters (not undone)"
                )
            }
            deliver(
                execution.watchError ?? ByteBuffer.nullArray(resp3: execution.resp3).withUTF8Buffer { Array($0) },
                to: fanOut.target)
            return
        }
        if !execution.later.isEmpty, fanOut.sessionForNextStage?.isClosed != false {
            noteGroupsLeftUnrun(execution)
        }
        if !execution.later.isEmpty, let session = fanOut.sessionForNextStage, !session.isClosed {
            execution.current = execution.later
            execution.later = []
            if execution.backsOffBeforeNextStage {
                execution.backsOffBeforeNextStage = false
                execution.refusedStages += 1
                let backoff = Int64(min(1000, 50 << min(execution.refusedStages, 5)))
                delayedRelaxedStages.append(
                    DelayedRelaxedStage(
                        execution: execution, target: fanOut.target, session: session,
                        runAt: loop.nowMilliseconds + backoff))
                return
            }
            runStage(execution, target: fanOut.target, session: session)
            return
        }
        let out = ByteBuffer(capacity: 256)
        out.appendArrayHeader(execution.clientCommands.count)
        let missing = Array("-ERR slotproxy: no reply for this command\r\n".utf8)
        for command in execution.clientCommands {
            if let reply = command.reply {
                out.append(reply)
                continue
            }
            guard let rule = command.rule else {
                out.append(execution.results[command.parts.lowerBound] ?? missing)
                continue
            }
            // A split command: its parts' replies merged as outside a
            // transaction (counts added, values back in key order ...).
            let merge = FanOut(target: fanOut.target, rule: rule, parts: command.parts.count, resp3: execution.resp3)
            for (part, index) in command.parts.enumerated() {
                _ = (execution.results[index] ?? missing).withUnsafeBytes { merge.receive(part: part, reply: $0) }
            }
            merge.merge(into: out, scanCursor: { _, _ in nil })
        }
        deliver(out.readable, to: fanOut.target)
    }

    func deliver(_ bytes: [UInt8], to target: FanOutTarget) {
        bytes.withUnsafeBytes { deliver($0, to: target) }
    }

    /// `MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN`, `LOADING`, `MASTERDOWN`:
    /// refused, not run, for the cluster's moves.
    static func isFailoverRefusal(_ reply: [UInt8]) -> Bool {
        reply.withUnsafeBytes {
            guard !$0.isEmpty, case .error(let errorClass) = classify($0) else { return false }
            return errorClass != .other
        }
    }

    /// A group's reply that says it did not run and may later: refused for
    /// now (`CLUSTERDOWN`, `TRYAGAIN`, `LOADING`, `MASTERDOWN`), or never
    /// written (its master could not be reached).
    static func didNotRun(_ reply: [UInt8]) -> Bool {
        if reply.starts(with: Worker.cannotConnectPrefix) { return true }
        return reply.withUnsafeBytes {
            guard !$0.isEmpty, case .error(let errorClass) = classify($0) else { return false }
            return Worker.replayableRefusals.contains(errorClass)
        }
    }

    /// `BackendConnection`'s error for requests it never wrote, as a reply.
    static let cannotConnectPrefix = Array(("-" + BackendConnection.cannotConnectText).utf8)

    /// The client left while groups of its EXEC still waited (a backoff,
    /// or a stage after the watch checks): those never run. With groups
    /// already committed, the outcome is partial: counted and logged, as
    /// for a failed watch check.
    private func noteGroupsLeftUnrun(_ execution: RelaxedExecution) {
        guard execution.committedGroups > 0 else { return }
        shared.relaxedTransactionPartialOutcome()
        logger.warning(
            "relaxed transaction: its client left after \(execution.committedGroups) slot group(s) had committed; \(execution.later.count + execution.current.count) group(s) not run"
        )
    }

    /// Runs the relaxed stages whose backoff is over (every tick).
    func runDelayedRelaxedStages(now: Int64) {
        guard !delayedRelaxedStages.isEmpty else { return }
        let stages = delayedRelaxedStages
        delayedRelaxedStages = []
        for stage in stages {
            if stage.session.isClosed {
                noteGroupsLeftUnrun(stage.execution)
                deliver(Array("-ERR slotproxy: client gone\r\n".utf8), to: stage.target)
            } else if now >= stage.runAt {
                runStage(stage.execution, target: stage.target, session: stage.session)
            } else {
                delayedRelaxedStages.append(stage)
            }
        }
    }

    static func isNullReply(_ reply: [UInt8]) -> Bool {
        reply.starts(with: "*-1\r\n".utf8) || reply.starts(with: "_\r\n".utf8)
    }

    /// The elements of an array reply, each as its own bytes.
    static func arrayElements(_ reply: [UInt8]) -> [[UInt8]]? {
        guard reply.first == UInt8(ascii: "*"), let end = reply.firstIndex(of: UInt8(ascii: "\r")),
            let count = Int(String(decoding: reply[1..<end], as: UTF8.self)), count >= 0
        else { return nil }
        var elements: [[UInt8]] = []
        var offset = end + 2
        return reply.withUnsafeBytes { raw in
            for _ in 0..<count {
                var scanner = ReplyScanner()
                guard offset < raw.count,
                    case .complete(let length, _) = scanner.scan(UnsafeRawBufferPointer(rebasing: raw[offset...]))
                else { return nil }
                elements.append(Array(raw[offset..<(offset + length)]))
                offset += length
            }
            return elements
        }
    }

    /// The node a `-MOVED` reply names, if `reply` is one.
    static func movedTarget(_ reply: [UInt8], defaultHost: String) -> NodeAddress? {
        guard reply.starts(with: "-MOVED ".utf8) else { return nil }
        return reply.withUnsafeBytes { raw in
            Redirect(errorText: UnsafeRawBufferPointer(rebasing: raw[1...]), defaultHost: defaultHost)
                .map { NodeAddress(host: $0.host, port: $0.port) }
        }
    }
}
