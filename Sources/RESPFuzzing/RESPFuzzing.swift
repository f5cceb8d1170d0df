import RESPWire

/// The properties the request parser and the reply scanner must keep on any
/// input, checked by the libFuzzer target (`make fuzz`) and by a seeded
/// generator in the unit tests (`RESPFuzzingTests`). A violation traps.
///
/// - Whole vs. piecemeal: the same bytes fed at once or in pieces (as a
///   socket delivers them) give the same frames and the same final outcome.
/// - Frames stay inside the input; argument spans inside their frame.
/// - The scanner agrees with the independent decoder (`RESPValue.decode`)
///   on where every reply it can decode ends.
/// - Encoded commands and replies come back exactly.
public enum RESPFuzzing {
    /// Limits small enough that a fuzz input can reach every one of them.
    public static let limits = RequestLimits(maxBulkLength: 1 << 20, maxMultibulkLength: 1024, maxInlineLength: 1024)

    public static func check(_ data: [UInt8]) {
        let pieces = pieceSizes(for: data)
        let whole = parseRequests(data, pieceSizes: [])
        let piecemeal = parseRequests(data, pieceSizes: pieces)
        precondition(whole == piecemeal, "request parser: whole \(whole) vs piecemeal \(piecemeal)")
        let scanned = scanReplies(data, pieceSizes: [])
        let scannedPiecemeal = scanReplies(data, pieceSizes: pieces)
        precondition(scanned == scannedPiecemeal, "reply scanner: whole \(scanned) vs piecemeal \(scannedPiecemeal)")
        checkAgainstDecoder(data)
    }

    /// Outcomes of parsing requests from `data`: each frame's arguments, then
    /// how it ended ("incomplete" or the error).
    public static func parseRequests(_ data: [UInt8], pieceSizes: [Int]) -> [String] {
        var parser = RequestParser(limits: limits)
        return feed(data, pieceSizes: pieceSizes) { buffer, outcomes in
            switch buffer.withUnsafeBytes({ parser.parse($0) }) {
            case .incomplete:
                if let needed = parser.bytesStillNeeded {
                    precondition(needed <= limits.maxBulkLength + 2 * limits.maxInlineLength + 16 + buffer.count,
                                 "asks for \(needed) bytes")
                }
                return .waitForMore
            case .error(let error):
                outcomes.append("error: \(error.message)")
                return .stop
            case .complete(let frameLength):
                precondition(frameLength > 0 && frameLength <= buffer.count, "frame \(frameLength) of \(buffer.count)")
                let frame = parser.lastWasInline ? parser.inlineFrame : Array(buffer[0..<frameLength])
                precondition(parser.arguments.count <= limits.maxMultibulkLength)
                var arguments: [[UInt8]] = []
                for span in parser.arguments {
                    precondition(span.offset >= 0 && span.length >= 0 && span.offset + span.length <= frame.count,
                                 "span \(span) outside a frame of \(frame.count)")
                    arguments.append(Array(frame[span.offset..<(span.offset + span.length)]))
                }
                outcomes.append(describe(arguments))
                buffer.removeFirst(frameLength)
                parser.reset()
                return .consumed
            }
        }
    }

    /// Outcomes of scanning replies from `data`: each reply's length and kind,
    /// then how it ended.
    public static func scanReplies(_ data: [UInt8], pieceSizes: [Int]) -> [String] {
        var scanner = ReplyScanner(maxDepth: 64)
        return feed(data, pieceSizes: pieceSizes) { buffer, outcomes in
            switch buffer.withUnsafeBytes({ scanner.scan($0) }) {
            case .incomplete:
                return .waitForMore
            case .error(let error):
                outcomes.append("error: \(error.message)")
                return .stop
            case .complete(let length, let kind):
                precondition(length > 0 && length <= buffer.count, "reply \(length) of \(buffer.count)")
                outcomes.append("reply \(length) \(kind)")
                buffer.removeFirst(length)
                scanner.reset()
                return .consumed
            }
        }
    }

