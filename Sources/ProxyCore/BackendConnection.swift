import ClusterTopology
import EventLoop
import Logging
import RESPWire
import TLS

/// One multiplexed connection from a worker to a cluster node.
///
/// Requests of many clients are written back to back and their replies come
/// back in the same order (Redis answers each connection's commands in order),
/// so the connection keeps a FIFO of the records it is owed replies for. A
/// `nil` entry is a reply the proxy swallows: the `+OK` of `ASKING` or the map
/// of the `HELLO 3` sent when a RESP3 connection opens.
final class BackendConnection {
    enum State { case connecting, ready, closed }

    // The worker owns this object and outlives it (closed objects are released
    // by the worker after the loop turn), so no reference counting is needed.
    unowned(unsafe) let worker: Worker
    let address: NodeAddress
    let resp3: Bool
    private(set) var state = State.connecting
    private var fd: CInt = -1
    /// With `backend-tls`: bytes go through OpenSSL.
    private var tls: TLSStream?
    private let input = ByteBuffer(capacity: 64 * 1024)
    private let output = ByteBuffer(capacity: 64 * 1024)
    private var scanner = ReplyScanner()
    private var inFlight = RingQueue<RequestRecord?>(capacity: 256)
    private var readEvent: LoopEvent?
    private var writeEvent: LoopEvent?
    var isDirty = false
    /// Serves one client at a time (blocking commands); see `DedicatedConnections`.
    let isDedicated: Bool
    /// The client it currently serves, while dedicated.
    var servedSession: ClientSession?
    /// In subscribe mode every reply and message goes to this client as it
    /// comes: there is no request/reply pairing to keep.
    var subscriber: ClientSession?
    /// Runs one client's blocking command; free again with its reply.
    var servesBlocking = false
    /// Held by a client's transaction until it ends.
    var transactionBound = false
    /// Counts the transactions run on this connection, so the late `EXEC`
    /// reply of one does not end the next (a client pipelining transactions
    /// keeps its connection from one to the next).
    var transactionNumber = 0
    /// What its transaction sent since `MULTI` (see `Worker+TransactionReplay`).
    var transactionLog: TransactionLog?
    /// Goes back to the idle list once the replies it still owes are in.
    var releaseWhenIdle = false
    private(set) var connectStartedAt: Int64 = 0
    /// Dialled while its node was down (a redial): only the set-up is
    /// written until the node answers. The kernel completes a handshake for
    /// a paused (SIGSTOP) node, or for one dying with connections in its
    /// backlog; held requests written there would come back "may or may not
    /// have run" instead of waiting for the node or its replica. Without an
    /// answer within connect-timeout-ms it fails as a connect would.
    private(set) var holdsRequestsUntilAnswered = false
    /// Where the set-up's bytes end in the stream.
    private var setupEnd = 0
    /// Nothing read from the node yet: its first bytes mark it reachable.
    private var hasAnswered = false
    /// The redial's `PING`: whatever it answers (`LOADING`, `BUSY` ...),
    /// the node is there, and the connection is fine.
    private var pingOwed = false
    /// Bytes written to the socket so far (with `output`'s size and the big
    /// requests still to write, where each request's bytes end: see
    /// `RequestRecord.streamEnd`).
    private var bytesWritten = 0
    /// Big requests (`bigRequestThreshold` and up) are written from their
    /// record's buffer, which keeps them for a resend anyway, instead of
    /// being copied into `output` too: each waits at its place in the
    /// stream, between the output bytes queued before and after it.
    private var bigRequests = RingQueue<BigRequest>(capacity: 2)
    /// Bytes of the first of `bigRequests` written so far.
    private var bigRequestWritten = 0
    /// The bytes of `bigRequests` not written yet.
    private var bigRequestBytesLeft = 0
    /// From this size a request is written from its record: one copy of
    /// it fewer (a 64 KB `SET` was copied twice: into its record, then into
    /// `output`), for one more segment in a gathered write.
    static let bigRequestThreshold = 16 * 1024

    /// Segments gathered into one write (far below IOV_MAX, 1024).
    private static let maxWriteSegments = 64

    private struct BigRequest {
        let record: RequestRecord
        /// Where its bytes start in the connection's stream (as `bytesWritten` counts).
        let start: Int
    }

