import CommandTable

/// Who may use the proxy: `requirepass` (the default user's password) and
/// `users`, each written as Redis writes an `ACL SETUSER` rule list:
///
///     alice on >secret ~app:* +@read +@write -@dangerous
///     reports on #<sha-256 of the password, hex> ~report:* +@read
///     legacy off >old
///
/// `on`/`off`, `>password`, `#sha256hex`, `nopass`, `~pattern` (`*`, `?` and
/// `[...]` globs), `allkeys`, `+@category`, `-@category`, `+command`,
/// `-command`, `allcommands`, `nocommands`; later rules win, as in Redis.
/// Passwords are kept only as SHA-256 digests and compared in constant time.
public struct ProxyUser: Sendable, Equatable {
    public var name: String
    public var enabled = false
    public var noPassword = false
    public var passwordDigests: [[UInt8]] = []
    public var keyPatterns: [String] = []
    /// In order; the last that matches a command decides.
    public var commandRules: [CommandRule] = []

    public enum CommandRule: Sendable, Equatable {
        case all(allow: Bool)
        case category(String, allow: Bool)
        case command(String, allow: Bool)
    }

    public struct ParseError: Error, Sendable {
        public var message: String
    }

    public init(name: String) { self.name = name }

    /// A user from `name rule rule ...`.
    public static func parse(_ text: String) throws(ParseError) -> ProxyUser {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let name = words.first, !name.isEmpty else { throw ParseError(message: "a user needs a name") }
        var user = ProxyUser(name: name)
        for word in words.dropFirst() {
            let lower = word.lowercased()
            switch lower {
            case "on": user.enabled = true
            case "off": user.enabled = false
            case "nopass": user.noPassword = true
            case "allkeys": user.keyPatterns = ["*"]
            case "resetkeys": user.keyPatterns = []
            case "allcommands", "+@all": user.commandRules.append(.all(allow: true))
            case "nocommands", "-@all": user.commandRules.append(.all(allow: false))
            default:
                if word.hasPrefix(">") {
                    user.passwordDigests.append(SHA256.digest(Array(word.dropFirst().utf8)))
                } else if word.hasPrefix("#") {
                    guard let digest = hexBytes(String(word.dropFirst())), digest.count == 32 else {
                        throw ParseError(message: "user '\(name)': '#' must be followed by 64 hex digits (a SHA-256)")
                    }
                    user.passwordDigests.append(digest)
                } else if word.hasPrefix("~") {
                    user.keyPatterns.append(String(word.dropFirst()))
                } else if lower.hasPrefix("+@") || lower.hasPrefix("-@") {
                    // A typo in a deny rule would grant what it meant to deny.
                    let category = String(lower.dropFirst(2))
                    guard knownCategories.contains(category) else {
                        throw ParseError(
                            message: "user '\(name)': unknown command category in '\(word)' (Redis's are "
                                + knownCategories.sorted().map { "@\($0)" }.joined(separator: ", ") + ")")
                    }
                    user.commandRules.append(.category(category, allow: lower.hasPrefix("+")))
                } else if lower.hasPrefix("+") || lower.hasPrefix("-") {
                    let command = String(lower.dropFirst())
                    guard isKnownCommand(command) else {
                        throw ParseError(
                            message: "user '\(name)': unknown command in '\(word)' (a module's command is "
                                + "written with its dot, as in +json.get)")
                    }
                    user.commandRules.append(.command(command, allow: lower.hasPrefix("+")))
                } else {
                    throw ParseError(message: "user '\(name)': unknown rule '\(word)'")
                }
            }
        }
        return user
    }

    /// Redis 7.0's ACL categories (every one some command of the table is
    /// in) and those Redis 8's bundled modules add.
    static let knownCategories: Set<String> = {
        var categories: Set<String> = [
            "all", "search", "json", "timeseries", "bloom", "cuckoo", "cms", "topk", "tdigest",
        ]
        for spec in CommandTable.all {
            categories.formUnion(spec.aclCategories)
            for sub in spec.subcommands { categories.formUnion(sub.aclCategories) }
        }
        return categories
    }()

    /// A command (`name` or `container|sub`, lower case) of the table, the
    /// proxy's own `PROXY`, or a module's (dotted: `json.get`, `ft.search`),
    /// which the table cannot know of before the nodes are asked.
    static func isKnownCommand(_ name: String) -> Bool {
        if name.contains(".") || name == "proxy" || name == "client|setinfo" { return true }
        return CommandTable.lookup(name: name) != nil
    }

