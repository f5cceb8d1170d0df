import Foundation
import RESPFuzzing
import RESPWire
import Testing

/// The short, always-on run of the properties `make fuzz` checks with
/// libFuzzer: structured inputs (valid encodings, then mutated) and raw bytes.
@Suite struct RESPFuzzingTests {
    static let iterations = Int(ProcessInfo.processInfo.environment["SLOTPROXY_FUZZ_ITERATIONS"] ?? "") ?? 3000

    static let interesting: [[UInt8]] = [
        "*", "$", "\r\n", "\r", "\n", "-1", "0", "2147483647", "536870913", "999999999999999999", "-", "+OK",
        ":", "%", "|", "~", ">", "_", "#t", ",1.5", "(12", "!3", "=7", "txt:", " ", "\"", "'",
    ].map { Array($0.utf8) }

    static func randomArgument(_ rng: inout SplitMix64) -> [UInt8] {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return []
        case 1: return interesting.randomElement(using: &rng)!
        case 2: return (0..<Int.random(in: 1..<20, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        default: return Array(repeating: UInt8(ascii: "x"), count: Int.random(in: 100..<5000, using: &rng))
        }
    }

    static func randomReply(_ rng: inout SplitMix64, depth: Int = 0) -> [UInt8] {
        let simple: [String] = ["+OK\r\n", "-ERR x\r\n", ":42\r\n", "_\r\n", ",3.14\r\n", "#f\r\n", "(1234567\r\n", "$-1\r\n", "*-1\r\n"]
        let pick = Int.random(in: 0..<(depth > 3 ? 3 : 6), using: &rng)
        switch pick {
        case 0: return Array(simple.randomElement(using: &rng)!.utf8)
        case 1, 2:
            let payload = randomArgument(&rng)
            let marker = ["$", "!", "="].randomElement(using: &rng)!
            return Array("\(marker)\(payload.count)\r\n".utf8) + payload + [13, 10]
        default:
            let count = Int.random(in: 0..<5, using: &rng)
            let marker = ["*", "~", ">", "%", "|"].randomElement(using: &rng)!
            let elements = marker == "%" ? count * 2 : marker == "|" ? count * 2 + 1 : count
            var bytes = Array("\(marker)\(count)\r\n".utf8)
            for _ in 0..<elements { bytes += randomReply(&rng, depth: depth + 1) }
            return bytes
        }
    }

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 1 where !bytes.isEmpty:
                bytes.removeLast(Int.random(in: 0...bytes.count, using: &rng))
            case 2:
                let at = Int.random(in: 0...bytes.count, using: &rng)
                bytes.insert(contentsOf: interesting.randomElement(using: &rng)!, at: at)
            case 3 where !bytes.isEmpty:
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                bytes.insert(contentsOf: bytes[at...].prefix(32), at: at)  // duplicate a run
            default:
                bytes += interesting.randomElement(using: &rng)!
            }
        }
        return bytes
    }

    @Test func commandsRoundTripAndSurviveMutation() {
        var rng = SplitMix64(seed: 1)
        for _ in 0..<Self.iterations {
            let arguments = (0..<Int.random(in: 1..<6, using: &rng)).map { _ in Self.randomArgument(&rng) }
            let pieces = (0..<8).map { _ in Int.random(in: 1..<300, using: &rng) }
            RESPFuzzing.checkCommandRoundTrip(arguments, pieceSizes: pieces)
            let buffer = ByteBuffer()
            buffer.appendCommand(arguments)
            RESPFuzzing.check(Self.mutate(buffer.readableArray(), &rng))
        }
    }

    @Test func repliesRoundTripAndSurviveMutation() {
        var rng = SplitMix64(seed: 2)
        for _ in 0..<Self.iterations {
            let reply = Self.randomReply(&rng)
            let pieces = (0..<8).map { _ in Int.random(in: 1..<300, using: &rng) }
            RESPFuzzing.checkReplyRoundTrip(reply, pieceSizes: pieces)
            RESPFuzzing.check(Self.mutate(reply, &rng))
        }
    }

    @Test func randomBytesAndInlineLines() {
        var rng = SplitMix64(seed: 3)
        for _ in 0..<Self.iterations {
            var bytes = (0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Bool.random(using: &rng) {
                bytes = Array("SET k \"a b\" 'c'\r\nGET k\n".utf8) + bytes
            }
            RESPFuzzing.check(bytes)
        }
    }
}
