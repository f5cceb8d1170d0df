import ClusterTopology
import CommandTable
import RESPWire

/// Requests that wait for a reachable master instead of failing.
///
/// When a connection to a master fails, the node is marked down and
/// reconnected with backoff and jitter (`BackendPool`). Requests that cannot
/// go anywhere now are held here, in order:
/// - requests for a node that is down (new ones too, behind the held ones,
///   so a slot's requests keep their order);
/// - requests of a lost connection that never reached the node, or that
///   are read-only (running them twice is harmless);
/// - requests answered `TRYAGAIN`, `LOADING`, `CLUSTERDOWN` or `MASTERDOWN`
///   (retried with backoff).
/// They are sent again when the node answers again or when a new slot map
/// names another master (a failover), and get `CLUSTERDOWN` only once held
/// longer than `failover-timeout-ms`. At most `failover-queue-limit` are
/// held per worker; past it, new ones fail at once, so memory stays bounded.
extension Worker {
    /// Holds `record` until its slot has a reachable master (or the
    /// failover timeout passes).
    func holdForFailover(_ record: RequestRecord, retryAfterMs: Int = 0) {
        metrics.counters.failoverWaits &+= 1
        guard let session = record.session, !session.isGone else {
            failRequest(record, message: "ERR slotproxy: client gone")
            return
        }
        let now = loop.nowMilliseconds
        if record.blockDeadline == 0, let deadline = attemptDeadline(of: record) { record.blockDeadline = deadline }
        if (record.blocking || record.blockDeadline > 0) && ownTimeoutPassed(record, now: now) {
            answerTimedOut(record)
            return
        }
        if record.heldSince == 0 { record.heldSince = now }
        if now - record.heldSince >= Int64(configuration.failoverTimeoutMs) {
            failHeld(record)
            return
        }
        guard heldRequests.count < configuration.failoverQueueLimit else {
            failRequest(
                record,
                message:
                    "CLUSTERDOWN slotproxy: too many requests waiting for unreachable masters (failover-queue-limit \(configuration.failoverQueueLimit))"
            )
            return
        }
        record.retryAt = retryAfterMs > 0 ? now + Int64(retryAfterMs) : 0
        // Held for a down node: later requests for it queue behind. (A retry
        // after TRYAGAIN and the like holds up nobody else.)
        if record.retryAt == 0, let target = record.slot >= 0 ? slotOwners[record.slot] : nil {
            target.heldCount += 1
            record.heldFor = target
        }
        insertHeld(record)
        shared.requestTopologyRefresh()
    }

    /// Keeps held requests in the order the clients sent them: a request
    /// back from a connection that failed before reaching its node (a redial
    /// refused) goes ahead of the later ones held meanwhile. Appended, it
    /// went behind them, and each failed redial rotated a client's writes.
    private func insertHeld(_ record: RequestRecord) {
        var index = heldRequests.count
        while index > 0 && heldRequests[index - 1].sequence > record.sequence { index -= 1 }
        heldRequests.insert(record, at: index)
    }

    /// Takes out of the held requests those `matching` (to answer them now).
    func takeHeldRequests(matching predicate: (RequestRecord) -> Bool) -> [RequestRecord] {
        var taken: [RequestRecord] = []
        heldRequests.removeAll { record in
            guard predicate(record) else { return false }
            record.heldFor?.heldCount -= 1
            record.heldFor = nil
            taken.append(record)
            return true
        }
        return taken
    }

    private func failHeld(_ record: RequestRecord) {
        let slot = record.slot >= 0 ? " for slot \(record.slot)" : ""
        failRequest(
            record,
            message:
                "CLUSTERDOWN slotproxy: no reachable master\(slot) within failover-timeout-ms (\(configuration.failoverTimeoutMs))"
        )
    }

