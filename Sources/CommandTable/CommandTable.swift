/// The table of Redis commands the proxy knows, and the lookups the data path
/// uses to find a command's row from the bytes of its name.
///
/// The rows are generated from Redis 7.0's `COMMAND` reply
/// (`scripts/gen_command_table.py`, `RedisCommands.swift`). A lookup never
/// creates a `String`: the name bytes are case-folded as they are hashed and
/// compared against a static open-addressed table built once.
public enum CommandTable {
    /// Every top-level command, sorted by name; subcommands hang off their container.
    public static let all: [CommandSpec] = redisCommands

    /// The row at `index`, as returned by `lookupIndex`.
    public static subscript(index: Int) -> CommandSpec { all[index] }

    /// The index into `all` of the command called `name` (any case), or nil.
    @inlinable
    public static func lookupIndex(_ name: UnsafeRawBufferPointer) -> Int? {
        nameIndex.find(name)
    }

    /// The row of the command called `name` (any case), or nil. Allocation-free.
    @inlinable
    public static func lookup(_ name: UnsafeRawBufferPointer) -> CommandSpec? {
        guard let index = nameIndex.find(name) else { return nil }
        return all[index]
    }

    /// The row for `name` (any case); `container|sub` finds a subcommand, as
    /// `COMMAND INFO` names it. For tools and start-up, not the data path.
    public static func lookup(name: String) -> CommandSpec? {
        var name = name
        return name.withUTF8 { utf8 in
            let bytes = UnsafeRawBufferPointer(utf8)
            guard let bar = bytes.firstIndex(of: UInt8(ascii: "|")) else { return lookup(bytes) }
            guard let container = lookup(UnsafeRawBufferPointer(rebasing: bytes[..<bar])) else { return nil }
            return container.subcommand(UnsafeRawBufferPointer(rebasing: bytes[(bar + 1)...]))
        }
    }

    @usableFromInline static let nameIndex = CommandNameIndex(names: all.map(\.name))
}

/// The table for the data path. Every access to a static `let` checks its
/// one-time initialiser, which on Linux is a runtime call (`swift_once`); a
/// worker keeps one of these in a stored property and skips that per request.
/// A class: passing it costs one retain, where a struct of five arrays cost five.
public final class CommandLookup: Sendable {
    @usableFromInline let index: CommandNameIndex
    @usableFromInline let rows: [CommandSpec]

    public init() {
        index = CommandTable.nameIndex
        rows = CommandTable.all
    }

    /// A table where some top-level commands answer to another name
    /// (`rename-command`): `renames` maps a lower-case command name to its new
    /// name, or to "" to make it unknown. The rows keep their real names,
    /// which is what the nodes are sent.
    public init(renames: [String: String]) {
        rows = CommandTable.all
        index =
            renames.isEmpty ? CommandTable.nameIndex : CommandNameIndex(names: rows.map { renames[$0.name] ?? $0.name })
    }

    /// The row of the command called `name` (any case), or nil. Allocation-free.
    @inlinable public func find(_ name: UnsafeRawBufferPointer) -> CommandSpec? {
        guard let i = index.find(name) else { return nil }
        return rows[i]
    }
}

extension CommandSpec {
    /// A container (`CONFIG`, `CLIENT`, `OBJECT` ...) only names a family: the
    /// row that routes is the subcommand's, found from argument 1.
    @inlinable public var isContainer: Bool { !subcommands.isEmpty }

    /// The subcommand called `name` (any case, without the `container|`
    /// prefix), or nil. A linear scan: containers have at most a few dozen rows.
    public func subcommand(_ name: UnsafeRawBufferPointer) -> CommandSpec? {
        // Subcommand rows are named `container|sub`; skip the prefix.
        let prefix = self.name.utf8.count + 1
        for sub in subcommands {
            let full = sub.name.utf8
            guard full.count - prefix == name.count else { continue }
            var i = 0
            var matches = true
            for byte in full.dropFirst(prefix) {
                if asciiLowercase(name[i]) != byte {
                    matches = false
                    break
                }
                i += 1
            }
            if matches { return sub }
        }
        return nil
    }

    /// Whether a command of `n` arguments (the name included; for a subcommand
    /// the container's name and the subcommand's) passes Redis's arity check:
    /// arity N means exactly N, -N at least N.
    @inlinable public func acceptsArgumentCount(_ n: Int) -> Bool {
        arity >= 0 ? n == arity : n >= -arity
    }
}

/// ASCII lower case; other bytes unchanged (Redis compares names with `strcasecmp`).
@inlinable @inline(__always)
func asciiLowercase(_ byte: UInt8) -> UInt8 {
    byte &- 65 < 26 ? byte | 0x20 : byte
}

/// An open-addressed hash table from lower-case command names to their index
/// in `CommandTable.all`. Built once; read without locks or allocation.
///
/// The hash is 32-bit FNV-1a of the case-folded bytes; collisions probe
/// linearly. The table is at least four times larger than the number of names,
/// so a miss usually ends at the first empty slot.
@usableFromInline
struct CommandNameIndex: Sendable {
    /// Per slot: the name's index, or -1 for empty.
    @usableFromInline let slots: [Int32]
    /// All names, lower case, back to back.
    @usableFromInline let nameBytes: [UInt8]
    /// Per name: its start in `nameBytes` and its length.
    @usableFromInline let nameStart: [Int32]
    @usableFromInline let nameLength: [Int32]
    @usableFromInline let mask: Int
    @usableFromInline let maxNameLength: Int

    init(names: [String]) {
        var capacity = 16
        while capacity < names.count * 4 { capacity *= 2 }
        var slots = [Int32](repeating: -1, count: capacity)
        var bytes: [UInt8] = []
        var starts: [Int32] = []
        var lengths: [Int32] = []
        var longest = 0
        for (index, name) in names.enumerated() {
            let utf8 = name.utf8.map(asciiLowercase)
            starts.append(Int32(bytes.count))
            lengths.append(Int32(utf8.count))
            bytes.append(contentsOf: utf8)
            longest = max(longest, utf8.count)
            let hash = utf8.withUnsafeBytes { CommandNameIndex.hash($0) }
            var slot = Int(hash) & (capacity - 1)
            while slots[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Int32(index)
        }
        self.slots = slots
        self.nameBytes = bytes
        self.nameStart = starts
        self.nameLength = lengths
        self.mask = capacity - 1
        self.maxNameLength = longest
    }

    /// FNV-1a over the ASCII-lowercased bytes.
    @inlinable @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in bytes {
            hash = (hash ^ UInt32(asciiLowercase(byte))) &* 16_777_619
        }
        return hash
    }

    @inlinable
    func find(_ name: UnsafeRawBufferPointer) -> Int? {
        let count = name.count
        guard count > 0, count <= maxNameLength else { return nil }
        var slot = Int(CommandNameIndex.hash(name)) & mask
        return slots.withUnsafeBufferPointer { slots in
            nameBytes.withUnsafeBufferPointer { stored in
                while true {
                    let entry = Int(slots[slot])
                    if entry < 0 { return nil }
                    if Int(nameLength[entry]) == count {
                        let start = Int(nameStart[entry])
                        var i = 0
                        while i < count && asciiLowercase(name[i]) == stored[start + i] { i += 1 }
                        if i == count { return entry }
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
    }
}
