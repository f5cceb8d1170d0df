import CommandTable
import Testing

@testable import ProxyCore

@Suite struct AccessControlTests {
    func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }

    @Test func sha256Vectors() {
        #expect(hex(SHA256.digest([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(SHA256.digest(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(hex(SHA256.digest(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func globs() {
        func m(_ pattern: String, _ key: String) -> Bool {
            Array(key.utf8).withUnsafeBytes { Glob.matches(Array(pattern.utf8), $0) }
        }
        #expect(m("*", "") && m("app:*", "app:1") && !m("app:*", "ap:1"))
        #expect(m("h?llo", "hello") && !m("h?llo", "hllo"))
        #expect(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo") && m("h[^e]llo", "hallo") && m("k[a-c]", "kb"))
        #expect(m("a\\*b", "a*b") && !m("a\\*b", "axb") && m("*:*:x", "a:b:c:x"))
        // A reversed range is the range the right way round (Redis's
        // stringmatchlen), never a trap.
        #expect(m("k[c-a]", "kb") && !m("k[c-a]", "kd"))
    }

    @Test func rulesDecideLikeRedis() throws {
        let user = try ProxyUser.parse("alice on >pw ~app:* +@read -get +@all -@dangerous")
        let get = CommandTable.lookup(name: "get")!
        let flushall = CommandTable.lookup(name: "flushall")!
        #expect(user.accepts(password: Array("pw".utf8)) && !user.accepts(password: Array("px".utf8)))
        #expect(user.mayRun(get))  // +@all after -get wins
        #expect(!user.mayRun(flushall))  // then -@dangerous
        #expect(!user.isUnrestricted)
        let readOnly = try ProxyUser.parse("r on nopass allkeys +@read")
        #expect(readOnly.accepts(password: []) && readOnly.mayRun(get) && !readOnly.mayRun(CommandTable.lookup(name: "set")!))
        #expect(try !ProxyUser.parse("off-user off >pw").accepts(password: Array("pw".utf8)))
        #expect(try ProxyUser.parse("admin on >pw allkeys allcommands").isUnrestricted)
        #expect(throws: ProxyUser.ParseError.self) { try ProxyUser.parse("x on #123") }
    }

    /// A misspelt deny rule is refused, as Redis's ACL SETUSER does: taken as
    /// written it would deny nothing, and the user could run what it meant to deny.
    @Test func unknownCategoriesAndCommandsAreRefused() throws {
        for rule in ["-@dangerus", "+@bogus", "-flushal", "+nosuchcommand", "-config|nosuch", "+@"] {
            #expect(throws: ProxyUser.ParseError.self, "\(rule)") { try ProxyUser.parse("app on >x ~* +@all \(rule)") }
        }
        do {
            _ = try ProxyUser.parse("app on >x ~* +@all -@dangerus")
        } catch {
            #expect(error.message.contains("'-@dangerus'") && error.message.contains("@dangerous"))
        }
        // Known ones in any case, subcommands, PROXY, CLIENT SETINFO, and
        // module commands (dotted; the table cannot know them).
        let user = try ProxyUser.parse(
            "app on >x ~* +@ALL -@Dangerous +CONFIG|GET -client|kill +client|setinfo -proxy +json.get +@json +FT.SEARCH")
        #expect(user.commandRules.count == 9)
        #expect(user.mayRun(CommandTable.lookup(name: "config|get")!))
        #expect(!user.mayRun(CommandTable.lookup(name: "client|kill")!))
    }
}
