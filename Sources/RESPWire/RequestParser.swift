/// Where one argument of a parsed command sits, relative to the start of its frame.
public struct ArgumentSpan: Equatable, Sendable {
    public var offset: Int
    public var length: Int
    @inlinable public init(offset: Int, length: Int) {
        self.offset = offset
        self.length = length
    }
}

/// The outcome of feeding the parser the bytes buffered so far.
public enum RequestParseResult: Equatable, Sendable {
    /// More bytes are needed; the parser remembers how far it got.
    case incomplete
    /// A whole command of `frameLength` bytes is ready; `arguments` holds its spans.
    /// For an inline command the spans point into `inlineFrame`, a RESP encoding of it.
    case complete(frameLength: Int)
    case error(ProtocolError)
}

/// Resumable parser for client requests: RESP multibulk arrays
/// (`*<n>\r\n$<len>\r\n<bytes>\r\n...`) and inline commands (`GET key\r\n`, as
/// telnet and `redis-cli` in some modes send them).
///
/// The parser works in place on the readable bytes of the connection's input,
/// which always start at the current frame's first byte. It keeps its position
/// between calls, so a partial frame is never rescanned from its start, and it
/// records each argument as an offset and length instead of copying it.
///
/// States follow the bytes they expect, as in twemproxy's parser:
/// `start` (a `*` or the first byte of an inline line), `multibulkLength`
/// (digits up to CRLF), `bulkHeader` (`$` and digits up to CRLF), `bulkPayload`
/// (the bytes and their CRLF).
public struct RequestParser {
    @usableFromInline enum State {
        case start
        case multibulkLength
        case bulkHeader
        case bulkPayload
    }

    public var limits: RequestLimits
    /// Argument spans of the last complete command; storage is reused.
    public private(set) var arguments: [ArgumentSpan] = []
    /// A RESP re-encoding of the last inline command (inline frames only).
    public private(set) var inlineFrame: [UInt8] = []
    public private(set) var lastWasInline = false

    @usableFromInline var state = State.start
    @usableFromInline var position = 0
    @usableFromInline var remainingArguments = 0
    @usableFromInline var bulkLength = 0

    public init(limits: RequestLimits = RequestLimits()) {
        self.limits = limits
        arguments.reserveCapacity(16)
    }

    /// Forgets a completed frame; call after consuming `frameLength` bytes.
    @inlinable public mutating func reset() {
        state = .start
        position = 0
    }

    public mutating func parse(_ bytes: UnsafeRawBufferPointer) -> RequestParseResult {
        if state == .start, let frameLength = parseWholeFrame(bytes) { return .complete(frameLength: frameLength) }
        while true {
            switch state {
            case .start:
                guard bytes.count > 0 else { return .incomplete }
                arguments.clearKeepingCapacity()
                if bytes[0] != UInt8(ascii: "*") { return parseInline(bytes) }
                lastWasInline = false
                position = 1
                state = .multibulkLength
            case .multibulkLength:
                // Too long whether or not its CRLF has arrived yet (a last
                // byte may be its CR), so how the bytes are split into reads
                // never changes the outcome.
                guard let lineEnd = findCRLF(bytes, from: position) else {
                    if bytes.count - position > limits.maxInlineLength + 1 {
                        return .error(ProtocolError("Protocol error: too big mbulk count string"))
                    }
                    return .incomplete
                }
                if lineEnd - position > limits.maxInlineLength {
                    return .error(ProtocolError("Protocol error: too big mbulk count string"))
                }
                guard let count = parseDecimal(bytes, position, lineEnd),
                    count <= limits.maxMultibulkLength
                else {
                    return .error(
                        ProtocolError(
                            limits.isBeforeAuthentication
                                ? "Protocol error: unauthenticated multibulk length"
                                : "Protocol error: invalid multibulk length"))
                }
                position = lineEnd + 2
                if count <= 0 {
                    // Redis ignores `*0` and `*-1`: an empty command, no reply.
                    return .complete(frameLength: position)
                }
                remainingArguments = count
                if arguments.capacity < min(count, 1024) { arguments.reserveCapacity(min(count, 1024)) }
                state = .bulkHeader
            case .bulkHeader:
                guard position < bytes.count else { return .incomplete }
                let marker = bytes[position]
                guard marker == UInt8(ascii: "$") else {
                    return .error(ProtocolError("Protocol error: expected '$', got '\(printable(marker))'"))
                }
                guard let lineEnd = findCRLF(bytes, from: position + 1) else {
                    if bytes.count - (position + 1) > limits.maxInlineLength + 1 {
                        return .error(ProtocolError("Protocol error: too big bulk count string"))
                    }
                    return .incomplete
                }
                if lineEnd - (position + 1) > limits.maxInlineLength {
                    return .error(ProtocolError("Protocol error: too big bulk count string"))
                }
                guard let length = parseDecimal(bytes, position + 1, lineEnd),
                    length >= 0, length <= limits.maxBulkLength
                else {
                    let tooBigBeforeAuthentication =
                        limits.isBeforeAuthentication && (parseDecimal(bytes, position + 1, lineEnd) ?? -1) >= 0
                    return .error(
                        ProtocolError(
                            tooBigBeforeAuthentication
                                ? "Protocol error: unauthenticated bulk length"
                                : "Protocol error: invalid bulk length"))
                }
                bulkLength = length
                position = lineEnd + 2
                state = .bulkPayload
            case .bulkPayload:
                guard bytes.count - position >= bulkLength + 2 else { return .incomplete }
                let end = position + bulkLength
                guard bytes[end] == 13, bytes[end + 1] == 10 else {
                    return .error(ProtocolError("Protocol error: expected CRLF after bulk payload"))
                }
                arguments.append(ArgumentSpan(offset: position, length: bulkLength))
                position = end + 2
                remainingArguments -= 1
                if remainingArguments == 0 {
                    state = .start
                    return .complete(frameLength: position)
                }
                state = .bulkHeader
            }
        }
    }

