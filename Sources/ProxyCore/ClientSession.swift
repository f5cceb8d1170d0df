import EventLoop
import RESPWire
import TLS

/// One client connection: reads and parses its requests, hands each to the
/// worker's router, and writes the replies back in request order, whichever
/// node answers first.
///
/// `pending` holds, oldest first, the requests still owed a reply. A reply
/// for the oldest goes straight to `output`; one for a later request waits in
/// its record until everything before it is answered.
final class ClientSession {
    // The worker owns this object and outlives it (closed objects are released
    // by the worker after the loop turn), so no reference counting is needed.
    unowned(unsafe) let worker: Worker
    let id: Int
    let fd: CInt
    /// A client of the TLS port: bytes go through OpenSSL.
    private let tls: TLSStream?
    // Small at first: most clients send and receive little, and an idle
    // connection should cost little. Busy ones grow their buffers once.
    let output = ByteBuffer(capacity: 4096)
    private let input = ByteBuffer(capacity: 4096)
    /// The frame being routed went to its record with the input's storage
    /// (`handOverInputFrame`): nothing of it is left to consume.
    private var inputHandedOver = false
    private var parser: RequestParser
    private var pending = RingQueue<RequestRecord>(capacity: 64)
    private var readEvent: LoopEvent?
    private var writeEvent: LoopEvent?
    var isDirty = false
    /// When a flush was first held back for replies still out (turn clock,
    /// microseconds; 0: not held).
    private var heldBackSince: Int64 = 0
    private(set) var isClosed = false
    private var closeAfterFlush = false
    /// The client closed its side (`nc -N`, a script's pipe) or its whole
    /// socket (a read cannot tell which): requests already on their way to
    /// nodes are still answered, as a server answers what it read, then it
    /// is closed. Nothing more of it runs: see `isGone`.
    private(set) var inputEnded = false
    /// Closed, or its input ended: requests of its that wait (held for a
    /// failover, or not parsed yet) are dropped, never run late, for a
    /// client that gave up may already have retried them elsewhere.
    var isGone: Bool { isClosed || inputEnded }
    /// Reading stops while the client owes the proxy too much reading of its
    /// own (a slow reader or a pipeline far ahead of the cluster), so one
    /// client cannot make the proxy buffer without bound.
    /// Reading resumes at a tenth of `client-read-pause-replies`.
    private var readPaused = false
    /// Reply bytes waiting in records behind an earlier request still owed:
    /// with `output`, what the client has not read yet.
    private var queuedReplyBytes = 0
    /// When the unread bytes last went above `client-output-limit-soft` (loop clock).
    private var softLimitExceededSince: Int64?
    /// When the client last sent bytes (loop clock), for `timeout`.
    private(set) var lastReadAt: Int64
    /// Speaks RESP3 after `HELLO 3`.
    var resp3 = false
    var clientName: [UInt8]? = nil
    /// When it connected (loop clock, ms), and the metrics slot of its last
    /// command (`PROXY CLIENTS`).
    let connectedAt: Int64
    var lastCommandSlot = -1
    /// Scratch for key positions of the command being routed.
    var keyIndices: [Int] = []
    /// The dedicated backend connection a blocking command of this client
    /// waits on, if any.
    var blockedOn: BackendConnection? {
        didSet { countBlocked() }
    }
    /// Blocked, as Redis counts it (`blocked_clients`, `CLIENT LIST`'s `b`):
    /// on a blocking command, `WAIT`, or a command blocked over several slots.
    var isBlocked: Bool { blockedOn != nil || !waitConnections.isEmpty }
    private var countedAsBlocked = false

