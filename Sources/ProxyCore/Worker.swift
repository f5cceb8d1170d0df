import ClusterTopology
import CommandTable
import EventLoop
import Logging
import RESPWire
import TLS

/// Messages a worker accepts from other threads.
enum WorkerMessage: Sendable {
    case topology(SlotMap)
    /// Settings re-read on SIGHUP (restart-only ones already kept as they were).
    case reconfigure(ProxyConfiguration)
    /// SIGTERM: stop accepting, let clients collect their replies, then stop.
    case drain(timeoutMs: Int)
    /// `PROXY CLIENTS`/`AUDIT`: send worker `origin` this worker's part.
    case gather(GatherKind, id: Int, origin: Int)
    case gathered(id: Int, part: GatheredPart)
    /// `PROXY AUDIT RESET`.
    case resetAudit
    /// Another worker's connection to the node got no reply within
    /// request-timeout-ms (`Worker.tellOtherWorkersNodeIsHung`).
    case nodeHung(NodeAddress)
    case stop
}

/// One event loop thread with its own listener, client sessions and backend
/// connections to every node (share-nothing). It learns topology changes from
/// its mailbox; nothing on its data path takes a lock.
final class Worker {
    let loop = EventLoop()
    private(set) var configuration: ProxyConfiguration
    let logger: Logger
    let shared: SharedState
    var recordPool = RequestRecordPool()
    /// Counters for `/metrics`, published once per tick.
    let metrics = WorkerMetrics()
    var dirtyClients: [ClientSession] = []
    /// Clients whose partial replies wait for the rest (`reply-coalesce-us`,
    /// see `ClientSession.flush`), and the earliest time one of them must
    /// be written (turn clock, microseconds).
    private var heldBackClients: [ClientSession] = []
    private var earliestHeldBackDeadline = Int64.max
    /// Ends an idle wait at about that deadline. A busy worker checks the
    /// deadlines every turn; this timer only wakes one that has nothing else
    /// to do, and libevent's 4 ms clock may make that a few ms late (a
    /// timerfd is precise, but arming it and reading it cost two system
    /// calls per hold, more than the writes saved at -P 64).
    private var heldBackWakeup: LoopEvent?
    var dirtyBackends: [BackendConnection] = []
    /// Objects closed during this turn, released after it (never inside their own callback).
    private var closedSessions: [ClientSession] = []
    private var closedBackends: [BackendConnection] = []
    private(set) var sessions: [ObjectIdentifier: ClientSession] = [:]
    /// Reused by every cross-slot split (`split`).
    var splitScratch = SlotGrouping()
    /// Reused to merge fan-outs answered to a client (`partArrived`); nil while lent out.
    var mergeScratch: ByteBuffer? = ByteBuffer(capacity: 4096)
    /// `PROXY AUDIT` counts (rare paths only: refusals, cross-slot commands).
    var audit: [AuditKey: Int] = [:]
    /// `PROXY` commands waiting for the other workers' parts, by id.
    var pendingGathers: [Int: PendingGather] = [:]
    var gatherCounter = 0
    private let listenerFD: CInt
    private var listenerEvent: LoopEvent?
    /// The TLS port's listener, when `tls-port` is set.
    private let tlsListenerFD: CInt?
    private var tlsListenerEvent: LoopEvent?
    /// Its own SO_REUSEPORT sockets (not systemd's, which outlive the
    /// process): closed as draining starts, so new connections are refused
    /// (or go to another instance on the port) instead of waiting in a
    /// backlog no one accepts from.
    private let ownsListeners: Bool
    private var listenersClosed = false
    private var tickEvent: LoopEvent?
    private var acceptPaused = false
    /// Connections for blocking commands, one client at a time.
    private(set) lazy var dedicated = DedicatedConnections(worker: self, limitPerNode: configuration.blockingConnectionsPerNode)
    let mailbox: Mailbox<WorkerMessage>
    /// The table clients' command names are looked up in (with `rename-command`).
    private let commands: CommandLookup
    /// The table without renames, for a renamed command re-encoded under its real name.
    private let realCommands = CommandLookup()
    private(set) var commandPolicy: CommandPolicy
    private var routingRealName = false
    /// The last name looked up in each table (see `CommandNameCache`).
    private var nameCache = CommandNameCache()
    private var realNameCache = CommandNameCache()
    /// Hashes of the `EVAL` scripts this worker passed on to `SharedState`
    /// (`rememberEvaluatedScript`) since its `scriptGeneration` was
    /// `scriptGenerationSeen`.
    var evaluatedScriptHashes = Set<Int>()
    var scriptGenerationSeen = 0
    /// Blocked steps of commands over several slots woken with `CLIENT
    /// UNBLOCK` and not answered yet (`wakeBlockedStepsAgain`).
    var stepsBeingWoken: [BlockedStep] = []
    private(set) var slotHasher = SlotHasher()

    /// The current topology and, per slot, the pool of the node serving it
    /// (patched by MOVED until the next snapshot arrives).
    private(set) var slotMap: SlotMap?
    /// Every node the map names, masters and replicas: the only ones a
    /// redirect is followed to (see `handleReply`).
    private(set) var knownNodes = Set<NodeAddress>()
    /// The map's assigned slots, counted once per map (a walk of 16384).
    private var slotsCovered = 0
    private(set) var slotOwners = SlotOwners()
    private(set) var pools: [NodeAddress: BackendPool] = [:]
    /// The pools of `slotMap.shards`' masters, in the same order.
    private(set) var masterPools: [BackendPool] = []
    var anyNodeCursor = 0

