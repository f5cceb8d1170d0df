import ClusterTopology
import RESPWire

/// Keyspace notifications from every master (see `KeyspaceListeners`). A
/// subscriber whose channels or patterns can name a notification channel
/// gets a listening link to each master other than its subscription's node,
/// kept in step with what it subscribes and with the topology (a promoted
/// replica gets a link, a node that is no longer a master loses its link).
///
/// The links forward only notification messages. A `PUBLISH` reaches every
/// node over the cluster bus, so the subscription's own connection already
/// delivers it; a link forwarding it too would deliver it twice.
extension Worker {
    /// Brings the session's links in line with its subscriptions and the
    /// current masters.
    func syncKeyspaceListeners(_ session: ClientSession) {
        let channels = session.subscribedChannels.filter { KeyspaceListeners.isNotificationChannel($0) }
        let patterns = session.subscribedPatterns.filter { KeyspaceListeners.mayMatchNotifications(pattern: $0) }
        guard !session.isClosed, let primary = session.subscription?.address, !(channels.isEmpty && patterns.isEmpty)
        else {
            closeKeyspaceListeners(session)
            return
        }
        let masters = Set(masterPools.map(\.address))
        let listeners = session.keyspaceListeners ?? KeyspaceListeners()
        session.keyspaceListeners = listeners
        keyspaceListeningSessions[ObjectIdentifier(session)] = session
        listeners.lastSyncAt = loop.nowMilliseconds
        listeners.incomplete = false
        // A subscription whose node was demoted (a manual failover) stays
        // there, for the messages the bus brings; the notifications it
        // would publish as a replica (of the writes it replays, `del` for
        // `expired`) are dropped, and its new master gets a link.
        listeners.subscriptionNodeIsReplica = !masters.isEmpty && !masters.contains(primary)
        for (address, link) in listeners.links where address == primary || !masters.contains(address) {
            listeners.links[address] = nil
            closeSubscriptionConnection(link.connection)
        }
        for pool in masterPools where pool.address != primary {
            guard let link = listeners.links[pool.address] ?? openKeyspaceLink(pool, session: session, listeners: listeners)
            else {
                listeners.incomplete = true
                continue
            }
            update(link, channels: channels, patterns: patterns)
        }
    }

    /// Sends a link what it lacks and takes back what the client dropped.
    private func update(_ link: KeyspaceListeners.Link, channels: Set<[UInt8]>, patterns: Set<[UInt8]>) {
        let order: ([UInt8], [UInt8]) -> Bool = { $0.lexicographicallyPrecedes($1) }
        // Subscribe first: a link never drops to no subscription in between.
        let newChannels = channels.subtracting(link.channels).sorted(by: order)
        let newPatterns = patterns.subtracting(link.patterns).sorted(by: order)
        let oldChannels = link.channels.subtracting(channels).sorted(by: order)
        let oldPatterns = link.patterns.subtracting(patterns).sorted(by: order)
        if !newChannels.isEmpty { link.connection.enqueueInternalStream([Array("SUBSCRIBE".utf8)] + newChannels) }
        if !newPatterns.isEmpty { link.connection.enqueueInternalStream([Array("PSUBSCRIBE".utf8)] + newPatterns) }
        if !oldChannels.isEmpty { link.connection.enqueueInternalStream([Array("UNSUBSCRIBE".utf8)] + oldChannels) }
        if !oldPatterns.isEmpty { link.connection.enqueueInternalStream([Array("PUNSUBSCRIBE".utf8)] + oldPatterns) }
        link.channels = channels
        link.patterns = patterns
    }

    private func openKeyspaceLink(_ pool: BackendPool, session: ClientSession, listeners: KeyspaceListeners)
        -> KeyspaceListeners.Link?
    {
        // A node found down is tried again after its backoff: the link's own
        // connect, when it succeeds, marks it up (or its replica's promotion
        // brings a new map).
        guard !pool.isDown || loop.nowMilliseconds >= pool.nextAttemptAt else { return nil }
        // (Tried again once a second: warned about once.)
        let warning = listeners.warnedNoConnection ? nil : "keyspace notifications"
        guard let connection = subscriptionConnection(to: pool.address, for: session, warning: warning) else {
            listeners.warnedNoConnection = true
            return nil
        }
        let link = KeyspaceListeners.Link(connection: connection)
        listeners.links[pool.address] = link
        return link
    }

