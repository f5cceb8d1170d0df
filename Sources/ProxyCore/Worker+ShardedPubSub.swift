import ClusterTopology
import RESPWire

/// Sharded Pub/Sub (`SSUBSCRIBE`/`SUNSUBSCRIBE`/`SPUBLISH`, Redis 7): a shard
/// channel's messages are only on the master of its slot, so a client's
/// channels are subscribed on one dedicated connection per master (see
/// `ShardedSubscriptions`). The client still sees one server: one
/// confirmation per channel, in the order it named them, with a count over
/// all its shard channels; its next command waits until they are written.
///
/// When a slot moves to another master, the old owner drops its channels
/// with a `sunsubscribe` push and the proxy subscribes them again on the new
/// owner (following `MOVED`; an `ASK`, mid-migration, is retried once a
/// second until the move is over); when a link's node dies, its channels are
/// subscribed again once the topology names a live master. The client sees
/// none of it; messages published while no node carried a channel are lost,
/// as they would be for a client reconnecting itself.
extension Worker {
    /// `SSUBSCRIBE` from the client, in or out of subscribe mode.
    func shardSubscribe(_ command: Command, session: ClientSession) {
        guard command.count >= 2 else {
            streamOrReply(session) { $0.appendError("ERR wrong number of arguments for 'ssubscribe' command") }
            return
        }
        guard slotMap != nil else {
            streamOrReply(session) { $0.appendError("CLUSTERDOWN The cluster is down") }
            return
        }
        let shards = enterShardedSubscribeMode(session)
        // One SSUBSCRIBE per slot (a node refuses channels of several slots
        // in one), in the order the client named them.
        for group in argumentsBySlot(command, from: 1) {
            subscribeShardChannels(group.arguments, slot: group.slot, fromClient: true, session: session, shards: shards)
        }
        for index in 1..<command.count { shards.owedReplies.append(("ssubscribe", command.bytes(index))) }
        sendSubscriptionMarkers(session)
    }

    /// `SUNSUBSCRIBE`, in subscribe mode or from a client with shard channels.
    func shardUnsubscribe(_ command: Command, session: ClientSession) {
        let shards = enterShardedSubscribeMode(session)
        var channels = (1..<command.count).map { command.bytes($0) }
        if command.count == 1 {
            channels = shards.wanted.sorted { $0.lexicographicallyPrecedes($1) }
        }
        if channels.isEmpty {
            shards.owedReplies.append(("sunsubscribe", nil))
        } else {
            for channel in channels { shards.owedReplies.append(("sunsubscribe", channel)) }
        }
        var groups: [(address: NodeAddress, channels: [[UInt8]])] = []
        for channel in channels {
            shards.homeless.remove(channel)
            guard let address = shards.home.removeValue(forKey: channel) else { continue }
            shards.links[address]?.channels.remove(channel)
            if let group = groups.firstIndex(where: { $0.address == address }) {
                groups[group].channels.append(channel)
            } else {
                groups.append((address, [channel]))
            }
        }
        for group in groups {
            guard let link = shards.links[group.address] else { continue }
            link.connection.enqueueInternalStream([Array("SUNSUBSCRIBE".utf8)] + group.channels)
            link.sent.append(.unsubscribe(channels: group.channels, confirmed: 0))
        }
        sendSubscriptionMarkers(session)
    }

    /// Every link has answered the client's command: its confirmations, in
    /// order, counted as one server counts them.
    func writeOwedShardReplies(_ session: ClientSession) {
        guard let shards = session.shards, !shards.owedReplies.isEmpty else { return }
        var refusalsWritten = Set<Int>()
        for (kind, channel) in shards.owedReplies {
            if let channel {
                if kind == "ssubscribe", let refusal = shards.refusalOf[channel] {
                    if refusalsWritten.insert(refusal).inserted { session.streamArrived(shards.refusals[refusal]) }
                    continue
                }
                if kind == "ssubscribe" { shards.confirmed.insert(channel) } else { shards.confirmed.remove(channel) }
            }
            session.streamArrived(subscriptionConfirmation(kind, channel, count: shards.confirmed.count, resp3: session.resp3))
        }
        shards.owedReplies.removeAll()
        shards.refusals.removeAll()
        shards.refusalOf.removeAll()
    }

