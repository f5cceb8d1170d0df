import ClusterTopology
import Testing

@testable import ProxyCore

/// The pieces of a relaxed `EXEC` that read the nodes' replies.
@Suite struct RelaxedTransactionReplyTests {
    @Test func execArraySplitsIntoWholeElements() {
        let reply = Array("*4\r\n+OK\r\n:2\r\n*2\r\n$1\r\nx\r\n$-1\r\n-WRONGTYPE Operation\r\n".utf8)
        let elements = Worker.arrayElements(reply)?.map { String(decoding: $0, as: UTF8.self) }
        #expect(elements == ["+OK\r\n", ":2\r\n", "*2\r\n$1\r\nx\r\n$-1\r\n", "-WRONGTYPE Operation\r\n"])
        #expect(Worker.arrayElements(Array("*0\r\n".utf8)) == [])
    }

    @Test func truncatedOrNonArrayRepliesAreRejected() {
        #expect(Worker.arrayElements(Array("*2\r\n+OK\r\n".utf8)) == nil)
        #expect(Worker.arrayElements(Array("-EXECABORT Transaction discarded\r\n".utf8)) == nil)
        #expect(Worker.arrayElements(Array("*-1\r\n".utf8)) == nil)
    }

    @Test func nullRepliesOfBothProtocolsMeanAFailedWatch() {
        #expect(Worker.isNullReply(Array("*-1\r\n".utf8)))
        #expect(Worker.isNullReply(Array("_\r\n".utf8)))
        #expect(!Worker.isNullReply(Array("*0\r\n".utf8)))
    }

    @Test func movedRepliesNameTheNewOwner() {
        #expect(Worker.movedTarget(Array("-MOVED 3999 10.0.0.2:7001\r\n".utf8), defaultHost: "h") == NodeAddress(host: "10.0.0.2", port: 7001))
        #expect(Worker.movedTarget(Array("-MOVED 3999 :7001\r\n".utf8), defaultHost: "h") == NodeAddress(host: "h", port: 7001))
        #expect(Worker.movedTarget(Array("-ASK 3999 10.0.0.2:7001\r\n".utf8), defaultHost: "h") == nil)
    }
}