    /// Sends held requests whose master can be tried now, oldest first;
    /// the others stay, in order.
    func resendHeldRequests() {
        guard !heldRequests.isEmpty else { return }
        let now = loop.nowMilliseconds
        let records = heldRequests
        heldRequests = []
        for record in records {
            record.heldFor?.heldCount -= 1
            record.heldFor = nil
        }
        var blocked = Set<ObjectIdentifier>()
        // A client's ordered retry that waits (backing off, say) keeps its
        // later held requests for the slot waiting too, whatever their pool.
        var waitingRetries = Set<SessionSlot>()
        for record in records {
            guard let session = record.session, !session.isGone else {
                failRequest(record, message: "ERR slotproxy: client gone")
                continue
            }
            var outcomesPending = false
            if let refusal = record.refusalAwaitingLaterOutcomes, let anchor = orderAnchor(of: record) {
                switch session.outcomeOfLaterRequests(of: record, after: anchor) {
                case .oneRan:
                    // A retry would run after it: the node's answer stands.
                    record.refusalAwaitingLaterOutcomes = nil
                    refusal.withUnsafeBytes { answerLocally(record, reply: $0) }
                    continue
                case .pending: outcomesPending = true
                case .noneRan: record.refusalAwaitingLaterOutcomes = nil
                }
            }
            let pool = record.slot >= 0 ? slotOwners[record.slot] : anyReachableMaster(now: now)
            let backingOff = now < record.retryAt
            let sessionSlot = SessionSlot(session: ObjectIdentifier(session), slot: record.slot)
            // (Waits of its client's own, which hold up no other client.)
            let waitsForItsClient =
                backingOff || outcomesPending || (!waitingRetries.isEmpty && waitingRetries.contains(sessionSlot))
            let waits =
                waitsForItsClient || pool == nil || pool!.isDown && now < pool!.nextAttemptAt
                || blocked.contains(ObjectIdentifier(pool!))
            if waits && record.orderedRetry { waitingRetries.insert(sessionSlot) }
            guard waits else {
                if record.blocking {
                    resendBlocking(record, to: pool!.address, asking: false, session: session)
                } else if record.watch {
                    sendWatch(record)
                } else {
                    pool!.connection(for: session).enqueue(record)
                }
                continue
            }
            if (record.blocking || record.blockDeadline > 0) && ownTimeoutPassed(record, now: now) {
                answerTimedOut(record)
                continue
            }
            if now - record.heldSince >= Int64(configuration.failoverTimeoutMs) {
                failHeld(record)
                continue
            }
            if !waitsForItsClient, let pool {
                // Later requests for the same master stay behind this one.
                blocked.insert(ObjectIdentifier(pool))
                pool.heldCount += 1
                record.heldFor = pool
            }
            insertHeld(record)
        }
    }

    struct SessionSlot: Hashable {
        var session: ObjectIdentifier
        var slot: Int
    }

    /// A blocking command that never reached its node (no connection could
    /// be opened, or it was lost before the command was written): tried
    /// again with a backoff, within `failover-timeout-ms`. Only a refused
    /// connect marks the node down (a timeout or a lost stream on one
    /// client's connection may be that connection's alone), so without the
    /// backoff a hung node would be dialled every 100 ms.
    func retryBlocking(_ record: RequestRecord) {
        record.retries += 1
        holdForFailover(record, retryAfterMs: min(1000, 20 << min(record.retries, 6)))
    }

    /// Whether a held blocking command's own timeout (`BLPOP q 5`) is up,
    /// counted from when the client sent it.
    private func ownTimeoutPassed(_ record: RequestRecord, now: Int64) -> Bool {
        let deadline = blockDeadline(record)
        return deadline > 0 && now >= deadline
    }

    /// The record's `blockDeadline`, worked out the first time it is held
    /// (later its request may carry only what was left of the timeout).
    private func blockDeadline(_ record: RequestRecord) -> Int64 {
        if record.blockDeadline == 0 {
            let received = record.receivedAtMicros != 0 ? record.receivedAtMicros / 1000 : loop.nowMilliseconds
            let timeout = Worker.withCommand(of: record) { BlockingTimeout($0) } ?? nil
            record.blockDeadline = timeout.map { received + $0.milliseconds } ?? -1
        }
        return record.blockDeadline
    }

    /// The time is up while the master is away: nothing was popped, so the
    /// client gets what a node answers a blocked pop on timeout.
    private func answerTimedOut(_ record: RequestRecord) {
        answerLocally(record, reply: ByteBuffer.nullArray(resp3: record.session?.resp3 ?? false))
    }

    /// A blocking command sent again (held, or redirected after it had
    /// blocked) goes with what is left of its own timeout.
    func resendBlocking(_ record: RequestRecord, to address: NodeAddress, asking: Bool, session: ClientSession) {
        let deadline = blockDeadline(record)
        let now = loop.nowMilliseconds
        if deadline > 0 {
            guard now < deadline else {
                answerTimedOut(record)
                return
            }
            let request = record.request.readableArray()
            Worker.withCommand(request) { command in
                BlockingTimeout(command)?.rewrite(command, remaining: deadline - now, into: record.request)
            }
        }
        replaceLookedUpDollarIDs(record)
        if resendRaceStep(record, to: address, asking: asking, session: session) { return }
        sendBlocking(record, to: address, asking: asking, session: session)
    }

