import CommandTable
import RESPWire

/// Finds a command's table row (its subcommand's, for containers such as
/// `CONFIG GET`) and checks its arity, answering errors exactly as Redis words
/// them. Returns nil when the client has been answered with an error.
enum CommandResolver {
    static func resolve(
        _ command: Command, in table: CommandLookup, cache: inout CommandNameCache, session: ClientSession
    ) -> CommandSpec? {
        let name = command.argument(0)
        let key = CommandNameCache.key(name)
        let found: CommandSpec?
        if key != 0 && key == cache.key {
            found = cache.row
        } else {
            // (A learned row, a newer Redis's or a module's, is cached as well:
            // its lookup takes a lock.)
            found = table.find(name) ?? session.worker.shared.learnedCommand(command.string(0).lowercased())
            if key != 0, let found {
                cache.key = key
                cache.row = found
            }
        }
        guard var spec = found else {
            if command.argument(0, equals: "proxy") { return LocalCommands.proxy }
            session.worker.noteAudit(.refused, clipped(command.string(0)).lowercased(), session: session)
            session.replyError(unknownCommandMessage(command))
            return nil
        }
        if spec.isContainer {
            guard command.count >= 2 else {
                // A bare `COMMAND` is a command of its own (every command's row).
                if spec.acceptsArgumentCount(command.count) { return spec }
                session.replyError("ERR wrong number of arguments for '\(spec.name)' command")
                return nil
            }
            // `CLIENT SETINFO` (Redis 7.2) is sent by current client libraries
            // on connect; the proxy answers it even in front of 7.0 nodes.
            if spec.name == "client" && command.argument(1, equals: "setinfo") {
                guard LocalCommands.clientSetInfo.acceptsArgumentCount(command.count) else {
                    session.replyError("ERR wrong number of arguments for 'client|setinfo' command")
                    return nil
                }
                return LocalCommands.clientSetInfo
            }
            guard
                let subcommand = spec.subcommand(command.argument(1))
                    ?? session.worker.shared.learnedCommand("\(spec.name)|\(command.string(1).lowercased())")
            else {
                session.replyError(
                    "ERR unknown subcommand '\(clipped(command.string(1)))'. Try \(spec.name.uppercased()) HELP.")
                return nil
            }
            spec = subcommand
        }
        guard spec.acceptsArgumentCount(command.count) else {
            session.replyError("ERR wrong number of arguments for '\(spec.name)' command")
            return nil
        }
        return spec
    }

    /// `unknown command 'NAME', with args beginning with: 'a' 'b' `, with the
    /// same 128-byte budget for the arguments as Redis.
    static func unknownCommandMessage(_ command: Command) -> String {
        var args = ""
        var index = 1
        while index < command.count && args.utf8.count < 128 {
            let budget = 128 - args.utf8.count
            args += "'" + String(decoding: command.argument(index).prefix(budget), as: UTF8.self) + "' "
            index += 1
        }
        return "ERR unknown command '\(clipped(command.string(0)))', with args beginning with: \(args)"
    }

    static func clipped(_ text: String) -> String {
        text.utf8.count <= 128 ? text : String(decoding: text.utf8.prefix(128), as: UTF8.self)
    }
}

/// The last command name a worker looked up, as its bytes: a pipeline of
/// `GET`s hashes the name once, then compares one word per request.
struct CommandNameCache {
    var key: UInt64 = 0
    var row: CommandSpec?

    /// The name's bytes (1 to 7, exactly as sent: another spelling is a miss)
    /// and its length in one word; 0 for longer names, which are not cached.
    @inline(__always) static func key(_ name: UnsafeRawBufferPointer) -> UInt64 {
        let count = name.count
        guard count > 0 && count < 8 else { return 0 }
        var key = UInt64(count) << 56
        var i = 0
        while i < count {
            key |= UInt64(name[i]) << (8 * i)
            i += 1
        }
        return key
    }
}