    /// Bytes queued and not written yet.
    private var hasOutput: Bool { !output.isEmpty || !bigRequests.isEmpty }
    private(set) var lastError = ""

    /// A big bulk reply passed to its client as its bytes arrive, instead of
    /// being buffered whole and then copied (see `startStreaming`), and how
    /// many of its bytes are still to come.
    private var streamingRecord: RequestRecord?
    private var streamingRemaining = 0
    /// Bulk replies at least this big are streamed.
    static let streamingThreshold = 256 * 1024

    /// Has `CLIENT TRACKING` on: the node pushes invalidations for the keys
    /// read over it (see `Worker+Tracking`).
    let tracking: Bool

    /// The database it `SELECT`ed at connect (standalone backends only).
    let database: Int

    /// The pool's counters (nil for dedicated connections).
    let stats: NodeStats?

    /// The backend user it authenticated as, when not `backend-user`.
    let identity: BackendIdentity?

    init(
        worker: Worker, address: NodeAddress, resp3: Bool, tracking: Bool = false, database: Int = 0,
        stats: NodeStats? = nil, identity: BackendIdentity? = nil, dedicated: Bool = false
    ) {
        // Known before connecting: a dedicated connection that fails at once
        // for a local reason must not mark the shared pool's node down.
        isDedicated = dedicated
        self.stats = stats
        self.identity = identity
        self.worker = worker
        self.address = address
        self.resp3 = resp3
        self.tracking = tracking
        self.database = database
        connectStartedAt = worker.loop.nowMilliseconds
        // A node found down is dialled by one connection at a time: the
        // clients that each need their own (blocked pops, transactions) wait
        // for this one's outcome. (Before connecting: a refusal, even at
        // once, sets the next try.)
        worker.pools[address]?.attemptStarted(now: connectStartedAt, timeoutMs: worker.configuration.connectTimeoutMs)
        startConnect()
    }

    var outstandingRequests: Int { inFlight.count }

    /// Where the next request's bytes would begin in the stream (as
    /// `RequestRecord.streamEnd` counts).
    var queuedStreamEnd: Int { bytesWritten + output.readableBytes + bigRequestBytesLeft }

    /// The requests still owed replies, taken off the connection (which is
    /// given up next); nil, leaving them, when any is the proxy's own.
    func takeInFlightRecords() -> [RequestRecord]? {
        for offset in 0..<inFlight.count where inFlight[offset] == nil { return nil }
        return inFlight.removeAll().compactMap { $0 }
    }

    /// The send time of the oldest request still owed a reply. A swallowed
    /// entry (`ASKING`) was written together with the request behind it, so
    /// that request's time counts; a lone `HELLO` dates from the connect.
    var oldestSentAt: Int64? {
        guard !inFlight.isEmpty else { return nil }
        for offset in 0..<inFlight.count {
            if let record = inFlight[offset] { return record.sentAt }
        }
        return connectStartedAt
    }

    /// When the node last answered a request (loop clock; pushes and
    /// messages do not count: a tracking connection gets them whatever a
    /// stuck request does).
    private var lastReplyAt: Int64 = 0

    /// Since when the node owes a reply and has answered nothing: the later
    /// of the oldest outstanding request's send and the last reply. A node
    /// working through a long backlog keeps answering; a hung one (or one
    /// stuck in a single long command) does not. Nil: nothing owed.
    var silentSince: Int64? {
        guard let oldest = oldestSentAt else { return nil }
        return max(oldest, lastReplyAt)
    }

