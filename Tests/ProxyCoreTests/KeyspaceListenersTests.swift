import Testing

@testable import ProxyCore

private func channel(of frame: String) -> String? {
    Array(frame.utf8).withUnsafeBytes { bytes in
        Worker.messageChannel(in: bytes).map { String(decoding: $0, as: UTF8.self) }
    }
}

@Test func messageChannelIsReadFromMessagesAndPatternMessages() {
    #expect(channel(of: "*3\r\n$7\r\nmessage\r\n$19\r\n__keyevent@0__:set\r\n$1\r\nk\r\n") == nil)  // bad length
    #expect(channel(of: "*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n") == "__keyevent@0__:set")
    #expect(channel(of: ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n") == "ch")
    #expect(
        channel(of: "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$16\r\n__keyspace@0__:k\r\n$3\r\nset\r\n") == "__keyspace@0__:k")
    #expect(channel(of: ">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$1\r\nx\r\n") == "ch")
}

@Test func messageChannelIgnoresEverythingElse() {
    #expect(channel(of: "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n") == nil)
    #expect(channel(of: "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$1\r\nx\r\n") == nil)
    #expect(channel(of: "*4\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n") == nil)  // message has 3 items
    #expect(channel(of: "-NOPERM this user has no permissions\r\n") == nil)
    #expect(channel(of: "*3\r\n$7\r\nmessage\r\n$99999999999999999999\r\n") == nil)
    #expect(channel(of: "*3\r\n$7\r\nmessage\r\n$5\r\nab") == nil)  // truncated
    #expect(channel(of: "") == nil)
}

@Test func patternsThatMayMatchNotificationChannels() {
    func mayMatch(_ pattern: String) -> Bool { KeyspaceListeners.mayMatchNotifications(pattern: Array(pattern.utf8)) }
    for pattern in ["*", "__key*", "__keyevent@0__:*", "__keyspace@*__:user:*", "_?key*", "[_]*", "__keyevent@0__:expired"] {
        #expect(mayMatch(pattern), "\(pattern)")
    }
    for pattern in ["news.*", "user:*", "__kez*", "__keyspacex*", "a*"] {
        #expect(!mayMatch(pattern), "\(pattern)")
    }
    #expect(KeyspaceListeners.isNotificationChannel(Array("__keyevent@0__:expired".utf8)))
    #expect(!KeyspaceListeners.isNotificationChannel(Array("__keyevent".utf8)))
    #expect(!KeyspaceListeners.isNotificationChannel(Array("news".utf8)))
}
