import ClusterTopology
import CommandTable
import RESPWire

/// `BLPOP`, `BRPOP`, `BZPOPMIN`, `BZPOPMAX` over keys in several slots, with
/// `cross-slot-transactions: relaxed`: job queues wait on several queues at
/// once (Sidekiq's `BRPOP queue:critical queue:default 2`, Celery's priority
/// lists, rq's `BLPOP` over a worker's queues), and no node can.
///
/// 1. The keys are tried in the client's order with the non-blocking pop
///    (`LPOP` ...), one after the other: the first element found is the
///    answer. The key order is the client's priority order, as on a server.
/// 2. All empty: the command blocks on every slot group at once, each with
///    that group's keys and the client's timeout, on a dedicated connection
///    to the group's master.
/// 3. The first group to answer with an element is the reply; the others
///    are woken with `CLIENT UNBLOCK` (by the id their connection learnt at
///    set-up). An element one of them popped in the meantime is pushed back
///    where it came from (`LPUSH` for `BLPOP`, `RPUSH` for `BRPOP`, `ZADD`),
///    so none is served twice or dropped. All timed out: the timeout's null.
///
/// Not atomic (another client can push or pop between the steps), which is
/// what `relaxed` accepts; an element is lost only if its push-back fails
/// (logged), or if the client disconnects in the instant a group pops one
/// (as it would be from a server).
/// A blocked step of a command over several slots: its record and the
/// connection it blocks on. Weak: the record's fan-out holds the command's
/// state, and a record its client left behind must not keep itself alive
/// through it.
struct BlockedStep {
    weak var record: RequestRecord?
    weak var connection: BackendConnection?
}

extension Worker {
    static let popAcrossSlotsCommands: Set<String> = ["blpop", "brpop", "bzpopmin", "bzpopmax"]

    final class PopRace {
        /// `blpop` ...
        let name: String
        let keys: [[UInt8]]
        let timeout: [UInt8]
        /// The client's record, answered once.
        let client: FanOutTarget
        var groups: [(slot: Int, keys: [[UInt8]])] = []
        var blocked: [BlockedStep] = []
        var answered: [Bool] = []
        var decided = false
        /// When the client's timeout is up (loop clock, ms; -1: never).
        let deadline: Int64

        init(name: String, keys: [[UInt8]], timeout: [UInt8], client: FanOutTarget, deadline: Int64) {
            self.name = name
            self.keys = keys
            self.timeout = timeout
            self.client = client
            self.deadline = deadline
        }

        var isSortedSet: Bool { name.hasPrefix("bz") }
        var nonBlockingName: String { String(name.dropFirst()) }  // lpop, rpop, zpopmin, zpopmax
    }

    enum PopStep {
        case attempt(Int)
        case block(Int)
        case pushBack
    }

    /// Starts a pop over several slots; false when `command` is not one (the
    /// caller answers `CROSSSLOT`).
    func popAcrossSlots(_ spec: CommandSpec, _ command: Command, session: ClientSession) -> Bool {
        guard configuration.crossSlotTransactions == .relaxed, Worker.popAcrossSlotsCommands.contains(spec.name),
            command.count >= 3
        else { return false }
        guard Double(command.string(command.count - 1)).map({ $0 >= 0 && $0.isFinite }) ?? false else {
            session.replyError("ERR timeout is not a float or out of range")
            return true
        }
        let parent = recordPool.acquire()
        session.expectReply(parent)
        session.barrier = parent  // the client waits for the whole pop
        let received = parent.receivedAtMicros != 0 ? parent.receivedAtMicros / 1000 : loop.nowMilliseconds
        let race = PopRace(
            name: spec.name, keys: (1..<(command.count - 1)).map { command.bytes($0) },
            timeout: command.bytes(command.count - 1), client: .client(parent),
            deadline: BlockingTimeout(command).map { received + $0.milliseconds } ?? -1)
        attemptPop(race, at: 0, session: session)
        return true
    }