    /// `body` applied to the record's request, parsed; nil if it does not parse.
    static func withCommand<T>(of record: RequestRecord, _ body: (Command) -> T) -> T? {
        withCommand(record.request.readableArray(), body)
    }

    static func withCommand<T>(_ request: [UInt8], _ body: (Command) -> T) -> T? {
        var parser = RequestParser()
        return request.withUnsafeBytes { raw in
            guard case .complete = parser.parse(raw), !parser.arguments.isEmpty else { return nil }
            return body(Command(frame: raw, arguments: parser.arguments))
        }
    }

    /// A blocking command that had blocked on its node for a while before
    /// this trouble: a new failover, timed from now (not from a hold hours ago).
    private func restartFailoverClockIfItBlocked(_ record: RequestRecord) {
        guard record.blocking, record.heldSince != 0, loop.nowMilliseconds - record.sentAt >= 1000 else { return }
        record.heldSince = 0
        record.retries = 0
    }

    /// A blocked `XREAD` whose connection was lost (its master died, say):
    /// it changed nothing on its node, so, as a read, it waits for the
    /// master or its successor and blocks again, after the IDs it looked up
    /// for `$` (`Worker+StreamLastIDs`). False for any other command.
    func retryLostBlockedRead(_ record: RequestRecord) -> Bool {
        guard record.session.map({ !$0.isGone }) ?? false,
            Worker.withCommand(of: record, { Worker.streamIDRange($0) != nil }) == true
        else { return false }
        restartFailoverClockIfItBlocked(record)
        retryBlocking(record)
        return true
    }

    /// A master demoted by a failover unblocks its blocked clients with
    /// `-UNBLOCKED ... (master -> replica?)`: nothing was popped, so the
    /// command waits for the new master like any other.
    func retryUnblockedByRoleChange(_ record: RequestRecord, reply: UnsafeRawBufferPointer) -> Bool {
        // (Not a deleted stream's or an operator's CLIENT UNBLOCK ERROR:
        // those are meant for the client.)
        guard reply.starts(with: "-UNBLOCKED".utf8), Worker.containsText(reply, "instance state changed"),
            record.session.map({ !$0.isGone }) ?? false
        else { return false }
        shared.requestTopologyRefresh()
        restartFailoverClockIfItBlocked(record)
        retryBlocking(record)
        return true
    }

    /// Whether `text` occurs in `bytes` (a short reply: a plain scan).
    static func containsText(_ bytes: UnsafeRawBufferPointer, _ text: String) -> Bool {
        let needle = Array(text.utf8)
        guard bytes.count >= needle.count else { return false }
        return (0...(bytes.count - needle.count)).contains { start in
            UnsafeRawBufferPointer(rebasing: bytes[start..<(start + needle.count)]).elementsEqual(needle)
        }
    }

    /// A request that waited behind its client's retried one for the slot.
    func sendWaitingBehindRetry(_ record: RequestRecord) {
        guard let session = record.session, let pool = slotOwners[record.slot],
            !pool.mustHold(now: loop.turnTime)
        else {
            holdForFailover(record)
            return
        }
        pool.connection(for: session).enqueue(record)
    }

    func anyReachableMaster(now: Int64) -> BackendPool? {
        masterPools.first { !$0.isDown || now >= $0.nextAttemptAt } ?? masterPools.first
    }

    /// A shared connection failed, or any connection's connect was refused:
    /// its node is down until one connects.
    func backendFailed(_ connection: BackendConnection) {
        pools[connection.address]?.markDown(now: loop.nowMilliseconds)
    }