    /// Whether `password` opens this user (constant time over the digests).
    public func accepts(password: [UInt8]) -> Bool {
        guard enabled else { return false }
        if noPassword { return true }
        let digest = SHA256.digest(password)
        var matched = false
        for candidate in passwordDigests where candidate.count == digest.count {
            var difference: UInt8 = 0
            for i in 0..<digest.count { difference |= candidate[i] ^ digest[i] }
            if difference == 0 { matched = true }
        }
        return matched
    }

    /// True for a user allowed everything (no check on the data path).
    public var isUnrestricted: Bool {
        keyPatterns.contains("*") && commandRules.last.map { $0 == .all(allow: true) } ?? false
    }

    /// Whether the user may run `spec` (a subcommand is checked by its own
    /// name, then by its container's, and by its categories).
    func mayRun(_ spec: CommandSpec) -> Bool {
        var allowed = false
        let container = spec.name.split(separator: "|").first.map(String.init) ?? spec.name
        for rule in commandRules {
            switch rule {
            case .all(let allow): allowed = allow
            case .category(let category, let allow):
                if spec.aclCategories.contains(category) { allowed = allow }
            case .command(let name, let allow):
                if name == spec.name || name == container { allowed = allow }
            }
        }
        return allowed
    }

    func mayAccess(key: UnsafeRawBufferPointer) -> Bool {
        keyPatterns.contains { Glob.matches(Array($0.utf8), key) }
    }

    private static func hexBytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.lowercased().utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < digits.count {
            guard let high = hexValue(digits[i]), let low = hexValue(digits[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}

/// Redis-style glob matching (`*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\x`) for key patterns.
enum Glob {
    static func matches(_ pattern: [UInt8], _ text: UnsafeRawBufferPointer) -> Bool {
        matches(pattern[...], text, 0, depth: 0)
    }

    private static func matches(_ pattern: ArraySlice<UInt8>, _ text: UnsafeRawBufferPointer, _ start: Int, depth: Int)
        -> Bool
    {
        guard depth < 64 else { return false }
        var p = pattern.startIndex
        var t = start
        while p < pattern.endIndex {
            let c = pattern[p]
            switch c {
            case UInt8(ascii: "*"):
                while p < pattern.endIndex && pattern[p] == UInt8(ascii: "*") { p += 1 }
                if p == pattern.endIndex { return true }
                for next in t...text.count where matches(pattern[p...], text, next, depth: depth + 1) { return true }
                return false
            case UInt8(ascii: "?"):
                guard t < text.count else { return false }
                t += 1
                p += 1
            case UInt8(ascii: "["):
                guard t < text.count else { return false }
                var q = p + 1
                let negate = q < pattern.endIndex && pattern[q] == UInt8(ascii: "^")
                if negate { q += 1 }
                var matched = false
                while q < pattern.endIndex && pattern[q] != UInt8(ascii: "]") {
                    if q + 2 < pattern.endIndex && pattern[q + 1] == UInt8(ascii: "-") && pattern[q + 2] != UInt8(ascii: "]") {
                        // `[z-a]` is `[a-z]`, as in Redis's stringmatchlen.
                        let low = min(pattern[q], pattern[q + 2])
                        let high = max(pattern[q], pattern[q + 2])
                        if (low...high).contains(text[t]) { matched = true }
                        q += 3
                    } else {
                        if pattern[q] == text[t] { matched = true }
                        q += 1
                    }
                }
                guard matched != negate else { return false }
                t += 1
                p = min(q + 1, pattern.endIndex)
            default:
                var literal = c
                if c == UInt8(ascii: "\\") && p + 1 < pattern.endIndex {
                    p += 1
                    literal = pattern[p]
                }
                guard t < text.count, text[t] == literal else { return false }
                t += 1
                p += 1
            }
        }
        return t == text.count
    }
}

/// SHA-256 (FIPS 180-4), for password digests.
enum SHA256 {
    private static let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    static func digest(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [
            0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
        ]
        var data = message
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        let bits = UInt64(message.count) &* 8
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                let b = chunk + i * 4
                w[i] = UInt32(data[b]) << 24 | UInt32(data[b + 1]) << 16 | UInt32(data[b + 2]) << 8 | UInt32(data[b + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let choice = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ choice &+ k[i] &+ w[i]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let majority = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ majority
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            h[0] &+= a
            h[1] &+= b
            h[2] &+= c
            h[3] &+= d
            h[4] &+= e
            h[5] &+= f
            h[6] &+= g
            h[7] &+= hh
        }
        return h.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> UInt32(24 - $0 * 8)) } }
    }

    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
}