    private func attemptPop(_ race: PopRace, at index: Int, session: ClientSession) {
        let key = race.keys[index]
        let request = ByteBuffer(capacity: key.count + 32)
        request.appendCommand([Array(race.nonBlockingName.utf8), key])
        send(race, step: .attempt(index), request, key: key, session: session)
    }

    /// One step's reply is in.
    func popStep(_ race: PopRace, _ step: PopStep, reply: [UInt8], session: ClientSession?) {
        switch step {
        case .attempt(let index):
            let live = session.map { !$0.isGone } ?? false
            if isError(reply) {
                deliver(reply, race: race)
            } else if let element = poppedElement(reply, race: race) {
                // As the blocking command answers: [key, element] or [key, member, score].
                let out = ByteBuffer(capacity: reply.count + race.keys[index].count + 16)
                out.appendArrayHeader(race.isSortedSet ? 3 : 2)
                out.appendBulk(race.keys[index])
                out.append(element)
                // Its client went away meanwhile: the element goes back.
                if !live, let session { pushBack(out.readableArray(), race: race, session: session) }
                deliver(out.readableArray(), race: race)
            } else if index + 1 < race.keys.count, live, let session {
                attemptPop(race, at: index + 1, session: session)
            } else if live, let session {
                blockOnEveryGroup(race, session: session)
            } else {
                deliver(reply, race: race)
            }
        case .block(let group):
            race.answered[group] = true
            let hasElement = (reply.withUnsafeBytes { arrayHeader($0)?.count } ?? 0) > 0
            if race.decided {
                if hasElement, let session { pushBack(reply, race: race, session: session) }
                return
            }
            if isError(reply) || hasElement {
                race.decided = true
                deliver(reply, race: race)
                wakeTheOthers(race)
            } else if race.answered.allSatisfy({ $0 }) {
                race.decided = true
                deliver(reply, race: race)  // every group timed out: the null
            }
        case .pushBack:
            shared.popPushedBack()
            if isError(reply) {
                logger.error(
                    "\(race.name.uppercased()) across slots: an element popped by a group that lost the race could not be pushed back: \(String(decoding: reply, as: UTF8.self))"
                )
            }
        }
    }

    /// The non-blocking pop's element(s) in the blocking reply's form (a
    /// bulk string; a member and its score), or nil when the key was empty.
    private func poppedElement(_ reply: [UInt8], race: PopRace) -> ArraySlice<UInt8>? {
        if race.isSortedSet {
            guard let header = reply.withUnsafeBytes({ arrayHeader($0) }), header.count == 2 else { return nil }
            return reply[header.length...]
        }
        return reply.first == UInt8(ascii: "$") && !isNull(reply) ? reply[...] : nil
    }

    private func blockOnEveryGroup(_ race: PopRace, session: ClientSession) {
        // (The attempts took time, a failover's maybe: the groups block for
        // what is left of the client's timeout.)
        var timeout = race.timeout
        if race.deadline >= 0 {
            let left = race.deadline - loop.nowMilliseconds
            guard left > 0 else {
                deliver(ByteBuffer.nullArray(resp3: session.resp3).withUTF8Buffer { Array($0) }, race: race)
                return
            }
            timeout = Array(BlockingTimeout.text(left, inMilliseconds: false).utf8)
        }
        for key in race.keys {
            let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
            if let group = race.groups.firstIndex(where: { $0.slot == slot }) {
                race.groups[group].keys.append(key)
            } else {
                race.groups.append((slot, [key]))
            }
        }
        race.blocked = Array(repeating: BlockedStep(), count: race.groups.count)
        race.answered = Array(repeating: false, count: race.groups.count)
        for (group, entry) in race.groups.enumerated() {
            if race.decided { break }  // a group failed at once: the rest need not block
            let fanOut = FanOut(target: race.client, rule: .popRace(race, .block(group)), parts: 1, resp3: session.resp3)
            fanOut.sessionForNextStage = session
            // (Written into the record: a buffer's `readable` outlives no buffer.)
            let record = partRecord(fanOut, 0, session: session)
            record.request.appendCommand([Array(race.name.utf8)] + entry.keys + [timeout])
            record.slot = entry.slot
            // (Sent again after a failover or a move, it keeps to the client's
            // deadline: worked out from its request, the time left when it
            // was first sent would count from the client's command.)
            record.blockDeadline = race.deadline
            guard let pool = slotOwners[entry.slot] else {
                failRequest(record, message: "CLUSTERDOWN Hash slot not served")
                continue
            }
            blockPopGroup(race, group, record, on: pool.address, asking: false, session: session)
        }
    }

