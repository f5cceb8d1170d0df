import RESPWire

/// A blocking command's own timeout: `BLPOP q 5`, `BLMPOP 5 1 q LEFT`,
/// `XREAD BLOCK 500 STREAMS s $`.
///
/// A command held through a failover keeps to it, as the client expects:
/// once the time is up it gets the null a node answers on timeout, and sent
/// on late it gives the node only what is left (else `BLPOP q 1` could wait
/// `failover-timeout-ms` and then block a whole second more).
struct BlockingTimeout {
    /// Where the timeout is among the command's arguments.
    let argument: Int
    /// `XREAD`'s `BLOCK` counts milliseconds; the list and sorted-set pops seconds.
    let inMilliseconds: Bool
    /// The timeout; never 0 (0 blocks forever: no `BlockingTimeout`).
    let milliseconds: Int64

    /// The timeout of `command` (a blocking command), or nil when it blocks
    /// forever, is not one the proxy knows (a module's), or is malformed (the
    /// node will say so).
    init?(_ command: Command) {
        guard command.count >= 2 else { return nil }
        let name = command.string(0).lowercased()
        let argument: Int
        let inMilliseconds: Bool
        switch name {
        case "blpop", "brpop", "bzpopmin", "bzpopmax", "blmove", "brpoplpush":
            argument = command.count - 1
            inMilliseconds = false
        case "blmpop", "bzmpop":
            argument = 1
            inMilliseconds = false
        case "xread", "xreadgroup":
            guard let block = BlockingTimeout.streamBlockArgument(command, group: name == "xreadgroup") else {
                return nil
            }
            argument = block
            inMilliseconds = true
        default:
            return nil
        }
        let text = command.string(argument)
        let milliseconds: Int64
        if inMilliseconds {
            guard let value = Int64(text), value <= BlockingTimeout.longest else { return nil }
            milliseconds = value
        } else {
            // (Redis 7 rounds a fraction of a millisecond up.)
            guard let seconds = Double(text), seconds.isFinite, seconds * 1000 <= Double(BlockingTimeout.longest) else {
                return nil
            }
            milliseconds = Int64((seconds * 1000).rounded(.up))
        }
        guard milliseconds > 0 else { return nil }
        self.argument = argument
        self.inMilliseconds = inMilliseconds
        self.milliseconds = milliseconds
    }

    /// Longer than this (about 31 years) counts as none: the node judges it
    /// (out of range, say), and a deadline never overflows the clock.
    static let longest: Int64 = 1_000_000_000_000

    /// Where `XREAD`'s (or, with `group`, `XREADGROUP`'s) `BLOCK` value is:
    /// among the options before `STREAMS`; nil without one.
    static func streamBlockArgument(_ command: Command, group: Bool) -> Int? {
        streamReadOptions(command, group: group).block
    }

    /// `XREAD`/`XREADGROUP`'s options as Redis reads them, in any order
    /// (`XREADGROUP BLOCK 0 GROUP g c ...`; a group or consumer may be
    /// named "streams"): where the `BLOCK` value is, and where `STREAMS` is
    /// (nil past an option Redis would refuse, or without it).
    static func streamReadOptions(_ command: Command, group: Bool) -> (block: Int?, streams: Int?) {
        var index = 1
        var block: Int?
        while index < command.count {
            let more = command.count - index - 1
            if command.argument(index, equals: "streams") {
                return (block, index)
            } else if more >= 1 && command.argument(index, equals: "block") {
                block = index + 1
                index += 2
            } else if more >= 1 && command.argument(index, equals: "count") {
                index += 2
            } else if group && more >= 2 && command.argument(index, equals: "group") {
                index += 3
            } else if group && command.argument(index, equals: "noack") {
                index += 1
            } else {
                return (block, nil)
            }
        }
        return (block, nil)
    }

    /// `command` with its timeout set to `remaining` milliseconds (> 0).
    func rewrite(_ command: Command, remaining: Int64, into request: ByteBuffer) {
        var arguments = (0..<command.count).map { command.bytes($0) }
        arguments[argument] = Array(BlockingTimeout.text(remaining, inMilliseconds: inMilliseconds).utf8)
        request.clear()
        request.appendCommand(arguments)
    }

    /// `remaining` ms as the command writes it: "250", or "0.2505" seconds.
    /// The extra half millisecond keeps a server that truncates (Redis 6)
    /// from reading "0.001" as 0, which blocks forever; Redis 7 rounds up.
    static func text(_ remaining: Int64, inMilliseconds: Bool) -> String {
        guard !inMilliseconds else { return String(remaining) }
        let fraction = String(remaining % 1000)
        return "\(remaining / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction + "5"
    }
}
