import ClusterTopology
import RESPWire

/// What a transaction sent its node since `MULTI`, kept so that it can be
/// sent again, whole, on another connection.
final class TransactionLog {
    /// Where the transaction's commands begin in its connection's stream
    /// (`RequestRecord.streamEnd` counts the same way): the records after it
    /// are the transaction's, those before a previous one's.
    let start: Int
    let slot: Int
    /// Every command after `MULTI`, in order: those queued before the first
    /// key, then the client's, `EXEC` included.
    private(set) var frames: [[UInt8]] = []
    private var bytes = 0
    /// False once the transaction `WATCH`es (the watch dies with its
    /// connection: running it elsewhere would drop the client's check), ends
    /// without `EXEC`, or passes `transaction-replay-bytes`.
    var replayable = true
    /// For a transaction being sent again: when it was first refused, and
    /// how many tries so far (the backoff and `failover-timeout-ms` count
    /// from the first refusal, not the last).
    var heldSince: Int64 = 0
    var attempts = 0
    /// The transaction `WATCH`es.
    var watched = false
    /// A redirect told that the watched keys left its master: `EXEC`
    /// answers null, as for a changed key.
    var abortsAsWatched = false
    private let limit: Int

    init(start: Int, slot: Int, limit: Int) {
        self.start = start
        self.slot = slot
        self.limit = limit
    }

    func append(_ frame: UnsafeRawBufferPointer) {
        guard replayable else { return }
        bytes += frame.count
        guard bytes <= limit else {
            replayable = false
            frames = []
            return
        }
        frames.append(Array(frame))
    }

    /// The commands before the last `unanswered` ones: their replies went to
    /// the client already; sent again, they are answered to nobody.
    func answered(before unanswered: Int) -> [[UInt8]] {
        Array(frames.dropLast(unanswered))
    }
}

/// A transaction refused before it ran, waiting to be sent again.
final class TransactionReplay {
    let session: ClientSession
    let slot: Int
    let answered: [[UInt8]]
    /// The client's commands still owed a reply, `EXEC` last if it came.
    let records: [RequestRecord]
    let heldSince: Int64
    let attempts: Int
    var retryAt: Int64 = 0
    /// Where a `MOVED` said the slot went: tried first (the map may not
    /// know it yet; a queued command's `MOVED` is the cluster's own).
    var target: NodeAddress?

    /// `answered`: the commands sent again silently; by default all but
    /// the `records`' own.
    init(session: ClientSession, log: TransactionLog, records: [RequestRecord], now: Int64, answered: [[UInt8]]? = nil) {
        self.session = session
        slot = log.slot
        self.answered = answered ?? log.answered(before: records.count)
        self.records = records
        heldSince = log.heldSince != 0 ? log.heldSince : now
        attempts = log.attempts + 1
    }
}

/// Transactions through a failover. A transaction refused before its `EXEC`
/// ran (its master down or refusing the connection, the node answering
/// `CLUSTERDOWN`, `LOADING`, `MASTERDOWN` or `TRYAGAIN` while it queues, or
/// its connection lost before `EXEC` was written) ran nothing: the node
/// forgets a `MULTI` with its connection. So, like any request, it waits for
/// its slot's master (or a promoted replica) and is sent again from `MULTI`
/// on a new connection; the commands the client already had `+QUEUED` for
/// are answered to nobody, and the client's next command waits behind it.
/// Within `failover-timeout-ms`; past it the client gets the error.
/// Transactions that `WATCH` are not replayed: their check dies with the
/// connection, and the client gets the error as before.
extension Worker {
    static let replayableRefusals: [ErrorClass] = [.clusterDown, .loading, .masterDown, .tryAgain]

