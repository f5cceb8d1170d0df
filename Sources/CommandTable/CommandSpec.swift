import RESPWire

/// Where the proxy sends a command.
public enum RequestPolicy: Sendable, Equatable {
    /// All keys must hash to one slot; sent to that slot's owner.
    case singleSlot
    /// Keyless, any master will do (`INFO`, `TIME`, `CLUSTER INFO`, `COMMAND` ...).
    case anyNode
    /// Multi-key command that may be split per slot and merged (`MGET`, `DEL`, `MSET` ...).
    case splitByKey
    /// Sent to every master (`DBSIZE`, `KEYS`, `FLUSHALL`, `SCRIPT LOAD` ...).
    case allMasters
    /// Sent to every node, replicas included (`CONFIG SET`, `SCRIPT KILL` ...).
    case allNodes
    /// Answered by the proxy itself (`PING`, `ECHO`, `SELECT`, `HELLO`, `CLIENT SETNAME` ...).
    case local
}

/// How replies of a command sent to several nodes are merged into one.
public enum ResponsePolicy: Sendable, Equatable {
    case passthrough
    /// Integers added up (`DEL`, `EXISTS`, `DBSIZE`).
    case sum
    /// `+OK` when every part said OK, else the first error (`MSET`, `FLUSHALL`).
    case allSucceeded
    /// Arrays concatenated back into the client's key order (`MGET`).
    case concatenateInKeyOrder
    /// The first non-error reply (`SCRIPT KILL`, `FUNCTION KILL`).
    case firstSuccess
    /// Logical AND of integer arrays (`SCRIPT EXISTS`).
    case logicalAnd
    /// Needs command-specific merging (`KEYS`, `SCAN`, `RANDOMKEY` ...).
    case special
}

/// Which backend connection a command may use.
public enum ConnectionAffinity: Sendable, Equatable {
    /// Any multiplexed connection: the command is self-contained.
    case multiplexed
    /// Binds the client to one connection: `MULTI`, `WATCH`, blocking commands,
    /// subscribe mode, `CLIENT TRACKING`, `MONITOR`.
    case pinned
}

/// Redis command flags (`COMMAND INFO` element 3), as a bit set.
public struct CommandFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let write = CommandFlags(rawValue: 1 << 0)
    public static let readonly = CommandFlags(rawValue: 1 << 1)
    public static let denyoom = CommandFlags(rawValue: 1 << 2)
    public static let module = CommandFlags(rawValue: 1 << 3)
    public static let admin = CommandFlags(rawValue: 1 << 4)
    public static let pubsub = CommandFlags(rawValue: 1 << 5)
    public static let noscript = CommandFlags(rawValue: 1 << 6)
    public static let blocking = CommandFlags(rawValue: 1 << 7)
    public static let loading = CommandFlags(rawValue: 1 << 8)
    public static let stale = CommandFlags(rawValue: 1 << 9)
    public static let skipMonitor = CommandFlags(rawValue: 1 << 10)
    public static let skipSlowlog = CommandFlags(rawValue: 1 << 11)
    public static let asking = CommandFlags(rawValue: 1 << 12)
    public static let fast = CommandFlags(rawValue: 1 << 13)
    public static let noAuth = CommandFlags(rawValue: 1 << 14)
    public static let mayReplicate = CommandFlags(rawValue: 1 << 15)
    public static let noMandatoryKeys = CommandFlags(rawValue: 1 << 16)
    public static let noAsyncLoading = CommandFlags(rawValue: 1 << 17)
    public static let noMulti = CommandFlags(rawValue: 1 << 18)
    public static let movablekeys = CommandFlags(rawValue: 1 << 19)
    public static let allowBusy = CommandFlags(rawValue: 1 << 20)

    /// Redis's flag names, in `COMMAND INFO` spelling.
    public static let names: [(String, CommandFlags)] = [
        ("write", .write), ("readonly", .readonly), ("denyoom", .denyoom), ("module", .module),
        ("admin", .admin), ("pubsub", .pubsub), ("noscript", .noscript), ("blocking", .blocking),
        ("loading", .loading), ("stale", .stale), ("skip_monitor", .skipMonitor),
        ("skip_slowlog", .skipSlowlog), ("asking", .asking), ("fast", .fast), ("no_auth", .noAuth),
        ("may_replicate", .mayReplicate), ("no_mandatory_keys", .noMandatoryKeys),
        ("no_async_loading", .noAsyncLoading), ("no_multi", .noMulti), ("movablekeys", .movablekeys),
        ("allow_busy", .allowBusy),
    ]
}

/// How the first key is found (Redis 7 key spec `begin_search`).
public enum BeginSearch: Sendable, Equatable {
    /// The key is at this argument index (the command name is index 0).
    case index(Int)
    /// The key follows `keyword`, searched from `startFrom` (negative: from the
    /// end, backwards).
    case keyword(String, startFrom: Int)
    /// Not expressible; the command needs its own key finder.
    case unknown
}

/// How the keys after the first are found (Redis 7 key spec `find_keys`).
public enum FindKeys: Sendable, Equatable {
    /// Keys from the begin index up to `lastKey` (relative to it; -1 = last
    /// argument, -2 = one before), every `keyStep` arguments; `limit` > 1 means
    /// only 1/limit of the remaining arguments (`XREAD ... STREAMS k1 k2 id1 id2`).
    case range(lastKey: Int, keyStep: Int, limit: Int)
    /// A count of keys at `keyNumIndex` (relative to the begin index); the first
    /// key `firstKey` after it, then every `keyStep` (`EVAL`, `ZUNIONSTORE`).
    case keyNum(keyNumIndex: Int, firstKey: Int, keyStep: Int)
    case unknown
}

/// One Redis 7 key specification.
public struct KeySpec: Sendable, Equatable {
    public var beginSearch: BeginSearch
    public var findKeys: FindKeys
    /// The spec does not find every key (Redis's `INCOMPLETE` flag): the proxy
    /// uses a command-specific key finder for these commands.
    public var incomplete: Bool
    /// Redis's key spec flags as `COMMAND INFO` spells them (`RW`, `access`, ...).
    public var flags: [String]

    public init(beginSearch: BeginSearch, findKeys: FindKeys, incomplete: Bool = false, flags: [String] = []) {
        self.beginSearch = beginSearch
        self.findKeys = findKeys
        self.incomplete = incomplete
        self.flags = flags
    }
}

/// One row of the command table: what the proxy needs to know to route a command.
public struct CommandSpec: Sendable {
    /// Lower-case name; a subcommand is `container|sub` as in `COMMAND INFO`.
    public let name: String
    /// Redis arity: N exactly N arguments (name included), -N at least N.
    public let arity: Int
    public let flags: CommandFlags
    /// ACL categories without the `@` (`read`, `string`, `fast` ...).
    public let aclCategories: [String]
    /// Legacy first key / last key / step from `COMMAND INFO`.
    public let firstKey: Int
    public let lastKey: Int
    public let keyStep: Int
    public let keySpecs: [KeySpec]
    public let requestPolicy: RequestPolicy
    public let responsePolicy: ResponsePolicy
    public let affinity: ConnectionAffinity
    /// Rows for `CONFIG GET`, `CLIENT SETNAME` ...; empty for plain commands.
    public let subcommands: [CommandSpec]
}
