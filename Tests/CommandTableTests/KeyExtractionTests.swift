import CommandTable
import RESPWire
import Testing

/// The keys `CommandSpec.extractKeys` finds in `words`, as strings. Every
/// expectation below was checked against redis-server 7.0's `COMMAND GETKEYS`.
func keys(_ words: String..., includeNotKeys: Bool = false) -> [String] {
    var frame: [UInt8] = []
    var arguments: [ArgumentSpan] = []
    for word in words {
        arguments.append(ArgumentSpan(offset: frame.count, length: word.utf8.count))
        frame.append(contentsOf: word.utf8)
    }
    guard var spec = CommandTable.lookup(name: words[0]) else {
        Issue.record("unknown command \(words[0])")
        return []
    }
    if spec.isContainer, words.count > 1, let sub = CommandTable.lookup(name: words[0] + "|" + words[1]) {
        spec = sub
    }
    var found: [Int] = []
    frame.withUnsafeBytes { spec.extractKeys(frame: $0, arguments: arguments, into: &found, includeNotKeys: includeNotKeys) }
    return found.map { words[$0] }
}

@Suite("Key extraction")
struct KeyExtractionTests {
    @Test func plainCommands() {
        #expect(keys("GET", "k") == ["k"])
        #expect(keys("set", "k", "v", "GET") == ["k"])
        #expect(keys("RENAME", "a", "b") == ["a", "b"])
        #expect(keys("LMOVE", "a", "b", "LEFT", "RIGHT") == ["a", "b"])
        #expect(keys("DEL", "a", "b", "c") == ["a", "b", "c"])
        #expect(keys("BITOP", "AND", "d", "a", "b") == ["d", "a", "b"])
        #expect(keys("PING").isEmpty)
        #expect(keys("INFO", "server").isEmpty)
    }

    @Test func appendsAfterWhatIsThere() {
        var frame: [UInt8] = []
        var arguments: [ArgumentSpan] = []
        for word in ["GET", "k"] {
            arguments.append(ArgumentSpan(offset: frame.count, length: word.utf8.count))
            frame.append(contentsOf: word.utf8)
        }
        var found = [42]
        found.reserveCapacity(8)
        frame.withUnsafeBytes { CommandTable.lookup(name: "get")!.extractKeys(frame: $0, arguments: arguments, into: &found) }
        #expect(found == [42, 1])
    }

    @Test func msetStepsOverValues() {
        #expect(keys("MSET", "a", "1", "b", "2", "c", "3") == ["a", "b", "c"])
        #expect(keys("MSETNX", "a", "1") == ["a"])
    }

    @Test func evalKeyCount() {
        #expect(keys("EVAL", "return 1", "0") == [])
        #expect(keys("EVAL", "s", "0", "arg") == [])
        #expect(keys("EVAL", "s", "2", "a", "b", "x", "y") == ["a", "b"])
        #expect(keys("EVALSHA", "abc", "1", "k", "v") == ["k"])
        #expect(keys("FCALL", "f", "1", "k", "a") == ["k"])
        // More keys than arguments, or a negative count: none.
        #expect(keys("EVAL", "s", "3", "a", "b") == [])
        #expect(keys("EVAL", "s", "-1", "a") == [])
        // string2ll refuses "01" and "+1"; Redis's fallback reads them with atoi.
        #expect(keys("EVAL", "s", "01", "a") == ["a"])
        #expect(keys("EVAL", "s", "+1", "a") == ["a"])
        // Redis narrows the count to a C int: 2^32 + 1 is 1.
        #expect(keys("EVAL", "s", "4294967297", "a") == ["a"])
    }

    @Test func xreadStreams() {
        #expect(keys("XREAD", "STREAMS", "a", "b", "1", "2") == ["a", "b"])
        #expect(keys("XREAD", "COUNT", "10", "BLOCK", "5", "streams", "s1", "s2", "0", "0") == ["s1", "s2"])
        #expect(keys("XREAD", "STREAMS", "a", "b", "1") == ["a"])
        #expect(keys("XREAD", "STREAMS", "a") == [])
        #expect(keys("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "s1", "s2", ">", ">") == ["s1", "s2"])
        #expect(keys("XREADGROUP", "GROUP", "g", "c", "NOACK", "STREAMS", "s", ">") == ["s"])
    }

    @Test func sortedSetKeyCounts() {
        #expect(keys("ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2") == ["d", "a", "b"])
        #expect(keys("ZINTERSTORE", "d", "1", "a") == ["d", "a"])
        // `+2` fails the key specs; the fallback puts the destination last.
        #expect(keys("ZUNIONSTORE", "d", "+2", "a", "b") == ["a", "b", "d"])
        #expect(keys("ZUNION", "3", "a", "b", "c", "WITHSCORES") == ["a", "b", "c"])
        #expect(keys("ZUNION", "2", "a") == [])
        #expect(keys("ZDIFF", "2", "a", "b") == ["a", "b"])
        #expect(keys("ZINTERCARD", "2", "a", "b", "LIMIT", "1") == ["a", "b"])
    }

