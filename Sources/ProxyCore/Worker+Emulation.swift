import ClusterTopology
import CommandTable
import RESPWire

/// Multi-key commands that a single server answers for keys in any slots,
/// emulated across masters: the reads `SUNION`, `SINTER`, `SDIFF`,
/// `SINTERCARD`, `PFCOUNT`, `ZUNION`, `ZINTER`, `ZDIFF`, `ZINTERCARD`, and
/// the ones that store such a result (`SUNIONSTORE` ... `ZRANGESTORE`,
/// `PFMERGE`, `BITOP`: walrus's model queries, set algebra into a key).
///
/// Rather than re-implement their semantics (weights, aggregates, score
/// formatting, HyperLogLog unions), the proxy lets a Redis node compute them:
/// it `DUMP`s every source key from its own master (one round trip per
/// master, in parallel), then runs one script that `RESTORE`s the values
/// into scratch keys of one slot, runs the real command on them, deletes
/// them and returns the result. A read runs on the master of a scratch hash
/// tag; a store on the destination's master, with scratch keys in the
/// destination's slot, and writes the destination itself. The script is
/// atomic, so the scratch keys are never visible; the reply is exactly what
/// one server computes on the same data. Not atomic across slots: each
/// source is read at its own moment, as a client reading them in turn would.
extension Worker {
    static let emulatedCommands: Set<String> = [
        "sunion", "sinter", "sdiff", "sintercard", "pfcount", "zunion", "zinter", "zdiff", "zintercard",
        "sunionstore", "sinterstore", "sdiffstore", "zunionstore", "zinterstore", "zdiffstore", "zrangestore",
        "pfmerge", "bitop",
    ]

    /// The argument that names where a storing command writes (not a source).
    static func destinationArgument(of name: String) -> Int? {
        switch name {
        case "sunionstore", "sinterstore", "sdiffstore", "zunionstore", "zinterstore", "zdiffstore", "zrangestore", "pfmerge":
            1
        case "bitop": 2
        default: nil
        }
    }

    /// Lua's `unpack` stops near 8,000 values: an emulated command has at
    /// most this many arguments (else the client gets an error, and nothing runs).
    static let emulationArgumentLimit = 4000

    /// The script run on the computing master. KEYS: the scratch keys, then
    /// for a storing command its destination and the sources in the
    /// destination's slot (read in place). ARGV: protocol ("2"/"3"), the
    /// number of scratch keys n, n dumps ("" for a missing key), then the
    /// command with scratch keys in place of the other sources.
    static let emulationScript = """
        if ARGV[1] == '3' then redis.setresp(3) end
        local n = tonumber(ARGV[2])
        for i = 1, n do
          if ARGV[2 + i] ~= '' then
            -- A TTL, so scratch keys could never outlive a failure here.
            local restored = redis.pcall('RESTORE', KEYS[i], 60000, ARGV[2 + i])
            if type(restored) == 'table' and restored.err then
              if n > 0 then redis.call('DEL', unpack(KEYS, 1, n)) end
              return restored
            end
          end
        end
        local command = {}
        for i = 3 + n, #ARGV do command[#command + 1] = ARGV[i] end
        local result = redis.pcall(unpack(command))
        if n > 0 then redis.call('DEL', unpack(KEYS, 1, n)) end
        return result
        """

    struct EmulationPlan {
        /// The command's arguments, source keys included.
        var arguments: [[UInt8]]
        /// For each argument that is a key, the index of its source.
        var sourceOfArgument: [Int: Int]
        var sourceCount: Int
        /// A storing command's destination argument, and its slot.
        var destination: (argument: Int, slot: Int)?
        /// Its sources in the destination's slot, read in place (not dumped).
        var localSources: [[UInt8]] = []
    }

    /// Gathers the sources of a cross-slot emulated command.
    func emulate(_ spec: CommandSpec, _ command: Command, session: ClientSession) {
        var sourceOfKey: [[UInt8]: Int] = [:]
        var sourceOfArgument: [Int: Int] = [:]
        var parts: [Part] = []
        guard command.count <= Worker.emulationArgumentLimit else {
            session.replyError(
                "ERR slotproxy: '\(spec.name)' over keys in several slots is emulated for at most \(Worker.emulationArgumentLimit) arguments")
            return
        }
        let destination: (argument: Int, slot: Int)? = Worker.destinationArgument(of: spec.name).flatMap { argument in
            argument < command.count ? (argument: argument, slot: slotHasher.slot(of: command.argument(argument))) : nil
        }
        var localSources: [[UInt8]] = []
        for argument in session.keyIndices where argument != destination?.argument {
            let key = command.bytes(argument)
            if let source = sourceOfKey[key] {
                sourceOfArgument[argument] = source
                continue
            }
            let slot = slotHasher.slot(of: command.argument(argument))
            if slot == destination?.slot {
                // Read in place by the script, atomically with the store: a
                // copy taken first would overwrite a write made meanwhile
                // (`SDIFFSTORE active active done`).
                if !localSources.contains(key) { localSources.append(key) }
                continue
            }
            guard let pool = slotOwners[slot] else {
                session.replyError("CLUSTERDOWN Hash slot not served")
                return
            }
            let source = parts.count
            sourceOfKey[key] = source
            sourceOfArgument[argument] = source
            let request = ByteBuffer(capacity: 64 + key.count)
            request.appendCommand([Array("DUMP".utf8), key])
            parts.append(Part(pool: pool, slot: slot, request: request))
        }
        if let destination, slotOwners[destination.slot] == nil {
            session.replyError("CLUSTERDOWN Hash slot not served")
            return
        }
        let plan = EmulationPlan(
            arguments: (0..<command.count).map { command.bytes($0) }, sourceOfArgument: sourceOfArgument,
            sourceCount: parts.count, destination: destination, localSources: localSources)
        let parent = recordPool.acquire()
        session.expectReply(parent)
        // A store writes only in its second step: the client's next command
        // (a read of the destination, say) waits for it, as on one server.
        if destination != nil { session.barrier = parent }
        dispatch(parts, rule: .emulate(plan), target: .client(parent), session: session)
    }

