/// Limits a client's request stream must respect, as in redis.conf.
public struct RequestLimits: Sendable, Equatable {
    /// `proto-max-bulk-len`: the largest single argument (default 512 MB).
    public var maxBulkLength: Int
    /// The most arguments in one command (Redis allows up to 1024*1024*1024).
    public var maxMultibulkLength: Int
    /// The longest inline command line, and the longest `*`/`$` header line (64 KB).
    public var maxInlineLength: Int

    public init(
        maxBulkLength: Int = 512 * 1024 * 1024,
        maxMultibulkLength: Int = 1024 * 1024,
        maxInlineLength: Int = 64 * 1024
    ) {
        self.maxBulkLength = maxBulkLength
        self.maxMultibulkLength = maxMultibulkLength
        self.maxInlineLength = maxInlineLength
    }
}

/// A client stream error after which the stream cannot be resynced. The message
/// is Redis's wording, sent as `-ERR <message>` before the connection closes.
public struct ProtocolError: Error, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}