    private func startConnect() {
        do {
            // Numeric addresses directly; host names only as the refresher
            // resolved them (DNS would block the loop).
            if let numeric = try? Socket.resolve(host: address.host, port: address.port, numericOnly: true).first {
                fd = try Socket.startConnect(family: numeric.family, address: numeric.address)
            } else if let resolved = worker.shared.resolvedAddress(of: address) {
                fd = try Socket.startConnect(family: resolved.family, address: resolved.address)
            } else {
                worker.shared.needsResolution(address)
                throw Socket.Failure(operation: "resolve \(address.host) (asked the topology thread)", code: 0)
            }
        } catch {
            worker.logger.warning("cannot connect to \(address): \(error)")
            lastError = "\(error)"
            state = .closed
            // A refused connect (nobody listens at the node's address) marks
            // the node down even for a dedicated connection, unlike a local
            // failure (out of file descriptors, say): the clients waiting for
            // it (blocked pops, transactions) then wait out one shared backoff
            // instead of each dialling it, and logging it, every second.
            if !isDedicated || (error as? Socket.Failure)?.isRefusal == true { worker.backendFailed(self) }
            worker.backendClosed(self)
            return
        }
        Socket.setKeepAlive(fd, idleSeconds: worker.configuration.tcpKeepAliveSeconds)
        if let context = worker.shared.tls.backend {
            do {
                tls = try TLSStream(
                    context: context, fd: fd, accepting: false,
                    peerName: worker.configuration.backendTLSServerName ?? address.host)
            } catch {
                Socket.close(fd)
                fd = -1
                worker.logger.error("cannot connect to \(address): \(error)")
                lastError = "\(error)"
                state = .closed
                if !isDedicated { worker.backendFailed(self) }
                worker.backendClosed(self)
                return
            }
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        readEvent = LoopEvent(
            loop: worker.loop, fd: fd, flags: EventFlags.read | EventFlags.persist,
            callback: { _, _, context in
                Unmanaged<BackendConnection>.fromOpaque(context!).takeUnretainedValue().onReadable()
            }, context: context)
        writeEvent = LoopEvent(
            loop: worker.loop, fd: fd, flags: EventFlags.write,
            callback: { _, _, context in
                Unmanaged<BackendConnection>.fromOpaque(context!).takeUnretainedValue().onWritable()
            }, context: context)
        writeEvent?.add()
        if let identity {
            output.appendCommand("AUTH", identity.user, identity.password)
            inFlight.append(nil)
        } else if let password = worker.configuration.backendPassword {
            if let user = worker.configuration.backendUser {
                output.appendCommand("AUTH", user, password)
            } else {
                output.appendCommand("AUTH", password)
            }
            inFlight.append(nil)
        }
        if resp3 {
            output.appendCommand("HELLO", "3")
            inFlight.append(nil)
        }
        if tracking {
            output.appendCommand("CLIENT", "TRACKING", "ON")
            inFlight.append(nil)
        }
        if database != 0 {
            output.appendCommand("SELECT", String(database))
            inFlight.append(nil)
        }
        if worker.readsFromReplicas {
            // Lets a replica serve its master's slots (a master ignores it).
            output.appendCommand("READONLY")
            inFlight.append(nil)
        }
        if isDedicated {
            // Its id on the node, to wake a command blocked on it with
            // CLIENT UNBLOCK (see `Worker+PopAcrossSlots`).
            output.appendCommand("CLIENT", "ID")
            inFlight.append(nil)
        }
        if worker.pools[address]?.isDown == true {
            // Something the node must answer before requests follow.
            if inFlight.isEmpty {
                output.appendCommand("PING")
                inFlight.append(nil)
                pingOwed = true
            }
            holdsRequestsUntilAnswered = true
            setupEnd = output.readableBytes
        }
        setupRepliesOwed = inFlight.count
    }

    /// Not usable yet: still connecting, or waiting for a redialled node's
    /// first answer (both within connect-timeout-ms).
    var isEstablishing: Bool { state == .connecting || holdsRequestsUntilAnswered }

    /// The node's first bytes: it is reachable (again), and what waited for
    /// that answer may be written.
    private func nodeAnswered() {
        hasAnswered = true
        let requestsWaited = holdsRequestsUntilAnswered
        holdsRequestsUntilAnswered = false
        worker.backendConnected(self)
        if requestsWaited && hasOutput { markDirty() }
    }

    /// This connection's client id on its node (dedicated connections learn
    /// it at set-up); nil until the reply is in.
    private(set) var nodeClientId: Int?
    /// Set when the command blocked here must be woken once `nodeClientId`
    /// is known (it was not yet when the proxy wanted to).
    var unblockOnceIdKnown = false
    /// A `CLIENT UNBLOCK` for it is on its way: it must not serve another
    /// client, whose command that would wake.
    var unblockSent = false

    /// Whether `record` is sent here and not answered yet.
    func owes(_ record: RequestRecord) -> Bool {
        for offset in 0..<inFlight.count where inFlight[offset] === record { return true }
        return false
    }

    /// Replies still owed to the commands that set the connection up (AUTH,
    /// HELLO, SELECT ...). One refused (a wrong backend password, say) makes
    /// the connection useless: it closes once the requests already sent on it
    /// are answered (they get the node's own error, NOAUTH), and the next
    /// request opens a new one, with the settings as they are by then.
    private var setupRepliesOwed = 0
    private var setupRefusal: String?

    /// The start of the error a request gets when it was never written
    /// (the connection could not be made): safe to send again.
    static let cannotConnectText = "ERR slotproxy: cannot connect to "

    /// Queues `record` for this node; with `asking`, an `ASKING` goes first
    /// (an ASK redirect: the target serves the slot only for the next command).
    func enqueue(_ record: RequestRecord, asking: Bool = false) {
        guard state != .closed else {
            // (Failed at once: no file descriptor, a name not resolved yet.
            // The proxy's own trouble, not the node's: a blocking command
            // gets the error now rather than wait for a failover. A refused
            // connect on Linux is reported later, through onWritable.)
            if isDedicated || record.insideMulti {
                worker.failRequest(record, message: "\(BackendConnection.cannotConnectText)\(address): \(lastError)")
                // (A dedicated connection that failed at once, before anyone
                // could release it: its place in the per-node limit is freed.)
                if isDedicated { worker.dedicated.release(self) }
            } else {
                worker.holdForFailover(record)
            }
            return
        }
        if asking {
            output.append("*1\r\n$6\r\nASKING\r\n")
            inFlight.append(nil)
        }
        let request = record.request.readable
        if request.count >= BackendConnection.bigRequestThreshold {
            let start = bytesWritten + output.readableBytes + bigRequestBytesLeft
            bigRequests.append(BigRequest(record: record, start: start))
            bigRequestBytesLeft += request.count
        } else {
            output.append(request)
        }
        record.streamEnd = bytesWritten + output.readableBytes + bigRequestBytesLeft
        record.sentAt = worker.loop.turnTime
        record.sentAtMicros = worker.loop.turnTimeMicros
        stats?.requests &+= 1
        inFlight.append(record)
        markDirty()
    }

    /// Sends a client's bytes in subscribe mode: whatever comes back is
    /// streamed to the subscriber, so nothing is queued to pair with it.
    func enqueueStream(_ bytes: UnsafeRawBufferPointer) {
        guard state != .closed else { return }
        output.append(bytes)
        markDirty()
    }

    /// Sends a command of the proxy's own on a subscription connection.
    func enqueueInternalStream(_ arguments: [[UInt8]]) {
        guard state != .closed else { return }
        output.appendCommand(arguments)
        markDirty()
    }

    /// Sends bytes already answered (a replayed `+QUEUED` command) whose reply
    /// is swallowed.
    func enqueueRawInternal(_ bytes: UnsafeRawBufferPointer) {
        guard state != .closed else { return }
        output.append(bytes)
        inFlight.append(nil)
        markDirty()
    }

    /// A command of the proxy's own whose reply goes to `Worker.lookupAnswered`
    /// for `record` (which it may have left: `sequence` tells).
    struct Lookup {
        /// Its reply is the `ticket`-th to a command of the proxy's own.
        let ticket: Int
        let record: RequestRecord
        let sequence: Int
        let index: Int
    }
    private var lookups: [Lookup] = []
    /// Replies so far to commands of the proxy's own (`nil` in `inFlight`).
    private var internalReplies = 0

    /// Sends a command of the proxy's own whose reply is handed to
    /// `Worker.lookupAnswered` with `record` and `index`.
    func enqueueLookup(_ arguments: [[UInt8]], for record: RequestRecord, index: Int) {
        guard state != .closed else { return }
        var owedBefore = 0
        for offset in 0..<inFlight.count where inFlight[offset] == nil { owedBefore += 1 }
        lookups.append(Lookup(ticket: internalReplies + owedBefore + 1, record: record, sequence: record.sequence, index: index))
        enqueueInternal(arguments)
    }

    /// Sends a command of the proxy's own whose reply is swallowed (an
    /// error in it is logged).
    func enqueueInternal(_ arguments: [[UInt8]]) {
        guard state != .closed else { return }
        output.appendCommand(arguments)
        inFlight.append(nil)
        markDirty()
    }

    private func markDirty() {
        guard !isDirty, state == .ready else { return }
        isDirty = true
        worker.dirtyBackends.append(self)
    }

    /// Writes what is queued; called once per loop turn for dirty connections.
    func flush() {
        isDirty = false
        guard state == .ready, hasOutput, !(writeEvent?.isPending ?? false) else { return }
        writeOutput()
    }

    private func writeOutput() {
        if let tls, tls.readWantsWrite {
            onReadable()
            if state == .closed { return }
        }
        while hasOutput {
            var attempted = 0
            let n: Int
            if holdsRequestsUntilAnswered {
                // Only the set-up (always in `output`, ahead of any request).
                let setupLeft = setupEnd - bytesWritten
                guard setupLeft > 0 else { return }
                let setup = UnsafeRawBufferPointer(rebasing: output.readable[0..<setupLeft])
                attempted = setup.count
                n = tls?.write(setup) ?? Socket.write(fd, setup)
            } else if let tls {
                let chunk = nextChunk()
                attempted = chunk.count
                n = tls.write(chunk)
            } else if bigRequests.isEmpty {
                attempted = output.readableBytes
                n = Socket.write(fd, output.readable)
            } else {
                n = writeSpliced(attempted: &attempted)
            }
            if n > 0 {
                if bigRequests.isEmpty {
                    output.consume(n)
                    bytesWritten += n
                } else {
                    advance(by: n)
                }
                // A short write on a plain socket: its buffer is full, and
                // writing again now would only return EAGAIN.
                if n < attempted && tls == nil {
                    writeEvent?.add()
                    return
                }
            } else if n == -1 {
                // (A TLS write waiting for a read goes on from onReadable.)
                if !(tls?.writeWantsRead ?? false) { writeEvent?.add() }
                return
            } else {
                // A node hangs up mid-request after saying why (a bulk past its
                // proto-max-bulk-len): read that first, so its client gets
                // the node's answer instead of a retry of what it refused.
                if tls == nil { onReadable() }
                fail(reason: tls.map { "TLS: \($0.failure)" } ?? "write failed")
                return
            }
        }
        output.shrinkIfIdle(above: 4 << 20, to: 64 * 1024)
    }

    /// The next contiguous stretch of the stream: output bytes up to the
    /// next big request, or what is left of that request (TLS writes one
    /// stretch at a time).
    private func nextChunk() -> UnsafeRawBufferPointer {
        let queued = output.readable
        guard let next = bigRequests.first else { return queued }
        if next.start > bytesWritten {
            return UnsafeRawBufferPointer(rebasing: queued[0..<(next.start - bytesWritten)])
        }
        return UnsafeRawBufferPointer(rebasing: next.record.request.readable[bigRequestWritten...])
    }

    /// The stream with big requests spliced in at their place, gathered
    /// into one `sendmsg`: output bytes before each, its bytes from its
    /// record, and output bytes after the last (up to 31 big requests a
    /// call, a pipeline's worth of 64 KB `SET`s; more go on in the next).
    private func writeSpliced(attempted: inout Int) -> Int {
        withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: BackendConnection.maxWriteSegments) {
            segments in
            let queued = output.readable
            var count = 0
            var position = bytesWritten
            var offset = 0
            var total = 0
            func add(_ bytes: UnsafeRawBufferPointer) {
                segments[count] = bytes
                count += 1
                total += bytes.count
            }
            var index = 0
            while index < bigRequests.count && count <= BackendConnection.maxWriteSegments - 3 {
                let big = bigRequests[index]
                if big.start > position {
                    let gap = big.start - position
                    add(UnsafeRawBufferPointer(rebasing: queued[offset..<(offset + gap)]))
                    offset += gap
                    position = big.start
                }
                let request = big.record.request.readable
                let from = index == 0 ? bigRequestWritten : 0
                add(UnsafeRawBufferPointer(rebasing: request[from...]))
                position += request.count - from
                index += 1
            }
            if index == bigRequests.count && offset < queued.count {
                add(UnsafeRawBufferPointer(rebasing: queued[offset...]))
            }
            attempted = total
            return Socket.write(fd, gathering: UnsafeBufferPointer(rebasing: segments[0..<count]))
        }
    }

