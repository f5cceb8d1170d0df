import RESPWire

/// One client request on its way through the proxy: its bytes (kept for a
/// resend after MOVED/ASK), where it went, and its reply when the reply came
/// back before earlier requests of the same client were answered.
///
/// Records are pooled per worker and reused, buffers included, so a request
/// costs no allocation in steady state.
final class RequestRecord {
    /// The client that is owed the reply; nil for records the proxy sends on
    /// its own behalf.
    var session: ClientSession?
    /// The worker's count of records when this one was made: the order
    /// clients sent their requests in, which held requests keep
    /// (`Worker.holdForFailover`).
    var sequence = 0
    /// The request as RESP bytes, as the client sent them.
    let request = ByteBuffer(capacity: 128)
    /// The reply, when it arrived out of order; empty otherwise.
    let reply = ByteBuffer(capacity: 64)
    var isComplete = false
    var slot = -1
    var redirects = 0
    /// When it was last written to a backend (loop time, ms).
    var sentAt: Int64 = 0
    /// Set when this record is one part of a split or broadcast command.
    var fanOut: FanOut?
    var part = 0
    /// Holds a subscription's stream in the client's reply queue (RESP2):
    /// never complete while the client is subscribed.
    var isStream = false
    /// Its reply ends the client's transaction (`EXEC`, `DISCARD`, `UNWATCH`)
    /// number `endsTransaction` on its connection; 0: it ends none.
    var endsTransaction = 0
    /// Answered over shared connections: counted in the client's
    /// `sharedInFlight` until its reply is delivered.
    var countsAsShared = false
    /// Where its bytes end in its connection's output stream: written in
    /// full once the connection has written that many bytes.
    var streamEnd = 0
    /// When it was first held for want of a reachable master (0: never);
    /// it fails once held longer than `failover-timeout-ms`.
    var heldSince: Int64 = 0
    /// Retries after `TRYAGAIN`/`LOADING`/`CLUSTERDOWN`, and the earliest
    /// time for the next.
    var retries = 0
    var retryAt: Int64 = 0
    /// Being retried with its client's later requests for its slot waiting
    /// behind it (`ClientSession.retryingSlots`).
    var orderedRetry = false
    /// Refused (`LOADING`, `CLUSTERDOWN`, `MASTERDOWN`) while later requests
    /// of its client for its slot were already on their way: the node's
    /// error, kept until their outcome decides between a retry and this
    /// answer (`Worker.resendHeldRequests`). Nil otherwise.
    var refusalAwaitingLaterOutcomes: [UInt8]?
    /// The last record made when its ordered retry began (0: none began):
    /// its client's requests made after that waited behind it, and never
    /// ran before it (`ClientSession.forEachLaterRequest`).
    var orderedSince = 0
    /// Answers a command split over slots (its parts run on their own
    /// records): its slot is -1, yet it may touch any (`ClientSession.hasLaterRequest`).
    var answersSplit = false
    /// For such a record: the slots of its parts being retried in order
    /// (one entry per part), so a retry of an earlier request knows those
    /// parts have not run (`ClientSession.outcomeOfLaterRequests`).
    var partsRetriedInSlots: [Int] = []
    /// Its request's bytes, counted in its client's `requestBytesPending`.
    var countedRequestBytes = 0
    /// Written between a `MULTI` and `EXEC` of the proxy's own (a relaxed
    /// transaction's group): its group's `EXEC` answers for it, so it is
    /// never held and sent again alone, outside the transaction.
    var insideMulti = false
    /// A blocking `XREAD`'s streams' last IDs when it was sent, by stream,
    /// for those it read from `$` (`Worker+StreamLastIDs`); else empty.
    var streamLastIDs: [[UInt8]?] = []
    /// A blocking command on a dedicated connection (`Worker.sendBlocking`):
    /// held through a failover like any request while it has not reached a
    /// node, and sent again on a dedicated connection.
    var blocking = false
    /// When a held blocking command's own timeout is up (loop clock, ms;
    /// 0: not worked out yet, -1: never), `Worker.blockDeadline`.
    var blockDeadline: Int64 = 0
    /// A transaction's first `WATCH` (`Worker.sendWatch`): held through a
    /// failover while nothing is watched yet, and sent again.
    var watch = false
    /// The pool whose held-request count includes it, while held.
    var heldFor: BackendPool?
    /// Its command's metrics slot (-1: none) and when it was read (loop
    /// clock, microseconds), for the latency histograms and the slow log.
    var metricsSlot = -1
    var receivedAtMicros: Int64 = 0
    /// When it was last written to a node, and the time nodes took to
    /// answer it so far (redirects add up), in microseconds: the slow log's
    /// split of proxy and backend time.
    var sentAtMicros: Int64 = 0
    var backendMicros: Int64 = 0