    private func countBlocked() {
        guard isBlocked != countedAsBlocked else { return }
        countedAsBlocked = isBlocked
        worker.blockedClients += countedAsBlocked ? 1 : -1
        worker.metrics.dirty = true
    }
    /// The dedicated connection of the client's subscriptions, in subscribe mode.
    var subscription: BackendConnection?
    /// RESP2: the place of the subscription stream in the reply queue.
    var subscriptionStream: RequestRecord?
    /// Subscriptions the last confirmation counted.
    var subscriptionCount = 0
    /// The channels and patterns the client subscribed to, to subscribe again
    /// on another node when the subscription's node dies.
    var subscribedChannels = Set<[UInt8]>()
    var subscribedPatterns = Set<[UInt8]>()
    /// Confirmations of such a resubscription, swallowed (the client did not ask).
    var confirmationsToSwallow = 0
    /// `CLIENT TRACKING ON`: reads go over tracking connections, and the
    /// node's invalidations of keys it read are pushed to it.
    var tracking = false
    /// `SELECT`ed database: always 0 on a cluster; any on a standalone backend.
    var database = 0
    /// Authenticated (always, when no password or user is configured).
    /// Before, requests are held to Redis's small pre-authentication
    /// limits, so a peer without the password cannot make the proxy buffer much.
    var authenticated: Bool {
        didSet { limitsChanged(requestLimits) }
    }
    private var requestLimits: RequestLimits
    /// The user, when its rules restrict commands or keys; nil: anything goes.
    var restrictedUser: ProxyUser?
    /// The backend ACL user its requests go as (`user-backend-credentials`);
    /// nil: `backend-user`.
    var backendIdentity: BackendIdentity?
    /// When the client last wrote (loop clock), for `read-your-writes-ms`.
    var lastWriteAt: Int64 = .min / 2
    /// The keys `worker.trackedReaders` lists this client for.
    var trackedKeys = Set<[UInt8]>()
    /// Shard channels (`SSUBSCRIBE`), one connection per master they live on.
    var shards: ShardedSubscriptions?
    /// Links to the other masters for keyspace notifications (see `KeyspaceListeners`).
    var keyspaceListeners: KeyspaceListeners?
    /// In subscribe mode (RESP2: only subscription commands are allowed).
    var isSubscribed: Bool { subscription != nil || shards != nil }
    /// Dedicated connections running this client's `WAIT` on each master,
    /// or the slots' reads of a command blocked over several slots.
    var waitConnections: [BackendConnection] = [] {
        didSet { countBlocked() }
    }
    /// `WATCH`/`MULTI` state, while the client is in a transaction.
    var transaction: Transaction?
    /// The connection of the client's last transaction while its `EXEC` is
    /// still in flight: the next transaction continues on it.
    var previousTransactionConnection: BackendConnection?

    init(worker: Worker, fd: CInt, id: Int, tls: TLSStream? = nil) {
        self.worker = worker
        self.fd = fd
        self.tls = tls
        self.id = id
        authenticated = !worker.configuration.requiresAuthentication
        requestLimits = worker.configuration.requestLimits
        parser = RequestParser(
            limits: authenticated ? requestLimits : requestLimits.beforeAuthentication)
        lastReadAt = worker.loop.turnTime
        connectedAt = worker.loop.turnTime
        keyIndices.reserveCapacity(16)
        let context = Unmanaged.passUnretained(self).toOpaque()
        readEvent = LoopEvent(
            loop: worker.loop, fd: fd, flags: EventFlags.read | EventFlags.persist,
            callback: { _, _, context in
                Unmanaged<ClientSession>.fromOpaque(context!).takeUnretainedValue().onReadable()
            }, context: context)
        writeEvent = LoopEvent(
            loop: worker.loop, fd: fd, flags: EventFlags.write,
            callback: { _, _, context in
                Unmanaged<ClientSession>.fromOpaque(context!).takeUnretainedValue().writeOutput()
            }, context: context)
        readEvent?.add()
    }

    var hasPendingReplies: Bool { !pending.isEmpty }
    var owedReplies: Int { pending.count }
    /// Request bytes read and not yet parsed, and the room left for more
    /// (`CLIENT LIST`'s `qbuf` and `qbuf-free`).
    var queryBufferBytes: Int { input.readableBytes }
    var queryBufferFree: Int { input.allocatedCapacity - input.readableBytes }
    /// What its buffers hold allocated (`tot-mem`).
    var bufferMemory: Int { input.allocatedCapacity + output.allocatedCapacity + queuedReplyBytes + partReplyBytesHeld }
    /// The user it authenticated as (`default` without users).
    var userName = "default"

    // MARK: reading

