import Foundation
import CommandTable
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
    case transactionReplayBytes = "transaction-replay-bytes"
    case topologyRefreshMs = "topology-refresh-ms"
    case protoMaxBulkLen = "proto-max-bulk-len"
    case maxMultibulkLength = "max-multibulk-length"
    case maxInlineLength = "max-inline-length"
    case maxClients = "maxclients"
    case clientOutputLimitHard = "client-output-limit-hard"
    case clientOutputLimitSoft = "client-output-limit-soft"
    case clientOutputLimitSoftSeconds = "client-output-limit-soft-seconds"
    case clientReadPauseReplies = "client-read-pause-replies"
    case clientReadPauseBytes = "client-read-pause-bytes"
    case clientQueryBufferLimit = "client-query-buffer-limit"
    case replyCoalesceUs = "reply-coalesce-us"
    case timeout
    case tcpKeepAlive = "tcp-keepalive"
    case shutdownTimeout = "shutdown-timeout"
    case slowlogLogSlowerThan = "slowlog-log-slower-than"
    case slowlogMaxLen = "slowlog-max-len"
    case evalScriptCacheBytes = "eval-script-cache-bytes"
    case auditMaxEntries = "audit-max-entries"
    case adminBind = "admin-bind"
    case adminPort = "admin-port"
    case adminMaxRequestBytes = "admin-max-request-bytes"
    case adminTimeoutMs = "admin-timeout-ms"
    case denyCommands = "deny-commands"
    case renameCommand = "rename-command"
    case logLevel = "log-level"
    case logFormat = "log-format"
    case allowFlush = "allow-flush"
    case allowDebug = "allow-debug"
    case crossSlotTransactions = "cross-slot-transactions"
    case readFrom = "read-from"
    case readYourWritesMs = "read-your-writes-ms"
    case requirePass = "requirepass"
    case users
    case backendUser = "backend-user"
    case backendPassword = "backend-password"
    case userBackendCredentials = "user-backend-credentials"
    case pingBeforeAuth = "ping-before-auth"
    case protectedMode = "protected-mode"
    case tlsPort = "tls-port"
    case tlsCertFile = "tls-cert-file"
    case tlsKeyFile = "tls-key-file"
    case tlsCACertFile = "tls-ca-cert-file"
    case tlsAuthClients = "tls-auth-clients"
    case tlsMinVersion = "tls-min-version"
    case backendTLS = "backend-tls"
    case backendTLSCACertFile = "backend-tls-ca-cert-file"
    case backendTLSCertFile = "backend-tls-cert-file"
    case backendTLSKeyFile = "backend-tls-key-file"
    case backendTLSVerify = "backend-tls-verify"
    case backendTLSServerName = "backend-tls-server-name"

    /// The inclusive range of a numeric setting; nil for the others.
    var range: ClosedRange<Int>? {
        switch self {
        case .cluster, .bind, .adminBind, .logLevel, .logFormat, .allowFlush, .allowDebug, .crossSlotTransactions, .readFrom, .requirePass, .users, .backendUser, .backendPassword, .userBackendCredentials, .pingBeforeAuth, .protectedMode, .denyCommands, .renameCommand, .tlsCertFile, .tlsKeyFile, .tlsCACertFile, .tlsAuthClients, .tlsMinVersion, .backendTLS, .backendTLSCACertFile, .backendTLSCertFile, .backendTLSKeyFile, .backendTLSVerify, .backendTLSServerName: nil
        case .port: 1...65535
        case .workers: 0...256  // 0: auto
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
        case .transactionReplayBytes: 0...(1 << 40)
        case .topologyRefreshMs: 10...86_400_000
        // Redis's own bounds for proto-max-bulk-len start at 1mb; the top keeps
        // `position + length + 2` in the request parser far from overflowing.
        case .protoMaxBulkLen: (1 << 20)...(1 << 40)
        case .maxMultibulkLength: 1...(1 << 30)
        case .maxInlineLength: (1 << 10)...(1 << 29)
        case .maxClients: 1...1_000_000
        case .clientOutputLimitHard, .clientOutputLimitSoft: 0...(1 << 40)
        case .clientOutputLimitSoftSeconds: 0...86_400
        case .clientReadPauseReplies: 1...10_000_000
        case .clientReadPauseBytes: (1 << 16)...(1 << 40)
        // Above proto-max-bulk-len's floor: one argument must fit.
        case .clientQueryBufferLimit: (1 << 20)...(1 << 40)
        case .replyCoalesceUs: 0...100_000
        case .timeout: 0...(1 << 31)
        case .tcpKeepAlive: 0...86_400
        case .shutdownTimeout: 0...3600
        case .adminPort: 0...65535
        case .adminMaxRequestBytes: 1024...(1 << 20)
        case .adminTimeoutMs: 100...3_600_000
        case .slowlogLogSlowerThan: -1...(1 << 40)
        case .slowlogMaxLen: 0...1_000_000
        case .evalScriptCacheBytes: 0...(1 << 40)
        case .auditMaxEntries: 0...1_000_000
        case .tlsPort: 0...65535
        }
    }

    /// Settings that are off unless given (secrets): the shipped file shows
    /// them commented out.
    var isUnsetByDefault: Bool { Self.pathsAndSecrets.contains(self) }

    private static let pathsAndSecrets: Set<ConfigSetting> = [
        .requirePass, .users, .backendUser, .backendPassword, .userBackendCredentials, .tlsCertFile, .tlsKeyFile, .tlsCACertFile,
        .backendTLSCACertFile, .backendTLSCertFile, .backendTLSKeyFile, .backendTLSServerName,
    ]


    /// Whether the value is a byte count that may carry a unit (`64kb`).
    var isByteSize: Bool {
        [.protoMaxBulkLen, .maxInlineLength, .pubsubOutputLimit, .clientOutputLimitHard, .clientOutputLimitSoft, .clientReadPauseBytes,
            .clientQueryBufferLimit, .transactionReplayBytes, .evalScriptCacheBytes]
            .contains(self)
    }

    /// What the setting accepts, to finish "'port' must be ...".
    var expectation: String {
        switch self {
        case .cluster:
            return "host:port seed addresses, as a list or comma-separated (IPv6 as [::1]:7000)"
        case .bind, .adminBind:
            return "one IPv4 or IPv6 address or host name to listen on"
        case .logLevel:
            return "one of " + LogLevelSetting.allCases.map(\.rawValue).joined(separator: ", ")
        case .logFormat:
            return "one of " + LogFormat.allCases.map(\.rawValue).joined(separator: ", ")
        case .allowFlush, .allowDebug, .protectedMode, .pingBeforeAuth, .tlsAuthClients, .backendTLS, .backendTLSVerify:
            return "yes, no, true or false"
        case .tlsMinVersion:
            return "1.2 or 1.3"
        case .tlsCertFile, .tlsKeyFile, .tlsCACertFile, .backendTLSCACertFile, .backendTLSCertFile, .backendTLSKeyFile:
            return "the path of a readable PEM file"
        case .backendTLSServerName:
            return "a host name"
        case .crossSlotTransactions:
            return "one of " + CrossSlotTransactions.allCases.map(\.rawValue).joined(separator: ", ")
        case .readFrom:
            return "one of " + ReadFrom.allCases.map(\.rawValue).joined(separator: ", ")
        case .workers:
            return "auto (one per core the process may use) or an integer between 1 and 256"
        case .requirePass, .backendUser, .backendPassword:
            return "a non-empty string"
        case .users:
            return "a list of users, each like \"alice on >secret ~app:* +@read\""
        case .userBackendCredentials:
            return "a map from proxy user to \"backend-user:password\", or user=backend-user:password entries"
        case .denyCommands:
            return "a list of command names (a subcommand as config|set), or comma-separated"
        case .renameCommand:
            return "a map from command name to its new name (\"\" disables it), or NAME=NEWNAME entries"
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
        case .adminBind:
            configuration.adminBind = try Self.listenAddress(text, spelledAs: name)
        case .logLevel:
            guard let level = LogLevelSetting(rawValue: text.lowercased()) else {
                throw invalid(text, spelledAs: name)
            }
            configuration.logLevel = level
        case .logFormat:
            guard let format = LogFormat(rawValue: text.lowercased()) else { throw invalid(text, spelledAs: name) }
            configuration.logFormat = format
        case .allowFlush:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.allowFlush = flag
        case .allowDebug:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.allowDebug = flag
        case .protectedMode:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            configuration.protectedMode = flag
        case .pingBeforeAuth, .tlsAuthClients, .backendTLS, .backendTLSVerify:
            guard let flag = Self.boolean(text) else { throw invalid(text, spelledAs: name) }
            switch self {
            case .pingBeforeAuth: configuration.pingBeforeAuth = flag
            case .tlsAuthClients: configuration.tlsAuthClients = flag
            case .backendTLS: configuration.backendTLS = flag
            default: configuration.backendTLSVerify = flag
            }
        case .tlsMinVersion:
            guard text == "1.2" || text == "1.3" else { throw invalid(text, spelledAs: name) }
            configuration.tlsMinVersion = text
        case .tlsCertFile, .tlsKeyFile, .tlsCACertFile, .backendTLSCACertFile, .backendTLSCertFile, .backendTLSKeyFile:
            guard FileManager.default.isReadableFile(atPath: text) else { throw invalid(text, spelledAs: name) }
            switch self {
            case .tlsCertFile: configuration.tlsCertFile = text
            case .tlsKeyFile: configuration.tlsKeyFile = text
            case .tlsCACertFile: configuration.tlsCACertFile = text
            case .backendTLSCACertFile: configuration.backendTLSCACertFile = text
            case .backendTLSCertFile: configuration.backendTLSCertFile = text
            default: configuration.backendTLSKeyFile = text
            }
        case .backendTLSServerName:
            guard !text.isEmpty, !text.contains(where: \.isWhitespace) else { throw invalid(text, spelledAs: name) }
            configuration.backendTLSServerName = text
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
        case .userBackendCredentials:
            // (Never echoed back in an error: it holds passwords.)
            for entry in text.split(separator: ",") {
                guard let equals = entry.firstIndex(of: "=") else { throw invalid(described: "an entry without '='", spelledAs: name) }
                try Self.backendCredentials(
                    for: String(entry[..<equals]), String(entry[entry.index(after: equals)...]), spelledAs: name,
                    in: &configuration)
            }
        case .denyCommands:
            configuration.deniedCommands = try Self.commandNames(fromList: text, spelledAs: name)
        case .renameCommand:
            for entry in text.split(separator: ",") {
                guard let equals = entry.firstIndex(of: "=") else { throw invalid(text, spelledAs: name) }
                let command = entry[..<equals].trimmingCharacters(in: .whitespaces)
                let newName = entry[entry.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                try Self.rename(command, to: newName, spelledAs: name, in: &configuration)
            }
        case .users:
            do {
                let user = try ProxyUser.parse(text)
                configuration.users.removeAll { $0.name == user.name }
                configuration.users.append(user)
            } catch {
                throw ConfigError(key: rawValue, message: "'\(name)': \(error.message)")
            }
        case .workers where text.lowercased() == "auto":
            configuration.workers = 0
        case .workers where Int(text) == 0:
            throw invalid(text, spelledAs: name)
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
        case .cluster, .bind, .adminBind, .logLevel, .logFormat, .allowFlush, .allowDebug, .crossSlotTransactions, .readFrom, .requirePass, .users, .backendUser, .backendPassword, .userBackendCredentials, .pingBeforeAuth, .protectedMode, .denyCommands, .renameCommand, .tlsCertFile, .tlsKeyFile, .tlsCACertFile, .tlsAuthClients, .tlsMinVersion, .backendTLS, .backendTLSCACertFile, .backendTLSCertFile, .backendTLSKeyFile, .backendTLSVerify, .backendTLSServerName:
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
        case .transactionReplayBytes: configuration.transactionReplayBytes = number
        case .topologyRefreshMs: configuration.topologyRefreshMs = number
        case .protoMaxBulkLen: configuration.requestLimits.maxBulkLength = number
        case .maxMultibulkLength: configuration.requestLimits.maxMultibulkLength = number
        case .maxInlineLength: configuration.requestLimits.maxInlineLength = number
        case .maxClients: configuration.maxClients = number
        case .clientOutputLimitHard: configuration.clientOutputLimitHard = number
        case .clientOutputLimitSoft: configuration.clientOutputLimitSoft = number
        case .clientOutputLimitSoftSeconds: configuration.clientOutputLimitSoftSeconds = number
        case .clientReadPauseReplies: configuration.clientReadPauseReplies = number
        case .clientReadPauseBytes: configuration.clientReadPauseBytes = number
        case .clientQueryBufferLimit: configuration.clientQueryBufferLimit = number
        case .replyCoalesceUs: configuration.replyCoalesceMicros = number
        case .timeout: configuration.idleTimeoutSeconds = number
        case .tcpKeepAlive: configuration.tcpKeepAliveSeconds = number
        case .shutdownTimeout: configuration.shutdownTimeoutSeconds = number
        case .adminPort: configuration.adminPort = number
        case .adminMaxRequestBytes: configuration.adminMaxRequestBytes = number
        case .adminTimeoutMs: configuration.adminTimeoutMs = number
        case .slowlogLogSlowerThan: configuration.slowlogSlowerThanMicros = number
        case .slowlogMaxLen: configuration.slowlogMaxLength = number
        case .evalScriptCacheBytes: configuration.evalScriptCacheBytes = number
        case .auditMaxEntries: configuration.auditMaxEntries = number
        case .tlsPort: configuration.tlsPort = number
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

    /// One `user-backend-credentials` entry: the proxy user, and
    /// `backend-user:password` (split at the first colon).
    static func backendCredentials(
        for proxyUser: String, _ credentials: String, spelledAs name: String, in configuration: inout ProxyConfiguration
    ) throws(ConfigError) {
        let user = proxyUser.trimmingCharacters(in: .whitespaces)
        guard !user.isEmpty, let colon = credentials.firstIndex(of: ":"), colon != credentials.startIndex,
            credentials.index(after: colon) != credentials.endIndex
        else {
            throw ConfigError(
                key: userBackendCredentials.rawValue,
                message: "'\(name)': the entry for '\(user)' must be backend-user:password")
        }
        configuration.userBackendCredentials[user] = BackendIdentity(
            user: String(credentials[..<colon]), password: String(credentials[credentials.index(after: colon)...]))
    }

    // MARK: command names

    /// `deny-commands` from `a,b|c`: each a command the table knows, lower-cased.
    static func commandNames(fromList text: String, spelledAs name: String) throws(ConfigError) -> [String] {
        var names: [String] = []
        for entry in text.split(separator: ",") {
            names.append(try commandName(entry.trimmingCharacters(in: .whitespaces), spelledAs: name))
        }
        return names
    }

    static func commandName(_ text: String, spelledAs name: String) throws(ConfigError) -> String {
        let lowered = text.lowercased().replacingOccurrences(of: " ", with: "|")
        guard CommandTable.lookup(name: lowered) != nil else {
            throw ConfigError(key: denyCommands.rawValue, message: "'\(name)': unknown command '\(text)'")
        }
        return lowered
    }

    /// One `rename-command` entry: a top-level command the table knows, to a
    /// name no other command answers to ("" disables it).
    static func rename(
        _ command: String, to newName: String, spelledAs name: String, in configuration: inout ProxyConfiguration
    ) throws(ConfigError) {
        let key = renameCommand.rawValue
        let original = command.lowercased()
        guard let spec = CommandTable.lookup(name: original), !original.contains("|") else {
            throw ConfigError(key: key, message: "'\(name)': unknown command '\(command)' (only whole commands can be renamed)")
        }
        let lowered = newName.lowercased()
        guard !lowered.contains(where: { $0.isWhitespace || $0 == "|" }) else {
            throw ConfigError(key: key, message: "'\(name)': '\(newName)' cannot be a command name")
        }
        if !lowered.isEmpty, let taken = CommandTable.lookup(name: lowered), taken.name != spec.name,
            configuration.renamedCommands[taken.name] == nil
        {
            throw ConfigError(key: key, message: "'\(name)': '\(newName)' is already the name of another command")
        }
        configuration.renamedCommands[spec.name] = lowered
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
        if text.contains("://") {
            // A client library's URL: its host would be "redis://127.0.0.1"
            // and the proxy would never find the cluster.
            throw ConfigError(
                key: cluster.rawValue,
                message: "'\(name)' entries are host:port, not URLs: got '\(text)'"
                    + " (a password goes in backend-password, TLS in backend-tls)")
        }
        guard let address = NodeAddress(parsing: text),
            !address.host.contains(where: { $0.isWhitespace || $0 == "," || $0 == "[" || $0 == "]" || $0 == "/" || $0 == "@" })
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
