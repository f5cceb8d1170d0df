import CommandTable
import RESPWire

/// `CLIENT TRACKING ON` (client-side caching), default mode, RESP3 clients.
///
/// A tracking client's requests go over the pool's tracking connections,
/// which have `CLIENT TRACKING ON` themselves, so each node remembers the
/// keys read over them and pushes an `invalidate` when one changes. The proxy
/// remembers which of its clients read each key: a key is noted when the
/// reply of a read-only command arrives (the node tracks it from then on;
/// an invalidation that came earlier on the same connection was for an
/// older read). An invalidation goes to every client that read the key and
/// still tracks, and the key is forgotten, as on the node. It is written
/// after the replies the client is still owed, so it never overtakes the
/// stale value it invalidates.
///
/// When the proxy cannot know what a node still tracks (a tracking
/// connection lost, the slot map changed), every tracking client gets an
/// invalidation of everything (`invalidate` with a null, as after
/// `FLUSHALL`). Past `tracking-table-max-keys`, some key is invalidated
/// early to make room, as Redis does at its own `tracking-table-max-keys`.
///
/// Not supported (clear errors): `BCAST`, `PREFIX`, `OPTIN`, `OPTOUT`,
/// `NOLOOP`, `REDIRECT`, and RESP2 clients (their invalidations need a
/// redirect connection). Reads inside `MULTI` are not tracked.
extension Worker {
    /// `CLIENT TRACKING ON|OFF [options]`.
    func clientTracking(_ command: Command, session: ClientSession) {
        let mode = command.string(2).lowercased()
        guard mode == "on" || mode == "off" else {
            session.replyError("ERR syntax error")
            return
        }
        if command.count > 3 {
            session.replyError(
                "ERR slotproxy supports only the default mode of CLIENT TRACKING: no BCAST, PREFIX, OPTIN, OPTOUT, NOLOOP or REDIRECT"
            )
            return
        }
        if mode == "off" {
            stopTracking(session)
            session.replyLocally { $0.append("+OK\r\n") }
            return
        }
        guard session.resp3 else {
            session.replyError(
                "ERR slotproxy supports CLIENT TRACKING for RESP3 clients only (HELLO 3): invalidations are push messages")
            return
        }
        session.tracking = true
        session.replyLocally { $0.append("+OK\r\n") }
    }

    /// `CLIENT TRACKINGINFO`, `CLIENT GETREDIR`, `CLIENT CACHING`: answered
    /// as a server answers for a client in the default mode (or not tracking).
    func trackingQuery(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        let on = session.tracking
        let resp3 = session.resp3
        switch spec.name {
        case "client|getredir":
            session.replyLocally { $0.appendInteger(on ? 0 : -1) }
        case "client|trackinginfo":
            session.replyLocally { out in
                out.appendMapHeader(3, resp3: resp3)
                out.appendBulk("flags")
                out.appendSetHeader(1, resp3: resp3)  // (a set, as Redis's)
                out.appendBulk(on ? "on" : "off")
                out.appendBulk("redirect")
                out.appendInteger(on ? 0 : -1)
                out.appendBulk("prefixes")
                out.appendArrayHeader(0)
            }
        default:  // client|caching: only meaningful in OPTIN/OPTOUT, which are not supported
            let answer = command.string(2).lowercased()
            if !on {
                session.replyError(
                    "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
                )
            } else if answer == "yes" {
                session.replyError("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
            } else if answer == "no" {
                session.replyError("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
            } else {
                session.replyError("ERR syntax error")
            }
        }
    }

    /// A read answered over a tracking connection: its client is told when
    /// its keys change.
    func noteTrackedRead(_ record: RequestRecord) {
        guard let session = record.session, session.tracking, !session.isClosed else { return }
        var parser = RequestParser()
        let request = record.request.readableArray()
        request.withUnsafeBytes { raw in
            guard case .complete = parser.parse(raw), !parser.arguments.isEmpty else { return }
            let command = Command(frame: raw, arguments: parser.arguments)
            guard var spec = CommandLookup().find(command.argument(0)) else { return }
            if spec.isContainer, command.count > 1, let sub = spec.subcommand(command.argument(1)) { spec = sub }
            guard spec.flags.contains(.readonly) else { return }
            var keys: [Int] = []
            spec.extractKeys(frame: raw, arguments: parser.arguments, into: &keys)
            for index in keys { remember(reader: session, of: command.bytes(index)) }
        }
    }

    /// `CLIENT TRACKING OFF`, `RESET`, `HELLO 2`, a client gone: its keys are forgotten.
    func stopTracking(_ session: ClientSession) {
        session.tracking = false
        for key in session.trackedKeys {
            guard var readers = trackedReaders[key] else { continue }
            readers.removeAll { $0 === session }
            trackedReaders[key] = readers.isEmpty ? nil : readers
        }
        session.trackedKeys.removeAll()
    }

    private func remember(reader session: ClientSession, of key: [UInt8]) {
        session.trackedKeys.insert(key)
        if var readers = trackedReaders[key] {
            if !readers.contains(where: { $0 === session }) {
                readers.append(session)
                trackedReaders[key] = readers
            }
            return
        }
        if trackedReaders.count >= configuration.trackingTableMaxKeys, let evicted = trackedReaders.first {
            trackedReaders.removeValue(forKey: evicted.key)
            sendInvalidation([evicted.key], to: evicted.value)
        }
        trackedReaders[key] = [session]
    }

    /// An `invalidate` push from a node.
    func invalidationArrived(_ push: UnsafeRawBufferPointer) {
        guard let items = RESPValue.decode(Array(push))?.value.elements, items.count == 2,
            items[0].string?.lowercased() == "invalidate"
        else { return }
        guard let keys = items[1].elements else {
            invalidateAllTracking(reason: nil)  // FLUSHALL / FLUSHDB on the node
            return
        }
        for case .bulkString(let key) in keys {
            guard let readers = trackedReaders.removeValue(forKey: key) else { continue }
            sendInvalidation([key], to: readers)
        }
    }

    /// Every tracking client forgets everything it cached.
    func invalidateAllTracking(reason: String?) {
        guard !trackedReaders.isEmpty else { return }
        var readers: [ObjectIdentifier: ClientSession] = [:]
        for sessions in trackedReaders.values {
            for session in sessions { readers[ObjectIdentifier(session)] = session }
        }
        trackedReaders.removeAll()
        if let reason { logger.info("client-side caching: every tracking client invalidated (\(reason))") }
        for session in readers.values {
            session.trackedKeys.removeAll()
            if session.tracking && !session.isClosed { session.pushInOrder(Array(">2\r\n$10\r\ninvalidate\r\n_\r\n".utf8)) }
        }
    }

    private func sendInvalidation(_ keys: [[UInt8]], to readers: [ClientSession]) {
        let out = ByteBuffer(capacity: 64)
        out.append(">2\r\n")
        out.appendBulk("invalidate")
        out.appendArrayHeader(keys.count)
        for key in keys { out.appendBulk(key) }
        let push = out.readableArray()
        for session in readers {
            for key in keys { session.trackedKeys.remove(key) }
            if session.tracking && !session.isClosed { session.pushInOrder(push) }
        }
    }
}