    private func onReadable() {
        worker.loop.refreshTurnTime()
        if let needed = parser.bytesStillNeeded, needed > input.readableBytes {
            // Grow towards a big argument as its bytes arrive, not on the
            // promise of its header alone.
            input.reserveWritable(min(needed - input.readableBytes, max(16 * 1024, input.readableBytes)))
        } else if input.writableTail.count < 4096 {
            input.reserveWritable(16 * 1024)
        }
        let n = tls.map { $0.read(into: input.writableTail) } ?? Socket.read(fd, into: input.writableTail)
        if n == 0 {
            inputEnded = true
            readEvent?.remove()
            input.clear()
            // Blocked, waiting in WAIT or subscribed, it waits for what may
            // never come: gone now (as on a server).
            if pending.isEmpty && output.isEmpty || blockedOn != nil || !waitConnections.isEmpty || isSubscribed {
                close()
            }
            return
        }
        if n < 0 {
            if n == -2 {
                if let tls { worker.logger.debug("client \(id): TLS: \(tls.failure)") }
                close()
            } else if let tls {
                continueTLS(tls)
            }
            return
        }
        input.commitWritten(n)
        worker.metrics.counters.bytesIn &+= n
        lastReadAt = worker.loop.turnTime
        if input.readableBytes > worker.configuration.effectiveQueryBufferLimit {
            // Requests piling up unparsed (behind a blocking command, say):
            // as Redis's client-query-buffer-limit, the client goes.
            worker.logger.warning(
                "closing client \(id): \(input.readableBytes) bytes of requests buffered (client-query-buffer-limit \(worker.configuration.effectiveQueryBufferLimit))")
            close()
            return
        }
        parseRequests()
        if let tls { continueTLS(tls) }
    }

    /// What TLS needs besides the socket's own events: a read that needs
    /// the socket writable, a write that waited for a read, and decrypted
    /// bytes OpenSSL holds that no event will announce.
    private func continueTLS(_ tls: TLSStream) {
        guard !isClosed else { return }
        if tls.readWantsWrite { writeEvent?.add() }
        if tls.writeWantsRead && !output.isEmpty { writeOutput() }
        if tls.hasBufferedPlaintext && !readPaused && !closeAfterFlush && !isClosed { onReadable() }
    }

    /// A request whose reply must come back before the client's next
    /// command is routed: it runs on a dedicated connection (a blocking
    /// command, `WATCH`, `EXEC` ...), and a later command on a shared
    /// connection could otherwise overtake it, which one server never allows.
    var barrier: RequestRecord?
    /// Requests of this client in flight on shared connections. A command
    /// bound for a dedicated connection (a blocking command, a transaction,
    /// `WAIT`) waits until they are answered: on another connection it could
    /// otherwise overtake them (`RPUSH` then `BLPOP`, `SET` then `MULTI`/`INCR`).
    var sharedInFlight = 0
    /// Parsing stopped, with the command that must wait still unconsumed.
    var waitingForSharedReplies = false
    /// Subscribe mode: parsing waits for the proxy's marker `PING`s after a
    /// command sent on a subscription connection, so the subscriptions'
    /// state is known (and their confirmations out) before going on.
    var subscriptionMarkersOwed = 0
    /// Of those, the ones on `subscription`'s connection.
    var regularMarkersOwed = 0

    /// Parses what is buffered once a barrier is lifted. Inside the parsing
    /// loop (a barrier lifted while its command is routed) it does nothing:
    /// the loop goes on by itself, and the frame being routed is not
    /// consumed yet.
    func resumeParsing() {
        guard !isClosed, !isParsing, barrier == nil, subscriptionMarkersOwed == 0, !waitingForSharedReplies else {
            return
        }
        parseRequests()
    }

    private var isParsing = false