    let workerIndex: Int
    /// `read-from` other than master, on a cluster (see `Worker+ReplicaReads`).
    private(set) var readsFromReplicas = false
    var readTargets: [ReadTargets] = []
    /// Requests waiting for a reachable master (see `Worker+Failover`).
    var heldRequests: [RequestRecord] = []
    /// Clients waiting on a blocking command (`ClientSession.blockedOn`).
    var blockedClients = 0
    /// `CLIENT TRACKING`: the clients that read each key over a tracking connection.
    var trackedReaders: [[UInt8]: [ClientSession]] = [:]
    /// Sessions with shard channels waiting for a live master (see `Worker+ShardedPubSub`).
    var sessionsAwaitingResubscription: [ObjectIdentifier: ClientSession] = [:]
    /// Subscribers with keyspace-notification links (see `Worker+KeyspaceNotifications`).
    var keyspaceListeningSessions: [ObjectIdentifier: ClientSession] = [:]
    /// Transactions refused before they ran, to be sent again (see `Worker+TransactionReplay`).
    var transactionReplays: [TransactionReplay] = []
    /// Relaxed `EXEC` stages waiting out a backoff (`Worker+RelaxedTransactions`).
    var delayedRelaxedStages: [DelayedRelaxedStage] = []

    init(
        index: Int, configuration: ProxyConfiguration, listenerFD: CInt, tlsListenerFD: CInt? = nil,
        ownsListeners: Bool = true, mailbox: Mailbox<WorkerMessage>, shared: SharedState, logger: Logger
    ) {
        workerIndex = index
        self.configuration = configuration
        self.listenerFD = listenerFD
        self.tlsListenerFD = tlsListenerFD
        self.ownsListeners = ownsListeners
        self.mailbox = mailbox
        self.shared = shared
        self.logger = logger
        commands = CommandLookup(renames: configuration.renamedCommands)
        commandPolicy = CommandPolicy(denied: configuration.deniedCommands, renames: configuration.renamedCommands)
    }

    /// Runs the loop on the calling thread until a `.stop` message.
    func run() {
        mailbox.attach(to: loop) { [unowned self] message in self.receive(message) }
        let context = Unmanaged.passUnretained(self).toOpaque()
        listenerEvent = LoopEvent(
            loop: loop, fd: listenerFD, flags: EventFlags.read | EventFlags.persist,
            callback: { _, _, context in
                Unmanaged<Worker>.fromOpaque(context!).takeUnretainedValue().acceptClients(overTLS: false)
            }, context: context)
        listenerEvent?.add()
        if let tlsListenerFD {
            tlsListenerEvent = LoopEvent(
                loop: loop, fd: tlsListenerFD, flags: EventFlags.read | EventFlags.persist,
                callback: { _, _, context in
                    Unmanaged<Worker>.fromOpaque(context!).takeUnretainedValue().acceptClients(overTLS: true)
                }, context: context)
            tlsListenerEvent?.add()
        }
        tickEvent = LoopEvent(
            loop: loop, fd: -1, flags: EventFlags.persist,
            callback: { _, _, context in
                Unmanaged<Worker>.fromOpaque(context!).takeUnretainedValue().tick()
            }, context: context)
        tickEvent?.add(timeoutMilliseconds: 100)
        loop.run { [unowned self] in self.afterTurn() }
        shutdown()
    }

    /// One write per dirty connection per turn, then deferred releases.
    /// Requests routed by this worker; published for `INFO` once per turn.
    var commandsProcessed = 0
    /// Names scratch keys of emulated commands apart.
    var emulationCounter = 0
    /// Hash tags found for storing emulated commands' slots (`scratchTag`).
    var scratchTags: [Int: String] = [:]

    private func afterTurn() {
        shared.publishCommandsProcessed(worker: workerIndex, count: commandsProcessed)
        var i = 0
        while i < dirtyBackends.count {
            dirtyBackends[i].flush()
            i += 1
        }
        dirtyBackends.clearKeepingCapacity()
        i = 0
        while i < dirtyClients.count {
            dirtyClients[i].flush()
            i += 1
        }
        dirtyClients.clearKeepingCapacity()
        if !heldBackClients.isEmpty {
            // Flushed again after the next turn; the timer starts one by
            // the earliest deadline.
            swap(&dirtyClients, &heldBackClients)
            wakeUpForHeldBackClients(by: earliestHeldBackDeadline)
            earliestHeldBackDeadline = .max
        }
        if !closedSessions.isEmpty { closedSessions.removeAll(keepingCapacity: true) }
        if !closedBackends.isEmpty { closedBackends.removeAll(keepingCapacity: true) }
    }

    private func wakeUpForHeldBackClients(by deadline: Int64) {
        if heldBackWakeup == nil {
            // Firing ends the loop's wait; `afterTurn` does the rest.
            heldBackWakeup = LoopEvent(
                loop: loop, fd: -1, flags: 0, callback: { _, _, _ in }, context: Unmanaged.passUnretained(self).toOpaque())
        }
        guard let wakeup = heldBackWakeup, !wakeup.isPending else { return }
        wakeup.add(timeoutMicroseconds: Int(max(deadline - loop.turnTimeMicros, 1)))
    }

    /// Leaves a client's flush to a later turn, `deadline` at the latest
    /// (`ClientSession.flush`).
    func holdBack(_ session: ClientSession, until deadline: Int64) {
        heldBackClients.append(session)
        if deadline < earliestHeldBackDeadline { earliestHeldBackDeadline = deadline }
    }

    private func receive(_ message: WorkerMessage) {
        switch message {
        case .topology(let map): apply(map)
        case .reconfigure(let new): reconfigure(new)
        case .drain(let timeoutMs): beginDrain(timeoutMs: timeoutMs)
        case .gather(let kind, let id, let origin): shared.mailboxes[origin].send(.gathered(id: id, part: part(of: kind)))
        case .gathered(let id, let part): gathered(id: id, part: part)
        case .resetAudit: audit.removeAll()
        case .nodeHung(let address): nodeHungForAnotherWorker(address)
        case .stop: loop.stop()
        }
    }

    /// Takes over re-read settings: the next request sees them; sessions
    /// keep their state (an authenticated client stays authenticated).
    func reconfigure(_ new: ProxyConfiguration) {
        let old = configuration
        configuration = new
        commandPolicy = CommandPolicy(denied: new.deniedCommands, renames: new.renamedCommands)
        for session in sessions.values {
            session.limitsChanged(new.requestLimits)
            refreshUser(of: session)
        }
        if old.readFrom != new.readFrom, let map = slotMap { apply(map) }
    }

    // MARK: draining (SIGTERM)