    /// Marks `count` bytes of the stream written: output bytes are
    /// consumed, big requests advance and leave the queue when done.
    private func advance(by count: Int) {
        var left = count
        while left > 0 {
            if let next = bigRequests.first, next.start <= bytesWritten {
                let size = next.record.request.readableBytes
                let taken = min(left, size - bigRequestWritten)
                bigRequestWritten += taken
                bigRequestBytesLeft -= taken
                if bigRequestWritten == size {
                    _ = bigRequests.popFirst()
                    bigRequestWritten = 0
                }
                bytesWritten += taken
                left -= taken
            } else {
                let before = bigRequests.first.map { $0.start - bytesWritten } ?? output.readableBytes
                let taken = min(left, before)
                output.consume(taken)
                bytesWritten += taken
                left -= taken
            }
        }
    }

    private func onWritable() {
        if state == .connecting {
            let error = Socket.pendingError(fd)
            guard error == 0 else {
                if isDedicated && Socket.Failure.isRefusal(error) { worker.backendFailed(self) }  // (see startConnect)
                fail(reason: "connect failed: \(Socket.Failure(operation: "connect", code: error))")
                return
            }
            state = .ready
            readEvent?.add()
            worker.logger.debug("connected to \(address)\(resp3 ? " (RESP3)" : "")")
            // (The node is marked reachable by its first answer, not here.)
            writeOutput()
            return
        }
        writeOutput()
    }