    /// A reply on a transaction's connection, seen first for what a failover
    /// does to it; true when dealt with here (held, sent again, answered).
    func transactionReplyHandled(
        _ record: RequestRecord, reply: UnsafeRawBufferPointer, kind: ReplyKind, on connection: BackendConnection
    ) -> Bool {
        if let log = connection.transactionLog, log.abortsAsWatched, record.endsTransaction != 0,
            record.endsTransaction == connection.transactionNumber
        {
            // (The node answers EXECABORT: the redirect flagged it.)
            endTransaction(connection)
            answerLocally(record, reply: ByteBuffer.nullArray(resp3: record.session?.resp3 == true))
            return true
        }
        guard case .error(let errorClass) = kind else { return false }
        if Worker.replayableRefusals.contains(errorClass), replayRefusedTransaction(record, on: connection, reply: reply) {
            return true
        }
        if errorClass == .moved, replayMovedTransaction(record, on: connection, reply: reply) { return true }
        if Worker.replayableRefusals.contains(errorClass), retryWatch(record, errorClass: errorClass) { return true }
        if errorClass == .moved, record.watch,
            let redirect = Redirect(
                errorText: UnsafeRawBufferPointer(rebasing: reply[1...]), defaultHost: connection.address.host),
            redirect.slot == record.slot
        {
            // (Its slot moved: the WATCH goes to the new master.)
            let address = NodeAddress(host: redirect.host, port: redirect.port)
            if knownNodes.contains(address) { learnSlotOwner(redirect.slot, address) } else { shared.requestTopologyRefresh() }
            if retryWatch(record) { return true }
        }
        if errorClass == .moved || errorClass == .ask || Worker.replayableRefusals.contains(errorClass),
            let log = connection.transactionLog, log.watched, record.streamEnd > log.start, !Worker.isWatch(record)
        {
            // A watched transaction cannot be sent again (its watch would
            // not come along), and its keys left this master (migrated, or
            // it was demoted) or the cluster is failing over: as when a
            // watched key changes, EXEC answers null (nothing ran) and the
            // client's optimistic loop tries again.
            shared.requestTopologyRefresh()
            if record.endsTransaction != 0 && record.endsTransaction == connection.transactionNumber {
                endTransaction(connection)  // (EXEC itself refused: the node dropped the transaction)
                answerLocally(record, reply: ByteBuffer.nullArray(resp3: record.session?.resp3 == true))
            } else {
                log.abortsAsWatched = true
                answerLocally(record, reply: "+QUEUED\r\n")
            }
            return true
        }
        // Refused for good (OOM, NOPERM, a redirect): the client has the
        // error and EXEC will abort; sent again, the command would run
        // after all.
        if let log = connection.transactionLog, record.streamEnd > log.start { log.replayable = false }
        return false
    }

    /// Whether the record's command is `WATCH` (a later one, on a bound connection).
    static func isWatch(_ record: RequestRecord) -> Bool {
        let request = record.request.readable
        // `*<n>\r\n$5\r\nWATCH`: the first argument's header right after the count's line.
        guard let newline = request.firstIndex(of: 10) else { return false }
        let header = Array("$5\r\n".utf8), name = Array("watch".utf8)
        let start = newline + 1
        guard start + header.count + name.count <= request.count,
            UnsafeRawBufferPointer(rebasing: request[start..<(start + header.count)]).elementsEqual(header)
        else { return false }
        return request[(start + header.count)..<(start + header.count + name.count)].map { $0 | 0x20 }.elementsEqual(name)
    }

    /// `record`, on a transaction's connection, was refused with a transient
    /// error: the transaction (from `record` on) is sent again later. False
    /// when it cannot be (watched, too big, not this transaction's).
    func replayRefusedTransaction(
        _ record: RequestRecord, on connection: BackendConnection, reply: UnsafeRawBufferPointer, target: NodeAddress? = nil
    ) -> Bool {
        guard let log = connection.transactionLog, log.replayable, record.streamEnd > log.start,
            let session = record.session, !session.isClosed, let later = connection.takeInFlightRecords()
        else { return false }
        let records = [record] + later
        let reason = String(decoding: reply.dropFirst().prefix { $0 != 13 }.prefix(120), as: UTF8.self)
        logger.info("client \(session.id): transaction refused by \(connection.address) (\(reason)); sent again once the slot's master answers")
        dropTransactionConnection(connection, session: session)
        let replay = TransactionReplay(session: session, log: log, records: records, now: loop.nowMilliseconds)
        replay.target = target
        holdTransaction(replay)
        return true
    }

