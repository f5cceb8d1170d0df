import RESPWire
import Testing

@testable import ProxyCore

@Suite struct BlockingTimeoutTests {
    /// `body` applied to `arguments` sent as one RESP command.
    private func with<T>(_ arguments: [String], _ body: (Command) -> T) -> T? {
        let request = ByteBuffer(capacity: 64)
        request.appendCommand(arguments.map { Array($0.utf8) })
        return Worker.withCommand(request.readableArray(), body)
    }

    private func timeout(_ arguments: String...) -> BlockingTimeout? {
        with(arguments) { BlockingTimeout($0) } ?? nil
    }

    @Test func findsTheTimeoutOfEachBlockingCommand() {
        for (command, expected) in [
            (timeout("BLPOP", "a", "b", "5"), 5000),
            (timeout("brpop", "a", "0.25"), 250),
            (timeout("BZPOPMIN", "z", "1.0005"), 1001),  // rounded up, as never earlier
            (timeout("BLMOVE", "a", "b", "LEFT", "RIGHT", "2"), 2000),
            (timeout("BRPOPLPUSH", "a", "b", "3"), 3000),
            (timeout("BLMPOP", "1.5", "2", "a", "b", "LEFT"), 1500),
            (timeout("BZMPOP", "4", "1", "z", "MIN", "COUNT", "2"), 4000),
            (timeout("XREAD", "COUNT", "2", "BLOCK", "700", "STREAMS", "s", "$"), 700),
            (timeout("XREADGROUP", "GROUP", "g", "c", "block", "50", "STREAMS", "s", ">"), 50),
        ] {
            #expect(command?.milliseconds == Int64(expected))
        }
        #expect(timeout("XREAD", "BLOCK", "700", "STREAMS", "s", "$")?.inMilliseconds == true)
        #expect(timeout("BLPOP", "a", "5")?.inMilliseconds == false)
    }

    @Test func foreverMalformedAndUnknownHaveNone() {
        #expect(timeout("BLPOP", "a", "0") == nil)
        #expect(timeout("BLPOP", "a", "0.0") == nil)
        #expect(timeout("BLPOP", "a", "-1") == nil)
        #expect(timeout("BLPOP", "a", "soon") == nil)
        #expect(timeout("BLPOP", "a", "inf") == nil)
        #expect(timeout("XREAD", "BLOCK", "0", "STREAMS", "s", "$") == nil)
        #expect(timeout("XREAD", "STREAMS", "s", "$") == nil)
        #expect(timeout("XREAD", "BLOCK") == nil)
        #expect(timeout("MODULE.BLOCK", "5") == nil)
        #expect(timeout("BLPOP") == nil)
        // Too long to be meant (and to add to a clock): the node judges it.
        #expect(timeout("XREAD", "BLOCK", "9223372036854775807", "STREAMS", "s", "$") == nil)
        #expect(timeout("BLPOP", "a", "1e300") == nil)
        #expect(timeout("BLPOP", "a", "31000000")?.milliseconds == 31_000_000_000)
        // XREADGROUP's group and consumer may be named "block"; STREAMS ends the options.
        #expect(timeout("XREADGROUP", "GROUP", "block", "7", "BLOCK", "0", "STREAMS", "s", ">") == nil)
        #expect(timeout("XREADGROUP", "GROUP", "block", "7", "STREAMS", "s", ">") == nil)
        #expect(timeout("XREAD", "STREAMS", "block", "5") == nil)
        #expect(timeout("XREADGROUP", "GROUP", "g", "block", "COUNT", "1", "BLOCK", "9", "STREAMS", "s", ">")?.milliseconds == 9)
    }

    @Test func writesWhatIsLeft() {
        #expect(BlockingTimeout.text(1234, inMilliseconds: false) == "1.2345")
        #expect(BlockingTimeout.text(1, inMilliseconds: false) == "0.0015")  // (never "0.001": 0 on Redis 6)
        #expect(BlockingTimeout.text(60_000, inMilliseconds: false) == "60.0005")
        #expect(BlockingTimeout.text(250, inMilliseconds: true) == "250")
    }

    @Test func rewritesOnlyTheTimeout() {
        let request = ByteBuffer(capacity: 16)
        let cases: [([String], Int64, [String])] = [
            (["BLPOP", "a", "b", "5"], 1200, ["BLPOP", "a", "b", "1.2005"]),
            (["BLMPOP", "5", "1", "a", "LEFT"], 40, ["BLMPOP", "0.0405", "1", "a", "LEFT"]),
            (["XREAD", "BLOCK", "5000", "STREAMS", "s", "$"], 1999, ["XREAD", "BLOCK", "1999", "STREAMS", "s", "$"]),
        ]
        for (arguments, remaining, expected) in cases {
            _ = with(arguments) { command in BlockingTimeout(command)!.rewrite(command, remaining: remaining, into: request) }
            let wanted = ByteBuffer(capacity: 16)
            wanted.appendCommand(expected.map { Array($0.utf8) })
            #expect(request.readableArray() == wanted.readableArray())
        }
    }
}
