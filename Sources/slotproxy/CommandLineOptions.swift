import ArgumentParser
import Foundation
import ProxyCore

/// slotproxy's command line: where the config file is, and flags that override
/// single settings of it.
///
/// The configuration is built in three layers, each over the one before: the
/// defaults of `ProxyConfiguration`, the YAML file given with `--config` (or
/// `--check-config`), then the flags. A flag checks its value exactly as the
/// file would, so `--port 0` and `port: 0` fail with the same words.
///
/// `main.swift` uses it as:
///
///     let options = SlotproxyOptions.parseOrExit()
///     options.runCheckConfigIfRequested()
///     let configuration = options.resolveConfigurationOrExit()
struct SlotproxyOptions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slotproxy",
        abstract: "A cluster-aware Redis proxy: clients talk to one address, slotproxy routes by hash slot.",
        discussion: """
            Settings come from the YAML file given with --config (keys as in config/slotproxy.yaml), \
            and each flag below overrides the file's value. Settings in neither keep their defaults.
            """
    )

    private static let defaults = ProxyConfiguration()

    @Option(help: ArgumentHelp("Read settings from this YAML file.", valueName: "file"))
    var config: String?

    @Option(
        help: ArgumentHelp(
            "Check this config file (with any flags given), print 'configuration OK: <file>' and exit 0, "
                + "or print the error and exit 1 (64 for a malformed flag, as for any command line).",
            valueName: "file"
        )
    )
    var checkConfig: String?

    @Flag(help: ArgumentHelp("Print how every Redis command is handled, as a Markdown table, and exit."))
    var compatibilityTable = false

    @Option(
        help: ArgumentHelp(
            "Seed nodes, comma-separated; IPv6 as [::1]:7000 (file: cluster).", valueName: "host:port,..."
        )
    )
    var cluster: String?

    @Option(help: ArgumentHelp("Address to listen on (file: bind; default \(defaults.bind)).", valueName: "address"))
    var bind: String?

    @Option(help: ArgumentHelp("Port to listen on (file: port; default \(defaults.port)).", valueName: "port"))
    var port: Int?

    @Option(
        help: ArgumentHelp(
            "Worker threads, one event loop each, or auto: one per core the process may use, after CPU affinity and cgroup CPU quota (file: workers; default auto).",
            valueName: "n"))
    var workers: String?

    @Option(
        help: ArgumentHelp(
            "Connections per worker to each node (file: backend-connections; default \(defaults.backendConnections)).",
            valueName: "n"
        )
    )
    var backendConnections: Int?

    @Option(
        help: ArgumentHelp(
            "Clients that may block at once per worker on one node (file: blocking-connections-per-node; default \(defaults.blockingConnectionsPerNode)).",
            valueName: "n"
        )
    )
    var blockingConnectionsPerNode: Int?

    @Option(
        help: ArgumentHelp(
            "Keys remembered per worker for CLIENT TRACKING (file: tracking-table-max-keys; default \(defaults.trackingTableMaxKeys)).",
            valueName: "n"
        )
    )
    var trackingTableMaxKeys: Int?

    @Option(
        help: ArgumentHelp(
            "How long requests for an unreachable master wait for a new one (file: failover-timeout-ms; default \(defaults.failoverTimeoutMs)).",
            valueName: "ms"
        )
    )
    var failoverTimeoutMs: Int?

    @Option(
        help: ArgumentHelp(
            "Requests held per worker while masters are unreachable (file: failover-queue-limit; default \(defaults.failoverQueueLimit)).",
            valueName: "n"
        )
    )
    var failoverQueueLimit: Int?

    @Option(
        help: ArgumentHelp(
            "Unread bytes a subscriber may leave before it is disconnected, e.g. 32mb (file: pubsub-output-limit; default \(ByteSize.format(defaults.pubsubOutputLimit))).",
            valueName: "size"
        )
    )
    var pubsubOutputLimit: String?

    @Option(
        help: ArgumentHelp(
            "Unread reply bytes that get a client disconnected at once, 0 for none (file: client-output-limit-hard; default \(ByteSize.format(defaults.clientOutputLimitHard))).",
            valueName: "size"))
    var clientOutputLimitHard: String?

    @Option(
        help: ArgumentHelp(
            "Unread reply bytes that get a client disconnected after client-output-limit-soft-seconds (file: client-output-limit-soft; default \(ByteSize.format(defaults.clientOutputLimitSoft))).",
            valueName: "size"))
    var clientOutputLimitSoft: String?

    @Option(
        help: ArgumentHelp(
            "Seconds a silent client stays connected, 0 for ever (file: timeout; default \(defaults.idleTimeoutSeconds)).",
            valueName: "seconds"))
    var timeout: Int?

    @Option(
        help: ArgumentHelp(
            "TCP keepalive interval on client and node connections, 0 for off (file: tcp-keepalive; default \(defaults.tcpKeepAliveSeconds)).",
            valueName: "seconds"))
    var tcpKeepalive: Int?

    @Option(
        help: ArgumentHelp(
            "Commands refused by the proxy, comma-separated, \"\" for none (file: deny-commands; default \(defaults.deniedCommands.joined(separator: ","))).",
            valueName: "names"))
    var denyCommands: String?

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp(
            "Any setting as in the file, repeatable: --set tls-port=6380 --set tls-cert-file=/etc/slotproxy/proxy.pem.",
            valueName: "key=value"))
    var settings: [String] = []

    @Option(
        name: .customLong("rename-command"),
        help: ArgumentHelp("NAME=NEWNAME, repeatable; NAME= disables NAME (file: rename-command).", valueName: "rename"))
    var renameCommands: [String] = []

    @Option(
        help: ArgumentHelp(
            "Backend connect timeout (file: connect-timeout-ms; default \(defaults.connectTimeoutMs)).", valueName: "ms"
        )
    )
    var connectTimeoutMs: Int?

    @Option(
        help: ArgumentHelp(
            "How long a node may owe replies without sending anything before it counts as hung (file: request-timeout-ms; default \(defaults.requestTimeoutMs)).",
            valueName: "ms"
        )
    )
    var requestTimeoutMs: Int?

    @Option(
        help: ArgumentHelp(
            "MOVED/ASK redirects followed in a row per request before it waits and is retried (file: max-redirects; default \(defaults.maxRedirects)).",
            valueName: "n"
        )
    )
    var maxRedirects: Int?

    @Option(
        help: ArgumentHelp(
            "Topology refresh interval (file: topology-refresh-ms; default \(defaults.topologyRefreshMs)).",
            valueName: "ms"
        )
    )
    var topologyRefreshMs: Int?

    @Option(
        help: ArgumentHelp(
            "Most clients connected at once (file: maxclients; default \(defaults.maxClients)).", valueName: "n")
    )
    var maxclients: Int?

    @Option(
        help: ArgumentHelp(
            "One of \(LogLevelSetting.allCases.map(\.rawValue).joined(separator: ", ")) "
                + "(file: log-level; default \(defaults.logLevel.rawValue)).",
            valueName: "level"
        )
    )
    var logLevel: String?

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "Let FLUSHALL/FLUSHDB through, which wipe every master (file: allow-flush; default "
                + "\(defaults.allowFlush ? "yes" : "no")).")
    )
    var allowFlush: Bool?

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "Let DEBUG through to a cluster node; DEBUG SLEEP stalls it, DEBUG SEGFAULT kills it "
                + "(file: allow-debug; default \(defaults.allowDebug ? "yes" : "no")).")
    )
    var allowDebug: Bool?

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "Refuse a non-loopback bind without requirepass or users (file: protected-mode; default yes).")
    )
    var protectedMode: Bool?

    @Option(
        help: ArgumentHelp(
            "Transactions over several slots: refuse (as Redis: CROSSSLOT, EXECABORT) or relaxed "
                + "(one MULTI/EXEC per slot, atomic per slot only) (file: cross-slot-transactions; default "
                + "\(defaults.crossSlotTransactions.rawValue)).",
            valueName: "mode"
        )
    )
    var crossSlotTransactions: String?

    @Option(
        help: ArgumentHelp(
            "Where reads go: \(ReadFrom.allCases.map(\.rawValue).joined(separator: ", ")) (file: read-from; default \(defaults.readFrom.rawValue)).",
            valueName: "policy"
        )
    )
    var readFrom: String?

    @Option(
        help: ArgumentHelp(
            "After a write, a client's reads go to the master for this long; 0: off (file: read-your-writes-ms; default \(defaults.readYourWritesMs)).",
            valueName: "ms"
        )
    )
    var readYourWritesMs: Int?

    @Option(help: ArgumentHelp("The default user's password (file: requirepass; default none).", valueName: "password"))
    var requirepass: String?

    @Option(
        name: .customLong("user"),
        help: ArgumentHelp(
            "A user as ACL SETUSER rules, repeatable: \"alice on >secret ~app:* +@read\" (file: users).",
            valueName: "rules"))
    var users: [String] = []

    @Option(help: ArgumentHelp("ACL user the proxy authenticates as on the cluster nodes (file: backend-user).", valueName: "name"))
    var backendUser: String?

    @Option(help: ArgumentHelp("Password the proxy sends to the cluster nodes (file: backend-password).", valueName: "password"))
    var backendPassword: String?

    /// The config file to read: `--check-config`'s or `--config`'s.
    var configFile: String? { checkConfig ?? config }

    mutating func validate() throws {
        if let config, let checkConfig {
            throw ValidationError(
                "--config \(config) and --check-config \(checkConfig) both name a config file; pass one of them")
        }
        var scratch = ProxyConfiguration()
        do {
            try applyFlags(to: &scratch)
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// The configuration to run with: the defaults, overridden by the config
    /// file if one was given, overridden by the flags. Throws when the file or
    /// a flag has a bad value, and when no seed node is named anywhere.
    func resolveConfiguration(environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ConfigError) -> ProxyConfiguration
    {
        var configuration = ProxyConfiguration()
        if let configFile {
            configuration = try ConfigLoader.load(file: configFile, over: configuration)
        }
        try EnvironmentSettings.apply(environment, to: &configuration)
        try applyFlags(to: &configuration)
        try Self.validate(configuration)
        return configuration
    }

    /// The checks across settings, for a whole configuration (start-up,
    /// reload, `PROXY CONFIG SET`).
    static func validate(_ configuration: ProxyConfiguration) throws(ConfigError) {
        guard !configuration.seeds.isEmpty else { throw ConfigError.noSeeds }
        for user in configuration.userBackendCredentials.keys.sorted()
        where !configuration.users.contains(where: { $0.name == user }) && !(user == "default" && configuration.requirePass != nil) {
            throw ConfigError(
                key: ConfigSetting.userBackendCredentials.rawValue,
                message: "'user-backend-credentials' names '\(user)', which is not one of the users")
        }
        if let problem = configuration.tlsProblem {
            throw ConfigError(key: problem.setting, message: problem.message)
        }
        if configuration.protectedMode, let exposure = configuration.unprotectedExposure {
            throw ConfigError(
                key: ConfigSetting.protectedMode.rawValue,
                message: ProxyConfiguration.protectedModeRefusal(exposure))
        }
    }

    /// `resolveConfiguration()`, or its error on stderr and exit status 1.
    func resolveConfigurationOrExit() -> ProxyConfiguration {
        do {
            return try resolveConfiguration()
        } catch {
            Self.printError(error.description)
            Self.exit(withError: ExitCode.failure)
        }
    }

    /// What `--check-config` reports: nil when it was not given, else the line
    /// for stdout on success ("configuration OK: FILE") or the error for stderr.
    func checkConfigResult() -> Result<String, ConfigError>? {
        guard let checkConfig else { return nil }
        do {
            _ = try resolveConfiguration()
            return .success("configuration OK: \(checkConfig)")
        } catch {
            return .failure(error)
        }
    }

    /// With `--check-config FILE`: checks the file (with the other flags),
    /// prints the outcome and exits, 0 when it is valid and 1 when not.
    /// Without it, returns and does nothing.
    func runCheckConfigIfRequested() {
        switch checkConfigResult() {
        case nil:
            return
        case .success(let report):
            print(report)
            Self.exit()
        case .failure(let error):
            Self.printError(error.description)
            Self.exit(withError: ExitCode.failure)
        }
    }

    /// Applies every flag that was given over `configuration`.
    func applyFlags(to configuration: inout ProxyConfiguration) throws(ConfigError) {
        for entry in settings {
            guard let equals = entry.firstIndex(of: "=") else {
                throw ConfigError(key: nil, message: "'--set' takes key=value, got '\(entry)'")
            }
            let key = String(entry[..<equals])
            guard let setting = ConfigSetting(rawValue: key) else { throw ConfigLoader.unknownKey(key) }
            try setting.apply(String(entry[entry.index(after: equals)...]), spelledAs: key, to: &configuration)
        }
        if let cluster { try ConfigSetting.cluster.apply(cluster, spelledAs: "--cluster", to: &configuration) }
        if let bind { try ConfigSetting.bind.apply(bind, spelledAs: "--bind", to: &configuration) }
        if let logLevel { try ConfigSetting.logLevel.apply(logLevel, spelledAs: "--log-level", to: &configuration) }
        if let allowFlush { configuration.allowFlush = allowFlush }
        if let allowDebug { configuration.allowDebug = allowDebug }
        if let protectedMode { configuration.protectedMode = protectedMode }
        if let pubsubOutputLimit {
            try ConfigSetting.pubsubOutputLimit.apply(pubsubOutputLimit, spelledAs: "--pubsub-output-limit", to: &configuration)
        }
        if let clientOutputLimitHard {
            try ConfigSetting.clientOutputLimitHard.apply(
                clientOutputLimitHard, spelledAs: "--client-output-limit-hard", to: &configuration)
        }
        if let clientOutputLimitSoft {
            try ConfigSetting.clientOutputLimitSoft.apply(
                clientOutputLimitSoft, spelledAs: "--client-output-limit-soft", to: &configuration)
        }
        if let denyCommands { try ConfigSetting.denyCommands.apply(denyCommands, spelledAs: "--deny-commands", to: &configuration) }
        for rename in renameCommands {
            try ConfigSetting.renameCommand.apply(rename, spelledAs: "--rename-command", to: &configuration)
        }
        if let workers { try ConfigSetting.workers.apply(workers, spelledAs: "--workers", to: &configuration) }
        if let readFrom { try ConfigSetting.readFrom.apply(readFrom, spelledAs: "--read-from", to: &configuration) }
        if let requirepass { try ConfigSetting.requirePass.apply(requirepass, spelledAs: "--requirepass", to: &configuration) }
        for user in users { try ConfigSetting.users.apply(user, spelledAs: "--user", to: &configuration) }
        if let backendUser { try ConfigSetting.backendUser.apply(backendUser, spelledAs: "--backend-user", to: &configuration) }
        if let backendPassword {
            try ConfigSetting.backendPassword.apply(backendPassword, spelledAs: "--backend-password", to: &configuration)
        }
        if let crossSlotTransactions {
            try ConfigSetting.crossSlotTransactions.apply(
                crossSlotTransactions, spelledAs: "--cross-slot-transactions", to: &configuration)
        }
        let numbers: [(ConfigSetting, Int?)] = [
            (.port, port), (.backendConnections, backendConnections),
            (.blockingConnectionsPerNode, blockingConnectionsPerNode), (.trackingTableMaxKeys, trackingTableMaxKeys),
            (.failoverTimeoutMs, failoverTimeoutMs), (.failoverQueueLimit, failoverQueueLimit),
            (.readYourWritesMs, readYourWritesMs), (.timeout, timeout), (.tcpKeepAlive, tcpKeepalive),
            (.connectTimeoutMs, connectTimeoutMs), (.requestTimeoutMs, requestTimeoutMs),
            (.maxRedirects, maxRedirects), (.topologyRefreshMs, topologyRefreshMs), (.maxClients, maxclients),
        ]
        for case (let setting, let value?) in numbers {
            try setting.apply(value, spelledAs: "--\(setting.rawValue)", to: &configuration)
        }
    }

    private static func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
