import Foundation
import ProxyCore

/// One setting of slotproxy, named as in the config file: kebab-case like
/// redis.conf, and `maxclients` exactly as Redis spells it.
///
/// Each setting knows the values it accepts and where it goes in
/// `ProxyConfiguration`, so the file and the command line check a value the
/// same way and word their errors the same way.
enum ConfigSetting: String, CaseIterable, Sendable {
    case cluster
    case bind
    case port
    case workers
    case backendConnections = "backend-connections"
    case blockingConnectionsPerNode = "blocking-connections-per-node"
    case pubsubOutputLimit = "pubsub-output-limit"
    case trackingTableMaxKeys = "tracking-table-max-keys"
    case connectTimeoutMs = "connect-timeout-ms"
    case requestTimeoutMs = "request-timeout-ms"
    case maxRedirects = "max-redirects"
    case failoverTimeoutMs = "failover-timeout-ms"
    case failoverQueueLimit = "failover-queue-limit"
    case topologyRefreshMs = "topology-refresh-ms"
    case protoMaxBulkLen = "proto-max-bulk-len"
    case maxMultibulkLength = "max-multibulk-length"
    case maxInlineLength = "max-inline-length"
    case maxClients = "maxclients"
    case logLevel = "log-level"
    case allowFlush = "allow-flush"
    case allowDebug = "allow-debug"
    case crossSlotTransactions = "cross-slot-transactions"
    case readFrom = "read-from"
    case readYourWritesMs = "read-your-writes-ms"
    case requirePass = "requirepass"
    case users
    case backendUser = "backend-user"
    case backendPassword = "backend-password"
    case protectedMode = "protected-mode"

    /// The inclusive range of a numeric setting; nil for the others.
    var range: ClosedRange<Int>? {
        switch self {
        case .cluster, .bind, .logLevel, .allowFlush, .allowDebug, .crossSlotTransactions, .readFrom, .requirePass, .users, .backendUser, .backendPassword, .protectedMode: nil
        case .port: 1...65535
        case .workers: 1...256
        case .backendConnections: 1...64
        case .blockingConnectionsPerNode: 1...100_000
        case .pubsubOutputLimit: (1 << 16)...(1 << 40)
        case .trackingTableMaxKeys: 1...100_000_000
        case .readYourWritesMs: 0...3_600_000
        case .connectTimeoutMs: 1...600_000
        case .requestTimeoutMs: 1...86_400_000
        case .maxRedirects: 0...100
        case .failoverTimeoutMs: 0...3_600_000
        case .failoverQueueLimit: 0...10_000_000
        case .topologyRefreshMs: 10...86_400_000
        // Redis's own bounds for proto-max-bulk-len start at 1mb; the top keeps
        // `position + length + 2` in the request parser far from overflowing.
        case .protoMaxBulkLen: (1 << 20)...(1 << 40)
        case .maxMultibulkLength: 1...(1 << 30)
        case .maxInlineLength: (1 << 10)...(1 << 29)
        case .maxClients: 1...1_000_000
        }
    }

    /// Settings that are off unless given (secrets): the shipped file shows
    /// them commented out.
    var isUnsetByDefault: Bool { [.requirePass, .users, .backendUser, .backendPassword].contains(self) }

    /// Whether the value is a byte count that may carry a unit (`64kb`).
    var isByteSize: Bool { self == .protoMaxBulkLen || self == .maxInlineLength || self == .pubsubOutputLimit }

    /// What the setting accepts, to finish "'port' must be ...".
    var expectation: String {
        switch self {
        case .cluster:
            return "host:port seed addresses, as a list or comma-separated (IPv6 as [::1]:7000)"
        case .bind:
            return "one IPv4 or IPv6 address or host name to listen on"
        case .logLevel:
            return "one of " + LogLevelSetting.allCases.map(\.rawValue).joined(separator: ", ")
        case .allowFlush, .allowDebug, .protectedMode:
            return "yes, no, true or false"
        case .crossSlotTransactions:
            return "one of " + CrossSlotTransactions.allCases.map(\.rawValue).joined(separator: ", ")
        case .readFrom:
            return "one of " + ReadFrom.allCases.map(\.rawValue).joined(separator: ", ")
        case .requirePass, .backendUser, .backendPassword:
            return "a non-empty string"
        case .users:
            return "a list of users, each like \"alice on >secret ~app:* +@read\""
        default:
            guard let range else { preconditionFailure("\(self) has no range") }
            if isByteSize {
                return "a size between \(ByteSize.format(range.lowerBound)) and \(ByteSize.format(range.upperBound))"
                    + " (bytes, or with a unit: 64kb, 512mb, 1gb)"
            }
            return "an integer between \(range.lowerBound) and \(range.upperBound)"
        }
    }