    private func onReadable() {
        worker.loop.refreshTurnTime()
        if input.readableBytes == input.allocatedCapacity || input.writableTail.count < 4096 {
            input.reserveWritable(max(16 * 1024, input.readableBytes))
        }
        let n = tls.map { $0.read(into: input.writableTail) } ?? Socket.read(fd, into: input.writableTail)
        if n == 0 {
            fail(reason: "connection closed by the node")
            return
        }
        if n < 0 {
            if n == -2 {
                fail(reason: tls.map { "TLS: \($0.failure)" } ?? "read failed")
            } else if let tls {
                continueTLS(tls)
            }
            return
        }
        input.commitWritten(n)
        if !hasAnswered {
            nodeAnswered()
            if state == .closed { return }
        }
        if streamingRecord != nil {
            continueStreaming()
            if streamingRecord != nil || state == .closed {
                if let tls { continueTLS(tls) }
                return
            }
        }
        scanReplies()
        if let tls { continueTLS(tls) }
    }

    /// A reply held whole (not streamed: a part of a split command, one
    /// behind others) past `client-output-limit-hard` would get its client
    /// dropped anyway, and a broken node's absurd bulk length would have the
    /// proxy allocate it: its request fails, and the connection with it
    /// (the rest of the reply cannot be told from what follows).
    private func isTooBigToHold(_ needed: Int) -> Bool {
        let limit = worker.configuration.clientOutputLimitHard
        guard limit > 0 && needed > limit else { return false }
        if let first = inFlight.first, let record = first {
            _ = inFlight.popFirst()
            worker.failRequest(
                record,
                message: "ERR slotproxy: a reply of \(needed) bytes from \(address) is over client-output-limit-hard (\(limit))")
        }
        // (The node is fine: it is not marked down, new requests go on a new connection.)
        fail(reason: "a reply of \(needed) bytes is over client-output-limit-hard (\(limit))", nodeIsFine: true)
        return true
    }