    /// Set while draining: when the last clients must be gone.
    private var drainDeadline: Int64?
    /// Its last 2 s (or half): a busy client is then closed at its next
    /// reply boundary (everything read answered) rather than cut off with
    /// requests at nodes at the deadline; what it sends after was never
    /// read, so it never ran, and it retries on another connection.
    private var drainBoundaryFrom: Int64 = 0
    /// A client counts as done once it has had nothing owed and sent nothing
    /// for this long: a pipelining client between two writes is not done.
    private static let drainQuietMs: Int64 = 200

    private func beginDrain(timeoutMs: Int) {
        guard drainDeadline == nil else { return }
        drainDeadline = loop.nowMilliseconds + Int64(timeoutMs)
        drainBoundaryFrom = drainDeadline! - Int64(min(2000, timeoutMs / 2))
        listenerEvent?.remove()
        tlsListenerEvent?.remove()
        acceptPaused = false
        closeListeners()
        closeDrainedSessions(now: loop.nowMilliseconds)
    }

    private func closeListeners() {
        guard ownsListeners, !listenersClosed else { return }
        listenersClosed = true
        Socket.close(listenerFD)
        if let tlsListenerFD { Socket.close(tlsListenerFD) }
    }

    /// Closes the clients that are done; at the deadline, all of them. Stops
    /// the loop once none is left (requests still at nodes have no client).
    private func closeDrainedSessions(now: Int64) {
        guard let deadline = drainDeadline else { return }
        let late = now >= deadline
        // A client that never pauses is never quiet: near the deadline it
        // reads nothing more and closes once what it sent is answered (as
        // after QUIT), at its next reply boundary.
        let atBoundary = now >= drainBoundaryFrom
        let quiet = atBoundary ? .max : now - Worker.drainQuietMs
        for session in sessions.values {
            if late || session.isDone(quietSince: quiet) {
                if late && !session.isDone(quietSince: now) {
                    logger.warning("closing client \(session.id) with requests unanswered: shutdown-timeout reached")
                }
                session.close()
            } else if atBoundary {
                session.closeWhenDrained()
            }
        }
        if sessions.isEmpty { loop.stop() }
    }

    private func shutdown() {
        listenerEvent?.remove()
        tlsListenerEvent?.remove()
        closeListeners()
        tickEvent?.remove()
        for session in sessions.values { session.close() }
        trackedReaders.removeAll()
        sessionsAwaitingResubscription.removeAll()
        keyspaceListeningSessions.removeAll()
        transactionReplays.removeAll()
        for pool in pools.values { pool.closeAll() }
        dedicated.closeAll()
        afterTurn()
        sessions.removeAll()
        pools.removeAll()
        slotOwners = SlotOwners()
        masterPools = []
        readTargets = []  // (replicas' pools: their connections' events too)
        heldRequests = []
        // Events go before the loop's event_base does.
        listenerEvent = nil
        tlsListenerEvent = nil
        tickEvent = nil
        heldBackWakeup = nil
        mailbox.detach()
    }

    // MARK: clients

    private var refusedSinceLog = 0
    private var lastRefusalLogAt: Int64 = .min / 2

    private func acceptClients(overTLS: Bool) {
        while true {
            guard let fd = Socket.accept(listener: overTLS ? tlsListenerFD! : listenerFD) else {
                if Socket.lastErrorIsOutOfDescriptors {
                    // The listener would fire again at once: stop accepting
                    // until the next tick instead of spinning.
                    listenerEvent?.remove()
                    tlsListenerEvent?.remove()
                    acceptPaused = true
                    logger.error("out of file descriptors: not accepting clients for now (raise LimitNOFILE / ulimit -n)")
                }
                return
            }
            guard shared.admitClient(limit: configuration.maxClients) else {
                _ = "-ERR max number of clients reached\r\n".utf8CString.withUnsafeBytes {
                    Socket.write(fd, UnsafeRawBufferPointer(rebasing: $0.dropLast()))
                }
                Socket.close(fd)
                refusedSinceLog += 1
                metrics.counters.rejectedConnections += 1
                metrics.dirty = true
                logRefusedClients(now: loop.turnTime)
                continue
            }
            Socket.setKeepAlive(fd, idleSeconds: configuration.tcpKeepAliveSeconds)
            var tls: TLSStream?
            if overTLS, let context = shared.tls.server {
                do {
                    tls = try TLSStream(context: context, fd: fd, accepting: true)
                } catch {
                    logger.error("TLS: \(error)")
                    Socket.close(fd)
                    shared.clientLeft()
                    continue
                }
            }
            let session = ClientSession(worker: self, fd: fd, id: shared.nextClientID(), tls: tls)
            sessions[ObjectIdentifier(session)] = session
        }
    }

    /// One line per 10 s, not one per connection: a flood must not flood
    /// the log. (`tick` logs the rest of a burst once the 10 s are up.)
    private func logRefusedClients(now: Int64) {
        guard refusedSinceLog > 0, now - lastRefusalLogAt >= 10_000 else { return }
        logger.warning("refused \(refusedSinceLog) client(s): maxclients (\(configuration.maxClients)) reached")
        lastRefusalLogAt = now
        refusedSinceLog = 0
    }

    func sessionClosed(_ session: ClientSession) {
        if sessions.removeValue(forKey: ObjectIdentifier(session)) != nil {
            sessionsClosedSinceTrim += 1
            shared.clientLeft()
            closedSessions.append(session)
        }
    }

    func keepUntilTurnEnds(_ connection: BackendConnection) {
        closedBackends.append(connection)
    }

    func backendClosed(_ connection: BackendConnection) {
        closedBackends.append(connection)
        shared.requestTopologyRefresh()
    }

    // MARK: topology