    /// The error for `value` given to this setting, spelled `name` by the user.
    func invalid(_ value: String, spelledAs name: String) -> ConfigError {
        invalid(described: value.isEmpty ? "nothing" : "'\(value)'", spelledAs: name)
    }

    /// The error for a value that is described rather than quoted ("a list").
    func invalid(described value: String, spelledAs name: String) -> ConfigError {
        ConfigError(key: rawValue, message: "'\(name)' must be \(expectation), got \(value)")
    }

    /// Parses one scalar value as written in the file or on the command line
    /// and stores it. A `cluster` value here is a comma-separated list.
    func apply(_ text: String, spelledAs name: String, to configuration: inout ProxyConfiguration) throws(ConfigError) {
        switch self {
        case .cluster:
            configuration.seeds = try Self.seeds(fromList: text, spelledAs: name)
        case .bind:
            configuration.bind = try Self.listenAddress(text, spelledAs: name)
        case .logLevel:
            guard let level = LogLevelSetting(rawValue: text.lowercased()) else {
                throw invalid(text, spelledAs: name)
            }
            configuration.logLevel = level
        case .allowFlush:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.allowFlush = flag
        case .allowDebug:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.allowDebug = flag
        case .protectedMode:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.protectedMode = flag
        case .crossSlotTransactions:
            guard let mode = CrossSlotTransactions(rawValue: text.lowercased()) else { throw invalid(text, spelledAs: name) }
            configuration.crossSlotTransactions = mode
        case .readFrom:
            guard let mode = ReadFrom(rawValue: text.lowercased()) else { throw invalid(text, spelledAs: name) }
            configuration.readFrom = mode
        case .requirePass, .backendUser, .backendPassword:
            // (Never echoed back in an error: it may be a secret.)
            guard !text.isEmpty else { throw invalid(described: "nothing", spelledAs: name) }
            switch self {
            case .requirePass: configuration.requirePass = text
            case .backendUser: configuration.backendUser = text
            default: configuration.backendPassword = text
            }
        case .users:
            do {
                let user = try ProxyUser.parse(text)
                configuration.users.removeAll { $0.name == user.name }
                configuration.users.append(user)
            } catch {
                throw ConfigError(key: rawValue, message: "'\(name)': \(error.message)")
            }
        default:
            guard let number = isByteSize ? ByteSize.parse(text) : Int(text) else {
                throw invalid(text, spelledAs: name)
            }
            try apply(number, text: text, spelledAs: name, to: &configuration)
        }
    }

    /// Stores a numeric setting after checking its range; `text` is the value as
    /// the user wrote it, for the error.
    func apply(
        _ number: Int, text: String? = nil, spelledAs name: String, to configuration: inout ProxyConfiguration
    ) throws(ConfigError) {
        guard let range, range.contains(number) else { throw invalid(text ?? "\(number)", spelledAs: name) }
        switch self {
        case .cluster, .bind, .logLevel, .allowFlush, .allowDebug, .crossSlotTransactions, .readFrom, .requirePass, .users, .backendUser, .backendPassword, .protectedMode:
            preconditionFailure("\(self) is not numeric")
        case .port: configuration.port = number
        case .workers: configuration.workers = number
        case .backendConnections: configuration.backendConnections = number
        case .blockingConnectionsPerNode: configuration.blockingConnectionsPerNode = number
        case .pubsubOutputLimit: configuration.pubsubOutputLimit = number
        case .trackingTableMaxKeys: configuration.trackingTableMaxKeys = number
        case .readYourWritesMs: configuration.readYourWritesMs = number
        case .connectTimeoutMs: configuration.connectTimeoutMs = number
        case .requestTimeoutMs: configuration.requestTimeoutMs = number
        case .maxRedirects: configuration.maxRedirects = number
        case .failoverTimeoutMs: configuration.failoverTimeoutMs = number
        case .failoverQueueLimit: configuration.failoverQueueLimit = number
        case .topologyRefreshMs: configuration.topologyRefreshMs = number
        case .protoMaxBulkLen: configuration.requestLimits.maxBulkLength = number
        case .maxMultibulkLength: configuration.requestLimits.maxMultibulkLength = number
        case .maxInlineLength: configuration.requestLimits.maxInlineLength = number
        case .maxClients: configuration.maxClients = number
        }
    }

