/// What the first byte of a complete top-level reply says about it; the proxy
/// needs to know about errors (for redirects and retries) and pushes (which
/// belong to no request).
public enum ReplyKind: Equatable, Sendable {
    case value
    case error(ErrorClass)
    case push
}

/// Errors the proxy reacts to, recognised by their first word.
public enum ErrorClass: Equatable, Sendable {
    case moved
    case ask
    case tryAgain
    case clusterDown
    case loading
    case masterDown
    case other
}

public enum ReplyScanResult: Equatable, Sendable {
    case incomplete
    case complete(length: Int, kind: ReplyKind)
    case error(ProtocolError)
}

/// Finds where one reply ends without decoding it, so its bytes can be moved to
/// the client untouched. Understands every RESP2 and RESP3 type: simple lines
/// (`+ - : _ , # (`), blob types (`$ ! =`), aggregates (`* ~ >` with n elements,
/// `%` with 2n) and attributes (`|`, 2n elements that prefix the real value).
///
/// Resumable: the position, the count of elements still owed by each open
/// aggregate, and the end of a bulk payload being awaited all survive between
/// calls, so a 100 MB bulk is looked at once, not on every read.
public struct ReplyScanner {
    @usableFromInline var position = 0
    @usableFromInline var openAggregates: [Int] = []
    @usableFromInline var awaitedPayloadEnd = -1
    public var maxDepth: Int

    /// (The stack of open aggregates allocates when the first one opens, not
    /// here: a scanner made to walk an array's plain elements allocates nothing.)
    public init(maxDepth: Int = 4096) {
        self.maxDepth = maxDepth
    }

    public mutating func reset() {
        position = 0
        openAggregates.clearKeepingCapacity()
        awaitedPayloadEnd = -1
    }

    /// The total length the reply being scanned will have, once known (a bulk
    /// at top level): lets the reader size its buffer once.
    public var bytesStillNeeded: Int? {
        awaitedPayloadEnd >= 0 ? awaitedPayloadEnd : nil
    }

    /// Whether the value being scanned is the reply itself, not an element
    /// of an array or map.
    public var isAtTopLevel: Bool { openAggregates.isEmpty }

    /// Scans `bytes`, which start at the first byte of the reply.
    public mutating func scan(_ bytes: UnsafeRawBufferPointer) -> ReplyScanResult {
        while true {
            if awaitedPayloadEnd >= 0 {
                guard bytes.count >= awaitedPayloadEnd else { return .incomplete }
                guard bytes[awaitedPayloadEnd - 2] == 13, bytes[awaitedPayloadEnd - 1] == 10 else {
                    return .error(ProtocolError("Protocol error: bulk payload not followed by CRLF"))
                }
                position = awaitedPayloadEnd
                awaitedPayloadEnd = -1
                if closeElement() { return finish(bytes) }
                continue
            }
            guard let lineEnd = findCRLF(bytes, from: position + 1) else { return .incomplete }
            let type = bytes[position]
            switch type {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"),
                UInt8(ascii: ","), UInt8(ascii: "#"), UInt8(ascii: "("):
                position = lineEnd + 2
                if closeElement() { return finish(bytes) }
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                guard let length = parseDecimal(bytes, position + 1, lineEnd), length >= -1 else {
                    return .error(ProtocolError("Protocol error: invalid bulk length in reply"))
                }
                position = lineEnd + 2
                if length == -1 {
                    if closeElement() { return finish(bytes) }
                } else {
                    awaitedPayloadEnd = position + length + 2
                }
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"),
                UInt8(ascii: "|"):
                guard let count = parseDecimal(bytes, position + 1, lineEnd), count >= -1 else {
                    return .error(ProtocolError("Protocol error: invalid aggregate length in reply"))
                }
                position = lineEnd + 2
                var elements = count
                if type == UInt8(ascii: "%") { elements = count * 2 }
                // An attribute map is followed by the value it describes; both
                // together count as one element of the enclosing aggregate.
                if type == UInt8(ascii: "|") { elements = count * 2 + 1 }
                if elements <= 0 {
                    if closeElement() { return finish(bytes) }
                } else {
                    guard openAggregates.count < maxDepth else {
                        return .error(ProtocolError("Protocol error: reply nested too deeply"))
                    }
                    openAggregates.append(elements)
                }
            default:
                return .error(ProtocolError("Protocol error: unexpected reply type byte '\(printable(type))'"))
            }
        }
    }

    /// Marks one element finished; true when that finished the whole reply.
    @inlinable mutating func closeElement() -> Bool {
        while let last = openAggregates.last {
            if last > 1 {
                openAggregates[openAggregates.count - 1] = last - 1
                return false
            }
            openAggregates.removeLast()
        }
        return true
    }

    mutating func finish(_ bytes: UnsafeRawBufferPointer) -> ReplyScanResult {
        let length = position
        position = 0
        return .complete(length: length, kind: classify(bytes))
    }
}

/// Classifies a complete reply by its first bytes.
@inlinable public func classify(_ bytes: UnsafeRawBufferPointer) -> ReplyKind {
    let type = bytes[0]
    if type == UInt8(ascii: ">") { return .push }
    guard type == UInt8(ascii: "-") || type == UInt8(ascii: "!") else { return .value }
    if type == UInt8(ascii: "!") { return .error(.other) }
    return .error(classifyError(UnsafeRawBufferPointer(rebasing: bytes[1...])))
}

/// Recognises the error codes the proxy acts on from the error's first word.
@inlinable public func classifyError(_ text: UnsafeRawBufferPointer) -> ErrorClass {
    func hasPrefix(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard text.count >= n else { return false }
        let w = UnsafeRawBufferPointer(start: word.utf8Start, count: n)
        for i in 0..<n where text[i] != w[i] { return false }
        return true
    }
    switch text.first {
    case UInt8(ascii: "M"):
        if hasPrefix("MOVED ") { return .moved }
        if hasPrefix("MASTERDOWN") { return .masterDown }
    case UInt8(ascii: "A"):
        if hasPrefix("ASK ") { return .ask }
    case UInt8(ascii: "T"):
        if hasPrefix("TRYAGAIN") { return .tryAgain }
    case UInt8(ascii: "C"):
        if hasPrefix("CLUSTERDOWN") { return .clusterDown }
    case UInt8(ascii: "L"):
        if hasPrefix("LOADING") { return .loading }
    default: break
    }
    return .other
}