    private func apply(_ map: SlotMap) {
        if map.isStandalone != (slotMap?.isStandalone ?? false) {
            slotHasher = SlotHasher(everyKeyInOneSlot: map.isStandalone)
        }
        var wanted: [NodeAddress: BackendPool] = [:]
        masterPools = map.shards.map { shard in
            let address = NodeAddress(host: shard.master.host, port: shard.master.port)
            let pool = pools[address] ?? BackendPool(worker: self, address: address, connections: configuration.backendConnections)
            wanted[address] = pool
            return pool
        }
        readsFromReplicas = configuration.readFrom != .master && !map.isStandalone
        if readsFromReplicas {
            // Replicas serve reads: their pools stay from one map to the next.
            for replica in map.shards.flatMap(\.replicas) {
                let address = NodeAddress(host: replica.host, port: replica.port)
                wanted[address] = wanted[address] ?? pools[address]
                    ?? BackendPool(worker: self, address: address, connections: configuration.backendConnections)
            }
        }
        for (address, pool) in pools where wanted[address] == nil {
            // A node that serves no slot any more: its connections go once
            // they have nothing in flight (they are not reused for routing).
            if pool.openConnections.allSatisfy({ $0.outstandingRequests == 0 }) { pool.closeAll() } else { wanted[address] = pool }
        }
        pools = wanted
        let owners = SlotOwners(masters: masterPools, shardForSlot: map.shardForSlot)
        let ownersChanged = !trackedReaders.isEmpty
            && (0..<clusterSlotCount).contains { owners[$0]?.address != slotOwners[$0]?.address }
        slotOwners = owners
        // A moved slot's new owner never saw the reads: tracking starts over.
        if ownersChanged { invalidateAllTracking(reason: "the slot map changed") }
        slotMap = map
        slotsCovered = map.assignedSlotCount
        knownNodes = Set(
            map.shards.flatMap { shard in
                [NodeAddress(host: shard.master.host, port: shard.master.port)]
                    + shard.replicas.map { NodeAddress(host: $0.host, port: $0.port) }
            })
        mapComplete = map.isStandalone || map.coversAllSlots
        if workerIndex == 0 { warmUpMasterConnections(now: loop.nowMilliseconds, force: true) }
        updateReadTargets(map)
        retryShardResubscriptions(force: true)
        retryKeyspaceListeners(force: true)
        resendHeldRequests()
        resendTransactionReplays(force: true)
    }

    /// A `MOVED` named the slot's new owner: remember it now, and learn the
    /// rest of the new topology in the background.
    func learnSlotOwner(_ slot: Int, _ address: NodeAddress) {
        if !trackedReaders.isEmpty && slotOwners[slot]?.address != address {
            invalidateAllTracking(reason: "slot \(slot) moved")
        }
        slotOwners[slot] = pool(for: address)
        shared.requestTopologyRefresh()
    }

    func pool(for address: NodeAddress) -> BackendPool {
        if let existing = pools[address] { return existing }
        let pool = BackendPool(worker: self, address: address, connections: configuration.backendConnections)
        pools[address] = pool
        return pool
    }

    // MARK: routing

    /// Routes one parsed command. `frame` holds its RESP bytes; `arguments`
    /// are spans into it (index 0 is the command name).
    func route(_ session: ClientSession, frame: UnsafeRawBufferPointer, arguments: [ArgumentSpan]) {
        let command = Command(frame: frame, arguments: arguments)
        if commandPolicy.hasRenames && !routingRealName, let row = commands.find(command.argument(0)),
            commandPolicy.isRenamed(row)
        {
            // The nodes know the command by its real name only.
            let real = CommandPolicy.realFrame(of: command, name: row.name)
            routingRealName = true
            defer { routingRealName = false }
            real.frame.withUnsafeBytes { route(session, frame: $0, arguments: real.arguments) }
            return
        }
        commandsProcessed &+= 1
        if !session.authenticated && !admitsUnauthenticated(command, session: session) { return }
        let resolved =
            routingRealName
            ? CommandResolver.resolve(command, in: realCommands, cache: &realNameCache, session: session)
            : CommandResolver.resolve(command, in: commands, cache: &nameCache, session: session)
        guard let spec = resolved else {
            // A refused command inside MULTI aborts the transaction, as in Redis.
            if let transaction = session.transaction, transaction.inMulti { transaction.aborted = true }
            return
        }
        metrics.commandStarted(spec)
        session.lastCommandSlot = spec.metricsSlot
        if commandPolicy.denies(spec) {
            noteAudit(.refused, spec.name, session: session)
            session.replyError(CommandPolicy.deniedMessage(spec))
            if let transaction = session.transaction, transaction.inMulti { transaction.aborted = true }
            return
        }
        if let user = session.restrictedUser, !permits(user, spec, command, session: session) {
            if let transaction = session.transaction, transaction.inMulti { transaction.aborted = true }
            return
        }
        // (After the checks, as in Redis: subscribe mode neither skips
        // deny-commands and ACLs nor hides an unknown command.)
        if session.isSubscribed && routeInSubscribeMode(command, session: session) { return }
        // read-your-writes-ms: every write counts, split, transactional or
        // blocking, scripts too (may-replicate); PING, HELLO and the like do not.
        if readsFromReplicas && !spec.flags.isDisjoint(with: [.write, .mayReplicate]) {
            session.lastWriteAt = loop.turnTime
        }
        if spec.flags.contains(.noscript) && command.count > 2 && (spec.name == "eval" || spec.name == "eval_ro") {
            rememberEvaluatedScript(command.argument(1))
        }
        if session.transaction != nil || spec.affinity == .pinned,
            routeTransaction(spec, command, session: session)
        {
            return
        }
        var splittable = false
        if !CommandHandling.isPlainBySlot(spec) {
            switch CommandHandling.of(spec) {
            case .bySlot: break
            case .bySlotArgument:
                // An invalid slot goes to any master, which says so.
                let slot = command.count >= 3 ? Int(command.string(2)) ?? -1 : -1
                forward(command, slot: (0..<clusterSlotCount).contains(slot) ? slot : -1, session: session)
                return
            case .split: splittable = true
            case .emulated: break  // like bySlot until keys span several slots
            case .local:
                LocalCommands.answer(spec, command, session: session, worker: self)
                return
            case .broadcast:
                broadcast(spec, command, session: session)
                return
            case .info:
                info(command, session: session)
                return
            case .scan:
                scan(command, session: session)
                return
            case .blocking:
                if isNonBlockingStreamRead(spec, command) { break }
                if mustWaitForSharedReplies(session) { return }
                runBlocking(spec, command, session: session)
                return
            case .subscribe:
                if spec.name == "ssubscribe" {
                    shardSubscribe(command, session: session)
                } else if Worker.subscribeCommands.contains(spec.name) {
                    startSubscription(command, session: session)
                } else {
                    unsubscribeWhileNotSubscribed(command, session: session)
                }
                return
            case .transaction:
                return  // routeTransaction took it above
            case .wait:
                if mustWaitForSharedReplies(session) { return }
                wait(command, session: session)
                return
            case .pinned:
                noteAudit(.refused, spec.name, session: session)
                let name = String(spec.name.map { $0 == "|" ? " " : $0 }).uppercased()
                session.replyError(
                    "ERR slotproxy does not support \(name) yet: it needs a backend connection of the client's own")
                return
            case .refused(let reason):
                noteAudit(.refused, spec.name, session: session)
                session.replyError("ERR slotproxy does not forward '\(spec.name)': \(reason)")
                return
            case .debug:
                guard configuration.allowDebug else {
                    noteAudit(.refused, spec.name, session: session)
                    session.replyError(
                        "ERR DEBUG through slotproxy reaches a cluster node and is disabled: set 'allow-debug: yes' in the configuration (or pass --allow-debug) to allow it"
                    )
                    return
                }
                // `DEBUG OBJECT key` routes by its key; the rest to any master.
                if command.count >= 3 && command.argument(1, equals: "object") {
                    session.keyIndices.clearKeepingCapacity()
                    session.keyIndices.append(2)
                    forward(command, slot: slotHasher.slot(of: command.argument(2)), session: session)
                } else {
                    forward(command, slot: -1, session: session)
                }
                return
            }
        }
        guard slotMap != nil else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        session.keyIndices.clearKeepingCapacity()
        // Shard channels (`SPUBLISH`) are "not keys" to Redis but route by slot.
        spec.extractKeys(frame: frame, arguments: arguments, into: &session.keyIndices, includeNotKeys: true)
        var slot = -1
        // (Indexed: iterating the session's array allocates an iterator box in debug builds.)
        var position = 0
        while position < session.keyIndices.count {
            let index = session.keyIndices[position]
            position += 1
            let keySlot = slotHasher.slot(of: command.argument(index))
            if slot == -1 {
                slot = keySlot
            } else if keySlot != slot {
                // Keys in several slots: split when the command allows it and
                // loses nothing by it, else refuse as a cluster node does.
                if splittable {
                    noteAudit(.emulated, spec.name, session: session)
                    split(spec, command, session: session)
                } else if CommandHandling.of(spec) == .emulated {
                    noteAudit(.emulated, spec.name, session: session)
                    emulate(spec, command, session: session)
                } else if moveBetweenSlots(spec, command, session: session)
                    || readStreamsAcrossSlots(spec, command, session: session)
                {
                    noteAudit(.emulated, spec.name, session: session)
                    return
                } else {
                    noteAudit(.crossSlot, spec.name, session: session)
                    session.replyError("CROSSSLOT Keys in request don't hash to the same slot")
                }
                return
            }
        }
        if readsFromReplicas || configuration.readYourWritesMs > 0 {
            forwardConsideringReplicas(spec, command, slot: slot, session: session)
        } else {
            forward(command, slot: slot, session: session)
        }
    }