    /// A yes/no setting as redis.conf writes it (`yes`, `no`) or as YAML does
    /// (`true`, `false`), in any case; nil for anything else.
    static func boolean(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "yes", "true": true
        case "no", "false": false
        default: nil
        }
    }

    // MARK: seeds and addresses

    /// Seeds from `a:1,b:2`: blanks around commas are ignored, an empty entry is
    /// an error (it is usually a typo that dropped an address).
    static func seeds(fromList text: String, spelledAs name: String) throws(ConfigError) -> [NodeAddress] {
        var seeds: [NodeAddress] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            seeds.append(try seed(entry.trimmingCharacters(in: .whitespaces), spelledAs: name))
        }
        return seeds
    }

    /// One seed, `host:port`, `[v6]:port` or `v6:port` (split at the last colon,
    /// as `NodeAddress` does). The host may not hold blanks, commas or brackets,
    /// which only get there by a typo.
    static func seed(_ text: String, spelledAs name: String) throws(ConfigError) -> NodeAddress {
        guard let address = NodeAddress(parsing: text),
            !address.host.contains(where: { $0.isWhitespace || $0 == "," || $0 == "[" || $0 == "]" })
        else {
            let shown = text.isEmpty ? "an empty entry" : "'\(text)'"
            throw ConfigError(
                key: cluster.rawValue,
                message: "'\(name)' entries must be host:port with a port from 1 to 65535 (IPv6 as [::1]:7000),"
                    + " got \(shown)"
            )
        }
        return address
    }

    /// The address to listen on: an IPv4 or IPv6 literal (brackets allowed
    /// around IPv6) or a host name. One address only, unlike Redis's `bind`.
    static func listenAddress(_ text: String, spelledAs name: String) throws(ConfigError) -> String {
        var address = Substring(text)
        if address.hasPrefix("[") && address.hasSuffix("]") { address = address.dropFirst().dropLast() }
        let host = String(address)
        let valid: Bool
        if host.contains(":") {
            valid = isIPLiteral(host, family: AF_INET6)
        } else if host.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }) {
            valid = isIPLiteral(host, family: AF_INET)
        } else {
            valid =
                host.utf8.count <= 253
                && host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
        }
        guard !host.isEmpty, valid else { throw ConfigSetting.bind.invalid(text, spelledAs: name) }
        return host
    }

    private static func isIPLiteral(_ text: String, family: Int32) -> Bool {
        // inet_pton writes at most 16 bytes (an in6_addr) into the buffer it is
        // lent; the buffer lives until the closure returns.
        var buffer = [UInt8](repeating: 0, count: 16)
        return buffer.withUnsafeMutableBytes { inet_pton(family, text, $0.baseAddress) } == 1
    }

    // MARK: "did you mean"

    /// Names people reach for that are not ours, mapped to the setting meant.
    private static let aliases: [String: ConfigSetting] = [
        "seeds": .cluster, "seed": .cluster, "nodes": .cluster, "startup-nodes": .cluster,
        "cluster-nodes": .cluster, "listen": .bind, "threads": .workers, "io-threads": .workers,
        "loglevel": .logLevel, "verbosity": .logLevel, "max-clients": .maxClients,
    ]

    /// The setting an unknown key most likely meant, if one is close enough:
    /// the same name in another case or with `_` for `-`, a known alias, or a
    /// name within a small edit distance (2, or a third of the name's length).
    static func suggestion(for unknown: String) -> ConfigSetting? {
        let normalized = unknown.lowercased().replacingOccurrences(of: "_", with: "-")
        if let exact = ConfigSetting(rawValue: normalized) { return exact }
        if let alias = aliases[normalized] { return alias }
        let scored = allCases.map { (setting: $0, distance: editDistance(normalized, $0.rawValue)) }
        guard let best = scored.min(by: { $0.distance < $1.distance }) else { return nil }
        return best.distance <= max(2, best.setting.rawValue.count / 3) ? best.setting : nil
    }

    /// Levenshtein distance: the fewest single-character insertions, deletions
    /// and substitutions that turn `a` into `b`.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            previous = current
        }
        return previous[b.count]
    }
}
