import CommandTable
import EventLoop
import RESPWire

#if canImport(Glibc)
    import Glibc
#endif

/// One slow request: as Redis's slow log entry, plus the time split between
/// the proxy (reading, routing, queueing, writing) and the cluster nodes.
struct SlowLogEntry: Sendable {
    var id: Int
    var unixTime: Int
    var micros: Int64
    var backendMicros: Int64
    var arguments: [[UInt8]]
    var clientAddress: String
    var clientName: String
}

/// The proxy's slow log, shared by the workers. Touched only when a request
/// was slow (and by `SLOWLOG`), never on the common path.
final class SlowLog: Sendable {
    private let state = Locked<(entries: [SlowLogEntry], nextID: Int)>(([], 0))

    func add(_ entry: SlowLogEntry, keep maxLength: Int) {
        state.withLock { state in
            var entry = entry
            entry.id = state.nextID
            state.nextID += 1
            state.entries.append(entry)
            if state.entries.count > maxLength { state.entries.removeFirst(state.entries.count - maxLength) }
        }
    }

    /// The newest `count` entries, newest first.
    func newest(_ count: Int) -> [SlowLogEntry] {
        state.withLock { Array($0.entries.suffix(max(0, count)).reversed()) }
    }

    var count: Int { state.withLock { $0.entries.count } }

    func reset() { state.withLock { $0.entries.removeAll() } }
}

extension Worker {
    /// `slowlog-log-slower-than`, or never when negative.
    var slowlogThresholdMicros: Int64 {
        configuration.slowlogSlowerThanMicros < 0 ? .max : Int64(configuration.slowlogSlowerThanMicros)
    }

    /// Logs `record` (answered `micros` after it was read). Its arguments
    /// come from its request bytes, cut as Redis cuts them: at most 32
    /// arguments of at most 128 bytes each.
    func logSlow(_ record: RequestRecord, micros: Int64, session: ClientSession) {
        guard configuration.slowlogMaxLength > 0 else { return }
        var parser = RequestParser()
        let raw = record.request.readable
        var arguments: [[UInt8]] = []
        if case .complete = parser.parse(raw) {
            for (index, span) in parser.arguments.enumerated() {
                if index == 31 && parser.arguments.count > 32 {
                    arguments.append(Array("... (\(parser.arguments.count - 31) more arguments)".utf8))
                    break
                }
                let bytes = raw[span.offset..<(span.offset + span.length)]
                arguments.append(
                    bytes.count > 128 ? Array(bytes.prefix(128)) + Array("... (\(bytes.count - 128) more bytes)".utf8) : Array(bytes))
            }
        } else if record.metricsSlot >= 0 {
            // (A split or merged command: its own request bytes are its parts'.)
            arguments = [Array(CommandNames.name(ofSlot: record.metricsSlot).utf8)]
        }
        shared.slowLog.add(
            SlowLogEntry(
                id: 0, unixTime: Int(time(nil)), micros: micros, backendMicros: min(record.backendMicros, micros),
                arguments: arguments, clientAddress: Socket.peerAddress(session.fd),
                clientName: session.clientName.map { String(decoding: $0, as: UTF8.self) } ?? ""),
            keep: configuration.slowlogMaxLength)
    }

    /// `SLOWLOG GET [count]`, `LEN`, `RESET`, `HELP`, answered by the proxy:
    /// entries are `[id, unix time, total µs, [args], client address, client
    /// name, proxy µs, backend µs]`, the first six as Redis gives them.
    func slowlogCommand(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        switch spec.name {
        case "slowlog|get":
            var count = 10
            if command.count >= 3 {
                guard let n = Int(command.string(2)), n >= -1 else {
                    session.replyError("ERR count should be greater than or equal to -1")
                    return
                }
                count = n == -1 ? Int.max : n
            }
            let entries = shared.slowLog.newest(count)
            session.replyLocally { out in
                out.appendArrayHeader(entries.count)
                for entry in entries {
                    out.appendArrayHeader(8)
                    out.appendInteger(entry.id)
                    out.appendInteger(entry.unixTime)
                    out.appendInteger(Int(entry.micros))
                    out.appendCommand(entry.arguments)
                    out.appendBulk(entry.clientAddress)
                    out.appendBulk(entry.clientName)
                    out.appendInteger(Int(entry.micros - entry.backendMicros))
                    out.appendInteger(Int(entry.backendMicros))
                }
            }
        case "slowlog|len":
            let count = shared.slowLog.count
            session.replyLocally { $0.appendInteger(count) }
        case "slowlog|reset":
            shared.slowLog.reset()
            session.replyLocally { $0.append("+OK\r\n") }
        default:
            let lines = [
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of: id, timestamp, time in microseconds, arguments array,",
                "    client IP and port, client name, then (slotproxy) the microseconds spent in",
                "    the proxy and at the cluster nodes.",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Print this help.",
            ]
            session.replyLocally { $0.appendStatusLines(lines) }
        }
    }
}