    /// `MOVED` while the transaction queues: its slot has a new master (a
    /// failover, a finished migration). The node refused the command, so
    /// nothing will run: the transaction goes to the new master instead of
    /// the client getting `TRYAGAIN` (`ASK`, mid-migration, still does).
    func replayMovedTransaction(_ record: RequestRecord, on connection: BackendConnection, reply: UnsafeRawBufferPointer) -> Bool {
        guard let log = connection.transactionLog, log.replayable, log.slot >= 0,
            let redirect = Redirect(
                errorText: UnsafeRawBufferPointer(rebasing: reply[1...]), defaultHost: connection.address.host),
            redirect.slot == log.slot
        else { return false }
        let address = NodeAddress(host: redirect.host, port: redirect.port)
        if knownNodes.contains(address) { learnSlotOwner(redirect.slot, address) } else { shared.requestTopologyRefresh() }
        return replayRefusedTransaction(record, on: connection, reply: reply, target: address)
    }

    /// A transaction's connection failed with `entries` in flight: the
    /// transaction's records, when its `EXEC` was not written (nothing ran),
    /// are held to be sent again. Returns those it took.
    func replayLostTransaction(
        _ entries: [RequestRecord?], log: TransactionLog, written: Int, connection: BackendConnection, session served: ClientSession?
    ) -> Set<ObjectIdentifier> {
        let address = connection.address
        let records = entries.compactMap { $0 }.filter { $0.streamEnd > log.start }
        if records.isEmpty, log.replayable, let served, !served.isGone, let transaction = served.transaction,
            transaction.inMulti, transaction.connection === connection
        {
            // Lost while the client had every reply (between commands): its
            // next command or EXEC sends the transaction again.
            transaction.connection = nil
            transaction.interruptedLog = log
            logger.info("client \(served.id): transaction's connection to \(address) lost between commands; sent again with its next one")
            return []
        }
        guard log.replayable, let first = records.first, let session = first.session, !session.isGone,
            !records.contains(where: { $0.endsTransaction != 0 && $0.streamEnd <= written })
        else { return [] }
        logger.info("client \(session.id): transaction's connection to \(address) lost before EXEC; sent again once the slot's master answers")
        if session.transaction?.connection?.state == .closed { session.transaction?.connection = nil }
        if session.previousTransactionConnection?.state == .closed { session.previousTransactionConnection = nil }
        holdTransaction(TransactionReplay(session: session, log: log, records: records, now: loop.nowMilliseconds))
        return Set(records.map(ObjectIdentifier.init))
    }

    private func dropTransactionConnection(_ connection: BackendConnection, session: ClientSession) {
        if session.transaction?.connection === connection { session.transaction?.connection = nil }
        if session.previousTransactionConnection === connection { session.previousTransactionConnection = nil }
        connection.transactionLog = nil
        connection.transactionBound = false
        connection.close()  // (the node forgets the MULTI with it)
        dedicated.release(connection)
    }

    private func holdTransaction(_ replay: TransactionReplay) {
        metrics.counters.failoverWaits &+= 1
        guard transactionReplays.count < configuration.failoverQueueLimit else {
            // What it queued is gone with its connection: its EXEC, still
            // to come, must not run the rest alone.
            if !replay.records.contains(where: { $0.endsTransaction != 0 }) { replay.session.transaction?.aborted = true }
            for record in replay.records {
                failRequest(
                    record,
                    message:
                        "CLUSTERDOWN slotproxy: too many requests waiting for unreachable masters (failover-queue-limit \(configuration.failoverQueueLimit))"
                )
            }
            return
        }
        // The client's next command waits for the replayed transaction.
        replay.session.barrier = replay.records.last
        replay.retryAt = loop.nowMilliseconds + Int64(min(1000, 20 << min(replay.attempts, 6)))
        transactionReplays.append(replay)
        shared.requestTopologyRefresh()
    }