    func closeKeyspaceListeners(_ session: ClientSession) {
        keyspaceListeningSessions[ObjectIdentifier(session)] = nil
        guard let listeners = session.keyspaceListeners else { return }
        session.keyspaceListeners = nil
        for link in listeners.links.values { closeSubscriptionConnection(link.connection) }
    }

    /// Something arrived on a link: notifications go to the client; the
    /// node's confirmations of the proxy's own commands, and messages the
    /// subscription's connection delivers already, do not.
    func keyspaceLinkData(_ bytes: UnsafeRawBufferPointer, link: KeyspaceListeners.Link, session: ClientSession) {
        if let channel = Worker.messageChannel(in: bytes) {
            if KeyspaceListeners.isNotificationChannel(channel), withinPubsubOutputLimit(session, adding: bytes.count) {
                session.streamArrived(bytes)
            }
            return
        }
        if bytes.first == UInt8(ascii: "-") {
            // (An ACL without the notification channels, say: the client
            // still hears its subscription's node.)
            logger.warning(
                "client \(session.id): keyspace notifications from \(link.connection.address) refused: \(String(decoding: bytes.prefix(200).filter { $0 != 13 && $0 != 10 }, as: UTF8.self))"
            )
        }
    }

    /// A link's connection died: the node gets a new link once it is a live
    /// master again (or its replica is promoted).
    func keyspaceLinkLost(_ link: KeyspaceListeners.Link, listeners: KeyspaceListeners) {
        listeners.links[link.connection.address] = nil
        listeners.incomplete = true
    }

    /// `force` (a new topology): every listening session is brought in
    /// line; otherwise those missing a link, once a second.
    func retryKeyspaceListeners(force: Bool) {
        guard !keyspaceListeningSessions.isEmpty else { return }
        let now = loop.nowMilliseconds
        for session in keyspaceListeningSessions.values {
            guard let listeners = session.keyspaceListeners else {
                keyspaceListeningSessions[ObjectIdentifier(session)] = nil
                continue
            }
            if force || (listeners.incomplete && now - listeners.lastSyncAt >= 1000) { syncKeyspaceListeners(session) }
        }
    }

    /// The channel of a `message` or `pmessage` frame (RESP2 array or RESP3
    /// push); nil for anything else. Read in place: a message's payload is
    /// never decoded.
    static func messageChannel(in bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard bytes.count > 4, bytes[0] == UInt8(ascii: "*") || bytes[0] == UInt8(ascii: ">"), bytes[2] == 13,
            bytes[1] == UInt8(ascii: "3") || bytes[1] == UInt8(ascii: "4"),
            let kind = bulkString(in: bytes, at: 4)
        else { return nil }
        let name = UnsafeRawBufferPointer(rebasing: bytes[kind.range])
        if bytes[1] == UInt8(ascii: "3"), name.elementsEqual("message".utf8) {
            return bulkString(in: bytes, at: kind.next).map { UnsafeRawBufferPointer(rebasing: bytes[$0.range]) }
        }
        if bytes[1] == UInt8(ascii: "4"), name.elementsEqual("pmessage".utf8),
            let pattern = bulkString(in: bytes, at: kind.next)
        {
            return bulkString(in: bytes, at: pattern.next).map { UnsafeRawBufferPointer(rebasing: bytes[$0.range]) }
        }
        return nil
    }

    /// `$<n>\r\n<n bytes>\r\n` at `offset`: where the bytes are, and what follows.
    private static func bulkString(in bytes: UnsafeRawBufferPointer, at offset: Int) -> (range: Range<Int>, next: Int)? {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "$") else { return nil }
        var index = offset + 1
        var length = 0
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9"), length < 1 << 40 {
            length = length * 10 + Int(bytes[index] - UInt8(ascii: "0"))
            index += 1
        }
        guard index > offset + 1, index + 1 < bytes.count, bytes[index] == 13 else { return nil }
        let start = index + 2
        guard start + length + 2 <= bytes.count, bytes[start + length] == 13 else { return nil }
        return (start..<(start + length), start + length + 2)
    }
}