    @Test func popFromSeveralKeys() {
        #expect(keys("LMPOP", "2", "l1", "l2", "LEFT", "COUNT", "2") == ["l1", "l2"])
        #expect(keys("BLMPOP", "0", "2", "l1", "l2", "RIGHT") == ["l1", "l2"])
        #expect(keys("ZMPOP", "1", "z", "MIN") == ["z"])
        #expect(keys("BZMPOP", "1.5", "2", "z1", "z2", "MAX") == ["z1", "z2"])
        #expect(keys("SINTERCARD", "2", "s1", "s2", "LIMIT", "5") == ["s1", "s2"])
        // The count is all Redis goes by: here it takes the direction for a key,
        // and when the count runs past the arguments there are none.
        #expect(keys("LMPOP", "3", "l1", "l2", "LEFT") == ["l1", "l2", "LEFT"])
        #expect(keys("LMPOP", "4", "l1", "l2", "LEFT") == [])
    }

    @Test func georadiusStore() {
        #expect(keys("GEORADIUS", "g", "0", "0", "10", "km") == ["g"])
        #expect(keys("GEORADIUS", "g", "0", "0", "10", "km", "STORE", "dst") == ["g", "dst"])
        #expect(keys("GEORADIUS", "g", "0", "0", "10", "km", "storedist", "dd") == ["g", "dd"])
        // Each keyword is its own key spec, so both destinations are keys.
        #expect(keys("GEORADIUS", "g", "0", "0", "10", "km", "STORE", "x", "STOREDIST", "y") == ["g", "x", "y"])
        #expect(keys("GEORADIUSBYMEMBER", "g", "m", "10", "km", "STORE", "x") == ["g", "x"])
    }

    @Test func sortStore() {
        #expect(keys("SORT", "l") == ["l"])
        #expect(keys("SORT", "l", "BY", "w_*", "LIMIT", "0", "10", "GET", "o_*", "STORE", "dst") == ["l", "dst"])
        #expect(keys("SORT", "l", "store", "d1", "STORE", "d2") == ["l", "d2"])
        // Arguments of BY, GET and LIMIT are skipped, so they are never STORE.
        #expect(keys("SORT", "l", "GET", "store", "STORE", "x") == ["l", "x"])
        #expect(keys("SORT", "l", "LIMIT", "0", "STORE", "x") == ["l"])
        #expect(keys("SORT", "l", "STORE") == ["l"])
        #expect(keys("SORT_RO", "l", "BY", "x", "STORE", "y") == ["l"])
    }

    @Test func migrate() {
        #expect(keys("MIGRATE", "h", "6379", "k", "0", "1000") == ["k"])
        #expect(keys("MIGRATE", "h", "6379", "k", "0", "1000", "COPY", "REPLACE") == ["k"])
        #expect(keys("MIGRATE", "h", "6379", "", "0", "1000", "KEYS", "a", "b") == ["a", "b"])
        #expect(
            keys("MIGRATE", "h", "6379", "", "0", "1000", "COPY", "AUTH", "keys", "KEYS", "a", "b", "c") == ["a", "b", "c"])
        #expect(keys("MIGRATE", "h", "6379", "", "0", "1000", "AUTH2", "keys", "keys", "KEYS", "a") == ["a"])
        // KEYS with a non-empty key argument is a syntax error: no keys.
        #expect(keys("MIGRATE", "h", "6379", "k", "0", "1000", "KEYS", "a", "b") == [])
    }

    @Test func subcommandKeys() {
        #expect(keys("OBJECT", "ENCODING", "k") == ["k"])
        #expect(keys("object", "freq", "k") == ["k"])
        #expect(keys("XINFO", "STREAM", "s", "FULL") == ["s"])
        #expect(keys("CONFIG", "GET", "maxmemory") == [])
    }

    @Test func shardChannelsAreNotKeysUnlessAsked() {
        #expect(keys("SPUBLISH", "ch", "m") == [])
        #expect(keys("SPUBLISH", "ch", "m", includeNotKeys: true) == ["ch"])
        #expect(keys("SSUBSCRIBE", "a", "b", includeNotKeys: true) == ["a", "b"])
    }

    @Test func keywordsStopAtNulLikeStrcasecmp() {
        #expect(keys("SORT", "l", "STORE\u{0}x", "d") == ["l", "d"])
    }

    @Test func everyIncompleteOrUnknownSpecHasAKeyFunction() {
        func check(_ spec: CommandSpec) {
            for keySpec in spec.keySpecs {
                var special = keySpec.incomplete || keySpec.keyFlags.contains(.variableFlags)
                if case .unknown = keySpec.beginSearch { special = true }
                if case .unknown = keySpec.findKeys { special = true }
                if special { #expect(spec.getKeysFunction != .none, "\(spec.name)") }
            }
            if spec.flags.contains(.movablekeys) { #expect(spec.getKeysFunction != .none, "\(spec.name)") }
            spec.subcommands.forEach(check)
        }
        CommandTable.all.forEach(check)
    }
}