    /// `read-from` / `read-your-writes-ms`: reads may go to a replica (writes
    /// marked the client's last write in `route`).
    private func forwardConsideringReplicas(_ spec: CommandSpec, _ command: Command, slot: Int, session: ClientSession) {
        guard spec.flags.contains(.readonly), readsFromReplicas, slot >= 0, slotOwners[slot] != nil else {
            forward(command, slot: slot, session: session)
            return
        }
        guard let target = readTarget(slot: slot, session: session) else { return }
        target.connection(for: session).enqueue(sharedRecord(command, slot: slot, session: session))
    }

    /// The record of a command sent as is over a shared connection, in the
    /// client's reply queue.
    @inline(__always)
    private func sharedRecord(_ command: Command, slot: Int, session: ClientSession) -> RequestRecord {
        let record = recordPool.acquire()
        if command.frame.count < Worker.inputHandOverThreshold {
            record.request.append(command.frame)
        } else {
            takeBigRequest(command.frame, into: record.request, from: session)
        }
        record.slot = slot
        session.expectSharedReply(record)
        return record
    }

    /// From this size a request takes its client's input storage (below,
    /// the hand-over's copy of the input's remaining frames could outweigh
    /// the request's own copy).
    static let inputHandOverThreshold = 256 * 1024

    /// A big request is written from its record (see `BackendConnection.enqueue`):
    /// it takes the client's input storage where it can, so the proxy holds
    /// it once. (Out of line: `route` stays small enough to inline the slot hash.)
    @inline(never)
    private func takeBigRequest(_ frame: UnsafeRawBufferPointer, into request: ByteBuffer, from session: ClientSession) {
        if !session.handOverInputFrame(frame, to: request) { request.append(frame) }
    }

    /// The arguments from `first` on grouped by hash slot, slots and
    /// arguments in the client's order (a node takes one slot per command).
    func argumentsBySlot(_ command: Command, from first: Int) -> [(slot: Int, arguments: [[UInt8]])] {
        var groups: [(slot: Int, arguments: [[UInt8]])] = []
        for index in first..<max(first, command.count) {
            let slot = slotHasher.slot(of: command.argument(index))
            if let group = groups.firstIndex(where: { $0.slot == slot }) {
                groups[group].arguments.append(command.bytes(index))
            } else {
                groups.append((slot, [command.bytes(index)]))
            }
        }
        return groups
    }

    /// A command bound for a dedicated connection waits for the client's
    /// requests on shared connections (see `ClientSession.sharedInFlight`):
    /// true, and parsing stops, until they are answered.
    @inline(__always)
    func mustWaitForSharedReplies(_ session: ClientSession) -> Bool {
        guard session.sharedInFlight > 0 else { return false }
        session.waitingForSharedReplies = true
        return true
    }