    /// All sources are in: compute on one master.
    func computeEmulation(_ plan: EmulationPlan, dumps: [[UInt8]], target: FanOutTarget, resp3: Bool, session: ClientSession) {
        emulationCounter &+= 1
        // (The nonce: scratch names of another proxy, or of this one before
        // a restart, never meet.)
        let name = "\(Worker.emulationNonce)-\(workerIndex)-\(emulationCounter)"
        // A store computes where its destination lives: scratch keys in that slot.
        var tag = "{slotproxy-scratch-\(name)}"
        if let destination = plan.destination {
            guard let slotTag = scratchTag(forSlot: destination.slot) else {
                deliver(Array("-ERR slotproxy: no scratch key for the destination's slot\r\n".utf8), to: target)
                return
            }
            tag = "{\(slotTag)}:\(name)"
        }
        let scratch = (0..<plan.sourceCount).map { Array("\(tag):\($0)".utf8) }
        let keyCount = plan.sourceCount + (plan.destination == nil ? 0 : 1 + plan.localSources.count)
        var arguments: [[UInt8]] = [Array("EVAL".utf8), Array(Worker.emulationScript.utf8), Array(String(keyCount).utf8)]
        arguments += scratch
        if let destination = plan.destination {
            arguments.append(plan.arguments[destination.argument])
            arguments += plan.localSources
        }
        arguments.append(Array((resp3 ? "3" : "2").utf8))
        arguments.append(Array(String(plan.sourceCount).utf8))
        for dump in dumps {
            // DUMP answers a bulk string, or a null for a missing key.
            if case .bulkString(let payload)? = RESPValue.decode(dump)?.value {
                arguments.append(payload)
            } else {
                arguments.append([])
            }
        }
        for (index, argument) in plan.arguments.enumerated() {
            if let source = plan.sourceOfArgument[index] { arguments.append(scratch[source]) } else { arguments.append(argument) }
        }
        let slot = plan.destination?.slot ?? Array(tag.utf8).withUnsafeBytes { slotHasher.slot(of: $0) }
        guard let pool = slotOwners[slot] else {
            let error = ByteBuffer(capacity: 64)
            error.appendError("CLUSTERDOWN Hash slot not served")
            deliver(error.readable, to: target)
            return
        }
        let request = ByteBuffer(capacity: 256)
        request.appendCommand(arguments)
        // (`firstSuccess`, one part: a TRYAGAIN while the slot migrates is
        // retried whole, never split key by key like a split command's part.)
        dispatch([Part(pool: pool, slot: slot, request: request)], rule: .firstSuccess, target: target, session: session)
    }

    /// A hash tag of `slot`: the first of "slotproxy-scratch-0", "-1" ...
    /// that hashes there (about 16,000 tries, a few milliseconds, the first
    /// time; remembered). CRC16 reaches every slot long before the bound.
    func scratchTag(forSlot slot: Int) -> String? {
        if let tag = scratchTags[slot] { return tag }
        var bytes = Array("slotproxy-scratch-".utf8)
        let prefix = bytes.count
        for candidate in 0..<(1 << 24) {
            bytes.removeSubrange(prefix...)
            var digits = candidate  // (decimal digits, no String per try)
            repeat {
                bytes.insert(UInt8(ascii: "0") + UInt8(digits % 10), at: prefix)
                digits /= 10
            } while digits > 0
            if bytes.withUnsafeBytes({ slotHasher.slot(of: $0) }) == slot {
                let tag = String(decoding: bytes, as: UTF8.self)
                scratchTags[slot] = tag
                return tag
            }
        }
        return nil
    }

    /// Random per process: part of every scratch key's name.
    static let emulationNonce = UInt32.random(in: 0...UInt32.max)

    /// Hands a finished reply to a fan-out's target.
    func deliver(_ reply: UnsafeRawBufferPointer, to target: FanOutTarget) {
        switch target {
        case .client(let parent):
            if let session = parent.session {
                session.complete(parent, reply: reply)
            } else {
                recordPool.release(parent)
            }
        case .part(let outer, let index):
            partArrived(outer, part: index, reply: reply)
        }
    }
}