    /// The reply being scanned is a bulk of `total` bytes (header and CRLF
    /// included) that has not all arrived: when its client is owed it next
    /// and nothing else needs to see it whole, its bytes go to the client as
    /// they come, so a 100 MB value is held once (in the client's output,
    /// while the client reads), not twice. True when streaming started.
    private func startStreaming(total: Int) -> Bool {
        guard !isDedicated, !tracking, subscriber == nil, scanner.isAtTopLevel, let first = inFlight.first,
            let record = first, record.fanOut == nil, let session = record.session, !session.isClosed,
            session.isOwedNext(record)
        else { return false }
        streamingRecord = record
        streamingRemaining = total - input.readableBytes
        session.streamReplyBytes(input.readable)
        input.consume(input.readableBytes)
        scanner.reset()
        return true
    }

    private func continueStreaming() {
        guard let record = streamingRecord else { return }
        let count = min(streamingRemaining, input.readableBytes)
        if let session = record.session, !session.isClosed {
            session.streamReplyBytes(UnsafeRawBufferPointer(rebasing: input.readable[0..<count]))
        }
        input.consume(count)
        streamingRemaining -= count
        // Progress counts as an answer for request-timeout-ms.
        record.sentAt = worker.loop.turnTime
        guard streamingRemaining == 0 else { return }
        streamingRecord = nil
        _ = inFlight.popFirst()
        if let session = record.session {
            session.complete(record, reply: UnsafeRawBufferPointer(start: nil, count: 0))
        } else {
            worker.recordPool.release(record)
        }
        input.shrinkIfIdle(above: 4 << 20, to: 64 * 1024)
    }

