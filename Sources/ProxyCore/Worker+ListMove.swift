import ClusterTopology
import CommandTable
import RESPWire

/// `LMOVE`, `RPOPLPUSH`, `BLMOVE`, `BRPOPLPUSH` between lists in different
/// slots, with `cross-slot-transactions: relaxed` (job queues move a job from
/// the queue to a "working" list: rq's `LMOVE queue queue:intermediate`).
///
/// No node can do it atomically, so the proxy pops from the source (for the
/// blocking forms, a `BLPOP`/`BRPOP` with the client's timeout on a dedicated
/// connection), then pushes the element onto the destination. The pop is
/// atomic, so each element still goes to exactly one consumer; between the
/// two steps the element exists only in the proxy. If the push fails (wrong
/// type, node lost), the element is pushed back where it came from and the
/// client gets the push's error; only if that fails too is it lost (logged).
extension Worker {
    static let listMoveCommands: Set<String> = ["lmove", "rpoplpush", "blmove", "brpoplpush"]

    struct ListMovePlan {
        enum Stage {
            case pop
            case push(element: [UInt8])
            case pushBack(element: [UInt8], error: [UInt8])
        }

        var source: [UInt8]
        var destination: [UInt8]
        var popLeft: Bool
        var pushLeft: Bool
        var blocking: Bool
        var stage = Stage.pop
    }

    /// Starts a move between slots; false when `command` is not one (the
    /// caller answers `CROSSSLOT`).
    func moveBetweenSlots(_ spec: CommandSpec, _ command: Command, session: ClientSession) -> Bool {
        guard configuration.crossSlotTransactions == .relaxed, Worker.listMoveCommands.contains(spec.name) else {
            return false
        }
        let name = spec.name
        var plan = ListMovePlan(
            source: command.bytes(1), destination: command.bytes(2), popLeft: false, pushLeft: true,
            blocking: name.hasPrefix("b"))
        if name.hasSuffix("lmove") {
            guard let from = Worker.side(command.string(3)), let to = Worker.side(command.string(4)) else {
                session.replyError("ERR syntax error")
                return true
            }
            plan.popLeft = from
            plan.pushLeft = to
        }
        var pop = [Array((plan.blocking ? (plan.popLeft ? "BLPOP" : "BRPOP") : (plan.popLeft ? "LPOP" : "RPOP")).utf8), plan.source]
        if plan.blocking { pop.append(command.bytes(command.count - 1)) }  // the timeout, checked by the node
        let slot = slotHasher.slot(of: command.argument(1))
        guard let pool = slotOwners[slot] else {
            session.replyError("CLUSTERDOWN Hash slot not served")
            return true
        }
        let request = ByteBuffer(capacity: 64)
        request.appendCommand(pop)
        let parent = recordPool.acquire()
        session.expectReply(parent)
        if plan.blocking {
            let fanOut = FanOut(target: .client(parent), rule: .listMove(plan), parts: 1, resp3: session.resp3)
            fanOut.sessionForNextStage = session
            let record = partRecord(fanOut, 0, request: request.readable, session: session)
            record.slot = slot
            record.receivedAtMicros = parent.receivedAtMicros  // (its timeout counts from the client's command)
            // The client waits for the whole move, not only the pop. (Set
            // first: a pop that fails at once answers the move right away.)
            session.barrier = parent
            sendBlocking(record, to: pool.address, asking: false, session: session)
        } else {
            dispatch([Part(pool: pool, slot: slot, request: request)], rule: .listMove(plan), target: .client(parent), session: session)
        }
        return true
    }

    private static func side(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "left": true
        case "right": false
        default: nil
        }
    }

    /// One step of a move is answered.
    func listMoveStep(_ plan: ListMovePlan, reply: [UInt8], target: FanOutTarget, session: ClientSession?) {
        var plan = plan
        switch plan.stage {
        case .pop:
            let value = RESPValue.decode(reply)?.value
            // BLPOP answers [key, element]; LPOP the element; both a null when empty.
            let element: [UInt8]?
            if case .bulkString(let bytes)? = plan.blocking ? value?.elements?.last : value {
                element = bytes
            } else {
                element = nil
            }
            guard let element, let session else {
                deliver(reply, to: target)  // an error, a null (empty list, timeout)
                return
            }
            plan.stage = .push(element: element)
            sendListStep(plan, [Array((plan.pushLeft ? "LPUSH" : "RPUSH").utf8), plan.destination, element], key: plan.destination, target: target, session: session)
        case .push(let element):
            guard isError(reply) else {
                let out = ByteBuffer(capacity: element.count + 16)
                out.appendBulk(element)
                deliver(out.readableArray(), to: target)
                return
            }
            guard let session else { return }
            plan.stage = .pushBack(element: element, error: reply)
            sendListStep(plan, [Array((plan.popLeft ? "LPUSH" : "RPUSH").utf8), plan.source, element], key: plan.source, target: target, session: session)
        case .pushBack(let element, let error):
            if isError(reply) {
                logger.error(
                    "list move: an element of \(element.count) bytes popped from a list could be pushed neither to its destination nor back: \(String(decoding: reply, as: UTF8.self))"
                )
            }
            deliver(error, to: target)
        }
    }

    private func sendListStep(
        _ plan: ListMovePlan, _ arguments: [[UInt8]], key: [UInt8], target: FanOutTarget, session: ClientSession
    ) {
        let request = ByteBuffer(capacity: 64)
        request.appendCommand(arguments)
        let slot = key.withUnsafeBytes { slotHasher.slot(of: $0) }
        guard let pool = slotOwners[slot] else {
            let error = ByteBuffer(capacity: 64)
            error.appendError("CLUSTERDOWN Hash slot not served")
            listMoveStep(plan, reply: error.readableArray(), target: target, session: session)
            return
        }
        dispatch([Part(pool: pool, slot: slot, request: request)], rule: .listMove(plan), target: target, session: session)
    }
}