    /// When an attempt of a race (a non-blocking pop) held for a down master
    /// gives up: at its client's deadline (nothing popped, it answers as an
    /// empty key); nil for any other record.
    func attemptDeadline(of record: RequestRecord) -> Int64? {
        guard case .popRace(let race, .attempt)? = record.fanOut?.rule, race.deadline >= 0 else { return nil }
        return race.deadline
    }

    /// Sends a group's command on a dedicated connection to `address`; also
    /// when it was redirected (its slot moved), so it can still be woken.
    func blockPopGroup(
        _ race: PopRace, _ group: Int, _ record: RequestRecord, on address: NodeAddress, asking: Bool,
        session: ClientSession
    ) {
        guard let connection = sendRaceStep(record, to: address, asking: asking, session: session) else { return }
        race.blocked[group] = BlockedStep(record: record, connection: connection)
        if race.decided { wakeTheOthers(race) }  // (a redirect after the race was won)
    }

    /// A held or redirected step of a race sent again (from
    /// `resendBlocking`, its request rewritten with the time left): false
    /// when `record` is not one.
    func resendRaceStep(_ record: RequestRecord, to address: NodeAddress, asking: Bool, session: ClientSession) -> Bool {
        switch record.fanOut?.rule {
        case .popRace(let race, .block(let group))?:
            if race.decided { break }
            blockPopGroup(race, group, record, on: address, asking: asking, session: session)
            return true
        case .streamRace(let race, let group)?:
            if race.decided { break }
            blockStreamGroup(race, group, record, on: address, asking: asking, session: session)
            return true
        default:
            return false
        }
        // Decided meanwhile: it would only be woken at once. Its timeout's null.
        answerLocally(record, reply: ByteBuffer.nullArray(resp3: session.resp3))
        return true
    }

    /// Wakes the groups still blocked: each answers its timeout's null, or
    /// the element it popped just before (pushed back).
    private func wakeTheOthers(_ race: PopRace) {
        wakeBlockedSteps(race.blocked, answeredBy: race.answered)
    }

    /// Sends one blocking step of a command over several slots on a
    /// dedicated connection to `address` (nil after failing `record` when
    /// none is free, or holding it while that master is down);
    /// `wakeBlockedSteps` can wake it. Like a blocking command of one slot
    /// (`record.blocking`), it waits through a failover: held while its
    /// master is down, retried when a demoted master unblocks it, and sent
    /// again (`resendBlocking`, `resendRaceStep`) with what is left of the
    /// client's timeout, counted from the client's command.
    func sendRaceStep(_ record: RequestRecord, to address: NodeAddress, asking: Bool, session: ClientSession)
        -> BackendConnection?
    {
        record.blocking = true
        if record.receivedAtMicros == 0, let parent = record.fanOut?.clientRecord {
            record.receivedAtMicros = parent.receivedAtMicros
        }
        if !asking, let pool = pools[address], pool.mustHold(now: loop.turnTime) {
            holdForFailover(record)
            return nil
        }
        guard let connection = dedicated.acquire(address, for: session) else {
            failRequest(record, message: tooManyBlockedMessage(address))
            return nil
        }
        connection.servedSession = session
        connection.servesBlocking = true
        session.waitConnections.append(connection)
        enqueueBlocking(record, on: connection, asking: asking)
        return connection
    }