    /// A client's `PING` in RESP2 subscribe mode with only shard channels.
    func shardPing(_ command: Command, session: ClientSession) {
        guard let link = session.shards?.links.values.first(where: { $0.connection.state != .closed }) else {
            session.streamArrived(subscriptionConfirmation("pong", [], count: nil, resp3: session.resp3))
            return
        }
        link.connection.enqueueStream(command.frame)
        link.sent.append(.clientCommand)
    }

    /// The session's shard subscriptions, created on its first `SSUBSCRIBE`
    /// (which puts a RESP2 client in subscribe mode).
    private func enterShardedSubscribeMode(_ session: ClientSession) -> ShardedSubscriptions {
        if let shards = session.shards { return shards }
        let shards = ShardedSubscriptions()
        session.shards = shards
        openSubscriptionStream(session)
        return shards
    }

    /// Sends `SSUBSCRIBE channels` (all of `slot`) to `address`, by default
    /// the slot's master; without a connection there, the channels wait.
    private func subscribeShardChannels(
        _ channels: [[UInt8]], slot: Int, fromClient: Bool, to target: NodeAddress? = nil, redirects: Int = 0,
        session: ClientSession, shards: ShardedSubscriptions
    ) {
        for channel in channels {
            if let old = shards.home[channel] { shards.links[old]?.channels.remove(channel) }
        }
        guard let address = target ?? slotOwners[slot]?.address,
            let link = shardLink(to: address, session: session, shards: shards)
        else {
            for channel in channels {
                shards.home[channel] = nil
                shards.homeless.insert(channel)
            }
            awaitShardResubscription(session)
            return
        }
        for channel in channels {
            shards.homeless.remove(channel)
            shards.home[channel] = address
            link.channels.insert(channel)
        }
        link.connection.enqueueInternalStream([Array("SSUBSCRIBE".utf8)] + channels)
        link.sent.append(.subscribe(channels: channels, confirmed: 0, fromClient: fromClient, redirects: redirects))
        if fromClient && redirects > 0 {
            // Redirected: the client's confirmations wait for this node too.
            Worker.subscriptionMarkerFrame.withUnsafeBytes { link.connection.enqueueStream($0) }
            link.sent.append(.marker)
            session.subscriptionMarkersOwed += 1
        }
    }

    /// The session's link to `address`, opened on first use; nil when no
    /// connection can be had now.
    private func shardLink(to address: NodeAddress, session: ClientSession, shards: ShardedSubscriptions)
        -> ShardedSubscriptions.Link?
    {
        if let link = shards.links[address], link.connection.state != .closed { return link }
        guard let connection = subscriptionConnection(to: address, for: session, warning: "shard channels") else {
            return nil
        }
        let link = ShardedSubscriptions.Link(connection: connection)
        shards.links[address] = link
        return link
    }

    /// Something arrived on one of the session's shard links.
    func shardLinkData(
        _ bytes: UnsafeRawBufferPointer, link: ShardedSubscriptions.Link, session: ClientSession,
        shards: ShardedSubscriptions
    ) {
        if Worker.isShardMessage(bytes) {
            if withinPubsubOutputLimit(session, adding: bytes.count) { session.streamArrived(bytes) }
            return
        }
        guard let value = RESPValue.decode(Array(bytes))?.value else {
            session.streamArrived(bytes)
            return
        }
        if case .error = value {
            shardLinkError(bytes, link: link, session: session, shards: shards)
            return
        }
        if let items = value.elements, items.count == 3, let kind = items[0].string?.lowercased(),
            case .bulkString(let channel) = items[1]
        {
            if kind == "ssubscribe" {
                shardChannelSubscribed(channel, link: link, session: session, shards: shards)
                return
            }
            if kind == "sunsubscribe" {
                shardChannelUnsubscribed(channel, link: link, session: session, shards: shards)
                return
            }
        }
        switch link.sent.first {
        case .marker? where Worker.isSubscriptionMarker(bytes):
            link.sent.removeFirst()
            session.subscriptionMarkersOwed -= 1
            settleSubscribeMode(session)
        case .clientCommand?:
            link.sent.removeFirst()
            session.streamArrived(bytes)
        default:
            session.streamArrived(bytes)
        }
    }

