import ClusterTopology
import CommandTable
import RESPWire

/// Pub/Sub: `SUBSCRIBE`/`PSUBSCRIBE` put the client in subscribe mode on a
/// dedicated connection to one master (the cluster bus carries every
/// `PUBLISH` to every node). From then on the client's pub/sub commands go to
/// that connection and everything it answers streams back to the client in
/// Redis's exact format, confirmations and messages alike. The client leaves
/// subscribe mode when its subscription count drops to 0 (or on `RESET`),
/// and the connection goes back to the idle pool.
///
/// RESP2: replies of commands sent before `SUBSCRIBE` come first; the stream
/// waits behind them in the client's reply queue. RESP3: confirmations and
/// messages are push frames, out of band, and other commands keep working.
extension Worker {
    static let subscribeCommands: Set<String> = ["subscribe", "psubscribe"]
    static let subscribeModeCommands: Set<String> = [
        "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe", "ping", "reset",
        "quit",
    ]

    /// A client command while it is subscribed. True when handled here.
    func routeInSubscribeMode(_ command: Command, session: ClientSession) -> Bool {
        let name = command.string(0).lowercased()
        if name == "reset" || name == "quit" {
            // RESET also returns the connections to RESP2, and QUIT ends the
            // stream: the connections are dropped; the proxy answers these.
            endAllSubscriptions(session)
            return false
        }
        // RESP3 allows any command in subscribe mode; it is routed as usual.
        if session.resp3 && (!Worker.subscribeModeCommands.contains(name) || name == "ping") { return false }
        guard Worker.subscribeModeCommands.contains(name) else {
            // Never forwarded: after a pipelined UNSUBSCRIBE the node would run it.
            rejectInSubscribeMode(command, session: session)
            return true
        }
        switch name {
        case "ssubscribe":
            shardSubscribe(command, session: session)
        case "sunsubscribe":
            shardUnsubscribe(command, session: session)
        case "subscribe" where session.subscription == nil, "psubscribe" where session.subscription == nil:
            startSubscription(command, session: session)
        default:
            if let connection = session.subscription {
                connection.enqueueStream(command.frame)
                trackSubscriptions(name, command, session: session)
                sendSubscriptionMarkers(session)
            } else if name == "ping" {
                shardPing(command, session: session)
            } else {
                // Shard channels only: no channel or pattern to drop.
                streamConfirmations(name, command, count: 0, session: session)
            }
        }
        return true
    }

    /// Whether the client is still subscribed is known once every
    /// subscription connection has answered what it was sent: a marker
    /// `PING` behind it on each tells, and the client's next command waits.
    /// After any command sent on a subscription connection: a command the
    /// proxy answers itself (an error in RESP2's subscribe mode, `QUIT`)
    /// would overtake the node's confirmation or drop it, and one routed
    /// elsewhere (RESP3's `PUBLISH`) would run before the subscription is
    /// in place, as with one server it never does.
    func sendSubscriptionMarkers(_ session: ClientSession) {
        if let connection = session.subscription {
            Worker.subscriptionMarkerFrame.withUnsafeBytes { connection.enqueueStream($0) }
            session.regularMarkersOwed += 1
            session.subscriptionMarkersOwed += 1
        }
        for link in (session.shards.map { Array($0.links.values) } ?? []) {
            Worker.subscriptionMarkerFrame.withUnsafeBytes { link.connection.enqueueStream($0) }
            link.sent.append(.marker)
            session.subscriptionMarkersOwed += 1
        }
        settleSubscribeMode(session)
    }

    /// Once no marker is owed: subscriptions down to nothing end, and with
    /// the last of them subscribe mode.
    func settleSubscribeMode(_ session: ClientSession) {
        guard session.subscriptionMarkersOwed == 0 else { return }
        writeOwedShardReplies(session)
        if session.subscription != nil && session.subscriptionCount == 0 { endRegularSubscription(session) }
        if let shards = session.shards {
            releaseIdleShardLinks(session)
            if shards.wantsNothing && shards.links.isEmpty { session.shards = nil }
        }
        if !session.isSubscribed, let stream = session.subscriptionStream {
            session.subscriptionStream = nil
            session.finishStream(stream)
        }
        session.resumeParsing()
    }

    /// Random per process: a client cannot send or publish it by accident.
    static let subscriptionMarker =
        "slotproxy-subscription-marker-" + (0..<16).map { _ in String(Int.random(in: 0..<16), radix: 16) }.joined()
    static let subscriptionMarkerFrame: [UInt8] = Array(
        "*2\r\n$4\r\nPING\r\n$\(subscriptionMarker.utf8.count)\r\n\(subscriptionMarker)\r\n".utf8)

