import RESPWire
import Synchronization

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
    public var flags: [String] {
        didSet { keyFlags = KeySpecFlags(names: flags) }
    }
    /// `flags` as a bit set, so the data path never compares strings.
    public private(set) var keyFlags: KeySpecFlags

    public init(beginSearch: BeginSearch, findKeys: FindKeys, incomplete: Bool = false, flags: [String] = []) {
        self.beginSearch = beginSearch
        self.findKeys = findKeys
        self.incomplete = incomplete
        self.flags = flags
        self.keyFlags = KeySpecFlags(names: flags)
    }
}

/// Redis key spec flags (`CMD_KEY_*`) as a bit set.
public struct KeySpecFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Read-only access to the key's value.
    public static let ro = KeySpecFlags(rawValue: 1 << 0)
    /// Read and write access.
    public static let rw = KeySpecFlags(rawValue: 1 << 1)
    /// Overwrites the value without reading it.
    public static let ow = KeySpecFlags(rawValue: 1 << 2)
    /// Deletes the key.
    public static let rm = KeySpecFlags(rawValue: 1 << 3)
    public static let access = KeySpecFlags(rawValue: 1 << 4)
    public static let update = KeySpecFlags(rawValue: 1 << 5)
    public static let insert = KeySpecFlags(rawValue: 1 << 6)
    public static let delete = KeySpecFlags(rawValue: 1 << 7)
    /// Not a key but hashed like one: the shard channel of `SPUBLISH`/`SSUBSCRIBE`.
    public static let notKey = KeySpecFlags(rawValue: 1 << 8)
    public static let incomplete = KeySpecFlags(rawValue: 1 << 9)
    /// The flags depend on the arguments (`SET ... GET`, `BITFIELD`): Redis then
    /// asks the command's own key function instead of the specs.
    public static let variableFlags = KeySpecFlags(rawValue: 1 << 10)

    /// Redis's names, in `COMMAND INFO` spelling.
    public static let names: [(String, KeySpecFlags)] = [
        ("RO", .ro), ("RW", .rw), ("OW", .ow), ("RM", .rm), ("access", .access), ("update", .update),
        ("insert", .insert), ("delete", .delete), ("not_key", .notKey), ("incomplete", .incomplete),
        ("variable_flags", .variableFlags),
    ]

    /// The bits of the names it knows; unknown names (a newer Redis) are ignored.
    public init(names: [String]) {
        var bits: KeySpecFlags = []
        for name in names {
            for (known, flag) in KeySpecFlags.names where known == name { bits.insert(flag) }
        }
        self = bits
    }
}

/// Redis's command-specific key finder (`get_keys_function` in its command JSON
/// files, `getkeys_proc` in C). Redis calls it when the key specs fail: a spec is
/// `incomplete` or `unknown`, a key count does not parse, or the keys run past the
/// arguments; and instead of the specs when their flags vary (`SET`, `BITFIELD`).
public enum GetKeysFunction: Sendable, Equatable {
    /// None: when the specs fail, the command has no keys.
    case none
    /// `genericGetKeys`: a key count at `keyCountIndex` (parsed with `atoi`), that
    /// many keys from `firstKeyIndex` every `keyStep`, then the destination at
    /// `storeKeyIndex` when it is not 0 (`ZUNIONSTORE`, `EVAL`, `LMPOP` ...).
    case keyCount(storeKeyIndex: Int, keyCountIndex: Int, firstKeyIndex: Int, keyStep: Int)
    /// `sortGetKeys`: the sorted key and the last `STORE` destination.
    case sort
    /// `sortROGetKeys`: the sorted key only.
    case sortReadOnly
    /// `migrateGetKeys`: the key at 3, or the keys after `KEYS` when it is empty.
    case migrate
    /// `georadiusGetKeys`: the key and the last `STORE`/`STOREDIST` destination.
    case georadius
    /// `xreadGetKeys`: the first half of the arguments after `STREAMS`.
    case xread
    /// `setGetKeys`, `bitfieldGetKeys`: always argument 1.
    case firstArgument
}

/// One row of the command table: what the proxy needs to know to route a command.
/// A class, not a struct: the router looks a row up for every request, and
/// handing out one reference is cheaper than copying a dozen fields.
public final class CommandSpec: Sendable {
    /// Lower-case name; a subcommand is `container|sub` as in `COMMAND INFO`.
    public let name: String
    /// `EVAL`, `EVALSHA`, `FCALL` and their `_RO` forms: they run a script,
    /// which can answer any error text.
    public var runsScript: Bool { name.hasPrefix("eval") || name.hasPrefix("fcall") }
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
    /// Command tips from `COMMAND INFO` (`request_policy:all_shards`,
    /// `nondeterministic_output` ...); the policies above are derived from them.
    public let tips: [String]
    /// What Redis falls back to when the key specs cannot find the keys.
    public let getKeysFunction: GetKeysFunction
    /// The key specs boiled down for the data path (see `KeyExtraction.swift`).
    @usableFromInline let keyPlan: KeyPlan
    /// A dense number per row, in creation order: where the row's counters
    /// sit in a worker's metrics arrays (an index, not a dictionary lookup,
    /// on the data path). `CommandSpec.metricsName(slot)` names it.
    public let metricsSlot: Int

    private static let nextMetricsSlot = Atomic<Int>(0)

    /// How many rows have a metrics slot so far.
    public static var metricsSlotCount: Int { nextMetricsSlot.load(ordering: .acquiring) }

    public init(
        name: String, arity: Int, flags: CommandFlags, aclCategories: [String],
        firstKey: Int = 0, lastKey: Int = 0, keyStep: Int = 0, tips: [String] = [],
        keySpecs: [KeySpec] = [], getKeysFunction: GetKeysFunction = .none,
        requestPolicy: RequestPolicy, responsePolicy: ResponsePolicy, affinity: ConnectionAffinity,
        subcommands: [CommandSpec] = []
    ) {
        self.name = name
        self.arity = arity
        self.flags = flags
        self.aclCategories = aclCategories
        self.firstKey = firstKey
        self.lastKey = lastKey
        self.keyStep = keyStep
        self.tips = tips
        self.keySpecs = keySpecs
        self.getKeysFunction = getKeysFunction
        self.requestPolicy = requestPolicy
        self.responsePolicy = responsePolicy
        self.affinity = affinity
        self.subcommands = subcommands
        self.keyPlan = KeyPlan(keySpecs: keySpecs, getKeysFunction: getKeysFunction)
        metricsSlot = CommandSpec.nextMetricsSlot.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
    }
}