    /// The common case in one pass: a whole multibulk frame of at most 64
    /// arguments is buffered, with short decimal headers and nothing odd.
    /// Anything else (a partial frame, an error, `*0`, a long header) returns
    /// nil before any state changes, and the resumable parser below takes the
    /// frame from its start. A frame this accepts, that one accepts alike.
    @inline(__always)
    mutating func parseWholeFrame(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        guard n > 3, bytes[0] == UInt8(ascii: "*") else { return nil }
        var p = 1
        guard let count = Self.shortDecimalLine(bytes, &p), count >= 1, count <= 64,
            count <= limits.maxMultibulkLength
        else { return nil }
        // A pipeline repeats one command shape: when the last frame had as
        // many arguments, its spans are overwritten in place (no clearing, no
        // appending). On a nil return they are garbage; the slow path clears them.
        if arguments.count != count {
            arguments.clearKeepingCapacity()
            for _ in 0..<count { arguments.append(ArgumentSpan(offset: 0, length: 0)) }
        }
        let limit = limits.maxBulkLength
        let parsed = arguments.withUnsafeMutableBufferPointer { spans -> Bool in
            for index in 0..<count {
                guard p < n, bytes[p] == UInt8(ascii: "$") else { return false }
                p += 1
                guard let length = Self.shortDecimalLine(bytes, &p), length <= limit,
                    n - p >= length + 2, bytes[p + length] == 13, bytes[p + length + 1] == 10
                else { return false }
                spans[index] = ArgumentSpan(offset: p, length: length)
                p += length + 2
            }
            return true
        }
        guard parsed else { return nil }
        lastWasInline = false
        position = 0
        return p
    }

    /// 1 to 9 digits and CRLF from `p`, moving `p` past them; nil otherwise.
    @inline(__always)
    static func shortDecimalLine(_ bytes: UnsafeRawBufferPointer, _ p: inout Int) -> Int? {
        var i = p
        var value = 0
        let end = min(bytes.count, p + 9)
        while i < end {
            let digit = Int(bytes[i]) &- 48
            guard digit >= 0 && digit <= 9 else { break }
            value = value &* 10 &+ digit
            i += 1
        }
        guard i > p, i + 1 < bytes.count, bytes[i] == 13, bytes[i + 1] == 10 else { return nil }
        p = i + 2
        return value
    }

    /// The bytes needed before the current frame can complete, when known: lets
    /// the caller grow its buffer once for a big argument instead of doubling.
    public var bytesStillNeeded: Int? {
        state == .bulkPayload ? position + bulkLength + 2 : nil
    }

    // MARK: inline commands