    /// The first failure of a node is a warning; a failed redial of a node
    /// already down is only counted (every worker redials each down master
    /// about once a second: a dead master with no replica would log 7,000
    /// lines an hour), and the count logged once a minute while it stays down.
    func logConnectionLost(to address: NodeAddress, reason: String, redial: Bool) {
        guard redial, let pool = pools[address], pool.isDown else {
            logger.warning("connection to \(address) lost: \(reason)")
            return
        }
        pool.failedRedials += 1
        let now = loop.nowMilliseconds
        if pool.lastRedialReportAt == 0 { pool.lastRedialReportAt = now }
        logger.debug("connection to \(address) lost: \(reason)")
        guard now - pool.lastRedialReportAt >= Worker.downNodeReportIntervalMs else { return }
        let seconds = (now - pool.lastRedialReportAt) / 1000
        logger.warning(
            "\(address) still unreachable: \(pool.failedRedials) connection attempt(s) failed in the last \(seconds) s (last: \(reason))"
        )
        pool.failedRedials = 0
        pool.lastRedialReportAt = now
    }

    static let downNodeReportIntervalMs: Int64 = 60_000

    /// A node that did not answer this worker within request-timeout-ms
    /// does not answer the others either (a paused process, one long
    /// command): they are told at once. One whose connection sat idle would
    /// otherwise write its next requests there and learn it only
    /// request-timeout-ms later, when they may or may not have run.
    func tellOtherWorkersNodeIsHung(_ address: NodeAddress) {
        for (index, mailbox) in shared.mailboxes.enumerated() where index != workerIndex {
            mailbox.send(.nodeHung(address))
        }
    }

    /// Another worker found the node hung: it is down here too, so new
    /// requests for it are held, and its idle connections close, so the
    /// next is a redial that writes nothing until the node answers. (Ones
    /// owing replies wait for them or time out on their own; tracking ones
    /// stay, their clients' caches depend on them.)
    func nodeHungForAnotherWorker(_ address: NodeAddress) {
        guard let pool = pools[address], !pool.isDown else { return }
        pool.markDown(now: loop.nowMilliseconds)
        logger.info("\(address) did not answer another worker within request-timeout-ms: requests for it wait for its answer")
        for connection in pool.openConnections
        where connection.outstandingRequests == 0 && !connection.isEstablishing && !connection.tracking {
            connection.close()
        }
    }

    /// A connection (shared or dedicated) got its first answer from the
    /// node: the node is reachable again.
    func backendConnected(_ connection: BackendConnection) {
        guard let pool = pools[connection.address], pool.isDown else { return }
        pool.markUp()
        logger.info("\(connection.address) reachable again")
        pool.failedRedials = 0
        pool.lastRedialReportAt = 0
        resendHeldRequests()
    }

    /// Whether a request whose outcome is unknown may be sent again: a
    /// read-only command changes nothing when it runs twice.
    func isSafeToRepeat(_ record: RequestRecord) -> Bool {
        Worker.withCommand(of: record) { command in
            guard var spec = CommandLookup().find(command.argument(0)) else { return false }
            if spec.isContainer, command.count > 1, let sub = spec.subcommand(command.argument(1)) { spec = sub }
            return spec.flags.contains(.readonly) && !spec.flags.contains(.blocking)
        } ?? false
    }

    /// Makes the client's later requests for `record`'s slot wait until it
    /// is answered (`ClientSession.behindRetry`), for a plain request about
    /// to be held for a retry.
    func startOrderedRetry(_ record: RequestRecord) {
        guard !record.orderedRetry, record.slot >= 0, !record.blocking, !record.watch, let session = record.session,
            let anchor = orderAnchor(of: record)
        else { return }
        record.orderedRetry = true
        if anchor !== record { anchor.partsRetriedInSlots.append(record.slot) }
        if record.orderedSince == 0 { record.orderedSince = recordPool.lastSequence }
        session.retryStarted(slot: record.slot)
    }

    /// Its client's later requests for the slot may go now. Every path that
    /// answers or drops a record once `startOrderedRetry` marked it comes here.
    func endOrderedRetry(_ record: RequestRecord) {
        guard record.orderedRetry else { return }
        record.orderedRetry = false
        if let anchor = orderAnchor(of: record), anchor !== record,
            let index = anchor.partsRetriedInSlots.firstIndex(of: record.slot)
        {
            anchor.partsRetriedInSlots.remove(at: index)
        }
        record.session?.retryEnded(slot: record.slot)
    }

    /// Where `record` stands in its client's order of requests: itself, or
    /// for a part of a command split by slot (`answersSplit`), the client's
    /// record of that command. Nil for the parts of other fan-outs (a
    /// broadcast's, whose slot only names a master) and of the proxy's own
    /// requests.
    func orderAnchor(of record: RequestRecord) -> RequestRecord? {
        guard let fanOut = record.fanOut else { return record }
        guard let parent = fanOut.clientRecord, parent.answersSplit, parent.session === record.session else {
            return nil
        }
        return parent
    }

