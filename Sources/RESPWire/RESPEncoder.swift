/// Appends RESP frames to a buffer. Used for replies the proxy writes itself and
/// for commands it builds (`ASKING`, topology queries); forwarded traffic is
/// never re-encoded.
extension ByteBuffer {
    public func appendSimpleString(_ text: String) {
        append(byte: UInt8(ascii: "+"))
        appendText(text)
        append("\r\n")
    }

    /// `-<message>\r\n`; CR and LF inside the message become spaces, since an
    /// error line cannot contain them.
    public func appendError(_ message: String) {
        append(byte: UInt8(ascii: "-"))
        var sanitized = Array(message.utf8)
        for i in sanitized.indices where sanitized[i] == 13 || sanitized[i] == 10 { sanitized[i] = 32 }
        append(sanitized)
        append("\r\n")
    }

    public func appendInteger(_ value: Int) {
        append(byte: UInt8(ascii: ":"))
        appendDecimal(value)
        append("\r\n")
    }

    public func appendBulk(_ bytes: UnsafeRawBufferPointer) {
        append(byte: UInt8(ascii: "$"))
        appendDecimal(bytes.count)
        append("\r\n")
        append(bytes)
        append("\r\n")
    }

    public func appendBulk(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { appendBulk($0) }
    }

    public func appendBulk(_ text: String) {
        appendBulk(Array(text.utf8))
    }

    /// Text as a server sends `INFO` or `CLIENT LIST`: a RESP3 verbatim
    /// string (`=<n>\r\ntxt:...`), or a RESP2 bulk string.
    public func appendVerbatimText(_ bytes: [UInt8], resp3: Bool) {
        guard resp3 else {
            appendBulk(bytes)
            return
        }
        append(byte: UInt8(ascii: "="))
        appendDecimal(bytes.count + 4)
        append("\r\ntxt:")
        append(bytes)
        append("\r\n")
    }

    /// A null array (`*-1`; RESP3's `_`): what an aborted `EXEC` and a timed
    /// out blocking pop answer.
    public static func nullArray(resp3: Bool) -> StaticString { resp3 ? "_\r\n" : "*-1\r\n" }

    /// The RESP2 null bulk string, or RESP3 `_` null.
    public func appendNull(resp3: Bool) {
        append(resp3 ? "_\r\n" : "$-1\r\n")
    }

    public func appendArrayHeader(_ count: Int) {
        append(byte: UInt8(ascii: "*"))
        appendDecimal(count)
        append("\r\n")
    }

    /// `~n` in RESP3, `*n` in RESP2.
    public func appendSetHeader(_ count: Int, resp3: Bool) {
        append(byte: UInt8(ascii: resp3 ? "~" : "*"))
        appendDecimal(count)
        append("\r\n")
    }

    /// `%n` in RESP3, `*2n` in RESP2 (a flat list of keys and values).
    public func appendMapHeader(_ count: Int, resp3: Bool) {
        if resp3 {
            append(byte: UInt8(ascii: "%"))
            appendDecimal(count)
        } else {
            append(byte: UInt8(ascii: "*"))
            appendDecimal(count * 2)
        }
        append("\r\n")
    }

    /// An array of simple strings, as Redis answers `... HELP`.
    public func appendStatusLines(_ lines: [String]) {
        appendArrayHeader(lines.count)
        for line in lines {
            append(byte: UInt8(ascii: "+"))
            append(Array(line.utf8))
            append("\r\n")
        }
    }

    /// A whole command as a RESP array of bulk strings.
    public func appendCommand(_ arguments: [[UInt8]]) {
        appendArrayHeader(arguments.count)
        for argument in arguments { appendBulk(argument) }
    }

    public func appendCommand(_ arguments: String...) {
        appendCommand(arguments.map { Array($0.utf8) })
    }

    func appendText(_ text: String) {
        var copy = text
        copy.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }
}