    /// RESP2 refuses other commands in subscribe mode, in Redis's words:
    /// unknown commands and wrong arity first, then the context.
    private func rejectInSubscribeMode(_ command: Command, session: ClientSession) {
        let error = ByteBuffer(capacity: 160)
        if let spec = CommandLookup().find(command.argument(0)) {
            var name = spec.name
            if spec.isContainer && command.count > 1, let sub = spec.subcommand(command.argument(1)) { name = sub.name }
            error.appendError(
                "ERR Can't execute '\(name)': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )
        } else {
            error.appendError(CommandResolver.unknownCommandMessage(command))
        }
        session.streamArrived(error.readable)
    }

    /// `SUBSCRIBE`/`PSUBSCRIBE` from a client not yet subscribed.
    func startSubscription(_ command: Command, session: ClientSession) {
        guard slotMap != nil, !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        anyNodeCursor = anyNodeCursor + 1 >= masterPools.count ? 0 : anyNodeCursor + 1
        let address = masterPools[anyNodeCursor].address
        guard let connection = dedicated.acquire(address, for: session) else {
            session.replyError(tooManyDedicatedMessage(address))
            return
        }
        guard connection.state != .closed else {
            // (It failed at once: no file descriptor, a name not resolved yet.)
            dedicated.release(connection)
            session.replyError("\(BackendConnection.cannotConnectText)\(address): \(connection.lastError)")
            return
        }
        connection.servedSession = session
        connection.subscriber = session
        session.subscription = connection
        openSubscriptionStream(session)
        connection.enqueueStream(command.frame)
        trackSubscriptions(command.string(0).lowercased(), command, session: session)
        sendSubscriptionMarkers(session)
    }

    /// A dedicated connection to `address` whose replies stream to
    /// `session`'s subscriptions; nil when none can be had now (past
    /// `blocking-connections-per-node`, logged with `warning` naming what it
    /// was for, or it failed at once).
    func subscriptionConnection(to address: NodeAddress, for session: ClientSession, warning: String?)
        -> BackendConnection?
    {
        guard let connection = dedicated.acquire(address, for: session) else {
            if let warning {
                logger.warning(
                    "client \(session.id): no connection for \(warning) on \(address) (blocking-connections-per-node \(configuration.blockingConnectionsPerNode))"
                )
            }
            return nil
        }
        guard connection.state != .closed else {
            dedicated.release(connection)
            return nil
        }
        connection.servedSession = session
        connection.subscriber = session
        return connection
    }

    /// RESP2: subscribe mode takes the client's reply queue from here on;
    /// what the subscriptions send waits behind replies still owed.
    func openSubscriptionStream(_ session: ClientSession) {
        guard !session.resp3, session.subscriptionStream == nil else { return }
        let stream = recordPool.acquire()
        stream.isStream = true
        session.expectReply(stream)
        session.subscriptionStream = stream
    }

    /// Keeps the client's channels and patterns, for a resubscription.
    private func trackSubscriptions(_ name: String, _ command: Command, session: ClientSession) {
        let names = (1..<max(1, command.count)).map { command.bytes($0) }
        switch name {
        case "subscribe": session.subscribedChannels.formUnion(names)
        case "psubscribe": session.subscribedPatterns.formUnion(names)
        case "unsubscribe":
            if names.isEmpty { session.subscribedChannels.removeAll() } else { session.subscribedChannels.subtract(names) }
        case "punsubscribe":
            if names.isEmpty { session.subscribedPatterns.removeAll() } else { session.subscribedPatterns.subtract(names) }
        default: return
        }
        syncKeyspaceListeners(session)
    }

    /// `UNSUBSCRIBE`/`PUNSUBSCRIBE`/`SUNSUBSCRIBE` from a client that is not
    /// subscribed: Redis answers one confirmation per channel (one with a
    /// null channel when none is named), each with a count of 0.
    func unsubscribeWhileNotSubscribed(_ command: Command, session: ClientSession) {
        let kind = command.string(0).lowercased()
        let confirmations = Worker.channelArguments(command).map {
            subscriptionConfirmation(kind, $0, count: 0, resp3: session.resp3)
        }
        session.replyLocally { out in
            for confirmation in confirmations { out.append(confirmation) }
        }
    }

    /// The same, in subscribe mode: into the subscription stream.
    func streamConfirmations(_ kind: String, _ command: Command, count: Int, session: ClientSession) {
        for channel in Worker.channelArguments(command) {
            session.streamArrived(subscriptionConfirmation(kind, channel, count: count, resp3: session.resp3))
        }
    }

    private static func channelArguments(_ command: Command) -> [[UInt8]?] {
        command.count > 1 ? (1..<command.count).map { command.bytes($0) } : [nil]
    }

    /// `[kind, channel, count]` as a server sends it (a push in RESP3); a nil
    /// count leaves it out (`[pong, argument]`).
    func subscriptionConfirmation(_ kind: String, _ channel: [UInt8]?, count: Int?, resp3: Bool) -> [UInt8] {
        let out = ByteBuffer(capacity: 64 + (channel?.count ?? 0))
        let items = count == nil ? 2 : 3
        if resp3 {
            out.append(byte: UInt8(ascii: ">"))
            out.appendDecimal(items)
            out.append("\r\n")
        } else {
            out.appendArrayHeader(items)
        }
        out.appendBulk(kind)
        if let channel { out.appendBulk(channel) } else { out.appendNull(resp3: resp3) }
        if let count { out.appendInteger(count) }
        return out.readableArray()
    }

    /// RESP2 in subscribe mode: errors and local answers go into the stream;
    /// otherwise, an ordinary reply.
    func streamOrReply(_ session: ClientSession, _ write: (ByteBuffer) -> Void) {
        guard session.isSubscribed else {
            session.replyLocally(write)
            return
        }
        let out = ByteBuffer(capacity: 128)
        write(out)
        session.streamArrived(out.readable)
    }

    /// Something arrived on a subscription connection.
    func subscriptionData(_ bytes: UnsafeRawBufferPointer, kind: ReplyKind, for session: ClientSession, on connection: BackendConnection) {
        if let shards = session.shards, let link = shards.link(of: connection) {
            shardLinkData(bytes, link: link, session: session, shards: shards)
            return
        }
        if let link = session.keyspaceListeners?.link(of: connection) {
            keyspaceLinkData(bytes, link: link, session: session)
            return
        }
        if session.confirmationsToSwallow > 0, Worker.subscriptionCount(in: bytes) != nil {
            session.confirmationsToSwallow -= 1
            return
        }
        if session.regularMarkersOwed > 0, Worker.isSubscriptionMarker(bytes) {
            session.regularMarkersOwed -= 1
            session.subscriptionMarkersOwed -= 1
            settleSubscribeMode(session)
            return
        }
        if let count = Worker.subscriptionCount(in: bytes) { session.subscriptionCount = count }
        if let listeners = session.keyspaceListeners, listeners.subscriptionNodeIsReplica,
            let channel = Worker.messageChannel(in: bytes), KeyspaceListeners.isNotificationChannel(channel)
        {
            return  // (a link to the master brings them)
        }
        guard withinPubsubOutputLimit(session, adding: bytes.count) else { return }
        session.streamArrived(bytes)
    }

    /// A subscriber that does not read is disconnected before its unread
    /// output would pass `pubsub-output-limit` (checked before the bytes are
    /// added, so the proxy never holds more than the limit for it).
    func withinPubsubOutputLimit(_ session: ClientSession, adding count: Int) -> Bool {
        let unread = session.output.readableBytes + (session.subscriptionStream?.reply.readableBytes ?? 0)
        guard unread + count > configuration.pubsubOutputLimit else { return true }
        logger.warning(
            "closing subscriber client \(session.id): \(unread) bytes unread and \(count) more (pubsub-output-limit \(configuration.pubsubOutputLimit))"
        )
        session.close()
        return false
    }

    /// The subscription's connection died (its node failed): subscribe again
    /// to the same channels and patterns on another master and keep the
    /// client's session; the confirmations of that are swallowed. Messages
    /// published while no node carried the subscription are lost, as they
    /// would be for a client reconnecting itself. With no other master to
    /// go to, the client is disconnected rather than left waiting.
    func subscriptionLost(_ session: ClientSession, from dead: BackendConnection) {
        if let shards = session.shards, let link = shards.link(of: dead) {
            shardLinkLost(link, session: session, shards: shards)
            return
        }
        if let listeners = session.keyspaceListeners, let link = listeners.link(of: dead) {
            keyspaceLinkLost(link, listeners: listeners)
            return
        }
        session.subscription = nil
        if session.regularMarkersOwed > 0 {
            // Its last (un)subscribe is not confirmed yet, and the new node
            // cannot confirm an UNSUBSCRIBE of what it never had: the client
            // could wait for a confirmation forever. It reconnects instead.
            logger.warning("subscriber client \(session.id) disconnected: its subscription connection was lost before confirming its last command")
            session.subscriptionStream = nil
            session.close()
            return
        }
        var acquired: BackendConnection?
        if !session.isClosed, let pool = masterPools.first(where: { $0.address != dead.address }) {
            acquired = subscriptionConnection(to: pool.address, for: session, warning: nil)
        }
        guard let connection = acquired else {
            logger.warning("subscriber client \(session.id) disconnected: its subscription connection was lost")
            session.subscriptionStream = nil
            session.close()
            return
        }
        session.subscription = connection
        session.confirmationsToSwallow = session.subscribedChannels.count + session.subscribedPatterns.count
        if !session.subscribedChannels.isEmpty {
            connection.enqueueInternalStream([Array("SUBSCRIBE".utf8)] + session.subscribedChannels.sorted { $0.lexicographicallyPrecedes($1) })
        }
        if !session.subscribedPatterns.isEmpty {
            connection.enqueueInternalStream([Array("PSUBSCRIBE".utf8)] + session.subscribedPatterns.sorted { $0.lexicographicallyPrecedes($1) })
        }
        logger.info(
            "subscriber client \(session.id): subscription moved from \(dead.address) to \(connection.address) (\(session.confirmationsToSwallow) channels and patterns)"
        )
        syncKeyspaceListeners(session)  // (the new node had a link: no longer needed)
    }

    /// The subscription count a (un)subscribe confirmation carries, if `bytes` is one.
    /// (No bound on its size: a channel name may be long, up to the
    /// proxy's `proto-max-bulk-len`, and its confirmation with it.)
    static func subscriptionCount(in bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count > 4, bytes[0] == UInt8(ascii: "*") || bytes[0] == UInt8(ascii: ">"),
            bytes[1] == UInt8(ascii: "3"), startsWithSubscribeKind(bytes),
            let items = RESPValue.decode(Array(bytes))?.value.elements, items.count == 3,
            let kind = items[0].string?.lowercased(), kind.hasSuffix("subscribe")
        else { return nil }
        return items[2].integer
    }

    /// Whether the frame's first element is `...subscribe` (a confirmation):
    /// known from its first bytes, so a message (`message`, `pmessage`,
    /// `smessage`) of any size is never decoded to find out.
    private static func startsWithSubscribeKind(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // `*3\r\n$<n>\r\n<kind>`: the kinds are 9 to 12 bytes long.
        guard bytes.count > 16, bytes[4] == UInt8(ascii: "$") else { return false }
        let length: Int
        if bytes[6] == 13 {
            length = Int(bytes[5]) - 48
        } else if bytes[7] == 13 {
            length = (Int(bytes[5]) - 48) * 10 + Int(bytes[6]) - 48
        } else {
            return false
        }
        let start = length < 10 ? 8 : 9
        guard length >= 9, length <= 12, bytes.count >= start + length else { return false }
        let suffix = Array("subscribe".utf8)
        for offset in 0..<9 where bytes[start + length - 9 + offset] | 0x20 != suffix[offset] { return false }
        return true
    }

    /// The reply to the marker PING: `[pong, marker]` while subscribed, the
    /// bare marker once the node left subscribe mode.
    static func isSubscriptionMarker(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // The whole reply, exactly (a message that quotes it is not one).
        bytes.elementsEqual(subscriptionMarkerPong) || bytes.elementsEqual(subscriptionMarkerBulk)
    }

    private static let subscriptionMarkerBulk = Array(
        "$\(subscriptionMarker.utf8.count)\r\n\(subscriptionMarker)\r\n".utf8)
    private static let subscriptionMarkerPong = Array("*2\r\n$4\r\npong\r\n".utf8) + subscriptionMarkerBulk

    /// The channels and patterns are all gone: the connection goes back to
    /// the idle pool (the node left subscribe mode on it).
    func endRegularSubscription(_ session: ClientSession) {
        guard let connection = session.subscription else { return }
        session.subscription = nil
        connection.subscriber = nil
        dedicated.release(connection)
        closeKeyspaceListeners(session)
    }

    /// `RESET`, `QUIT`: every subscription connection is dropped at once.
    func endAllSubscriptions(_ session: ClientSession) {
        if let connection = session.subscription {
            session.subscription = nil
            closeSubscriptionConnection(connection)
        }
        closeKeyspaceListeners(session)
        for link in (session.shards.map { Array($0.links.values) } ?? []) { closeSubscriptionConnection(link.connection) }
        session.shards = nil
        session.regularMarkersOwed = 0
        session.subscriptionMarkersOwed = 0
        // Forgotten too, or a later subscription's move to another node
        // would subscribe these again.
        session.subscribedChannels.removeAll()
        session.subscribedPatterns.removeAll()
        session.subscriptionCount = 0
        session.confirmationsToSwallow = 0
        if let stream = session.subscriptionStream {
            session.subscriptionStream = nil
            session.finishStream(stream)
        }
    }

    func closeSubscriptionConnection(_ connection: BackendConnection) {
        connection.subscriber = nil
        connection.close()
        dedicated.release(connection)
    }
}
