import RESPWire

/// `XREAD BLOCK ... STREAMS s $` waits for entries added after it blocked.
/// Sent again (its master failed over or died, its slot moved), `$` would
/// mean "after the last entry" once more, on the new master: an entry added
/// meanwhile would be skipped. So each time such a read is sent with a `$`,
/// the stream's last ID is looked up in the same pipeline just before it
/// (a script around `XREVRANGE s + - COUNT 1` that answers only the ID: the
/// entry itself may be megabytes), and a resend reads after that ID instead.
/// (An entry added between the lookup and the read is then read by the
/// resend too: it came after the client's command, so it is news to it.)
extension Worker {
    /// Queues a blocking command on its dedicated connection, behind the
    /// lookups its `$` IDs need.
    func enqueueBlocking(_ record: RequestRecord, on connection: BackendConnection, asking: Bool) {
        if Worker.mayHaveDollarID(record.request.readable) {
            for (index, key) in Worker.dollarStreams(of: record) {
                if asking { connection.enqueueInternal([Array("ASKING".utf8)]) }
                connection.enqueueLookup(
                    [Array("EVAL".utf8), Worker.newestEntryIDScript, Array("1".utf8), key], for: record, index: index)
            }
        }
        connection.enqueue(record, asking: asking)
    }

    /// The ID of a stream's newest entry, or `0-0` when it has none (no
    /// entry, or no stream: every entry added later is newer).
    static let newestEntryIDScript = Array(
        "local e = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) if e[1] then return e[1][1] end return '0-0'"
            .utf8)

    /// A lookup's reply: the ID of stream `index`'s newest entry.
    func lookupAnswered(_ reply: UnsafeRawBufferPointer, kind: ReplyKind, for record: RequestRecord, index: Int) {
        // (An error, WRONGTYPE say: the read meets it too; `$` stays.)
        guard let id = Worker.newestEntryID(inLookupReply: reply) else { return }
        if record.streamLastIDs.count <= index {
            record.streamLastIDs += Array(repeating: nil, count: index + 1 - record.streamLastIDs.count)
        }
        record.streamLastIDs[index] = id
    }

    /// Before a resend: each `$` whose stream's last ID was looked up reads
    /// after that ID.
    func replaceLookedUpDollarIDs(_ record: RequestRecord) {
        guard !record.streamLastIDs.isEmpty,
            let arguments = Worker.withCommand(of: record, { Worker.replacingDollarIDs($0, with: record.streamLastIDs) })
                ?? nil
        else { return }
        record.request.clear()
        record.request.appendCommand(arguments)
    }

    /// A blocking `XREAD`'s arguments with stream `i`'s `$` replaced by
    /// `lastIDs[i]` where there is one; nil for any other command.
    static func replacingDollarIDs(_ command: Command, with lastIDs: [[UInt8]?]) -> [[UInt8]]? {
        guard let ids = streamIDRange(command) else { return nil }
        var arguments = (0..<command.count).map { command.bytes($0) }
        for (stream, position) in ids.enumerated() where stream < lastIDs.count {
            if let id = lastIDs[stream], command.argument(position, equals: "$") { arguments[position] = id }
        }
        return arguments
    }

    /// A cheap test before parsing: `$` as a whole argument is `$1\r\n$\r\n`.
    static func mayHaveDollarID(_ request: UnsafeRawBufferPointer) -> Bool {
        containsText(request, "$1\r\n$\r\n")
    }

    /// A blocking `XREAD`'s streams whose ID is `$`, with their index
    /// among its streams (none for other commands).
    static func dollarStreams(of record: RequestRecord) -> [(index: Int, key: [UInt8])] {
        withCommand(of: record) { command -> [(index: Int, key: [UInt8])] in
            guard let ids = streamIDRange(command) else { return [] }
            let count = ids.count
            return ids.enumerated().compactMap { stream, position in
                command.argument(position, equals: "$") ? (stream, command.bytes(position - count)) : nil
            }
        } ?? []
    }

    /// Where a blocking `XREAD`'s IDs are (nil for any other command, or
    /// one a node would refuse).
    static func streamIDRange(_ command: Command) -> Range<Int>? {
        guard command.argument(0, equals: "xread") else { return nil }
        let options = BlockingTimeout.streamReadOptions(command, group: false)
        guard options.block != nil, let streams = options.streams else { return nil }
        let pairs = command.count - streams - 1
        guard pairs > 0, pairs % 2 == 0 else { return nil }
        return (streams + 1 + pairs / 2)..<command.count
    }

    /// The ID in the lookup's reply (a bulk string); nil for anything else
    /// (an error: a key of another type, scripts not allowed).
    static func newestEntryID(inLookupReply reply: UnsafeRawBufferPointer) -> [UInt8]? {
        guard reply.first == UInt8(ascii: "$"), case .bulkString(let id)? = RESPValue.decode(Array(reply))?.value,
            !id.isEmpty
        else { return nil }
        return id
    }
}