    /// Sends the held transactions whose master can be tried now (`force`:
    /// a new slot map, without waiting out the backoff).
    func resendTransactionReplays(force: Bool) {
        guard !transactionReplays.isEmpty else { return }
        let now = loop.nowMilliseconds
        let replays = transactionReplays
        transactionReplays = []
        for replay in replays {
            if replay.session.isGone {
                for record in replay.records { failRequest(record, message: "ERR slotproxy: client gone") }
                continue
            }
            if now - replay.heldSince >= Int64(configuration.failoverTimeoutMs) {
                if let transaction = replay.session.transaction { transaction.aborted = true }
                for record in replay.records {
                    failRequest(
                        record,
                        message:
                            "CLUSTERDOWN slotproxy: no master for the transaction's slot within failover-timeout-ms (\(configuration.failoverTimeoutMs))"
                    )
                }
                continue
            }
            let pool = replay.target.map { self.pool(for: $0) }
                ?? (replay.slot >= 0 ? slotOwners[replay.slot] : anyReachableMaster(now: now))
            guard let pool, force || now >= replay.retryAt, !pool.mustHold(now: now),
                let connection = dedicated.acquire(pool.address, for: replay.session)
            else {
                transactionReplays.append(replay)
                continue
            }
            guard connection.state != .closed else {
                dedicated.release(connection)  // (failed at once: tried again on the next tick)
                transactionReplays.append(replay)
                continue
            }
            send(replay, on: connection)
        }
    }

    private func send(_ replay: TransactionReplay, on connection: BackendConnection) {
        let session = replay.session
        connection.servedSession = session
        connection.transactionBound = true
        connection.transactionNumber += 1
        let log = startTransactionLog(on: connection, slot: replay.slot)
        log.heldSince = replay.heldSince
        log.attempts = replay.attempts
        connection.enqueueInternal([Array("MULTI".utf8)])
        for frame in replay.answered {
            frame.withUnsafeBytes {
                log.append($0)
                connection.enqueueRawInternal($0)
            }
        }
        for record in replay.records {
            if record.endsTransaction != 0 {
                record.endsTransaction = connection.transactionNumber
                session.previousTransactionConnection = connection
            }
            log.append(record.request.readable)
            connection.enqueue(record)
        }
        if let transaction = session.transaction, transaction.connection == nil, transaction.inMulti {
            transaction.connection = connection  // (its EXEC is still to come)
            transaction.slot = replay.slot
        }
    }

    enum ResumeOutcome {
        /// On a new connection (or nothing to resume): go on.
        case ready
        /// The command waits with the transaction for a master.
        case held
        /// The client was told why not.
        case failed
    }

    /// A transaction whose connection was lost between its commands is sent
    /// again from `MULTI` on a new connection before its next command,
    /// `frame`, goes out; while its slot has no reachable master, that
    /// command waits with it, like any held request.
    func resumeInterruptedTransaction(
        _ transaction: Transaction, session: ClientSession, frame: UnsafeRawBufferPointer, ending: Bool
    ) -> ResumeOutcome {
        guard transaction.connection == nil, let log = transaction.interruptedLog else { return .ready }
        transaction.interruptedLog = nil
        let now = loop.nowMilliseconds
        let pool = log.slot >= 0 ? slotOwners[log.slot] : anyReachableMaster(now: now)
        if let pool, !pool.mustHold(now: now) {
            guard bind(transaction, slot: log.slot, session: session), let connection = transaction.connection else {
                return .failed
            }
            if connection.state != .closed {
                connection.enqueueInternal([Array("MULTI".utf8)])
                for answered in log.answered(before: 0) {
                    answered.withUnsafeBytes {
                        connection.transactionLog?.append($0)
                        connection.enqueueRawInternal($0)
                    }
                }
                return .ready
            }
            transaction.connection = nil  // (it failed at once: wait, as below)
            dedicated.release(connection)
        }
        let record = recordPool.acquire()
        record.request.append(frame)
        if ending { record.endsTransaction = -1 }  // (numbered when it is sent)
        session.expectReply(record)
        holdTransaction(TransactionReplay(session: session, log: log, records: [record], now: now, answered: log.answered(before: 0)))
        return .held
    }

    /// A new log for the transaction starting on `connection`.
    func startTransactionLog(on connection: BackendConnection, slot: Int) -> TransactionLog {
        let log = TransactionLog(
            start: connection.queuedStreamEnd, slot: slot,
            limit: configuration.transactionReplayBytes > 0 ? configuration.transactionReplayBytes : -1)
        connection.transactionLog = log
        return log
    }
}