    private func parseRequests() {
        guard !isParsing else { return }
        isParsing = true
        defer { isParsing = false }
        while !input.isEmpty && !closeAfterFlush && barrier == nil && subscriptionMarkersOwed == 0
            && !waitingForSharedReplies
        {
            if pending.count >= worker.configuration.clientReadPauseReplies
                || unreadBytes + requestBytesPending >= worker.configuration.clientReadPauseBytes
            {
                readPaused = true
                readEvent?.remove()
                return
            }
            switch parser.parse(input.readable) {
            case .incomplete:
                return
            case .error(let error):
                // The stream cannot be resynced: answer, then close (as Redis does).
                replyLocally { $0.appendError("ERR " + error.message) }
                closeAfterFlush = true
                readEvent?.remove()
                input.clear()
                return
            case .complete(let frameLength):
                if !parser.arguments.isEmpty {
                    if parser.lastWasInline {
                        parser.inlineFrame.withUnsafeBytes { worker.route(self, frame: $0, arguments: parser.arguments) }
                    } else {
                        // (The worker outlives its sessions: no retain around the call.)
                        Unmanaged.passUnretained(worker)._withUnsafeGuaranteedRef {
                            $0.route(
                                self, frame: UnsafeRawBufferPointer(rebasing: input.readable[0..<frameLength]),
                                arguments: parser.arguments)
                        }
                    }
                    worker.metrics.currentSlot = -1
                    if waitingForSharedReplies && !inputHandedOver {
                        // Parsed again, and routed, once the shared replies are in.
                        parser.reset()
                        return
                    }
                }
                if inputHandedOver {
                    inputHandedOver = false
                } else {
                    input.consume(frameLength)
                }
                parser.reset()
            }
        }
        input.shrinkIfIdle(above: 4 << 20, to: 16 * 1024)
    }

    /// Gives a big request frame, at the front of the input, to its record
    /// without a copy: `request` takes the input's storage and keeps the
    /// frame; the input goes on in `request`'s old small storage, with the
    /// bytes that followed the frame. False (nothing changed) when the frame
    /// is not the input's (an inline command's, a renamed one's).
    func handOverInputFrame(_ frame: UnsafeRawBufferPointer, to request: ByteBuffer) -> Bool {
        guard request.isEmpty, !inputHandedOver, frame.baseAddress == input.readable.baseAddress,
            frame.count <= input.readableBytes
        else { return false }
        request.swapContents(with: input)
        input.append(UnsafeRawBufferPointer(rebasing: request.readable[frame.count...]))
        request.keepReadable(frame.count)
        inputHandedOver = true
        return true
    }

    // MARK: replies in request order

    /// Registers a request that will be answered later, in order.
    @inline(__always)
    func expectReply(_ record: RequestRecord) {
        record.session = self
        record.countedRequestBytes = record.request.readableBytes
        requestBytesPending &+= record.countedRequestBytes
        record.metricsSlot = worker.metrics.currentSlot
        record.receivedAtMicros = worker.loop.turnTimeMicros
        pending.append(record)
    }

    /// Registers a request answered over shared connections (see `sharedInFlight`).
    @inline(__always)
    func expectSharedReply(_ record: RequestRecord) {
        record.countsAsShared = true
        sharedInFlight += 1
        expectReply(record)
    }

    /// Slots with a request of this client being retried (after TRYAGAIN
    /// and the like), and how many; the client's later requests for such a
    /// slot wait in `behindRetry`, in order, so none overtakes it.
    private var retryingSlots: [Int: Int] = [:]
    /// Their total: the data path asks this plain count first.
    private var retriesUnderway = 0

    @inline(__always) func isRetrying(slot: Int) -> Bool {
        retriesUnderway > 0 && slot >= 0 && retryingSlots[slot] != nil
    }

    func retryStarted(slot: Int) {
        retryingSlots[slot, default: 0] += 1
        retriesUnderway += 1
    }
    var behindRetry: [RequestRecord] = []

    /// Calls `body` with each of this client's requests sent after
    /// `record` (on their way or answered) that may touch `slot`: its own,
    /// and commands split over slots, whose parts may have run on it. Those
    /// waiting behind a retry were never sent, nor were those made after
    /// record `madeBy` (`RequestRecord.orderedSince`: made once a retry of
    /// the slot had begun, they waited behind it). Stops when `body` says false.
    private func forEachLaterRequest(
        forSlot slot: Int, after record: RequestRecord, madeBy last: Int = .max, _ body: (RequestRecord) -> Bool
    ) {
        var seen = false
        for offset in 0..<pending.count {
            let other = pending[offset]
            if other === record {
                seen = true
            } else if seen && (other.slot == slot || other.answersSplit) && other.sequence <= last
                && !behindRetry.contains(where: { $0 === other })
            {
                if !body(other) { return }
            }
        }
    }

