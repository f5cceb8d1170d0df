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
        "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "reset", "quit",
    ]

    /// A client command while it is subscribed. True when handled here.
    func routeInSubscribeMode(_ command: Command, session: ClientSession) -> Bool {
        guard let connection = session.subscription else { return false }
        let name = command.string(0).lowercased()
        if name == "reset" {
            // RESET also returns the connection to RESP2: it cannot go back to
            // the idle pool as it is. Drop it; the proxy answers the RESET.
            endSubscription(session, keepConnection: false)
            return false
        }
        if name == "quit" {
            session.streamArrived(UnsafeRawBufferPointer(start: ("+OK\r\n" as StaticString).utf8Start, count: 5))
            session.closeWhenDrained()
            return true
        }
        // RESP3 allows any command in subscribe mode; it is routed as usual.
        if session.resp3 && !Worker.subscribeModeCommands.contains(name) { return false }
        if session.resp3 && name == "ping" { return false }
        if Worker.subscribeModeCommands.contains(name) {
            connection.enqueueStream(command.frame)
        } else {
            rejectInSubscribeMode(command, session: session, connection: connection)
        }
        return true
    }

    /// RESP2 refuses other commands in subscribe mode. The node says so in its
    /// own words and in stream order, but a cluster node redirects a keyed
    /// command before it looks at the context: the keys are replaced by one
    /// the node serves (the command is refused, never run).
    private func rejectInSubscribeMode(_ command: Command, session: ClientSession, connection: BackendConnection) {
        let table = CommandLookup()
        guard let spec = table.find(command.argument(0)) else {
            let error = ByteBuffer(capacity: 128)
            error.appendError(CommandResolver.unknownCommandMessage(command))
            session.streamArrived(error.readable)
            return
        }
        session.keyIndices.removeAll(keepingCapacity: true)
        let resolved = spec.isContainer && command.count > 1 ? spec.subcommand(command.argument(1)) ?? spec : spec
        resolved.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices)
        guard !session.keyIndices.isEmpty, let localKey = keyServed(by: connection.address) else {
            connection.enqueueStream(command.frame)
            return
        }
        let keys = Set(session.keyIndices)
        let request = ByteBuffer(capacity: command.frame.count + 64)
        request.appendArrayHeader(command.count)
        for index in 0..<command.count {
            if keys.contains(index) { request.appendBulk(localKey) } else { request.appendBulk(command.argument(index)) }
        }
        connection.enqueueStream(request.readable)
    }

    /// A key whose slot `address` serves (found by trying `{0}`, `{1}` ...).
    private func keyServed(by address: NodeAddress) -> [UInt8]? {
        guard let index = masterPools.firstIndex(where: { $0.address == address }), let map = slotMap else { return nil }
        for n in 0..<100_000 {
            let key = Array("{slotproxy-\(n)}".utf8)
            let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
            if Int(map.shardForSlot[slot]) == index { return key }
        }
        return nil
    }

    /// `SUBSCRIBE`/`PSUBSCRIBE` from a client not yet subscribed.
    func startSubscription(_ command: Command, session: ClientSession) {
        guard slotMap != nil, !masterPools.isEmpty else {
            session.replyError("CLUSTERDOWN The cluster is down")
            return
        }
        anyNodeCursor = anyNodeCursor + 1 >= masterPools.count ? 0 : anyNodeCursor + 1
        let address = masterPools[anyNodeCursor].address
        guard let connection = dedicated.acquire(address, resp3: session.resp3) else {
            session.replyError(
                "ERR slotproxy: too many dedicated connections to \(address) (blocking-connections-per-node \(configuration.blockingConnectionsPerNode))"
            )
            return
        }
        connection.servedSession = session
        connection.subscriber = session
        session.subscription = connection
        if !session.resp3 {
            let stream = recordPool.acquire()
            stream.isStream = true
            session.expectReply(stream)
            session.subscriptionStream = stream
        }
        connection.enqueueStream(command.frame)
    }

    /// `UNSUBSCRIBE`/`PUNSUBSCRIBE` from a client that is not subscribed:
    /// Redis answers one confirmation per channel (one with a null channel
    /// when none is named), each with a count of 0.
    func unsubscribeWhileNotSubscribed(_ command: Command, session: ClientSession) {
        let kind = command.string(0).lowercased()
        let resp3 = session.resp3
        let channels: [[UInt8]?] = command.count > 1 ? (1..<command.count).map { command.bytes($0) } : [nil]
        session.replyLocally { out in
            for channel in channels {
                if resp3 {
                    out.append(">3\r\n")
                } else {
                    out.appendArrayHeader(3)
                }
                out.appendBulk(kind)
                if let channel { out.appendBulk(channel) } else { out.appendNull(resp3: resp3) }
                out.appendInteger(0)
            }
        }
    }

    /// Something arrived on a subscription connection.
    func subscriptionData(_ bytes: UnsafeRawBufferPointer, kind: ReplyKind, for session: ClientSession, on connection: BackendConnection) {
        session.streamArrived(bytes)
        if session.output.readableBytes > configuration.pubsubOutputLimit {
            logger.warning(
                "closing subscriber client \(session.id): \(session.output.readableBytes) bytes unread (pubsub-output-limit \(configuration.pubsubOutputLimit))"
            )
            session.close()
            return
        }
        if Worker.leavesSubscribeMode(bytes) { endSubscription(session) }
    }

    /// The subscription's connection died. Until resubscribing elsewhere is
    /// implemented, the client is disconnected so that it reconnects and
    /// subscribes again, rather than waiting for messages that never come.
    func subscriptionLost(_ session: ClientSession) {
        logger.warning("subscriber client \(session.id) disconnected: its subscription connection was lost")
        session.subscription = nil
        session.subscriptionStream = nil
        session.close()
    }

    /// The last unsubscribe confirmation (count 0) or `+RESET` ends subscribe mode.
    static func leavesSubscribeMode(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count < 512, let first = bytes.first else { return false }
        if first == UInt8(ascii: "+") { return bytes.starts(with: "+RESET\r\n".utf8) }
        guard first == UInt8(ascii: "*") || first == UInt8(ascii: ">"),
            let items = RESPValue.decode(Array(bytes))?.value.elements, items.count == 3,
            let kind = items[0].string?.lowercased(), kind == "unsubscribe" || kind == "punsubscribe",
            items[2].integer == 0
        else { return false }
        return true
    }

    func endSubscription(_ session: ClientSession, keepConnection: Bool = true) {
        guard let connection = session.subscription else { return }
        session.subscription = nil
        connection.subscriber = nil
        if !keepConnection { connection.close() }
        dedicated.release(connection)
        if let stream = session.subscriptionStream {
            session.subscriptionStream = nil
            session.finishStream(stream)
        }
    }
}
