import CommandTable
import RESPWire

/// `deny-commands` and `rename-command`, resolved once per worker to table
/// rows so the data path compares identities, never names.
///
/// Neither costs anything on the common path: a denied command that routes
/// plainly by slot is rare enough that the router only looks when one is
/// configured (`deniesPlainCommands`), and renames are only looked for when
/// some are configured.
struct CommandPolicy {
    /// Rows refused with an error naming `deny-commands` (a container's
    /// name denies all of its subcommands).
    private let denied: Set<ObjectIdentifier>
    /// Whether a denied row is one the router's fast path would forward.
    let deniesPlainCommands: Bool
    /// Top-level rows that answer to another name than their own.
    private let renamed: Set<ObjectIdentifier>
    let hasRenames: Bool
    let hasDenials: Bool

    init(denied names: [String], renames: [String: String]) {
        var rows: [CommandSpec] = []
        for name in names {
            guard let spec = CommandTable.lookup(name: name) else { continue }  // checked at config load
            rows.append(spec)
            rows.append(contentsOf: spec.subcommands)
        }
        denied = Set(rows.map(ObjectIdentifier.init))
        deniesPlainCommands = rows.contains(where: CommandHandling.isPlainBySlot)
        hasDenials = !denied.isEmpty
        renamed = Set(renames.keys.compactMap { CommandTable.lookup(name: $0) }.map(ObjectIdentifier.init))
        hasRenames = !renamed.isEmpty
    }

    @inline(__always) func denies(_ spec: CommandSpec) -> Bool {
        hasDenials && (deniesPlainCommands || !CommandHandling.isPlainBySlot(spec))
            && denied.contains(ObjectIdentifier(spec))
    }

    func isRenamed(_ spec: CommandSpec) -> Bool { renamed.contains(ObjectIdentifier(spec)) }

    static func deniedMessage(_ spec: CommandSpec) -> String {
        let name = String(spec.name.map { $0 == "|" ? " " : $0 }).uppercased()
        return "ERR \(name) is denied by slotproxy's 'deny-commands' setting (it can hurt the whole cluster through a shared proxy); remove it from deny-commands to allow it"
    }

    /// The command re-encoded under its real name, for the nodes, with the
    /// spans of its arguments.
    static func realFrame(of command: Command, name: String) -> (frame: [UInt8], arguments: [ArgumentSpan]) {
        let buffer = ByteBuffer(capacity: command.frame.count + 16)
        var arguments: [[UInt8]] = [Array(name.utf8)]
        for index in 1..<command.count { arguments.append(command.bytes(index)) }
        buffer.appendCommand(arguments)
        let frame = Array(buffer.readable)
        // Each argument's bytes follow its `$<len>\r\n` header and end before `\r\n`.
        var spans: [ArgumentSpan] = []
        var position = frame.firstIndex(of: UInt8(ascii: "\n"))! + 1
        for argument in arguments {
            let headerEnd = frame[position...].firstIndex(of: UInt8(ascii: "\n"))! + 1
            spans.append(ArgumentSpan(offset: headerEnd, length: argument.count))
            position = headerEnd + argument.count + 2
        }
        return (frame, spans)
    }
}