    private func shardChannelSubscribed(
        _ channel: [UInt8], link: ShardedSubscriptions.Link, session: ClientSession, shards: ShardedSubscriptions
    ) {
        guard case .subscribe(let channels, let confirmed, let fromClient, let redirects)? = link.sent.first else {
            return
        }
        if confirmed + 1 >= channels.count {
            link.sent.removeFirst()
        } else {
            link.sent[0] = .subscribe(channels: channels, confirmed: confirmed + 1, fromClient: fromClient, redirects: redirects)
        }
        // The client's confirmations are written once every link has answered.
    }

    private func shardChannelUnsubscribed(
        _ channel: [UInt8], link: ShardedSubscriptions.Link, session: ClientSession, shards: ShardedSubscriptions
    ) {
        if case .unsubscribe(let channels, let confirmed)? = link.sent.first, channels[confirmed...].contains(channel) {
            if confirmed + 1 >= channels.count {
                link.sent.removeFirst()
            } else {
                link.sent[0] = .unsubscribe(channels: channels, confirmed: confirmed + 1)
            }
            return
        }
        // Unasked: the node gave the channel's slot away. Subscribe it again
        // where the slot went (the old owner's MOVED says where).
        link.channels.remove(channel)
        guard shards.home[channel] == link.connection.address else { return }
        shards.home[channel] = nil
        shards.homeless.insert(channel)
        logger.info("client \(session.id): shard channel left \(link.connection.address) (slot migrated); subscribing it again")
        shared.requestTopologyRefresh()
        resubscribeHomelessChannels(session)
    }

    /// An error on a link answers the oldest command sent on it.
    private func shardLinkError(
        _ bytes: UnsafeRawBufferPointer, link: ShardedSubscriptions.Link, session: ClientSession,
        shards: ShardedSubscriptions
    ) {
        guard !link.sent.isEmpty else {
            session.streamArrived(bytes)
            return
        }
        let head = link.sent.removeFirst()
        switch head {
        case .subscribe(let channels, _, let fromClient, let redirects):
            // Only channels still wanted and still meant for this link: the
            // client may have unsubscribed some meanwhile.
            let pending = channels.filter { shards.home[$0] == link.connection.address }
            for channel in pending { link.channels.remove(channel) }
            if redirects < configuration.maxRedirects,
                let redirect = Redirect(
                    errorText: UnsafeRawBufferPointer(rebasing: bytes[1...]), defaultHost: link.connection.address.host)
            {
                if redirect.kind == .ask {
                    // The slot is half-way to another master. ASKING is refused
                    // on a subscribed RESP2 connection: wait for the move to end.
                    for channel in pending {
                        shards.home[channel] = nil
                        shards.homeless.insert(channel)
                    }
                    awaitShardResubscription(session)
                } else {
                    let address = NodeAddress(host: redirect.host, port: redirect.port)
                    learnSlotOwner(redirect.slot, address)
                    subscribeShardChannels(
                        pending, slot: redirect.slot, fromClient: fromClient, to: address, redirects: redirects + 1,
                        session: session, shards: shards)
                }
            } else if fromClient {
                // Refused (cluster down, no permission ...): as a node refuses it.
                shards.refusals.append(Array(bytes))
                for channel in pending {
                    shards.home[channel] = nil
                    shards.refusalOf[channel] = shards.refusals.count - 1
                }
            } else {
                logger.warning(
                    "client \(session.id): subscribing shard channels again on \(link.connection.address) failed: \(String(decoding: bytes, as: UTF8.self).trimmingSuffix())"
                )
                for channel in pending {
                    shards.home[channel] = nil
                    shards.homeless.insert(channel)
                }
                awaitShardResubscription(session)
            }
            releaseIdleShardLinks(session)
        case .unsubscribe:
            break  // the node lost the slot, and the channels with it: gone either way
        case .marker:
            session.subscriptionMarkersOwed -= 1
            settleSubscribeMode(session)
        case .clientCommand:
            session.streamArrived(bytes)
        }
    }