    /// Whether a request of this client sent after `retried` (a request, or
    /// a part, its client's record `anchor`) for its slot is on its way or
    /// answered (it may have run: a retry of `retried` would now run after it).
    func hasLaterRequest(than retried: RequestRecord, after anchor: RequestRecord) -> Bool {
        var found = false
        forEachLaterRequest(forSlot: retried.slot, after: anchor, madeBy: madeBy(retried)) { _ in
            found = true
            return false
        }
        return found
    }

    private func madeBy(_ retried: RequestRecord) -> Int {
        retried.orderedSince == 0 ? .max : retried.orderedSince
    }

    /// Calls `body` with each of this client's requests for `slot` sent
    /// after `record` and not answered yet.
    func forEachLaterRequestInFlight(forSlot slot: Int, after record: RequestRecord, _ body: (RequestRecord) -> Void) {
        forEachLaterRequest(forSlot: slot, after: record) { other in
            if other.slot == slot && !other.isComplete { body(other) }
            return true
        }
    }

    enum LaterOutcome { case noneRan, pending, oneRan }

    /// What became of this client's requests for its slot sent after
    /// `retried` (refused, held for a retry; `anchor` as above): one
    /// answered ran (a retry would run after it); one still at its node may
    /// yet; those refused too, or held (their connection lost), are sent
    /// after `retried`, in order. A command split over slots is not
    /// answered until its part for the slot is: that part held, or waiting
    /// behind a retry, has not run either.
    func outcomeOfLaterRequests(of retried: RequestRecord, after anchor: RequestRecord) -> LaterOutcome {
        var outcome = LaterOutcome.noneRan
        let slot = retried.slot
        forEachLaterRequest(forSlot: slot, after: anchor, madeBy: madeBy(retried)) { other in
            if other.isComplete {
                outcome = .oneRan
                return false
            }
            let waits =
                other.answersSplit
                ? other.partsRetriedInSlots.contains(slot) || hasPartBehindRetry(other, forSlot: slot)
                : other.orderedRetry || worker.heldRequests.contains(where: { $0 === other })
            if !waits { outcome = .pending }
            return true
        }
        return outcome
    }

    /// Whether the part for `slot` of the split command `parent` waits
    /// behind a retry.
    private func hasPartBehindRetry(_ parent: RequestRecord, forSlot slot: Int) -> Bool {
        behindRetry.contains { $0.slot == slot && $0.fanOut?.clientRecord === parent }
    }

    /// See `Worker.endOrderedRetry`.
    func retryEnded(slot: Int) {
        let left = (retryingSlots[slot] ?? 1) - 1
        retryingSlots[slot] = left > 0 ? left : nil
        retriesUnderway = max(0, retriesUnderway - 1)
        guard left <= 0 else { return }
        let waiting = behindRetry.filter { $0.slot == slot }
        behindRetry.removeAll { $0.slot == slot }
        for record in waiting {
            if isGone || isClosed {
                worker.failRequest(record, message: "ERR slotproxy: client gone")
            } else {
                worker.sendWaitingBehindRetry(record)
            }
        }
    }

    /// A reply for `record` arrived (from a node, or made by the proxy).
    func complete(_ record: RequestRecord, reply: UnsafeRawBufferPointer) {
        if record.orderedRetry { worker.endOrderedRetry(record) }
        if isClosed || overHardLimit(adding: reply.count) {
            worker.recordPool.release(record)
            return
        }
        if let first = reply.first {
            let micros = worker.loop.turnTimeMicros - record.receivedAtMicros
            Unmanaged.passUnretained(worker)._withUnsafeGuaranteedRef {
                $0.metrics.replied(
                    slot: record.metricsSlot, micros: micros, isError: first == UInt8(ascii: "-") || first == UInt8(ascii: "!"))
            }
            if micros >= worker.slowlogThresholdMicros { worker.logSlow(record, micros: micros, session: self) }
        }
        var resumes = barrier === record
        if resumes { barrier = nil }
        if record.countsAsShared {
            sharedInFlight -= 1
            if sharedInFlight == 0 && waitingForSharedReplies {
                waitingForSharedReplies = false
                resumes = true
            }
        }
        defer { if resumes { resumeParsing() } }
        if pending.first === record {
            sendOrBuffer(reply)
            _ = pending.popFirst()
            requestBytesPending &-= record.countedRequestBytes
            worker.recordPool.release(record)
            drainCompleted()
            markDirty()
        } else {
            record.reply.append(reply)
            record.isComplete = true
            queuedReplyBytes += reply.count
            markDirty()  // the soft limit is checked at the end of the turn
        }
    }