    /// An inline command is one line of space-separated arguments, ending in
    /// `\n` (a preceding `\r` is dropped). Quoting follows Redis's
    /// `sdssplitargs`: "double quotes" with \n \r \t \b \a \\ \" \xHH escapes and
    /// 'single quotes' with only \' escaped. The command is re-encoded as RESP
    /// in `inlineFrame` so the rest of the proxy sees one frame format.
    mutating func parseInline(_ bytes: UnsafeRawBufferPointer) -> RequestParseResult {
        guard let newline = bytes.firstIndex(of: 10) else {
            if bytes.count > limits.maxInlineLength {
                return .error(ProtocolError("Protocol error: too big inline request"))
            }
            return .incomplete
        }
        if newline > limits.maxInlineLength {
            return .error(ProtocolError("Protocol error: too big inline request"))
        }
        var lineEnd = newline
        if lineEnd > 0 && bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
        guard let words = splitInlineArguments(UnsafeRawBufferPointer(rebasing: bytes[0..<lineEnd])) else {
            return .error(ProtocolError("Protocol error: unbalanced quotes in request"))
        }
        lastWasInline = true
        inlineFrame.removeAll(keepingCapacity: true)
        arguments.clearKeepingCapacity()
        if !words.isEmpty {
            inlineFrame.append(UInt8(ascii: "*"))
            inlineFrame.append(contentsOf: String(words.count).utf8)
            inlineFrame.append(contentsOf: [13, 10])
            for word in words {
                inlineFrame.append(UInt8(ascii: "$"))
                inlineFrame.append(contentsOf: String(word.count).utf8)
                inlineFrame.append(contentsOf: [13, 10])
                arguments.append(ArgumentSpan(offset: inlineFrame.count, length: word.count))
                inlineFrame.append(contentsOf: word)
                inlineFrame.append(contentsOf: [13, 10])
            }
        }
        state = .start
        position = 0
        return .complete(frameLength: newline + 1)
    }
}

/// Splits an inline line into arguments as Redis's `sdssplitargs` does;
/// nil when quotes are unbalanced.
func splitInlineArguments(_ line: UnsafeRawBufferPointer) -> [[UInt8]]? {
    var result: [[UInt8]] = []
    var i = 0
    let n = line.count
    func isSpace(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 10 || c == 13 || c == 11 || c == 12 }
    func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
    while true {
        while i < n && isSpace(line[i]) { i += 1 }
        if i >= n { return result }
        var current: [UInt8] = []
        var inDouble = false
        var inSingle = false
        var done = false
        while !done {
            if inDouble {
                guard i < n else { return nil }
                let c = line[i]
                if c == UInt8(ascii: "\\") && i + 3 < n && line[i + 1] == UInt8(ascii: "x"),
                    let hi = hexValue(line[i + 2]), let lo = hexValue(line[i + 3])
                {
                    current.append(hi << 4 | lo)
                    i += 3
                } else if c == UInt8(ascii: "\\") && i + 1 < n {
                    i += 1
                    switch line[i] {
                    case UInt8(ascii: "n"): current.append(10)
                    case UInt8(ascii: "r"): current.append(13)
                    case UInt8(ascii: "t"): current.append(9)
                    case UInt8(ascii: "b"): current.append(8)
                    case UInt8(ascii: "a"): current.append(7)
                    default: current.append(line[i])
                    }
                } else if c == UInt8(ascii: "\"") {
                    // A closing quote must be followed by a space or the end.
                    if i + 1 < n && !isSpace(line[i + 1]) { return nil }
                    done = true
                } else {
                    current.append(c)
                }
            } else if inSingle {
                guard i < n else { return nil }
                let c = line[i]
                if c == UInt8(ascii: "\\") && i + 1 < n && line[i + 1] == UInt8(ascii: "'") {
                    i += 1
                    current.append(UInt8(ascii: "'"))
                } else if c == UInt8(ascii: "'") {
                    if i + 1 < n && !isSpace(line[i + 1]) { return nil }
                    done = true
                } else {
                    current.append(c)
                }
            } else {
                if i >= n { done = true; break }
                let c = line[i]
                if isSpace(c) {
                    done = true
                } else if c == UInt8(ascii: "\"") {
                    inDouble = true
                } else if c == UInt8(ascii: "'") {
                    inSingle = true
                } else {
                    current.append(c)
                }
            }
            if i < n { i += 1 }
        }
        result.append(current)
    }
}

/// Finds `\r\n` at or after `from`; returns the index of the `\r`.
@inlinable func findCRLF(_ bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
    var i = from
    let last = bytes.count - 1
    while i < last {
        if bytes[i] == 13 {
            if bytes[i + 1] == 10 { return i }
        }
        i += 1
    }
    return nil
}

/// Parses a signed decimal in `bytes[start..<end]`; nil for anything but an
/// optional `-` followed by 1 to 18 digits.
@inlinable func parseDecimal(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
    var i = start
    var negative = false
    if i < end && bytes[i] == UInt8(ascii: "-") {
        negative = true
        i += 1
    }
    guard i < end, end - i <= 18 else { return nil }
    var value = 0
    while i < end {
        let digit = Int(bytes[i]) &- 48
        guard digit >= 0 && digit <= 9 else { return nil }
        value = value &* 10 &+ digit
        i += 1
    }
    return negative ? -value : value
}

func printable(_ byte: UInt8) -> String {
    (32...126).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
}
