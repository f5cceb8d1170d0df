import RESPWire

/// A parsed command seen through its frame: argument `i` is a byte view into
/// the client's input, valid while the command is being routed.
struct Command {
    let frame: UnsafeRawBufferPointer
    let arguments: [ArgumentSpan]

    var count: Int { arguments.count }

    @inline(__always) func argument(_ index: Int) -> UnsafeRawBufferPointer {
        let span = arguments[index]
        return UnsafeRawBufferPointer(rebasing: frame[span.offset..<(span.offset + span.length)])
    }

    /// Argument `index` as text (slow paths: errors, local commands).
    func string(_ index: Int) -> String { String(decoding: argument(index), as: UTF8.self) }

    func bytes(_ index: Int) -> [UInt8] { Array(argument(index)) }

    /// Case-insensitive comparison with an ASCII word, without allocating.
    func argument(_ index: Int, equals word: StaticString) -> Bool {
        let bytes = argument(index)
        guard bytes.count == word.utf8CodeUnitCount else { return false }
        let w = word.utf8Start
        for i in 0..<bytes.count where bytes[i] | 0x20 != w[i] | 0x20 { return false }
        return true
    }
}
