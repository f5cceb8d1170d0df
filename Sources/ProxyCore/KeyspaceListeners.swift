import ClusterTopology

/// One subscriber's keyspace notifications from the masters other than the
/// node its subscription lives on. A node publishes `__keyspace@...` and
/// `__keyevent@...` messages for its own keys only, and the cluster bus does
/// not carry them, so a client that subscribes to them through the proxy gets
/// one listening connection (a link) to each other master, subscribed to the
/// notification channels and patterns among its own. `Worker+KeyspaceNotifications`
/// does the I/O.
final class KeyspaceListeners {
    final class Link {
        let connection: BackendConnection
        /// What this link's node was sent (and not unsubscribed since).
        var channels = Set<[UInt8]>()
        var patterns = Set<[UInt8]>()
        init(connection: BackendConnection) { self.connection = connection }
    }

    var links: [NodeAddress: Link] = [:]
    /// The subscription's own node is no longer a master: its notifications
    /// are dropped (see `Worker.syncKeyspaceListeners`).
    var subscriptionNodeIsReplica = false
    /// A master is missing a link (no connection could be had, or it died):
    /// tried again once a second and on every topology update.
    var incomplete = false
    var lastSyncAt: Int64 = .min / 2
    /// "No connection" is logged once per subscriber, not once a second.
    var warnedNoConnection = false

    func link(of connection: BackendConnection) -> Link? {
        guard let link = links[connection.address], link.connection === connection else { return nil }
        return link
    }

    static let channelPrefixes = [Array("__keyspace@".utf8), Array("__keyevent@".utf8)]

    /// Whether a channel name is a keyspace notification's.
    static func isNotificationChannel<Bytes: Collection<UInt8>>(_ channel: Bytes) -> Bool {
        channelPrefixes.contains { channel.starts(with: $0) }
    }

    /// The same, of a channel written as a RESP bulk string (`$<n>\r\n<name>\r\n`).
    static func isNotificationChannel(bulk: ArraySlice<UInt8>) -> Bool {
        guard let newline = bulk.firstIndex(of: 10) else { return false }
        return isNotificationChannel(bulk[(newline + 1)...])
    }

    /// Whether a glob pattern can match a notification channel: its literal
    /// start (up to the first `*`, `?`, `[` or `\`) agrees with one of the
    /// prefixes as far as both go. `*` and `__key*` can; `news.*` cannot.
    static func mayMatchNotifications(pattern: [UInt8]) -> Bool {
        let special: Set<UInt8> = [UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "\\")]
        let literal = pattern.prefix { !special.contains($0) }
        return channelPrefixes.contains { prefix in
            zip(literal, prefix).allSatisfy { $0 == $1 }
        }
    }
}
