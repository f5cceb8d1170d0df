import ClusterTopology
import CommandTable
import RESPWire

/// The state of a client's transaction: `WATCH` and `MULTI` ... `EXEC`.
final class Transaction {
    /// The dedicated connection to the master of the transaction's slot,
    /// once a key has chosen it.
    var connection: BackendConnection?
    var slot = -1
    var inMulti = false {
        didSet { if inMulti { queuedCommands = 0 } }
    }
    /// Commands queued since `MULTI` (`CLIENT LIST`'s `multi`).
    var queuedCommands = 0
    /// Commands queued before the first key chose a master (answered
    /// `+QUEUED` by the proxy, replayed on the bound connection).
    var queuedBeforeKey: [[UInt8]] = []
    /// A command was refused while queuing: `EXEC` answers `EXECABORT`.
    var aborted = false
    /// A command of another slot was queued: `EXEC` answers `CROSSSLOT`.
    var crossSlot = false
    /// Its connection was lost between commands (see `Worker+TransactionReplay`).
    var interruptedLog: TransactionLog?
    /// `WATCH` went out on `connection`.
    var watched = false
    /// The watched connection died (its master failed over): the node's
    /// check is gone, so nothing may run; `EXEC` answers as for a changed key.
    var watchLost: Bool { watched && connection?.state == .closed }
    /// `cross-slot-transactions: relaxed`: queued in the proxy, run per slot at `EXEC`.
    var relaxed: RelaxedTransaction?

    init(relaxed: Bool) {
        self.relaxed = relaxed ? RelaxedTransaction() : nil
    }
}

/// Transactions: the client is bound to one dedicated connection to the
/// master owning the transaction's slot, from its first keyed command (or
/// `WATCH`) until `EXEC`, `DISCARD` or `UNWATCH`; then the connection goes
/// back to the idle list (EXEC and DISCARD leave it with nothing watched).
/// Commands queued before the first key are answered `+QUEUED` by the proxy
/// and replayed on the bound connection. A command of another slot is
/// answered as a cluster node answers it: `+QUEUED`, then `CROSSSLOT` at
/// `EXEC` (one command whose own keys span slots: `CROSSSLOT` at once and
/// `EXECABORT` at `EXEC`). A `MOVED` inside the transaction (its slot
/// migrated) aborts it the same way, with a `TRYAGAIN` the client can retry on.
extension Worker {
    static let transactionControl: Set<String> = ["multi", "exec", "discard", "watch", "unwatch"]

    /// Routes a command of a client that is in a transaction (or starts one).
    /// True when handled here.
    func routeTransaction(_ spec: CommandSpec, _ command: Command, session: ClientSession) -> Bool {
        let name = spec.name
        let isControl = Worker.transactionControl.contains(name)
        // What reaches a transaction's connection must not overtake what the
        // client sent before on shared ones.
        if isControl || session.transaction?.inMulti == true, mustWaitForSharedReplies(session) { return true }
        guard let transaction = session.transaction else {
            guard isControl else { return false }
            switch name {
            case "multi":
                let transaction = newTransaction()
                transaction.inMulti = true
                session.transaction = transaction
                session.replyLocally { $0.append("+OK\r\n") }
            case "watch":
                let transaction = newTransaction()
                session.transaction = transaction
                watch(spec, command, transaction, session: session)
            case "unwatch":
                session.replyLocally { $0.append("+OK\r\n") }
            default:
                session.replyError("ERR \(name.uppercased()) without MULTI")
            }
            return true
        }
        switch name {
        case "multi":
            if transaction.inMulti {
                session.replyError("ERR MULTI calls can not be nested")
            } else {
                transaction.inMulti = true
                if let connection = transaction.connection, !transaction.watchLost {
                    send(command.frame, on: connection, session: session)
                } else {
                    session.replyLocally { $0.append("+OK\r\n") }
                }
            }
            return true
        case "watch":
            if transaction.inMulti {
                session.replyError("ERR WATCH inside MULTI is not allowed")
            } else {
                watch(spec, command, transaction, session: session)
            }
            return true
        case "unwatch" where !transaction.inMulti:
            if let relaxed = transaction.relaxed {
                releaseWatches(relaxed)
                session.replyLocally { $0.append("+OK\r\n") }
            } else if let connection = transaction.connection, !transaction.watchLost {
                send(command.frame, on: connection, session: session, ending: true)
            } else {
                session.replyLocally { $0.append("+OK\r\n") }
            }
            session.transaction = nil
            return true
        case "exec", "discard":
            guard transaction.inMulti else {
                session.replyError("ERR \(name.uppercased()) without MULTI")
                return true
            }
            finish(name == "exec", command, transaction, session: session)
            return true
        default:
            break
        }
        guard transaction.inMulti else { return false }  // between WATCH and MULTI: routed as usual
        if name == "quit" || name == "reset" { return false }
        queue(spec, command, transaction, session: session)
        return true
    }