    /// Bytes of its requests kept until they are answered (for a resend),
    /// and of part replies waiting for the rest of their command (a
    /// cross-slot MGET's). With the replies unread, they pause reading
    /// (`client-read-pause-bytes`): a slow or paused node cannot make a
    /// client's pipeline pile up in the proxy.
    private(set) var requestBytesPending = 0
    var partReplyBytesHeld = 0

    /// Bytes of a command's parts (a split or broadcast), counted on its
    /// record in the client's queue.
    func countPartRequests(_ bytes: Int, on record: RequestRecord) {
        record.countedRequestBytes &+= bytes
        requestBytesPending &+= bytes
    }

    /// The hard limit holds as replies arrive, not only at the end of the
    /// turn: a turn can bring in many replies for a client that reads none.
    @inline(__always) func checkHardOutputLimit() {
        let hard = worker.configuration.clientOutputLimitHard
        if hard > 0 && unreadBytes > hard { enforceOutputLimits() }
    }

    /// Whether `count` more reply bytes would put the client over
    /// `client-output-limit-hard`; if so it is dropped before they are
    /// buffered: growing the buffer first would briefly hold the limit twice
    /// (old and new allocation) for a client about to go anyway.
    @inline(__always) private func overHardLimit(adding count: Int) -> Bool {
        let hard = worker.configuration.clientOutputLimitHard
        guard hard > 0 && unreadBytes + count > hard else { return false }
        worker.logger.warning(
            "closing client \(id): \(unreadBytes + count) bytes of replies unread (client-output-limit-hard \(hard))")
        close()
        return true
    }

    /// Replies the client has not read yet: written to neither the socket nor
    /// the kernel, held in the proxy.
    var unreadBytes: Int { output.readableBytes + queuedReplyBytes + partReplyBytesHeld }

    private func drainCompleted() {
        while let head = pending.first, head.isComplete {
            queuedReplyBytes -= head.reply.readableBytes
            output.append(head.reply.readable)
            _ = pending.popFirst()
            requestBytesPending &-= head.countedRequestBytes
            Unmanaged.passUnretained(worker)._withUnsafeGuaranteedRef { $0.recordPool.release(head) }
        }
        if let head = pending.first, head.isStream, !head.reply.isEmpty {
            queuedReplyBytes -= head.reply.readableBytes
            output.append(head.reply.readable)
            head.reply.clear()
        }
    }

    /// Whether `record`'s reply is the next the client is owed.
    func isOwedNext(_ record: RequestRecord) -> Bool { pending.first === record }

    /// Part of the reply the client is owed next, streamed from a node
    /// (`BackendConnection.startStreaming`); `complete` follows with no bytes.
    func streamReplyBytes(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed, !overHardLimit(adding: bytes.count) else { return }
        sendOrBuffer(bytes)
        markDirty()
    }

    /// Replies of `directWriteThreshold` bytes and more are written from
    /// where they lie (the node connection's input) when nothing is buffered
    /// ahead of them: at that size a write of their own costs less than
    /// copying them into `output` first. What the socket does not take
    /// now is buffered.
    static let directWriteThreshold = 64 * 1024

    @inline(__always)
    private func sendOrBuffer(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count < ClientSession.directWriteThreshold {
            output.append(bytes)
        } else {
            sendBigOrBuffer(bytes)
        }
    }

    @inline(never)
    private func sendBigOrBuffer(_ bytes: UnsafeRawBufferPointer) {
        guard output.isEmpty, tls == nil, !(writeEvent?.isPending ?? false) else {
            output.append(bytes)
            return
        }
        let n = Socket.write(fd, bytes)
        guard n > 0 else {
            // Would block (the flush writes it, or waits for writable), or
            // failed (the flush finds out and closes).
            output.append(bytes)
            return
        }
        worker.metrics.counters.bytesOut &+= n
        if n < bytes.count {
            output.append(UnsafeRawBufferPointer(rebasing: bytes[n...]))
            writeEvent?.add()  // the socket is full
        }
    }

