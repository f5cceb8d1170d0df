import Testing

@testable import RESPWire

/// Feeds `stream` to a parser in chunks cut at `cuts`, collecting every
/// complete command as its arguments (or the protocol error that stopped it).
func parseAll(_ stream: [UInt8], cuts: [Int] = [], limits: RequestLimits = RequestLimits()) -> (commands: [[[UInt8]]], error: String?) {
    var parser = RequestParser(limits: limits)
    let input = ByteBuffer(capacity: 64)
    var commands: [[[UInt8]]] = []
    var fed = 0
    for end in cuts + [stream.count] where end > fed {
        input.append(Array(stream[fed..<end]))
        fed = end
        while !input.isEmpty {
            let result = parser.parse(input.readable)
            switch result {
            case .incomplete:
                break
            case .error(let error):
                return (commands, error.message)
            case .complete(let frameLength):
                let base: [UInt8] = parser.lastWasInline ? parser.inlineFrame : Array(input.readable[0..<frameLength])
                if !parser.arguments.isEmpty {
                    commands.append(parser.arguments.map { Array(base[$0.offset..<($0.offset + $0.length)]) })
                }
                input.consume(frameLength)
                parser.reset()
                continue
            }
            break
        }
    }
    return (commands, nil)
}

func resp(_ args: [[UInt8]]) -> [UInt8] {
    let buffer = ByteBuffer()
    buffer.appendCommand(args)
    return buffer.readableArray()
}

func resp(_ args: String...) -> [UInt8] { resp(args.map { Array($0.utf8) }) }

@Suite struct RequestParserTests {
    let pipeline: [UInt8] =
        resp("SET", "user:1", "alice") + Array("PING\r\n".utf8) + resp("GET", "user:1")
        + resp([[], Array(0...255).map(UInt8.init), Array("x".utf8)]) + Array("  get   'a b'  \"c\\x41\\n\"\r\n".utf8)

    var expected: [[[UInt8]]] {
        [
            ["SET", "user:1", "alice"].map { Array($0.utf8) },
            [Array("PING".utf8)],
            ["GET", "user:1"].map { Array($0.utf8) },
            [[], Array(0...255).map(UInt8.init), Array("x".utf8)],
            [Array("get".utf8), Array("a b".utf8), Array("cA\n".utf8)],
        ]
    }

    @Test func wholeStream() {
        let result = parseAll(pipeline)
        #expect(result.error == nil)
        #expect(result.commands == expected)
    }

    @Test func splitAtEveryByte() {
        for cut in 0...pipeline.count {
            let result = parseAll(pipeline, cuts: [cut])
            #expect(result.error == nil, "cut at \(cut)")
            #expect(result.commands == expected, "cut at \(cut)")
        }
    }

    @Test func oneByteAtATime() {
        let result = parseAll(pipeline, cuts: Array(1..<pipeline.count))
        #expect(result.commands == expected)
    }

    @Test func emptyMultibulkAndBlankLinesAreIgnored() {
        let result = parseAll(Array("*0\r\n*-1\r\n\r\n".utf8) + resp("PING"))
        #expect(result.error == nil)
        #expect(result.commands == [[Array("PING".utf8)]])
    }

    @Test func randomRoundTrips() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<300 {
            let commands: [[[UInt8]]] = (0..<Int(rng.next() % 5 + 1)).map { _ in
                (0..<Int(rng.next() % 6 + 1)).map { _ in
                    (0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                }
            }
            let stream = commands.flatMap(resp)
            let cuts = (0..<3).map { _ in Int(rng.next() % UInt64(stream.count + 1)) }.sorted()
            let result = parseAll(stream, cuts: cuts)
            #expect(result.error == nil)
            #expect(result.commands == commands)
        }
    }

    @Test(arguments: [
        ("*1\r\n$-5\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$99999999999999999999\r\n", "Protocol error: invalid bulk length"),
        ("*abc\r\n", "Protocol error: invalid multibulk length"),
        ("*1\r\nX", "Protocol error: expected '$', got 'X'"),
        ("*2\r\n$3\r\nGET\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        ("*1\r\n*1\r\n*1\r\n$1\r\nx\r\n", "Protocol error: expected '$', got '*'"),
        ("*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        ("*1\r\n$3\r\nGETXX", "Protocol error: expected CRLF after bulk payload"),
        ("*2000000\r\n", "Protocol error: invalid multibulk length"),
        ("get \"unterminated\r\n", "Protocol error: unbalanced quotes in request"),
        ("get \"a\"b\r\n", "Protocol error: unbalanced quotes in request"),
    ])
    func hostileInput(input: String, message: String) {
        let result = parseAll(Array(input.utf8))
        #expect(result.error == message)
    }

    @Test func limitsAreEnforced() {
        let limits = RequestLimits(maxBulkLength: 10, maxMultibulkLength: 3, maxInlineLength: 32)
        #expect(parseAll(resp("SET", "k", "0123456789"), limits: limits).error == nil)
        #expect(parseAll(resp("SET", "k", "01234567890"), limits: limits).error == "Protocol error: invalid bulk length")
        #expect(parseAll(resp("A", "B", "C", "D"), limits: limits).error == "Protocol error: invalid multibulk length")
        #expect(
            parseAll(Array(repeating: UInt8(ascii: "a"), count: 40), limits: limits).error
                == "Protocol error: too big inline request")
        #expect(
            parseAll(Array("*".utf8) + Array(repeating: UInt8(ascii: "1"), count: 40), limits: limits).error
                == "Protocol error: too big mbulk count string")
        #expect(
            parseAll(Array("*1\r\n$".utf8) + Array(repeating: UInt8(ascii: "1"), count: 40), limits: limits).error
                == "Protocol error: too big bulk count string")
    }

    /// Before AUTH, Redis's own limits and wording: 10 arguments, 16 KB each.
    @Test func limitsBeforeAuthentication() {
        let limits = RequestLimits().beforeAuthentication
        let tenArguments = (0..<10).map { _ in "x" }
        #expect(parseAll(resp(tenArguments.map { Array($0.utf8) }), limits: limits).error == nil)
        #expect(
            parseAll(resp((tenArguments + ["x"]).map { Array($0.utf8) }), limits: limits).error
                == "Protocol error: unauthenticated multibulk length")
        let big = String(repeating: "p", count: 16 * 1024)
        #expect(parseAll(resp("AUTH", big), limits: limits).error == nil)
        #expect(parseAll(resp("AUTH", big + "p"), limits: limits).error == "Protocol error: unauthenticated bulk length")
        #expect(parseAll(Array("*1\r\n$-5\r\n".utf8), limits: limits).error == "Protocol error: invalid bulk length")
        #expect(parseAll(resp("AUTH", big + "p")).error == nil)
    }

    @Test func bigBulkTellsHowMuchIsNeeded() {
        var parser = RequestParser()
        let header = Array("*2\r\n$3\r\nSET\r\n$1000000\r\n".utf8)
        header.withUnsafeBytes { #expect(parser.parse($0) == .incomplete) }
        #expect(parser.bytesStillNeeded == header.count + 1_000_000 + 2)
    }
}

/// A small deterministic generator, so property tests repeat exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
