import ClusterTopology

/// One client's sharded subscriptions (`SSUBSCRIBE`, Redis 7): a shard
/// channel lives on the master of its slot, so the client gets one dedicated
/// connection (a link) per master its channels map to. This holds which
/// channel sits where and what each link still owes; `Worker+ShardedPubSub`
/// does the I/O.
///
/// The client sees one server. The nodes' own confirmations are swallowed;
/// once every link has answered a client's `SSUBSCRIBE`/`SUNSUBSCRIBE` (marker
/// `PING`s tell), the proxy writes the confirmations in the order the client
/// named the channels, counted over all its shard channels as one server
/// counts them. Resubscriptions the proxy makes on its own (a slot
/// migrated, a node died) are never shown to it.
final class ShardedSubscriptions {
    /// What the proxy sent on a link, oldest first: the replies come back in
    /// this order (messages and the server's own `sunsubscribe` pushes come
    /// in between and are told apart by their content).
    enum Sent {
        /// `SSUBSCRIBE` of `channels` (one slot); `confirmed` of them are in.
        /// `fromClient`: for the client's command (an error goes to it).
        case subscribe(channels: [[UInt8]], confirmed: Int, fromClient: Bool, redirects: Int)
        /// `SUNSUBSCRIBE` the client asked for.
        case unsubscribe(channels: [[UInt8]], confirmed: Int)
        /// The proxy's marker `PING` (see `Worker.subscriptionMarker`).
        case marker
        /// A client's `PING`: its reply goes to the client as it is.
        case clientCommand
    }

    final class Link {
        let connection: BackendConnection
        var sent: [Sent] = []
        /// Channels subscribed (or being subscribed) on this link.
        var channels = Set<[UInt8]>()
        init(connection: BackendConnection) { self.connection = connection }
        var isIdle: Bool { channels.isEmpty && sent.isEmpty }
    }

    var links: [NodeAddress: Link] = [:]
    /// The channels the client wants that a node carries, with that node.
    var home: [[UInt8]: NodeAddress] = [:]
    /// The channels the client wants that wait for a node (their master
    /// died, or redirects went round in circles).
    var homeless = Set<[UInt8]>()
    /// The channels the client was told it is subscribed to: the count in
    /// its confirmations.
    var confirmed = Set<[UInt8]>()
    /// When homeless channels were last tried (a dead node is retried at a
    /// steady pace, never in a spin).
    var lastResubscribeAt: Int64?
    /// The confirmations owed for the client's command in progress, in order
    /// (a nil channel: `SUNSUBSCRIBE` with none to drop).
    var owedReplies: [(kind: String, channel: [UInt8]?)] = []
    /// Errors that refused channels of that command, each written once.
    var refusals: [[UInt8]] = []
    var refusalOf: [[UInt8]: Int] = [:]
    /// Marker `PING`s sent on the links and not answered yet.
    var markersOwed: Int { links.values.reduce(0) { $0 + $1.sent.count { if case .marker = $0 { true } else { false } } } }

    var wantsNothing: Bool { home.isEmpty && homeless.isEmpty }
    var wanted: [[UInt8]] { Array(home.keys) + Array(homeless) }

    func link(of connection: BackendConnection) -> Link? {
        guard let link = links[connection.address], link.connection === connection else { return nil }
        return link
    }

    /// Drops `link` (its connection is gone): its channels wait for a node.
    func evict(_ link: Link) {
        links[link.connection.address] = nil
        for channel in link.channels where home[channel] == link.connection.address {
            home[channel] = nil
            homeless.insert(channel)
        }
    }
}