    private func newTransaction() -> Transaction {
        Transaction(relaxed: configuration.crossSlotTransactions == .relaxed)
    }

    /// `WATCH` binds the transaction to the master of its keys' slot.
    private func watch(_ spec: CommandSpec, _ command: Command, _ transaction: Transaction, session: ClientSession) {
        if transaction.relaxed != nil {
            relaxedWatch(spec, command, transaction, session: session)
            return
        }
        if transaction.watchLost {
            // (Its EXEC answers null whatever more is watched.)
            session.replyLocally { $0.append("+OK\r\n") }
            return
        }
        guard let slot = singleSlot(spec, command, session: session, transaction: transaction) else { return }
        if let connection = transaction.connection {
            send(command.frame, on: connection, session: session, barrier: true)
            return
        }
        let record = recordPool.acquire()
        record.request.append(command.frame)
        record.slot = slot
        record.watch = true
        session.expectReply(record)
        session.barrier = record
        sendWatch(record)
    }

    /// The transaction's first `WATCH`: binds it to its slot's master. While
    /// that master is down (or the cluster answers `CLUSTERDOWN`), nothing
    /// is watched yet, so it waits like any request instead of failing: an
    /// optimistic loop would only spin on the error.
    func sendWatch(_ record: RequestRecord) {
        if record.fanOut != nil {
            sendRelaxedWatchPart(record)  // (a part of a relaxed WATCH)
            return
        }
        guard let session = record.session, !session.isGone, let transaction = session.transaction,
            !transaction.inMulti, transaction.connection == nil
        else {
            failRequest(record, message: "ERR slotproxy: the transaction ended before its WATCH was sent")
            return
        }
        let now = loop.nowMilliseconds
        guard let pool = slotOwners[record.slot], !pool.mustHold(now: now) else {
            holdForFailover(record)
            return
        }
        guard let connection = dedicated.acquire(pool.address, for: session) else {
            failRequest(record, message: tooManyDedicatedMessage(pool.address))
            return
        }
        connection.servedSession = session
        attach(transaction, to: connection, slot: record.slot)
        connection.transactionLog?.replayable = false  // (the watch would not come along)
        connection.transactionLog?.watched = true
        transaction.watched = true
        connection.transactionLog?.append(record.request.readable)
        connection.enqueue(record)
    }

    /// The first `WATCH` was refused before anything was watched (the
    /// cluster down, its master dead or refusing the connection): the
    /// transaction lets go of its connection and the `WATCH` waits.
    func retryWatch(_ record: RequestRecord, errorClass: ErrorClass? = nil) -> Bool {
        guard record.watch, let session = record.session, !session.isGone, let transaction = session.transaction,
            !transaction.inMulti, let connection = transaction.connection,
            connection.outstandingRequests == 0 || connection.state == .closed
        else { return false }
        transaction.connection = nil
        transaction.watched = false
        endTransaction(connection)
        // (A WATCH's refusal is never kept: it holds up nothing of its client's.)
        if let errorClass { return retryAfterTransientError(record, errorClass, reply: UnsafeRawBufferPointer(start: nil, count: 0)) }
        retryBlocking(record)  // (the same backoff)
        return true
    }

    /// Why a command cannot be queued in a transaction through the proxy,
    /// or nil. The proxy's refusals hold inside `MULTI` too, and commands
    /// that need several masters or the proxy itself cannot be made atomic
    /// on one master's connection.
    private func refusalInMulti(_ spec: CommandSpec) -> String? {
        if spec.flags.contains(.noMulti) { return "ERR Command not allowed inside a transaction" }
        switch CommandHandling.of(spec) {
        case .bySlot, .split, .emulated, .blocking:
            return nil
        case .transaction where spec.name == "unwatch":
            return nil  // queued, as on a server (it changes nothing by then)
        case .local:
            return ["ping", "echo", "select"].contains(spec.name)
                ? nil : "ERR slotproxy cannot queue '\(spec.name)' in a transaction: it is answered by the proxy"
        case .broadcast where (spec.name == "flushall" || spec.name == "flushdb") && !configuration.allowFlush,
            .debug where !configuration.allowDebug:
            return "ERR slotproxy refuses '\(spec.name)' (see allow-flush / allow-debug)"
        case .refused(let reason):
            return "ERR slotproxy does not forward '\(spec.name)': \(reason)"
        default:
            return "ERR slotproxy cannot queue '\(spec.name)' in a transaction: it needs every master or a connection of its own"
        }
    }