    /// What `feed`'s step did with the buffered bytes.
    enum Step { case consumed, waitForMore, stop }

    /// Delivers `data` into a buffer as a socket would: whole, or in pieces
    /// of `pieceSizes`. After each piece `step` runs until it needs more
    /// bytes (or stops at an error); the outcomes end with "end" or
    /// "incomplete <n>" when all was fed.
    static func feed(
        _ data: [UInt8], pieceSizes: [Int], step: (inout [UInt8], inout [String]) -> Step
    ) -> [String] {
        var outcomes: [String] = []
        var buffer: [UInt8] = []
        var fed = 0
        var pieceIndex = 0
        while true {
            if fed < data.count {
                let size = pieceSizes.isEmpty ? data.count : max(1, pieceSizes[pieceIndex % pieceSizes.count])
                pieceIndex += 1
                let end = min(data.count, fed + size)
                buffer.append(contentsOf: data[fed..<end])
                fed = end
            }
            loop: while !buffer.isEmpty {
                switch step(&buffer, &outcomes) {
                case .consumed: continue
                case .waitForMore: break loop
                case .stop: return outcomes
                }
            }
            if fed >= data.count {
                outcomes.append(buffer.isEmpty ? "end" : "incomplete \(buffer.count)")
                return outcomes
            }
        }
    }

    /// Where the decoder finds a complete reply, the scanner finds the same end.
    static func checkAgainstDecoder(_ data: [UInt8]) {
        guard let (_, decodedLength) = RESPValue.decode(data) else { return }
        var scanner = ReplyScanner(maxDepth: 1024)
        if case .complete(let length, _) = data.withUnsafeBytes({ scanner.scan($0) }) {
            precondition(length == decodedLength, "scanner ends a reply at \(length), the decoder at \(decodedLength)")
        }
    }

    /// A frame's arguments, short: their lengths and a hash of their bytes.
    static func describe(_ arguments: [[UInt8]]) -> String {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for argument in arguments {
            for byte in argument { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
            hash = (hash ^ 0xFF) &* 1_099_511_628_211
        }
        return "frame \(arguments.map(\.count)) \(hash)"
    }

    /// Piece sizes derived from the input, so a fuzz input also chooses how it
    /// is split (1..16 bytes, and some bigger).
    static func pieceSizes(for data: [UInt8]) -> [Int] {
        var sizes: [Int] = []
        var hash: UInt32 = 2_166_136_261
        for byte in data.prefix(64) {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
            sizes.append(Int(hash % 17) + (hash & 0x100 != 0 ? 0 : Int(hash % 200)))
        }
        return sizes.isEmpty ? [1] : sizes
    }

    // MARK: round trips

    /// `arguments` encoded as a command parse back to exactly themselves.
    public static func checkCommandRoundTrip(_ arguments: [[UInt8]], pieceSizes: [Int]) {
        guard !arguments.isEmpty, arguments.count <= limits.maxMultibulkLength else { return }
        let buffer = ByteBuffer()
        buffer.appendCommand(arguments)
        let bytes = buffer.readableArray()
        let outcomes = parseRequests(bytes, pieceSizes: pieceSizes)
        precondition(outcomes == [describe(arguments), "end"], "round trip of \(arguments): \(outcomes)")
    }

    /// An encoded reply is scanned as one reply of exactly its length.
    public static func checkReplyRoundTrip(_ encoded: [UInt8], pieceSizes: [Int]) {
        let outcomes = scanReplies(encoded, pieceSizes: pieceSizes)
        precondition(outcomes.count == 2 && outcomes[0].hasPrefix("reply \(encoded.count) ") && outcomes[1] == "end",
                     "reply round trip: \(outcomes)")
        checkAgainstDecoder(encoded)
    }
}

#if FUZZING
    /// libFuzzer's entry point (`make fuzz` links these objects with
    /// `-sanitize=fuzzer`, which supplies `main`).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        RESPFuzzing.check(Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }
#endif