    /// See `ClientSession.continueTLS`.
    private func continueTLS(_ tls: TLSStream) {
        guard state == .ready else { return }
        if tls.readWantsWrite { writeEvent?.add() }
        if tls.writeWantsRead && hasOutput { writeOutput() }
        if tls.hasBufferedPlaintext && state == .ready { onReadable() }
    }

    private func scanReplies() {
        while !input.isEmpty {
            switch scanner.scan(input.readable) {
            case .incomplete:
                if let needed = scanner.bytesStillNeeded, needed > input.readableBytes {
                    if needed >= BackendConnection.streamingThreshold && startStreaming(total: needed) { return }
                    if isTooBigToHold(needed) { return }
                    input.reserveWritable(needed - input.readableBytes)
                }
                return
            case .error(let error):
                fail(reason: error.message)
                return
            case .complete(let length, let kind):
                let reply = UnsafeRawBufferPointer(rebasing: input.readable[0..<length])
                if let subscriber, inFlight.isEmpty {
                    worker.subscriptionData(reply, kind: kind, for: subscriber, on: self)
                    input.consume(length)
                    continue
                }
                if kind == .push {
                    // Out of band: no request owns it.
                    if tracking { worker.invalidationArrived(reply) }
                    input.consume(length)
                    continue
                }
                guard let entry = inFlight.popFirst() else {
                    fail(reason: "reply with no request outstanding")
                    return
                }
                lastReplyAt = worker.loop.turnTime
                // A node answers a request it has not read in full only to
                // refuse it and hang up (a bulk past its proto-max-bulk-len):
                // the rest of the request must not follow as new commands.
                var answeredEarly = false
                if let record = entry {
                    answeredEarly = record.streamEnd > bytesWritten
                    record.backendMicros &+= worker.loop.turnTimeMicros - record.sentAtMicros
                    // (Optional chaining on the `let`, not `if let`: no retain of the stats.)
                    stats?.latencyMsTotal &+= Int(worker.loop.turnTime - record.sentAt)
                    if case .error = kind { stats?.errors &+= 1 }
                    // The worker outlives its connections: called without a retain around the call.
                    Unmanaged.passUnretained(worker)._withUnsafeGuaranteedRef {
                        $0.handleReply(record, reply: reply, kind: kind, from: self)
                    }
                } else {
                    internalReplyArrived(reply, kind: kind)
                }
                input.consume(length)
                if answeredEarly {
                    fail(reason: "the node answered a request before it was sent in full")
                    return
                }
                if inFlight.isEmpty && (releaseWhenIdle || setupRefusal != nil) {
                    if let refusal = setupRefusal {
                        fail(reason: "it refused the connection's set-up: \(refusal)")
                        return
                    }
                    releaseWhenIdle = false
                    worker.dedicated.release(self)
                }
            }
        }
        input.shrinkIfIdle(above: 4 << 20, to: 64 * 1024)
    }