    /// Sends a command as is to the master of `slot` (-1: any master) over a
    /// shared connection.
    @inline(__always)
    private func forward(_ command: Command, slot: Int, session: ClientSession) {
        if slot >= 0 && slotOwners[slot] == nil && slotMap != nil {
            // No master serves the slot now (mid-failover, or a shard gone):
            // wait for the map to name one, up to failover-timeout-ms.
            holdForFailover(sharedRecord(command, slot: slot, session: session))
            return
        }
        guard let target = targetPool(slot: slot, session: session) else { return }
        let record = sharedRecord(command, slot: slot, session: session)
        if session.isRetrying(slot: slot) {
            session.behindRetry.append(record)  // its client's earlier request for the slot is being retried
            return
        }
        if target.mustHold(now: loop.turnTime) {
            holdForFailover(record)  // its master is down: wait for it, or for a new one
        } else {
            target.connection(for: session).enqueue(record)
        }
    }

    /// The pool of the master serving `slot`, or of any master (round robin)
    /// for -1; nil after answering `CLUSTERDOWN` when there is none.
    @inline(__always)
    private func targetPool(slot: Int, session: ClientSession) -> BackendPool? {
        if slot >= 0 {
            guard let owner = slotOwners[slot] else {
                session.replyError("CLUSTERDOWN Hash slot not served")
                return nil
            }
            return owner
        }
        guard !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return nil
        }
        anyNodeCursor = anyNodeCursor + 1 >= masterPools.count ? 0 : anyNodeCursor + 1
        return masterPools[anyNodeCursor]
    }

    /// A blocking command (`BLPOP`, `BZPOPMIN`, `XREAD ... BLOCK` ...) runs on
    /// a dedicated connection to the owner of its keys' slot, so it never
    /// holds up the connections other clients share; its timeout, 0 (forever)
    /// included, is the node's business, not `request-timeout-ms`'s.
    private func runBlocking(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        guard slotMap != nil, !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        session.keyIndices.clearKeepingCapacity()
        spec.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices)
        var slot = -1
        for index in session.keyIndices {
            let keySlot = slotHasher.slot(of: command.argument(index))
            if slot != -1 && keySlot != slot {
                if !moveBetweenSlots(spec, command, session: session) && !popAcrossSlots(spec, command, session: session)
                    && !readStreamsAcrossSlots(spec, command, session: session)
                {
                    session.replyError("CROSSSLOT Keys in request don't hash to the same slot")
                }
                return
            }
            slot = keySlot
        }
        guard let pool = targetPool(slot: slot, session: session) else { return }
        let record = recordPool.acquire()
        record.request.append(command.frame)
        record.slot = slot
        session.expectReply(record)
        sendBlocking(record, to: pool.address, asking: false, session: session)
    }

    /// A transaction's or subscriber's connection past the same limit.
    func tooManyDedicatedMessage(_ address: NodeAddress) -> String {
        "ERR slotproxy: too many dedicated connections to \(address) (blocking-connections-per-node \(configuration.blockingConnectionsPerNode))"
    }

    func tooManyBlockedMessage(_ address: NodeAddress) -> String {
        "ERR slotproxy: too many blocked clients on \(address) (blocking-connections-per-node \(configuration.blockingConnectionsPerNode))"
    }

    /// Sends a blocking command on a dedicated connection to `address`.
    /// While its master is down it waits for it, or for a new one (a
    /// failover), as any request does, and a node's `CLUSTERDOWN`,
    /// `TRYAGAIN` and the like are retried: a job queue's consumer keeps
    /// waiting through a failover instead of spinning on errors.
    func sendBlocking(_ record: RequestRecord, to address: NodeAddress, asking: Bool, session: ClientSession) {
        record.blocking = true
        // Like on one server, the client's next command waits for this one
        // (for a step of a larger command, the caller's record is the barrier).
        if record.fanOut == nil { session.barrier = record }
        if !asking, let pool = pools[address], pool.mustHold(now: loop.turnTime) {
            holdForFailover(record)
            return
        }
        guard let connection = dedicated.acquire(address, for: session) else {
            failRequest(record, message: tooManyBlockedMessage(address))
            return
        }
        connection.servedSession = session
        connection.servesBlocking = true
        session.blockedOn = connection
        enqueueBlocking(record, on: connection, asking: asking)
    }

    /// `XREAD`/`XREADGROUP` block only with a `BLOCK` option; without it they
    /// are ordinary reads that can share a connection.
    private func isNonBlockingStreamRead(_ spec: CommandSpec, _ command: Command) -> Bool {
        guard spec.name == "xread" || spec.name == "xreadgroup" else { return false }
        return BlockingTimeout.streamBlockArgument(command, group: spec.name == "xreadgroup") == nil
    }

    // MARK: replies

    /// A node answered `record`. Redirects are followed here; everything else
    /// goes to the client (or, for a part of a split command, to its fan-out).
    func handleReply(_ record: RequestRecord, reply: UnsafeRawBufferPointer, kind: ReplyKind, from connection: BackendConnection) {
        if connection.transactionBound {
            if record.watch, record.fanOut != nil, relaxedWatchPartAnswered(record, reply: reply, kind: kind, on: connection) {
                return
            }
            // (Records of a relaxed EXEC's groups never follow redirects:
            // their group's EXEC tells.)
            if transactionReplyHandled(record, reply: reply, kind: kind, on: connection) { return }
            let ends = record.endsTransaction != 0 && record.endsTransaction == connection.transactionNumber
            if case .error(let errorClass) = kind, errorClass == .moved || errorClass == .ask,
                record.redirects < configuration.maxRedirects
            {
                // (An EXEC answered so still ends the transaction: its
                // connection goes back, or it leaks for good.)
                if ends { endTransaction(connection) }
                redirectInTransaction(record, connection: connection)
                return
            }
            if ends { endTransaction(connection) }
        } else if connection.servesBlocking {
            // The blocking command is answered: the connection is free again.
            dedicated.release(connection)
        }
        if case .error(let errorClass) = kind, errorClass == .moved || errorClass == .ask,
            record.redirects < configuration.maxRedirects,
            let redirect = Redirect(
                errorText: UnsafeRawBufferPointer(rebasing: reply[1...]), defaultHost: connection.address.host),
            // Only the cluster's own redirects: for the request's slot. A
            // script can answer any error text (`redis.error_reply('MOVED
            // ...')`); taken as a redirect, it would move every client's
            // traffic for a slot to a host of its choosing.
            record.slot >= 0, redirect.slot == record.slot
        {
            record.redirects += 1
            if redirect.kind == .moved { metrics.counters.redirectsMoved &+= 1 } else { metrics.counters.redirectsAsk &+= 1 }
            let address = NodeAddress(host: redirect.host, port: redirect.port)
            // (A blocking command's redirect is the cluster's: no script runs there.)
            guard knownNodes.contains(address) || connection.isDedicated else {
                // A node the map does not name: a new master taking slots,
                // or a made-up error. Ask the cluster, then retry by the map
                // (which knows the new master by then), rather than connect
                // wherever an error reply says.
                shared.requestTopologyRefresh()
                if record.session?.isClosed != false {
                    if record.fanOut != nil {
                        partAnswered(record, reply: reply)
                    } else if let session = record.session {
                        session.complete(record, reply: reply)
                    } else {
                        recordPool.release(record)
                    }
                } else {
                    // (The client's later requests for the slot wait behind
                    // it: by the time it is retried, they would go straight
                    // to the new master and run first.)
                    startOrderedRetry(record)
                    holdForFailover(record, retryAfterMs: 100)
                }
                return
            }
            let target = pool(for: address)
            if redirect.kind == .moved { learnSlotOwner(redirect.slot, address) }
            if let session = record.session, !session.isClosed {
                if connection.isDedicated {
                    // (A slot that migrated while the command blocked: on
                    // with what is left of its timeout; a step of a
                    // command over several slots too, `resendRaceStep`.)
                    resendBlocking(record, to: address, asking: redirect.kind == .ask, session: session)
                } else {
                    let next =
                        if let identity = connection.identity {
                            target.connection(as: identity, resp3: connection.resp3, tracking: connection.tracking)
                        } else if connection.tracking {
                            target.trackingConnection(pinnedTo: session.id)
                        } else {
                            target.connection(resp3: connection.resp3, pinnedTo: session.id)
                        }
                    if redirect.kind == .moved { holdBackLaterRequests(of: session, behind: record) }
                    next.enqueue(record, asking: redirect.kind == .ask)
                }
            } else {
                recordPool.release(record)
            }
            return
        }
        if case .error(.other) = kind, record.redirects < configuration.maxRedirects,
            reloadScriptAndRetry(record, reply: reply, on: connection)
        {
            return
        }
        if connection.tracking { noteTrackedRead(record) }
        if record.blocking, case .error = kind, retryUnblockedByRoleChange(record, reply: reply) { return }
        if case .error(let errorClass) = kind, !connection.isDedicated || record.blocking, errorClass != .other,
            !(errorClass == .tryAgain && record.fanOut?.rule.isSplitByKey == true),
            retryAfterTransientError(record, errorClass, reply: reply, from: connection.address)
        {
            if errorClass != .tryAgain && errorClass != .loading { shared.requestTopologyRefresh() }
            return
        }
        if record.fanOut != nil {
            if case .error(.tryAgain) = kind, !connection.isDedicated, resplitPerKey(record, connection: connection) {
                return
            }
            partAnswered(record, reply: reply)
            return
        }
        guard let session = record.session else {
            recordPool.release(record)
            return
        }
        session.complete(record, reply: reply)
    }

    /// Answers `record` with an error made by the proxy.
    func failRequest(_ record: RequestRecord, message: String) {
        let text = ByteBuffer(capacity: message.utf8.count + 3)
        text.appendError(message)
        answerLocally(record, reply: text.readable)
    }

    /// The same, for a reply known in advance (`+QUEUED`, a null array).
    func answerLocally(_ record: RequestRecord, reply: StaticString) {
        reply.withUTF8Buffer { answerLocally(record, reply: UnsafeRawBufferPointer($0)) }
    }

    /// Answers `record` with a reply made by the proxy: its client's, or its
    /// fan-out's part.
    func answerLocally(_ record: RequestRecord, reply: UnsafeRawBufferPointer) {
        if record.fanOut != nil {
            partAnswered(record, reply: reply)
            return
        }
        guard let session = record.session else {
            recordPool.release(record)
            return
        }
        session.complete(record, reply: reply)
    }

    // MARK: timeouts

    /// Every 100 ms: a connection whose node has owed a reply and sent
    /// nothing for longer than `request-timeout-ms` (or that is still
    /// connecting past `connect-timeout-ms`) is closed and its requests
    /// answered with errors. Replies on one connection come in order: a node
    /// still answering the requests ahead of the oldest is working, not hung.
    private func tick() {
        let now = loop.nowMilliseconds
        feedWatchdog(now: now)
        closeDrainedSessions(now: now)
        logRefusedClients(now: now)
        publishMetrics(now: now)
        if acceptPaused && drainDeadline == nil {
            acceptPaused = false
            listenerEvent?.add()
            tlsListenerEvent?.add()
        }
        retryShardResubscriptions(force: false)
        retryKeyspaceListeners(force: false)
        resendHeldRequests()
        resendTransactionReplays(force: false)
        runDelayedRelaxedStages(now: now)
        wakeBlockedStepsAgain()
        for connection in dedicated.busy.values {
            if connection.isEstablishing {
                failIfNotEstablishedInTime(connection, now: now)
            } else if connection.transactionBound, let silentSince = connection.silentSince,
                now - silentSince > Int64(configuration.requestTimeoutMs)
            {
                // Transactions answer at once; blocking commands and
                // subscriptions wait as long as they like.
                connection.fail(
                        reason: "no reply within request-timeout-ms \(configuration.requestTimeoutMs)", retryReads: false)
            }
        }
        for pool in pools.values {
            pool.forEachOpenConnection { connection in
                if connection.isEstablishing {
                    failIfNotEstablishedInTime(connection, now: now)
                } else if let silentSince = connection.silentSince,
                    now - silentSince > Int64(configuration.requestTimeoutMs)
                {
                    connection.fail(
                        reason: "no reply within request-timeout-ms \(configuration.requestTimeoutMs)", retryReads: false)
                    tellOtherWorkersNodeIsHung(pool.address)
                }
            }
        }
        if now - lastClientSweepAt >= 1000 {
            lastClientSweepAt = now
            sweepClients(now: now)
        }
    }

    private func failIfNotEstablishedInTime(_ connection: BackendConnection, now: Int64) {
        guard now - connection.connectStartedAt > Int64(configuration.connectTimeoutMs) else { return }
        let what = connection.state == .connecting ? "connect timeout" : "connected, but no answer"
        connection.fail(reason: "\(what) (connect-timeout-ms \(configuration.connectTimeoutMs))")
    }

    private var lastWatchdogAt: Int64 = 0
    private var lastMetricsAt: Int64 = 0
    /// The snapshot published before the last one, refilled by the next.
    private var spareSnapshot = MetricsSnapshot()
    private var lastWarmUpAt: Int64 = .min / 2
    private var publishedReady = false
    /// The slot map covers every slot (worked out once per map, not per tick).
    private var mapComplete = false

    /// Copies the counters where a scrape finds them: when they changed, and
    /// at least once a second (node states and readiness change on their own).
    private func publishMetrics(now: Int64) {
        warmUpMasterConnections(now: now)
        // One master down (a shard failing over) leaves the others serving:
        // still ready, or every proxy (and every app pod with a sidecar)
        // would leave its load balancer at once over a partial outage.
        let ready = mapComplete && (workerIndex != 0 || masterPools.contains(where: \.hasReadyConnection))
        guard metrics.dirty || ready != publishedReady || now - lastMetricsAt >= 1000 else { return }
        metrics.dirty = false
        lastMetricsAt = now
        publishedReady = ready
        spareSnapshot.update(from: metrics)
        spareSnapshot.nodes.removeAll(keepingCapacity: true)
        for pool in pools.values {
            spareSnapshot.nodes.append(
                NodeSnapshot(
                    address: pool.address.description, requests: pool.stats.requests, errors: pool.stats.errors,
                    latencyMsTotal: pool.stats.latencyMsTotal, isMaster: masterPools.contains { $0 === pool },
                    isDown: pool.isDown))
        }
        spareSnapshot.heldRequests = heldRequests.count
        spareSnapshot.blockedClients = blockedClients
        spareSnapshot.slotsCovered = slotsCovered
        spareSnapshot.masters = slotMap?.shards.count ?? 0
        spareSnapshot.ready = ready
        shared.exchange(&spareSnapshot, worker: workerIndex)
    }

    /// Worker 0 keeps a connection open to every master, so `/readyz` knows
    /// which masters are reachable now, and the first request finds it ready.
    /// The other workers redial only masters they found down: without traffic
    /// nothing else would see one come back, and the clients waiting for it
    /// (blocked pops, keyspace links) would wait for a failover that is not
    /// coming. (At most once a second per node, within the connect backoff.)
    func warmUpMasterConnections(now: Int64, force: Bool = false) {
        guard force || now - lastWarmUpAt >= 1000 else { return }
        lastWarmUpAt = now
        for pool in masterPools
        where !pool.hasOpenConnection && now >= pool.nextAttemptAt && (workerIndex == 0 || pool.isDown) {
            _ = pool.connection(resp3: false)
        }
    }

    /// systemd's watchdog, from worker 0's loop and only while every worker
    /// ticks: a hung loop stops the pings and systemd restarts the service.
    private func feedWatchdog(now: Int64) {
        shared.heartbeat(worker: workerIndex, now: now)
        let interval = Int64(shared.notifier.watchdogIntervalMs)
        guard workerIndex == 0, interval > 0, now - lastWatchdogAt >= interval else { return }
        // A worker ticks every 100 ms; one silent for a whole interval (and at
        // least a second) is stuck.
        guard shared.allWorkersTicked(within: max(Int(interval), 1000), now: now) else { return }
        lastWatchdogAt = now
        shared.notifier.watchdog()
    }

    private var lastClientSweepAt: Int64 = 0
    private var sessionsClosedSinceTrim = 0
    /// The last sweep trimmed after a wave: trim once more at the next.
    private var trimAgainNextSweep = false

    /// Once a second: closes clients idle past `timeout`, and drops those
    /// whose unread replies stayed above the soft output limit too long
    /// (also checked whenever replies arrive).
    private func sweepClients(now: Int64) {
        let idleDeadline = configuration.idleTimeoutSeconds > 0 ? now - Int64(configuration.idleTimeoutSeconds) * 1000 : nil
        let soft = configuration.clientOutputLimitSoft
        // (Closing a session while iterating is safe: the loop walks the
        // dictionary as it was, copied only if a close changes it.)
        for session in sessions.values {
            if let idleDeadline, session.isIdle(since: idleDeadline) {
                logger.debug("closing client \(session.id): idle for more than \(configuration.idleTimeoutSeconds) s (timeout)")
                session.close()
            } else if soft > 0 && session.unreadBytes > soft {
                session.enforceOutputLimits()
            }
        }
        releaseFreedMemory(recordsFreed: recordPool.shrink())
    }

    /// After a wave of short-lived clients the allocator keeps the freed
    /// buffers' pages: hand the free ones back to the system after 100
    /// closed sessions, or many pooled records freed (small objects spread
    /// over the heap, each pinning its page), and once more a sweep later
    /// (requests in flight when their clients left are freed only as their
    /// replies arrive). Counted, not read off `mallinfo2`, which crashes
    /// under ThreadSanitizer's allocator.
    private func releaseFreedMemory(recordsFreed: Int) {
        let wave = sessionsClosedSinceTrim >= 100 || recordsFreed >= 256
        if wave || trimAgainNextSweep {
            sessionsClosedSinceTrim = 0
            Allocator.releaseFreePages()
        }
        trimAgainNextSweep = wave
    }
}