    /// Bytes of the subscription stream: straight out when nothing before
    /// them is still owed (always, for RESP3 pushes), else queued in order.
    func streamArrived(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        if let stream = subscriptionStream, pending.first !== stream {
            stream.reply.append(bytes)
            queuedReplyBytes += bytes.count
            checkHardOutputLimit()
            return
        }
        output.append(bytes)
        markDirty()
        checkHardOutputLimit()
    }

    func streamArrived(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { streamArrived($0) }
    }

    /// An out-of-band push (an invalidation) that must not overtake the
    /// replies still owed: queued behind them, or written at once.
    func pushInOrder(_ bytes: [UInt8]) {
        guard !isClosed else { return }
        replyLocally { $0.append(bytes) }
    }

    /// Subscribe mode ended: the stream's place in the queue is released.
    func finishStream(_ stream: RequestRecord) {
        stream.isStream = false
        complete(stream, reply: UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// Writes a reply the proxy makes itself, keeping request order: straight
    /// to the output when nothing is outstanding, else queued behind the rest.
    func replyLocally(_ write: (ByteBuffer) -> Void) {
        if subscriptionStream != nil {
            // RESP2 subscribe mode: the subscription's stream holds the
            // client's place in line; queued behind it, a reply would never go.
            let reply = ByteBuffer(capacity: 128)
            write(reply)
            streamArrived(reply.readable)
            return
        }
        if pending.isEmpty {
            write(output)
            markDirty()
        } else {
            let record = worker.recordPool.acquire()
            record.session = self
            write(record.reply)
            record.isComplete = true
            queuedReplyBytes += record.reply.readableBytes
            pending.append(record)
        }
    }

    /// Replies with `-<message>`.
    func replyError(_ message: String) {
        worker.metrics.localError()
        replyLocally { $0.appendError(message) }
    }

    /// Closes once everything owed has been written (`QUIT`).
    func closeWhenDrained() {
        closeAfterFlush = true
        readEvent?.remove()
    }

    // MARK: writing

    /// Replies to the start of a pipeline spread over several masters: the
    /// rest comes a turn or two later. Held until they are all in, for at
    /// most `reply-coalesce-us`, the client gets one write and one wakeup
    /// per pipeline, not one per master. Big outputs and streams (pub/sub,
    /// a blocked client's) are not held.
    @inline(__always)
    private func holdsBackPartialReplies() -> Bool {
        let bound = Int64(worker.configuration.replyCoalesceMicros)
        guard bound > 0, hasPendingReplies, !isSubscribed, blockedOn == nil, output.readableBytes < 16 * 1024 else {
            return false
        }
        let now = worker.loop.turnTimeMicros
        if heldBackSince == 0 { heldBackSince = now }
        guard now - heldBackSince < bound else { return false }
        worker.holdBack(self, until: heldBackSince + bound)
        return true
    }

    private func markDirty() {
        guard !isDirty, !isClosed else { return }
        isDirty = true
        worker.dirtyClients.append(self)
    }

    /// Called once per loop turn for dirty sessions.
    func flush() {
        guard !isClosed else {
            isDirty = false
            return
        }
        if holdsBackPartialReplies() { return }
        heldBackSince = 0
        isDirty = false
        if !(writeEvent?.isPending ?? false) { writeOutput() }
        if !isClosed { enforceOutputLimits() }
    }

    /// `client-output-limit-hard`: a client with more unread replies is
    /// dropped at once; `-soft`: dropped when above it for `-soft-seconds`
    /// (as Redis's `client-output-buffer-limit`). 0 turns a limit off.
    func enforceOutputLimits() {
        let unread = unreadBytes
        let settings = worker.configuration
        if overHardLimit(adding: 0) { return }
        guard settings.clientOutputLimitSoft > 0 && unread > settings.clientOutputLimitSoft else {
            softLimitExceededSince = nil
            return
        }
        let now = worker.loop.turnTime
        guard let since = softLimitExceededSince else {
            softLimitExceededSince = now
            return
        }
        if now - since >= Int64(settings.clientOutputLimitSoftSeconds) * 1000 {
            worker.logger.warning(
                "closing client \(id): \(unread) bytes of replies unread for \((now - since) / 1000) s (client-output-limit-soft \(settings.clientOutputLimitSoft), client-output-limit-soft-seconds \(settings.clientOutputLimitSoftSeconds))")
            close()
        }
    }

    /// Draining: whether closing this client now drops nothing it is owed:
    /// its replies are written and it has sent nothing since `quietSince`.
    /// Subscribers and clients blocked in `BLPOP` and the like wait for
    /// what may never come, so they count as done (as a restarting Redis
    /// closes them too).
    func isDone(quietSince: Int64) -> Bool {
        input.isEmpty && output.isEmpty && lastReadAt < quietSince
            && (pending.isEmpty || isSubscribed || blockedOn != nil || !waitConnections.isEmpty)
    }

    /// Settings re-read: `proto-max-bulk-len` and the other request limits
    /// apply from this client's next request on.
    func limitsChanged(_ limits: RequestLimits) {
        requestLimits = limits
        parser.limits = authenticated ? limits : limits.beforeAuthentication
    }

    /// Whether `timeout` may close this client now: idle, and not waiting on
    /// anything (subscribers and blocked clients are never timed out, as in Redis).
    func isIdle(since deadline: Int64) -> Bool {
        lastReadAt < deadline && pending.isEmpty && !isSubscribed && blockedOn == nil
    }

    private func writeOutput() {
        if let tls, tls.readWantsWrite {
            onReadable()
            if isClosed { return }
        }
        while !output.isEmpty {
            let attempted = output.readableBytes
            let n = tls.map { $0.write(output.readable) } ?? Socket.write(fd, output.readable)
            if n > 0 {
                output.consume(n)
                worker.metrics.counters.bytesOut &+= n
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
                close()
                return
            }
        }
        output.shrinkIfIdle(above: 4 << 20, to: 16 * 1024)
        if (closeAfterFlush || inputEnded) && (pending.isEmpty || owesOnlyItsStream) {
            close()
        } else if readPaused && pending.count <= worker.configuration.clientReadPauseReplies / 10 {
            readPaused = false
            if !closeAfterFlush && !inputEnded { readEvent?.add() }
            parseRequests()
            if let tls { continueTLS(tls) }
        }
    }

    /// Nothing owed but the subscription's stream, which never completes.
    private var owesOnlyItsStream: Bool { pending.count == 1 && pending.first === subscriptionStream }

    /// Drops the connection. Requests still at nodes keep their record; their
    /// replies are discarded when they arrive.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        // The events are freed with the session, after this loop turn: this
        // may run inside one of their callbacks.
        readEvent?.remove()
        writeEvent?.remove()
        tls?.shutdown()
        Socket.close(fd)
        if let relaxed = transaction?.relaxed {
            transaction = nil
            for connection in relaxed.watchConnections.values {
                connection.transactionBound = false
                connection.close()
                worker.dedicated.release(connection)
            }
        }
        if let connection = transaction?.connection {
            // A transaction half done: the connection holds its MULTI or WATCH.
            transaction = nil
            connection.transactionBound = false
            connection.close()
            worker.dedicated.release(connection)
        }
        // The node would keep a command blocked, or keep sending messages
        // for nobody: drop those connections.
        subscriptionStream = nil
        if isSubscribed { worker.endAllSubscriptions(self) }
        worker.closeKeyspaceListeners(self)
        if let connection = blockedOn {
            blockedOn = nil
            connection.close()
            worker.dedicated.release(connection)
        }
        for connection in waitConnections where connection.servedSession === self {
            connection.close()
            worker.dedicated.release(connection)
        }
        waitConnections.removeAll()
        // Held behind a retry that will not be answered now: let them go
        // (they and this session would keep each other alive).
        for record in behindRetry { worker.recordPool.release(record) }
        behindRetry.removeAll()
        retryingSlots.removeAll()
        retriesUnderway = 0
        if !trackedKeys.isEmpty { worker.stopTracking(self) }
        worker.sessionsAwaitingResubscription[ObjectIdentifier(self)] = nil
        barrier = nil
        for record in pending.removeAll() where record.isComplete {
            worker.recordPool.release(record)
        }
        worker.sessionClosed(self)
    }
}