    /// Wakes the steps not answered yet (`CLIENT UNBLOCK`): each answers as
    /// on its timeout, or what it got just before.
    func wakeBlockedSteps(_ steps: [BlockedStep], answeredBy answered: [Bool]) {
        for (index, step) in steps.enumerated() where !answered[index] {
            // Only while it still carries its command: a redirect moved it
            // elsewhere, and the connection may serve someone else.
            guard let record = step.record, let connection = step.connection, connection.owes(record) else { continue }
            if connection.nodeClientId != nil {
                unblock(connection)
            } else {
                connection.unblockOnceIdKnown = true
            }
            stepsBeingWoken.append(step)
        }
    }

    /// The tick wakes again the steps still blocked: `CLIENT UNBLOCK` goes
    /// over another connection, and may reach the node before the command
    /// it was to wake (it then wakes nothing, and the command blocks on).
    func wakeBlockedStepsAgain() {
        guard !stepsBeingWoken.isEmpty else { return }
        stepsBeingWoken.removeAll { step in
            guard let record = step.record, let connection = step.connection, connection.owes(record) else { return true }
            if connection.nodeClientId != nil { unblock(connection) }
            return false
        }
    }

    /// `CLIENT UNBLOCK` for the command blocked on `connection`, sent over a
    /// shared connection to the same node.
    func unblock(_ connection: BackendConnection) {
        guard let id = connection.nodeClientId, connection.outstandingRequests > 0 else { return }
        connection.unblockSent = true
        pool(for: connection.address).connection(resp3: false).enqueueInternal([
            Array("CLIENT".utf8), Array("UNBLOCK".utf8), Array(String(id).utf8),
        ])
    }

    /// Puts back an element popped by a group that lost the race, at the end
    /// it was taken from.
    private func pushBack(_ reply: [UInt8], race: PopRace, session: ClientSession) {
        func bulk(_ range: Range<Int>) -> [UInt8]? {
            guard case .bulkString(let bytes)? = RESPValue.decode(Array(reply[range]))?.value else { return nil }
            return bytes
        }
        guard let elements = ProxyCore.arrayElements(reply), elements.count == (race.isSortedSet ? 3 : 2),
            let key = bulk(elements[0]), let element = bulk(elements[1])
        else {
            logger.error("\(race.name.uppercased()) across slots: a lost race's reply is not [key, element]: an element may be lost")
            return
        }
        let arguments: [[UInt8]]
        if race.isSortedSet {
            // The score: a bulk string in RESP2, a double in RESP3.
            let scoreElement = reply[elements[2]]
            let score =
                scoreElement.first == UInt8(ascii: ",")
                ? Array(scoreElement.dropFirst().prefix { $0 != 13 }) : bulk(elements[2]) ?? Array("0".utf8)
            arguments = [Array("ZADD".utf8), key, score, element]
        } else {
            arguments = [Array((race.name == "blpop" ? "LPUSH" : "RPUSH").utf8), key, element]
        }
        let request = ByteBuffer(capacity: 64)
        request.appendCommand(arguments)
        // Answered to no one: a record outside the client's queue.
        let sink = recordPool.acquire()
        dispatchStep(race, step: .pushBack, request, key: arguments[1], target: .client(sink), session: session)
    }

    private func send(_ race: PopRace, step: PopStep, _ request: ByteBuffer, key: [UInt8], session: ClientSession) {
        dispatchStep(race, step: step, request, key: key, target: race.client, session: session)
    }

    private func dispatchStep(
        _ race: PopRace, step: PopStep, _ request: ByteBuffer, key: [UInt8], target: FanOutTarget, session: ClientSession
    ) {
        let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
        guard let pool = slotOwners[slot] else {
            let error = ByteBuffer(capacity: 64)
            error.appendError("CLUSTERDOWN Hash slot not served")
            popStep(race, step, reply: error.readableArray(), session: session)
            return
        }
        dispatch([Part(pool: pool, slot: slot, request: request)], rule: .popRace(race, step), target: target, session: session)
    }

    private func deliver(_ reply: [UInt8], race: PopRace) {
        race.decided = true
        deliver(reply, to: race.client)
    }
}
