import RESPWire
import Testing

@testable import ProxyCore

@Suite struct StreamReadRepliesTests {
    func read(_ command: String, keys: [String], resp3: Bool) -> Worker.StreamRead {
        Worker.StreamRead(
            head: [Array(command.utf8)], keys: keys.map { Array($0.utf8) }, ids: keys.map { _ in Array("0".utf8) },
            resp3: resp3)
    }

    func merge(_ replies: [String], _ read: Worker.StreamRead) -> String {
        let out = ByteBuffer()
        StreamReadReplies.merge(replies.map { Array($0.utf8) }, of: read, into: out)
        return String(decoding: out.readableArray(), as: UTF8.self)
    }

    let entryB = "*1\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    let entryA = "*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n"

    @Test func streamsComeInTheClientsOrder() {
        // The parts answer b (first slot) and a; the client asked a, c, b.
        let resp2 = read("XREAD", keys: ["a", "c", "b"], resp3: false)
        #expect(
            merge(["*1\r\n*2\r\n$1\r\nb\r\n" + entryB, "*1\r\n*2\r\n$1\r\na\r\n" + entryA, "*-1\r\n"], resp2)
                == "*2\r\n*2\r\n$1\r\na\r\n" + entryA + "*2\r\n$1\r\nb\r\n" + entryB)
        let resp3 = read("XREAD", keys: ["a", "c", "b"], resp3: true)
        #expect(
            merge(["%1\r\n$1\r\nb\r\n" + entryB, "%1\r\n$1\r\na\r\n" + entryA, "_\r\n"], resp3)
                == "%2\r\n$1\r\na\r\n" + entryA + "$1\r\nb\r\n" + entryB)
    }

    @Test func noEntriesIsTheNull() {
        #expect(merge(["*-1\r\n", "*-1\r\n"], read("XREAD", keys: ["a", "b"], resp3: false)) == "*-1\r\n")
        #expect(merge(["_\r\n", "_\r\n"], read("XREAD", keys: ["a", "b"], resp3: true)) == "_\r\n")
    }

    @Test func anErrorStandsUnlessAWokenGroupsBesideEntries() {
        let error = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        let withEntries = "*1\r\n*2\r\n$1\r\na\r\n" + entryA
        let reading = read("XREADGROUP", keys: ["a", "b"], resp3: false)
        #expect(self.merge([withEntries, error], reading) == error)
        func merge(_ replies: [String], hidden: [Bool]) -> String {
            let out = ByteBuffer()
            StreamReadReplies.merge(replies.map { Array($0.utf8) }, of: reading, into: out, errorsHiddenByEntries: hidden)
            return String(decoding: out.readableArray(), as: UTF8.self)
        }
        #expect(merge([withEntries, error], hidden: [false, true]) == withEntries)
        #expect(merge([withEntries, error], hidden: [false, false]) == error)
        #expect(merge(["*-1\r\n", error], hidden: [false, true]) == error)
    }

    @Test func idsOneServerRefusesAreRefusedBeforeAnyRead() {
        func refusal(_ ids: [String], group: Bool) -> String? {
            StreamReadReplies.refusal(ofIDs: ids.map { Array($0.utf8) }, groupRead: group)
        }
        #expect(refusal(["0", "1-1", " 5", "$", "+"], group: false) == nil)
        #expect(refusal([">", "0-0"], group: true) == nil)
        #expect(refusal(["0", "bad"], group: false) == "ERR Invalid stream ID specified as stream command argument")
        #expect(refusal(["1-", "$"], group: true) == "ERR Invalid stream ID specified as stream command argument")
        #expect(refusal(["0", "$"], group: true)?.hasPrefix("ERR The $ ID is meaningless") == true)
        #expect(refusal([">"], group: false)?.hasPrefix("ERR The > ID can be specified only") == true)
        #expect(refusal(["-1"], group: false) != nil && refusal(["1-x"], group: false) != nil)
    }

    @Test func notAStreamReadReplyIsAnError() {
        #expect(merge([":1\r\n"], read("XREAD", keys: ["a"], resp3: false)).hasPrefix("-ERR slotproxy"))
    }
}

@Suite struct SubscriptionMarkerTests {
    func isMarker(_ text: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { Worker.isSubscriptionMarker($0) }
    }

    @Test func onlyTheWholeMarkerReplyIsOne() {
        let marker = Worker.subscriptionMarker
        let bulk = "$\(marker.utf8.count)\r\n\(marker)\r\n"
        #expect(isMarker("*2\r\n$4\r\npong\r\n" + bulk))
        #expect(isMarker(bulk))
        // A message, or a client's own PING, that quotes the marker text.
        #expect(!isMarker("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n" + bulk))
        #expect(!isMarker("*2\r\n$4\r\npong\r\n$29\r\nslotproxy-subscription-marker\r\n"))
        #expect(marker.hasPrefix("slotproxy-subscription-marker-") && marker.utf8.count > 40)
    }
}

@Suite struct StreamLastIDTests {
    func record(_ arguments: [String]) -> RequestRecord {
        let record = RequestRecord()
        record.request.appendCommand(arguments.map { Array($0.utf8) })
        return record
    }

    func text(_ arguments: [[UInt8]]?) -> [String]? { arguments?.map { String(decoding: $0, as: UTF8.self) } }

    @Test func onlyABlockingXREADsDollarStreamsAreLookedUp() {
        let blocking = record(["XREAD", "COUNT", "5", "BLOCK", "0", "STREAMS", "a", "b", "c", "$", "7-0", "$"])
        #expect(Worker.mayHaveDollarID(blocking.request.readable))
        #expect(Worker.dollarStreams(of: blocking).map { "\($0.index):" + String(decoding: $0.key, as: UTF8.self) } == ["0:a", "2:c"])
        // (Without BLOCK `$` reads nothing; XREADGROUP refuses `$`; a
        // command the node refuses is not looked into.)
        #expect(Worker.dollarStreams(of: record(["XREAD", "STREAMS", "a", "$"])).isEmpty)
        #expect(Worker.dollarStreams(of: record(["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "a", "$"])).isEmpty)
        #expect(Worker.dollarStreams(of: record(["XREAD", "BLOCK", "0", "STREAMS", "a", "b", "$"])).isEmpty)
        #expect(!Worker.mayHaveDollarID(record(["XREAD", "BLOCK", "0", "STREAMS", "a$", "0"]).request.readable))
    }

    @Test func theLastIDComesFromTheNewestEntry() {
        let id = { (reply: String) in
            Array(reply.utf8).withUnsafeBytes { Worker.newestEntryID(inLookupReply: $0) }.map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(id("$15\r\n1796189649996-3\r\n") == "1796189649996-3")
        #expect(id("$3\r\n0-0\r\n") == "0-0")
        #expect(id("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n") == nil)
        #expect(id("-NOPERM this user has no permissions to run the 'eval' command\r\n") == nil)
        #expect(id("$99999999999999999999999\r\n") == nil)
    }

    @Test func aResendReadsAfterTheLookedUpIDs() {
        let read = record(["XREAD", "BLOCK", "1000", "STREAMS", "a", "b", "c", "$", "$", "7-0"])
        let rewritten = Worker.withCommand(of: read) { Worker.replacingDollarIDs($0, with: [nil, Array("3-1".utf8)]) }
        #expect(text(rewritten ?? nil) == ["XREAD", "BLOCK", "1000", "STREAMS", "a", "b", "c", "$", "3-1", "7-0"])
    }
}