    /// A moved request's client may have later requests for the slot still
    /// at the old master, to be moved in turn; the patched map would send
    /// its new ones straight to the new master, ahead of them. New ones wait
    /// (`behindRetry`) until this one and those are answered. (The first
    /// moved request marks the others, so a moved pipeline is scanned once.)
    func holdBackLaterRequests(of session: ClientSession, behind record: RequestRecord) {
        guard !record.orderedRetry else { return }
        startOrderedRetry(record)
        guard record.orderedRetry, let anchor = orderAnchor(of: record) else { return }
        session.forEachLaterRequestInFlight(forSlot: record.slot, after: anchor) { startOrderedRetry($0) }
    }

    /// Whether a redirect past `max-redirects` is the cluster's own, between
    /// nodes the map names: not with max-redirects 0 (redirects go to the
    /// client, as configured), not one naming a node the map does not know
    /// (retried by the map already) or the node that sent it (no node
    /// redirects to itself), and not a script's answer (it may be error
    /// text the script returned after it ran).
    private func isRedirectLoop(_ record: RequestRecord, reply: UnsafeRawBufferPointer, from node: NodeAddress?) -> Bool {
        guard configuration.maxRedirects > 0, record.redirects >= configuration.maxRedirects, record.slot >= 0,
            let node,
            let redirect = Redirect(errorText: UnsafeRawBufferPointer(rebasing: reply.dropFirst()), defaultHost: node.host),
            redirect.slot == record.slot
        else { return false }
        let target = NodeAddress(host: redirect.host, port: redirect.port)
        return target != node && knownNodes.contains(target) && !runsAScript(record)
    }

    /// `TRYAGAIN`, `LOADING`, `CLUSTERDOWN`, `MASTERDOWN`, and a `MOVED` or
    /// `ASK` for the request's slot past `max-redirects` (nodes sending it
    /// back and forth while a failover or a migration settles, each with
    /// another view of the slot; `from` is the node that answered): nothing
    /// ran; try again after a backoff, within the failover timeout. True
    /// when held.
    func retryAfterTransientError(
        _ record: RequestRecord, _ errorClass: ErrorClass, reply: UnsafeRawBufferPointer, from node: NodeAddress? = nil
    ) -> Bool {
        switch errorClass {
        case .tryAgain, .loading, .clusterDown, .masterDown: break
        case .moved, .ask:
            guard isRedirectLoop(record, reply: reply, from: node) else { return false }
        default: return false
        }
        // The records of a relaxed transaction's groups are answered by their EXEC.
        guard !record.insideMulti else { return false }
        restartFailoverClockIfItBlocked(record)
        let now = loop.nowMilliseconds
        if record.heldSince != 0 && now - record.heldSince >= Int64(configuration.failoverTimeoutMs) { return false }
        // (A blocking command holds its client's next command back anyway.)
        if record.slot >= 0, !record.blocking, !record.watch, let session = record.session,
            let anchor = orderAnchor(of: record)
        {
            // On a slot being migrated, the client's next request for it went
            // out behind this one and may have run (its keys on this side): a
            // retry now would run after it (`MSET a new` retried after `SET a
            // final` leaves `new`). The client gets the error instead, as from
            // a cluster node.
            if session.hasLaterRequest(than: record, after: anchor) {
                if errorClass == .tryAgain { return false }
                // LOADING and the like (and a redirect loop) usually refuse
                // the later ones too, and all are retried in order; but the
                // node may have finished loading (or seen its cluster state
                // turn ok) between reading this request and a later one. The
                // retry waits for their outcome: one that ran means the
                // client gets this error.
                record.refusalAwaitingLaterOutcomes = Array(reply)
            }
            // (A split command's part too: the client's next request for the
            // slot would otherwise overtake the retried part.)
            startOrderedRetry(record)
        }
        record.retries += 1
        // Each try may redirect afresh: on a slot being migrated, ASK from
        // the source then TRYAGAIN from the target is one round, not a loop
        // (it would use up max-redirects and hand the client a raw ASK).
        record.redirects = 0
        metrics.counters.retries &+= 1
        holdForFailover(record, retryAfterMs: min(1000, 20 << min(record.retries, 6)))
        return true
    }
}