    func reset() {
        session = nil
        request.clear()
        reply.clear()
        // Pooled records keep small buffers only: thousands of them holding
        // the biggest value each ever carried would be memory held for nothing.
        request.shrinkIfIdle(above: 8 * 1024, to: 128)
        reply.shrinkIfIdle(above: 8 * 1024, to: 64)
        isComplete = false
        slot = -1
        redirects = 0
        sentAt = 0
        // (Tested first: storing nil calls swift_release even on nil, and
        // these are nil for nearly every record.)
        if fanOut != nil { fanOut = nil }
        part = 0
        isStream = false
        endsTransaction = 0
        countsAsShared = false
        streamEnd = 0
        heldSince = 0
        retries = 0
        retryAt = 0
        orderedRetry = false
        if refusalAwaitingLaterOutcomes != nil { refusalAwaitingLaterOutcomes = nil }
        orderedSince = 0
        answersSplit = false
        if !partsRetriedInSlots.isEmpty { partsRetriedInSlots.removeAll() }
        countedRequestBytes = 0
        insideMulti = false
        blocking = false
        if !streamLastIDs.isEmpty { streamLastIDs.removeAll() }
        blockDeadline = 0
        watch = false
        if heldFor != nil { heldFor = nil }
        metricsSlot = -1
        receivedAtMicros = 0
        sentAtMicros = 0
        backendMicros = 0
    }
}

/// The worker's free list of records.
struct RequestRecordPool {
    private var free: [RequestRecord] = []
    private let limit: Int
    /// The fewest idle records since the last `shrink`: that many sat
    /// unused the whole time.
    private var fewestIdle = 0

    /// At most `limit` records (of at most 16 kB of buffers each) are kept.
    init(limit: Int = 2048) {
        self.limit = limit
        free.reserveCapacity(limit)
    }

    var idleCount: Int { free.count }

    /// Numbers records in the order they are made (`RequestRecord.sequence`).
    private var nextSequence = 0

    mutating func acquire() -> RequestRecord {
        nextSequence &+= 1
        guard let record = free.popLast() else {
            fewestIdle = 0
            let fresh = RequestRecord()
            fresh.sequence = nextSequence
            return fresh
        }
        if free.count < fewestIdle { fewestIdle = free.count }
        record.sequence = nextSequence
        return record
    }

    /// The `sequence` of the last record made.
    var lastSequence: Int { nextSequence }

    mutating func release(_ record: RequestRecord) {
        // (Else its client's later requests for the slot wait forever:
        // `Worker.endOrderedRetry` first.)
        assert(!record.orderedRetry || record.session?.isClosed != false, "an ordered retry released unended")
        record.reset()
        if free.count < limit { free.append(record) }
    }

    /// Frees the records that sat unused since the last call (keeping
    /// `floor` idle ones). After a burst the pool would otherwise keep
    /// thousands of small objects spread over the heap, and each pins its
    /// page: the allocator could not give the burst's memory back.
    /// Returns how many it freed.
    mutating func shrink(keeping floor: Int = 64) -> Int {
        let surplus = min(fewestIdle, free.count - floor)
        if surplus > 0 { free.removeLast(surplus) }
        fewestIdle = free.count
        return max(surplus, 0)
    }
}
