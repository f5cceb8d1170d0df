import CommandTable
import RESPWire
import Synchronization
import TLS

/// Scripts by SHA1 across masters: each master caches only the scripts
/// loaded or run on it, while a client of one server expects `EVALSHA` to
/// find any script it loaded or ran before.
extension Worker {
    /// `EVAL`'s script: passed on to `SharedState` (with its SHA1, worked out
    /// here) the first time this worker sees it, so that an `EVALSHA` of it
    /// reaching another master is answered (`reloadScriptAndRetry`). Later
    /// runs cost one hash of the script, as its node's own lookup does.
    func rememberEvaluatedScript(_ body: UnsafeRawBufferPointer) {
        let limit = configuration.evalScriptCacheBytes
        guard limit > 0, !body.isEmpty else { return }
        let generation = shared.scriptGeneration.load(ordering: .relaxed)
        if generation != scriptGenerationSeen {
            scriptGenerationSeen = generation
            evaluatedScriptHashes.removeAll()
        }
        var hasher = Hasher()
        hasher.combine(bytes: body)
        let hash = hasher.finalize()
        // (A memo, not a cache: starting again only costs a SHA1 per script.)
        if evaluatedScriptHashes.count >= 100_000 { evaluatedScriptHashes.removeAll() }
        guard evaluatedScriptHashes.insert(hash).inserted else { return }
        shared.rememberEvaluatedScript(sha: sha1Hex(body), body: Array(body), keep: limit)
    }

    /// EVAL, FCALL and their kin: a script can answer any error text, after
    /// it ran.
    func runsAScript(_ record: RequestRecord) -> Bool {
        Worker.withCommand(of: record) { CommandLookup().find($0.argument(0))?.runsScript ?? false } ?? false
    }

    /// `EVALSHA` met a master without the script (promoted after a failover,
    /// or new): load it there from the proxy's cache of scripts clients
    /// loaded or ran, then run the command again on the same connection, so
    /// the client never sees `NOSCRIPT` for a script it loaded or ran.
    func reloadScriptAndRetry(_ record: RequestRecord, reply: UnsafeRawBufferPointer, on connection: BackendConnection) -> Bool {
        guard reply.count > 9, reply.starts(with: "-NOSCRIPT".utf8) else { return false }
        var parser = RequestParser()
        let request = record.request.readableArray()
        let sha: String? = request.withUnsafeBytes { raw in
            guard case .complete = parser.parse(raw), parser.arguments.count >= 2 else { return nil }
            let name = parser.arguments[0]
            let command = String(decoding: raw[name.offset..<(name.offset + name.length)], as: UTF8.self).lowercased()
            guard command == "evalsha" || command == "evalsha_ro" else { return nil }
            let shaSpan = parser.arguments[1]
            return String(decoding: raw[shaSpan.offset..<(shaSpan.offset + shaSpan.length)], as: UTF8.self)
        }
        guard let sha, let body = shared.script(sha: sha), record.session.map({ !$0.isClosed }) ?? false else { return false }
        record.redirects += 1
        connection.enqueueInternal(["SCRIPT", "LOAD"].map { Array($0.utf8) } + [body])
        connection.enqueue(record)
        logger.info("reloaded script \(sha) on \(connection.address) after NOSCRIPT")
        return true
    }
}