    /// A link's connection died: its channels wait for a live master, and
    /// what it still owed the client is answered here.
    func shardLinkLost(_ link: ShardedSubscriptions.Link, session: ClientSession, shards: ShardedSubscriptions) {
        for entry in link.sent {
            switch entry {
            case .marker: session.subscriptionMarkersOwed -= 1
            case .clientCommand: session.streamArrived(subscriptionConfirmation("pong", [], count: nil, resp3: session.resp3))
            case .subscribe, .unsubscribe: break
            }
        }
        link.sent.removeAll()
        shards.evict(link)
        if !shards.homeless.isEmpty {
            logger.warning(
                "client \(session.id): shard subscription connection to \(link.connection.address) lost; \(shards.homeless.count) channels wait for a live master"
            )
            awaitShardResubscription(session)
        }
        settleSubscribeMode(session)
    }

    /// Queues the session for another try at its homeless channels: on the
    /// next topology update, or from the tick once a second.
    private func awaitShardResubscription(_ session: ClientSession) {
        sessionsAwaitingResubscription[ObjectIdentifier(session)] = session
    }

    /// Tries the homeless channels of queued sessions; `force` (a new
    /// topology) skips the once-a-second pace.
    func retryShardResubscriptions(force: Bool) {
        guard !sessionsAwaitingResubscription.isEmpty else { return }
        let now = loop.nowMilliseconds
        for (id, session) in sessionsAwaitingResubscription {
            guard !session.isClosed, let shards = session.shards, !shards.homeless.isEmpty else {
                sessionsAwaitingResubscription[id] = nil
                continue
            }
            if force || shards.lastResubscribeAt.map({ now - $0 >= 1000 }) ?? true {
                sessionsAwaitingResubscription[id] = nil
                resubscribeHomelessChannels(session)
            }
        }
    }

    private func resubscribeHomelessChannels(_ session: ClientSession) {
        guard let shards = session.shards, !shards.homeless.isEmpty else { return }
        shards.lastResubscribeAt = loop.nowMilliseconds
        var groups: [(slot: Int, channels: [[UInt8]])] = []
        for channel in shards.homeless.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let slot = channel.withUnsafeBytes { slotHasher.slot(of: $0) }
            if let group = groups.firstIndex(where: { $0.slot == slot }) {
                groups[group].channels.append(channel)
            } else {
                groups.append((slot, [channel]))
            }
        }
        for group in groups {
            subscribeShardChannels(group.channels, slot: group.slot, fromClient: false, session: session, shards: shards)
        }
        releaseIdleShardLinks(session)
    }

    /// Links left without channels or anything owed are closed (the node
    /// may still count the connection as subscribed, so it is not reused).
    func releaseIdleShardLinks(_ session: ClientSession) {
        guard let shards = session.shards else { return }
        for (address, link) in shards.links where link.isIdle {
            shards.links[address] = nil
            closeSubscriptionConnection(link.connection)
        }
    }

    /// `smessage` frames pass through untouched, without decoding.
    static func isShardMessage(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix = "3\r\n$8\r\nsmessage\r\n".utf8
        return bytes.count > prefix.count + 1 && (bytes[0] == UInt8(ascii: "*") || bytes[0] == UInt8(ascii: ">"))
            && UnsafeRawBufferPointer(rebasing: bytes[1...prefix.count]).elementsEqual(prefix)
    }
}

extension String {
    fileprivate func trimmingSuffix() -> String {
        var text = self
        while let last = text.last, last == "\r" || last == "\n" { text.removeLast() }
        return text
    }
}
