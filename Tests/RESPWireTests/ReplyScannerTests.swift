import Testing

@testable import RESPWire

/// Scans `stream` fed in chunks cut at `cuts`; returns each reply's bytes and kind.
func scanAll(_ stream: [UInt8], cuts: [Int] = []) -> (replies: [([UInt8], ReplyKind)], error: String?) {
    var scanner = ReplyScanner()
    let input = ByteBuffer(capacity: 64)
    var replies: [([UInt8], ReplyKind)] = []
    var fed = 0
    for end in cuts + [stream.count] where end > fed {
        input.append(Array(stream[fed..<end]))
        fed = end
        scanning: while !input.isEmpty {
            switch scanner.scan(input.readable) {
            case .incomplete: break scanning
            case .error(let error): return (replies, error.message)
            case .complete(let length, let kind):
                replies.append((Array(input.readable[0..<length]), kind))
                input.consume(length)
            }
        }
    }
    return (replies, nil)
}

@Suite struct ReplyScannerTests {
    let replies: [String] = [
        "+OK\r\n", "-ERR boom\r\n", ":42\r\n", "$5\r\nhello\r\n", "$-1\r\n", "$0\r\n\r\n", "*-1\r\n", "*0\r\n",
        "*3\r\n:1\r\n*2\r\n+a\r\n$1\r\nb\r\n$-1\r\n", "_\r\n", ",3.14\r\n", "#t\r\n", "(12345678901234567890\r\n",
        "!8\r\nSYNTAX x\r\n", "=8\r\ntxt:abcd\r\n", "%2\r\n+k\r\n:1\r\n+k2\r\n*1\r\n:2\r\n", "~2\r\n+a\r\n+b\r\n",
        ">3\r\n+message\r\n+ch\r\n+hi\r\n", "|1\r\n+ttl\r\n:3\r\n$3\r\nval\r\n", "*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n",
        "-MOVED 3999 127.0.0.1:6381\r\n", "-ASK 3999 ::1:6381\r\n", "-TRYAGAIN Multiple keys\r\n",
        "-CLUSTERDOWN The cluster is down\r\n", "-LOADING Redis is loading\r\n",
    ]

    var stream: [UInt8] { replies.flatMap { Array($0.utf8) } }

    @Test func findsEveryBoundaryAtEveryCut() {
        for cut in 0...stream.count {
            let result = scanAll(stream, cuts: [cut])
            #expect(result.error == nil)
            #expect(result.replies.map { String(decoding: $0.0, as: UTF8.self) } == replies, "cut at \(cut)")
        }
    }

    @Test func classifiesErrorsAndPushes() {
        let kinds = scanAll(stream).replies.map(\.1)
        #expect(kinds[1] == .error(.other))
        #expect(kinds[13] == .error(.other))
        #expect(kinds[17] == .push)
        #expect(kinds[20] == .error(.moved))
        #expect(kinds[21] == .error(.ask))
        #expect(kinds[22] == .error(.tryAgain))
        #expect(kinds[23] == .error(.clusterDown))
        #expect(kinds[24] == .error(.loading))
        #expect(kinds[0] == .value)
    }

    @Test func bigBulkIsAwaitedNotRescanned() {
        var scanner = ReplyScanner()
        let header = Array("$10000000\r\n".utf8)
        header.withUnsafeBytes { #expect(scanner.scan($0) == .incomplete) }
        #expect(scanner.bytesStillNeeded == header.count + 10_000_002)
    }

    @Test(arguments: ["?x\r\n", "$abc\r\n", "*-5\r\n", "$3\r\nabcde\r\n"])
    func rejectsMalformedReplies(input: String) {
        #expect(scanAll(Array(input.utf8)).error != nil)
    }

    @Test func deepNestingIsBounded() {
        var scanner = ReplyScanner(maxDepth: 8)
        let deep = Array(String(repeating: "*1\r\n", count: 20).utf8)
        deep.withUnsafeBytes {
            guard case .error = scanner.scan($0) else {
                Issue.record("expected an error for nesting deeper than the limit")
                return
            }
        }
    }

    @Test func decodesValues() {
        let decoded = RESPValue.decode(Array("*2\r\n$3\r\nfoo\r\n%1\r\n+a\r\n:1\r\n".utf8))
        #expect(decoded?.length == 25)
        #expect(decoded?.value == .array([.bulkString(Array("foo".utf8)), .map([(.simpleString("a"), .integer(1))])]))
        #expect(RESPValue.decode(Array("*2\r\n$3\r\nfoo\r\n".utf8)) == nil)
    }
}

@Suite struct EncoderTests {
    @Test func encodesFrames() {
        let out = ByteBuffer(capacity: 8)
        out.appendInteger(-123)
        out.appendError("ERR a\r\nb")
        out.appendBulk("hi")
        out.appendNull(resp3: false)
        out.appendNull(resp3: true)
        out.appendMapHeader(2, resp3: false)
        out.appendMapHeader(2, resp3: true)
        out.appendDecimal(Int.min + 1)
        #expect(
            String(decoding: out.readableArray(), as: UTF8.self)
                == ":-123\r\n-ERR a  b\r\n$2\r\nhi\r\n$-1\r\n_\r\n*4\r\n%2\r\n-9223372036854775807")
    }
}