    /// The reply to a command of the proxy's own (set-up, ASKING, MULTI ...):
    /// swallowed; an error is logged, and one to the set-up condemns the
    /// connection (see `setupRepliesOwed`).
    private func internalReplyArrived(_ reply: UnsafeRawBufferPointer, kind: ReplyKind) {
        internalReplies += 1
        if let lookup = lookups.first, lookup.ticket == internalReplies {
            lookups.removeFirst()
            guard lookup.record.sequence == lookup.sequence else { return }
            worker.lookupAnswered(reply, kind: kind, for: lookup.record, index: lookup.index)
            return
        }
        let isSetup = setupRepliesOwed > 0
        if isSetup { setupRepliesOwed -= 1 }
        if isSetup && pingOwed {
            pingOwed = false  // (the only set-up command when sent)
            return
        }
        if isSetup && isDedicated && setupRepliesOwed == 0 {
            // The last set-up reply, CLIENT ID's. Refused (an ACL), the
            // connection still serves: only cancelling across slots needs it.
            nodeClientId = integerValue(reply)
            if nodeClientId == nil {
                worker.logger.warning("\(address) refused CLIENT ID: a cross-slot blocking pop cannot be woken early")
            }
            if unblockOnceIdKnown {
                unblockOnceIdKnown = false
                worker.unblock(self)
            }
            return
        }
        guard case .error = kind else { return }
        let text = String(decoding: reply.dropFirst().prefix { $0 != 13 }, as: UTF8.self)
        if isSetup {
            worker.logger.error("\(address) refused the connection's set-up (AUTH, HELLO, SELECT ...): \(text)")
            setupRefusal = text
        } else {
            worker.logger.warning("\(address) refused a proxy command: \(text)")
        }
    }

    /// Closes the connection. What it owed is retried where that is safe: a
    /// request not written in full never ran, and a read-only one may run
    /// twice; they wait for a reachable master (`Worker+Failover`). A write
    /// already sent may or may not have run: its client is told so, never
    /// a silent second write. After a timeout (`retryReads` false) reads fail
    /// too: a node that hangs would hang them again. With `nodeIsFine` the
    /// stream is lost, not the node: it is not marked down.
    func fail(reason: String, retryReads: Bool = true, nodeIsFine: Bool = false) {
        guard state != .closed else { return }
        // (A redial the node never answered wrote nothing but its set-up.)
        let neverConnected = isEstablishing
        worker.logConnectionLost(to: address, reason: reason, redial: neverConnected)
        lastError = reason
        let transactionLog = transactionBound ? self.transactionLog : nil
        let transactionSession = transactionBound ? servedSession : nil
        self.transactionLog = nil
        close()
        let message =
            neverConnected
            ? "\(BackendConnection.cannotConnectText)\(address): \(reason)"
            : "ERR slotproxy: connection to \(address) lost (\(reason)); the command may or may not have run"
        if let subscriber {
            self.subscriber = nil
            worker.subscriptionLost(subscriber, from: self)
        }
        if isDedicated { worker.dedicated.release(self) }
        // The node's memory of what was read over it is gone with it.
        if tracking { worker.invalidateAllTracking(reason: "a tracking connection to \(address) was lost") }
        if let record = streamingRecord {
            // Its client has part of the reply: its stream cannot be resynced.
            streamingRecord = nil
            _ = inFlight.popFirst()
            record.session?.close()
            worker.recordPool.release(record)
        }
        let written = bytesWritten
        if !isDedicated && !nodeIsFine { worker.backendFailed(self) }
        let entries = inFlight.removeAll()
        lookups.removeAll()
        // A transaction whose EXEC was not written ran nothing: sent again.
        let replayed =
            transactionLog.map {
                worker.replayLostTransaction(entries, log: $0, written: written, connection: self, session: transactionSession)
            } ?? []
        for entry in entries {
            guard let record = entry, !replayed.contains(ObjectIdentifier(record)) else { continue }
            if !isDedicated && !record.insideMulti
                && (record.streamEnd > written || retryReads && worker.isSafeToRepeat(record))
            {
                worker.holdForFailover(record)
            } else if record.blocking && (neverConnected || record.streamEnd > written) {
                worker.retryBlocking(record)  // it never reached the node
            } else if record.blocking && retryReads && worker.retryLostBlockedRead(record) {
                continue
            } else if record.watch
                && (record.fanOut == nil
                    ? worker.retryWatch(record) : worker.retryRelaxedWatchPart(record, from: self, at: .afterBackoff))
            {
                // (Whatever it watched died with the connection: it waits
                // for the master and watches again.)
                continue
            } else {
                worker.failRequest(record, message: message)
            }
        }
        worker.backendClosed(self)
    }

    func close() {
        guard state != .closed else { return }
        state = .closed
        _ = bigRequests.removeAll()
        bigRequestWritten = 0
        bigRequestBytesLeft = 0
        // Events are freed with the connection, after this loop turn.
        readEvent?.remove()
        writeEvent?.remove()
        tls?.shutdown()
        if fd >= 0 { Socket.close(fd) }
        fd = -1
    }
}