    /// A command inside `MULTI`.
    private func queue(_ spec: CommandSpec, _ command: Command, _ transaction: Transaction, session: ClientSession) {
        if let refusal = refusalInMulti(spec) {
            session.replyError(refusal)
            transaction.aborted = true
            return
        }
        if spec.name == "select", slotMap?.isStandalone == true, Int(command.string(1)) != session.database {
            // It would switch the pooled connection the transaction borrowed
            // (and leave this client's own database unchanged).
            session.replyError("ERR slotproxy cannot queue SELECT of another database in a transaction: SELECT before MULTI")
            transaction.aborted = true
            return
        }
        transaction.queuedCommands += 1
        if transaction.relaxed != nil {
            relaxedQueue(spec, command, transaction, session: session)
            return
        }
        session.keyIndices.clearKeepingCapacity()
        spec.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices, includeNotKeys: true)
        let keyless = session.keyIndices.isEmpty
        var slot = -1
        if !keyless {
            guard let keySlot = singleSlot(spec, command, session: session, transaction: nil) else {
                transaction.aborted = true
                return
            }
            if transaction.slot != -1 && keySlot != transaction.slot {
                // As a cluster node: queued, and EXEC answers CROSSSLOT.
                transaction.crossSlot = true
                session.replyLocally { $0.append("+QUEUED\r\n") }
                return
            }
            slot = keySlot
        }
        if transaction.watchLost {
            session.replyLocally { $0.append("+QUEUED\r\n") }  // (EXEC will run nothing)
            return
        }
        switch resumeInterruptedTransaction(transaction, session: session, frame: command.frame, ending: false) {
        case .failed:
            transaction.aborted = true
            return
        case .held:
            return
        case .ready:
            break
        }
        if keyless {
            if let connection = transaction.connection {
                send(command.frame, on: connection, session: session)
            } else {
                transaction.queuedBeforeKey.append(Array(command.frame))
                session.replyLocally { $0.append("+QUEUED\r\n") }
            }
            return
        }
        if transaction.connection == nil {
            guard bind(transaction, slot: slot, session: session) else {
                transaction.aborted = true
                return
            }
            replayQueued(transaction, on: transaction.connection!)
        }
        send(command.frame, on: transaction.connection!, session: session)
    }

    /// The one slot of a command's keys, also the transaction's when one is
    /// given; nil (after answering `CROSSSLOT`) when they differ.
    private func singleSlot(
        _ spec: CommandSpec, _ command: Command, session: ClientSession, transaction: Transaction?
    ) -> Int? {
        session.keyIndices.clearKeepingCapacity()
        spec.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices, includeNotKeys: true)
        var slot = transaction?.slot ?? -1
        for index in session.keyIndices {
            let keySlot = slotHasher.slot(of: command.argument(index))
            if slot != -1 && keySlot != slot {
                session.replyError("CROSSSLOT Keys in request don't hash to the same slot")
                return nil
            }
            slot = keySlot
        }
        return slot
    }

    /// Takes a dedicated connection to the master of `slot` for the transaction.
    func bind(_ transaction: Transaction, slot: Int, session: ClientSession) -> Bool {
        if transaction.connection != nil { return true }
        guard slotMap != nil, slot >= 0 ? slotOwners[slot] != nil : !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return false
        }
        let address = slot >= 0 ? slotOwners[slot]!.address : masterPools[0].address
        if let previous = session.previousTransactionConnection {
            session.previousTransactionConnection = nil
            if previous.state != .closed && previous.address == address && previous.servedSession === session
                && (previous.transactionBound || previous.releaseWhenIdle)
            {
                // The last transaction's EXEC is still in flight: carry on after it.
                previous.releaseWhenIdle = false
                attach(transaction, to: previous, slot: slot)
                return true
            }
        }
        guard let connection = dedicated.acquire(address, for: session) else {
            session.replyError(tooManyDedicatedMessage(address))
            return false
        }
        connection.servedSession = session
        attach(transaction, to: connection, slot: slot)
        return true
    }

    private func attach(_ transaction: Transaction, to connection: BackendConnection, slot: Int) {
        connection.transactionBound = true
        connection.transactionNumber += 1
        transaction.connection = connection
        transaction.slot = slot
        _ = startTransactionLog(on: connection, slot: slot)
    }

    /// Sends `MULTI` and the commands queued before the first key; their
    /// replies were given by the proxy already.
    private func replayQueued(_ transaction: Transaction, on connection: BackendConnection) {
        connection.enqueueInternal([Array("MULTI".utf8)])
        for frame in transaction.queuedBeforeKey {
            frame.withUnsafeBytes {
                connection.transactionLog?.append($0)
                connection.enqueueRawInternal($0)
            }
        }
        transaction.queuedBeforeKey.removeAll()
    }

    /// Sends a client command on the transaction's connection; its reply
    /// comes back in order like any other.
    /// With `barrier` (and always when `ending`), the client's next command
    /// waits for this reply: a command on a shared connection must not
    /// overtake a `WATCH` or an `EXEC` sent before it.
    private func send(
        _ frame: UnsafeRawBufferPointer, on connection: BackendConnection, session: ClientSession,
        ending: Bool = false, barrier: Bool = false
    ) {
        let record = recordPool.acquire()
        record.request.append(frame)
        connection.transactionLog?.append(frame)
        if ending {
            record.endsTransaction = connection.transactionNumber
            session.previousTransactionConnection = connection
        }
        session.expectReply(record)
        if ending || barrier { session.barrier = record }
        connection.enqueue(record)
    }

    /// `EXEC` or `DISCARD`.
    private func finish(_ exec: Bool, _ command: Command, _ transaction: Transaction, session: ClientSession) {
        session.transaction = nil
        if let relaxed = transaction.relaxed {
            // DISCARD sends nothing: nothing reached a node but the watches.
            if exec {
                relaxedExec(transaction, session: session)
            } else {
                releaseWatches(relaxed)
                session.replyLocally { $0.append("+OK\r\n") }
            }
            return
        }
        if !exec { transaction.interruptedLog = nil }  // (DISCARD: nothing to send again)
        if exec && !transaction.aborted && !transaction.crossSlot,
            resumeInterruptedTransaction(transaction, session: session, frame: command.frame, ending: true) != .ready
        {
            return  // (held with the transaction, or the client was told why)
        }
        if exec && (transaction.aborted || transaction.crossSlot) {
            if let connection = transaction.connection {
                connection.enqueueInternal([Array("DISCARD".utf8)])
                endTransaction(connection)
            }
            session.replyError(
                transaction.aborted
                    ? "EXECABORT Transaction discarded because of previous errors."
                    : "CROSSSLOT Keys in request don't hash to the same slot")
            return
        }
        // (EXECABORT first, as on a server.)
        if transaction.watchLost, let connection = transaction.connection {
            // Whether a watched key changed cannot be known any more: as
            // if one did. The client's optimistic loop tries again.
            endTransaction(connection)
            logger.info("client \(session.id): EXEC answered as aborted: the watched connection to \(connection.address) was lost")
            session.replyLocally { $0.append(exec ? ByteBuffer.nullArray(resp3: session.resp3) : "+OK\r\n") }
            return
        }
        if let connection = transaction.connection {
            send(command.frame, on: connection, session: session, ending: true)
            return
        }
        guard exec, !transaction.queuedBeforeKey.isEmpty else {
            // Nothing reached a node: EXEC of nothing, or DISCARD.
            session.replyLocally { $0.append(exec ? "*0\r\n" : "+OK\r\n") }
            return
        }
        // Only keyless commands: run them as one transaction on any master.
        guard bind(transaction, slot: -1, session: session), let connection = transaction.connection else { return }
        replayQueued(transaction, on: connection)
        send(command.frame, on: connection, session: session, ending: true)
    }

    /// `RESET` (or the like) ends a transaction in any state: the node forgets
    /// its MULTI and WATCH with the connection, which is not reused.
    func abandonTransaction(_ session: ClientSession) {
        guard let transaction = session.transaction else { return }
        session.transaction = nil
        if let relaxed = transaction.relaxed { releaseWatches(relaxed) }
        if let connection = transaction.connection {
            // Replies still owed on it keep their order; the node is told to
            // forget the transaction, and the connection is reused after.
            if transaction.inMulti { connection.enqueueInternal([Array("DISCARD".utf8)]) }
            connection.enqueueInternal([Array("UNWATCH".utf8)])
            endTransaction(connection)
        }
    }

    /// The transaction is over: its connection goes back to the idle list.
    func endTransaction(_ connection: BackendConnection) {
        connection.transactionBound = false
        connection.transactionLog = nil
        if connection.outstandingRequests == 0 {
            dedicated.release(connection)
        } else {
            connection.releaseWhenIdle = true  // replies still owed: after them
        }
    }

    /// A `MOVED`/`ASK` on a transaction's connection: the slot left that master
    /// mid-transaction. The command is refused with `TRYAGAIN` and `EXEC` will
    /// abort, so the client retries the whole transaction.
    func redirectInTransaction(_ record: RequestRecord, connection: BackendConnection) {
        connection.transactionLog?.replayable = false  // (the client is told to retry)
        if let session = record.session, let transaction = session.transaction, transaction.connection === connection {
            transaction.aborted = true
        }
        shared.requestTopologyRefresh()
        failRequest(record, message: "TRYAGAIN slot moved during the transaction; retry the transaction")
    }
}
