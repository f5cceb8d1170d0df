/// Limits a client's request stream must respect, as in redis.conf.
public struct RequestLimits: Sendable, Equatable {
    /// `proto-max-bulk-len`: the largest single argument (default 512 MB).
    public var maxBulkLength: Int
    /// The most arguments in one command (Redis allows up to 1024*1024*1024).
    public var maxMultibulkLength: Int
    /// The longest inline command line, and the longest `*`/`$` header line (64 KB).
    public var maxInlineLength: Int
    /// Set for a client that has not authenticated yet: errors then use
    /// Redis's "unauthenticated" wording.
    public private(set) var isBeforeAuthentication = false

    public init(
        maxBulkLength: Int = 512 * 1024 * 1024,
        maxMultibulkLength: Int = 1024 * 1024,
        maxInlineLength: Int = 64 * 1024
    ) {
        self.maxBulkLength = maxBulkLength
        self.maxMultibulkLength = maxMultibulkLength
        self.maxInlineLength = maxInlineLength
    }

    /// The limits before `AUTH`, as Redis's: at most 10 arguments of at
    /// most 16 KB each (anything bigger is refused and the connection closed).
    public var beforeAuthentication: RequestLimits {
        var limits = self
        limits.maxMultibulkLength = min(maxMultibulkLength, 10)
        limits.maxBulkLength = min(maxBulkLength, 16 * 1024)
        limits.isBeforeAuthentication = true
        return limits
    }
}

/// A client stream error after which the stream cannot be resynced. The message
/// is Redis's wording, sent as `-ERR <message>` before the connection closes.
public struct ProtocolError: Error, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}
