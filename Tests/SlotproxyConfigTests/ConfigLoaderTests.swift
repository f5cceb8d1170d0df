import Foundation
import ProxyCore
import Testing

@testable import slotproxy

/// The shipped example config, found from this file's place in the repository.
let shippedConfigPath = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .appendingPathComponent("config/slotproxy.yaml")
    .path

/// Loads `yaml` as if it were the file `slotproxy.yaml`.
func load(_ yaml: String) throws(ConfigError) -> ProxyConfiguration {
    try ConfigLoader(fileName: "slotproxy.yaml").load(yaml: yaml)
}

/// The error loading `yaml` fails with, or nil when it loads.
func loadError(_ yaml: String) -> ConfigError? {
    do {
        _ = try load(yaml)
        return nil
    } catch {
        return error
    }
}

@Suite struct ConfigLoaderTests {
    @Test func shippedConfigLoadsAsTheDefaults() throws {
        let loaded = try ConfigLoader.load(file: shippedConfigPath)
        var expected = ProxyConfiguration()
        expected.seeds = [7000, 7001, 7002].map { NodeAddress(host: "127.0.0.1", port: $0) }
        #expect(loaded == expected)
    }

    @Test func shippedConfigSetsEverySetting() throws {
        let yaml = try String(contentsOfFile: shippedConfigPath, encoding: .utf8)
        let keys = yaml.split(separator: "\n").compactMap { line -> String? in
            guard let first = line.first, first.isLetter, let colon = line.firstIndex(of: ":") else { return nil }
            return String(line[..<colon])
        }
        #expect(keys == ConfigSetting.allCases.filter { !$0.isUnsetByDefault }.map(\.rawValue))
        // The others are shown commented out, with an example.
        for setting in ConfigSetting.allCases where setting.isUnsetByDefault {
            #expect(yaml.contains("\n# \(setting.rawValue):"), "\(setting.rawValue)")
        }
    }

    @Test func emptyFileKeepsTheDefaults() throws {
        #expect(try load("") == ProxyConfiguration())
        #expect(try load("# only a comment\n") == ProxyConfiguration())
    }

    @Test func everySettingIsRead() throws {
        let loaded = try load(
            """
            cluster: [10.0.0.1:7000, 10.0.0.2:7001]
            bind: 0.0.0.0
            port: 6380
            workers: 4
            backend-connections: 2
            blocking-connections-per-node: 9
            pubsub-output-limit: 1mb
            connect-timeout-ms: 250
            request-timeout-ms: 30000
            max-redirects: 0
            topology-refresh-ms: 1000
            proto-max-bulk-len: 1gb
            max-multibulk-length: 4096
            max-inline-length: 16kb
            maxclients: 50000
            log-level: debug
            allow-flush: yes
            allow-debug: yes
            cross-slot-transactions: relaxed
            tracking-table-max-keys: 5
            failover-timeout-ms: 250
            failover-queue-limit: 7
            client-output-limit-hard: 2gb
            client-output-limit-soft: 0
            client-output-limit-soft-seconds: 5
            client-read-pause-replies: 100
            client-read-pause-bytes: 1mb
            timeout: 30
            tcp-keepalive: 0
            deny-commands: [keys, CONFIG]
            rename-command: {flushall: "", Config: cfg}
            """)
        var expected = ProxyConfiguration()
        expected.seeds = [NodeAddress(host: "10.0.0.1", port: 7000), NodeAddress(host: "10.0.0.2", port: 7001)]
        expected.bind = "0.0.0.0"
        expected.port = 6380
        expected.workers = 4
        expected.backendConnections = 2
        expected.blockingConnectionsPerNode = 9
        expected.pubsubOutputLimit = 1 << 20
        expected.connectTimeoutMs = 250
        expected.requestTimeoutMs = 30000
        expected.maxRedirects = 0
        expected.topologyRefreshMs = 1000
        expected.requestLimits.maxBulkLength = 1 << 30
        expected.requestLimits.maxMultibulkLength = 4096
        expected.requestLimits.maxInlineLength = 16 * 1024
        expected.maxClients = 50000
        expected.logLevel = .debug
        expected.allowFlush = true
        expected.allowDebug = true
        expected.crossSlotTransactions = .relaxed
        expected.trackingTableMaxKeys = 5
        expected.failoverTimeoutMs = 250
        expected.failoverQueueLimit = 7
        expected.clientOutputLimitHard = 2 << 30
        expected.clientOutputLimitSoft = 0
        expected.clientOutputLimitSoftSeconds = 5
        expected.clientReadPauseReplies = 100
        expected.clientReadPauseBytes = 1 << 20
        expected.idleTimeoutSeconds = 30
        expected.tcpKeepAliveSeconds = 0
        expected.deniedCommands = ["keys", "config"]
        expected.renamedCommands = ["flushall": "", "config": "cfg"]
        #expect(loaded == expected)
    }

    @Test(arguments: [
        ("deny-commands: [nosuchcommand]", "'deny-commands': unknown command 'nosuchcommand'"),
        ("deny-commands: config|nosuch", "'deny-commands': unknown command 'config|nosuch'"),
        ("rename-command: {nosuch: x}", "'rename-command': unknown command 'nosuch' (only whole commands can be renamed)"),
        ("rename-command: {config: get}", "'rename-command': 'get' is already the name of another command"),
        ("rename-command: {config: \"a b\"}", "'rename-command': 'a b' cannot be a command name"),
    ])
    func commandSettingsAreChecked(yaml: String, message: String) {
        let error = loadError(yaml + "\n")
        #expect(error?.message == message, "\(String(describing: error))")
    }

    @Test func userBackendCredentials() throws {
        let loaded = try load("user-backend-credentials: {reports: \"reports-ro:s3:cr3t\"}\n")
        #expect(loaded.userBackendCredentials == ["reports": BackendIdentity(user: "reports-ro", password: "s3:cr3t")])
        let error = loadError("user-backend-credentials: {reports: \"no-colon\"}\n")
        #expect(error?.message == "'user-backend-credentials': the entry for 'reports' must be backend-user:password")
        #expect(!(error?.description.contains("no-colon") ?? true))
    }

    @Test func renamingIntoAFreedNameIsAllowed() throws {
        // GET's name is free once GET itself is renamed.
        let loaded = try load("rename-command: {get: fetch, config: get}\n")
        #expect(loaded.renamedCommands == ["get": "fetch", "config": "get"])
    }

    // MARK: errors name the key and the line

    @Test func badValueNamesKeyAndLine() {
        let error = loadError(
            """
            # slotproxy
            cluster:
              - 127.0.0.1:7000

            bind: 127.0.0.1

            port: abc
            workers: 2
            """)
        #expect(error?.key == "port")
        #expect(error?.line == 7)
        #expect(
            error?.description
                == "config error: slotproxy.yaml line 7: 'port' must be an integer between 1 and 65535, got 'abc'")
    }

    @Test func unknownKeyNamesItsLineWithSuggestion() {
        let error = loadError("port: 7777\n\n# a comment\nprot: 7000\n")
        #expect(error?.key == "prot")
        #expect(error?.line == 4)
        #expect(
            error?.description
                == "config error: slotproxy.yaml line 4: unknown setting 'prot' (did you mean 'port'?)")
    }

    @Test func unknownKeyWithNothingCloseListsTheSettings() {
        let error = loadError("workers: 1\nfrobnicate: yes\n")
        #expect(error?.key == "frobnicate")
        #expect(error?.line == 2)
        #expect(error?.message.hasPrefix("unknown setting 'frobnicate'; the settings are: cluster, bind, port") == true)
    }

    @Test(arguments: [
        ("prot", "port"), ("loglevel", "log-level"), ("max_clients", "maxclients"), ("max-clients", "maxclients"),
        ("backend_connections", "backend-connections"), ("request-timeout", "request-timeout-ms"),
        ("connect_timeout", "connect-timeout-ms"), ("proto-max-bulk-length", "proto-max-bulk-len"),
        ("seeds", "cluster"), ("Port", "port"), ("worker", "workers"), ("LOG-LEVEL", "log-level"),
    ])
    func unknownKeySuggestions(key: String, suggestion: String) {
        #expect(loadError("\(key): 1\n")?.message == "unknown setting '\(key)' (did you mean '\(suggestion)'?)")
    }

    @Test(arguments: [
        ("port: 0", "port", "'port' must be an integer between 1 and 65535, got '0'"),
        ("port: 65536", "port", "'port' must be an integer between 1 and 65535, got '65536'"),
        ("port: 7777.5", "port", "'port' must be an integer between 1 and 65535, got '7777.5'"),
        ("port:", "port", "'port' must be an integer between 1 and 65535, got nothing"),
        ("port: [1, 2]", "port", "'port' must be an integer between 1 and 65535, got a list"),
        ("workers: 0", "workers", "'workers' must be auto (one per core the process may use) or an integer between 1 and 256, got '0'"),
        (
            "backend-connections: 65", "backend-connections",
            "'backend-connections' must be an integer between 1 and 64, got '65'"
        ),
        (
            "connect-timeout-ms: 0", "connect-timeout-ms",
            "'connect-timeout-ms' must be an integer between 1 and 600000, got '0'"
        ),
        (
            "request-timeout-ms: 5s", "request-timeout-ms",
            "'request-timeout-ms' must be an integer between 1 and 86400000, got '5s'"
        ),
        ("max-redirects: -1", "max-redirects", "'max-redirects' must be an integer between 0 and 100, got '-1'"),
        (
            "topology-refresh-ms: 1", "topology-refresh-ms",
            "'topology-refresh-ms' must be an integer between 10 and 86400000, got '1'"
        ),
        (
            "proto-max-bulk-len: 512xb", "proto-max-bulk-len",
            "'proto-max-bulk-len' must be a size between 1mb and 1024gb (bytes, or with a unit: 64kb, 512mb, 1gb),"
                + " got '512xb'"
        ),
        (
            "proto-max-bulk-len: 64kb", "proto-max-bulk-len",
            "'proto-max-bulk-len' must be a size between 1mb and 1024gb (bytes, or with a unit: 64kb, 512mb, 1gb),"
                + " got '64kb'"
        ),
        (
            "max-inline-length: 1gb", "max-inline-length",
            "'max-inline-length' must be a size between 1kb and 512mb (bytes, or with a unit: 64kb, 512mb, 1gb),"
                + " got '1gb'"
        ),
        (
            "max-multibulk-length: 1kb", "max-multibulk-length",
            "'max-multibulk-length' must be an integer between 1 and 1073741824, got '1kb'"
        ),
        ("maxclients: 0", "maxclients", "'maxclients' must be an integer between 1 and 1000000, got '0'"),
        ("maxclients: {a: 1}", "maxclients", "'maxclients' must be an integer between 1 and 1000000, got a mapping"),
        (
            "log-level: loud", "log-level",
            "'log-level' must be one of trace, debug, info, notice, warning, error, critical, got 'loud'"
        ),
        ("allow-flush: maybe", "allow-flush", "'allow-flush' must be yes, no, true or false, got 'maybe'"),
        ("allow-flush: 1", "allow-flush", "'allow-flush' must be yes, no, true or false, got '1'"),
        ("allow-flush:", "allow-flush", "'allow-flush' must be yes, no, true or false, got nothing"),
        ("allow-flush: [yes]", "allow-flush", "'allow-flush' must be yes, no, true or false, got a list"),
        ("allow-debug: maybe", "allow-debug", "'allow-debug' must be yes, no, true or false, got 'maybe'"),
        ("allow-debug: 1", "allow-debug", "'allow-debug' must be yes, no, true or false, got '1'"),
        ("allow-debug:", "allow-debug", "'allow-debug' must be yes, no, true or false, got nothing"),
        ("allow-debug: [yes]", "allow-debug", "'allow-debug' must be yes, no, true or false, got a list"),
        (
            "cross-slot-transactions: loose", "cross-slot-transactions",
            "'cross-slot-transactions' must be one of refuse, relaxed, got 'loose'"
        ),
        (
            "bind: 127.0.0.1 ::1", "bind",
            "'bind' must be one IPv4 or IPv6 address or host name to listen on, got '127.0.0.1 ::1'"
        ),
        (
            "bind: 300.1.1.1", "bind",
            "'bind' must be one IPv4 or IPv6 address or host name to listen on, got '300.1.1.1'"
        ),
        ("bind: ':::1'", "bind", "'bind' must be one IPv4 or IPv6 address or host name to listen on, got ':::1'"),
        (
            "cluster: []", "cluster",
            "'cluster' must be host:port seed addresses, as a list or comma-separated (IPv6 as [::1]:7000),"
                + " got an empty list"
        ),
        (
            "cluster: 127.0.0.1", "cluster",
            "'cluster' entries must be host:port with a port from 1 to 65535 (IPv6 as [::1]:7000), got '127.0.0.1'"
        ),
        (
            "cluster: a:1,,b:2", "cluster",
            "'cluster' entries must be host:port with a port from 1 to 65535 (IPv6 as [::1]:7000), got an empty entry"
        ),
        (
            "cluster: redis://127.0.0.1:7000", "cluster",
            "'cluster' entries are host:port, not URLs: got 'redis://127.0.0.1:7000'"
                + " (a password goes in backend-password, TLS in backend-tls)"
        ),
        (
            "cluster: 'user:pw@127.0.0.1:7000'", "cluster",
            "'cluster' entries must be host:port with a port from 1 to 65535 (IPv6 as [::1]:7000),"
                + " got 'user:pw@127.0.0.1:7000'"
        ),
    ])
    func badValuesNameKeyAndLine(line: String, key: String, message: String) {
        // The bad setting is on line 3, after a comment and a good setting.
        let goodSetting = key == "port" ? "workers: 1" : "port: 7777"
        let error = loadError("# settings\n\(goodSetting)\n\(line)\n")
        #expect(error == ConfigError(key: key, line: 3, message: message, file: "slotproxy.yaml"))
    }

    @Test func badClusterEntryNamesItsOwnLine() {
        let error = loadError("cluster:\n  - 10.0.0.1:7000\n  - 10.0.0.2:99999\nport: 7777\n")
        #expect(
            error?.description
                == "config error: slotproxy.yaml line 3: 'cluster' entries must be host:port with a port from"
                + " 1 to 65535 (IPv6 as [::1]:7000), got '10.0.0.2:99999'")
        #expect(error?.key == "cluster")
    }

    @Test func duplicateKeyIsAnError() {
        let error = loadError("# top\nport: 7000\nworkers: 2\nport: 7001\n")
        #expect(error?.key == "port")
        #expect(error?.line == 2)
        #expect(error?.message == "'port' is set more than once")
    }

    @Test func yamlSyntaxErrorNamesItsLine() {
        let error = loadError("port: 7777\nworkers: [1\nbind: x\n")
        #expect(error?.key == nil)
        #expect(error?.line != nil)
        #expect(error?.message.hasPrefix("invalid YAML: ") == true)
    }

    @Test func topLevelMustBeAMapping() {
        let error = loadError("- port\n- 7777\n")
        #expect(error?.line == 1)
        #expect(error?.message.hasPrefix("the file must be a mapping of setting names to values") == true)
    }

    @Test func missingFileSaysSo() {
        let path = "/nonexistent/slotproxy.yaml"
        #expect(throws: ConfigError(key: nil, message: "cannot open: No such file or directory", file: path)) {
            try ConfigLoader.load(file: path)
        }
    }

    // MARK: allow-flush

    @Test func allowFlushIsOffByDefault() throws {
        #expect(ProxyConfiguration().allowFlush == false)
        #expect(try load("port: 7777\n").allowFlush == false)
    }

    @Test(arguments: [
        ("yes", true), ("no", false), ("true", true), ("false", false), ("YES", true), ("No", false),
        ("TRUE", true), ("False", false), ("\"yes\"", true), ("'false'", false),
    ])
    func allowFlushBooleans(text: String, value: Bool) throws {
        #expect(try load("allow-flush: \(text)\n").allowFlush == value)
        // Over a base that has the other value, so `no` is seen to switch it off.
        var base = ProxyConfiguration()
        base.allowFlush = !value
        let loaded = try ConfigLoader(fileName: "slotproxy.yaml").load(yaml: "allow-flush: \(text)\n", over: base)
        #expect(loaded.allowFlush == value)
    }

    @Test func badAllowFlushNamesKeyAndLine() {
        let error = loadError("# slotproxy\ncluster: 127.0.0.1:7000\n\nallow-flush: on-weekends\nport: 7777\n")
        #expect(error?.key == "allow-flush")
        #expect(error?.line == 4)
        #expect(
            error?.description
                == "config error: slotproxy.yaml line 4: 'allow-flush' must be yes, no, true or false,"
                + " got 'on-weekends'")
    }

    // MARK: authentication

    @Test func usersAndPasswordsLoad() throws {
        let loaded = try load(
            """
            requirepass: "s3cret"
            users:
              - "alice on >wonderland ~app:* +@read"
              - "bob off >x"
            backend-user: proxy
            backend-password: "node-secret"
            """)
        #expect(loaded.requirePass == "s3cret")
        #expect(loaded.users.map(\.name) == ["alice", "bob"])
        #expect(loaded.users[0].accepts(password: Array("wonderland".utf8)))
        #expect(!loaded.users[1].accepts(password: Array("x".utf8)))  // disabled
        #expect(loaded.backendUser == "proxy" && loaded.backendPassword == "node-secret")
        let error = loadError("users:\n  - \"carol on =oops\"\n")
        #expect(error?.description.contains("unknown rule '=oops'") == true)
    }

    // MARK: cross-slot-transactions

    @Test func crossSlotTransactionsAreRefusedByDefault() throws {
        #expect(ProxyConfiguration().crossSlotTransactions == .refuse)
        #expect(try load("cross-slot-transactions: RELAXED\n").crossSlotTransactions == .relaxed)
        #expect(try load("cross-slot-transactions: refuse\n").crossSlotTransactions == .refuse)
    }

    // MARK: allow-debug

    @Test func allowDebugIsOffByDefault() throws {
        #expect(ProxyConfiguration().allowDebug == false)
        #expect(try load("port: 7777\n").allowDebug == false)
    }

    @Test(arguments: [
        ("yes", true), ("no", false), ("true", true), ("false", false), ("YES", true), ("No", false),
        ("TRUE", true), ("False", false), ("\"yes\"", true), ("'false'", false),
    ])
    func allowDebugBooleans(text: String, value: Bool) throws {
        #expect(try load("allow-debug: \(text)\n").allowDebug == value)
        // Over a base that has the other value, so `no` is seen to switch it off.
        var base = ProxyConfiguration()
        base.allowDebug = !value
        let loaded = try ConfigLoader(fileName: "slotproxy.yaml").load(yaml: "allow-debug: \(text)\n", over: base)
        #expect(loaded.allowDebug == value)
    }

    @Test func badAllowDebugNamesKeyAndLine() {
        let error = loadError("# slotproxy\ncluster: 127.0.0.1:7000\n\nallow-debug: on-weekends\nport: 7777\n")
        #expect(error?.key == "allow-debug")
        #expect(error?.line == 4)
        #expect(
            error?.description
                == "config error: slotproxy.yaml line 4: 'allow-debug' must be yes, no, true or false,"
                + " got 'on-weekends'")
    }

    @Test func allowFlushAndAllowDebugAreIndependent() throws {
        let flushOnly = try load("allow-flush: yes\n")
        #expect(flushOnly.allowFlush == true)
        #expect(flushOnly.allowDebug == false)
        let debugOnly = try load("allow-debug: yes\n")
        #expect(debugOnly.allowFlush == false)
        #expect(debugOnly.allowDebug == true)
    }

    // MARK: sizes

    @Test(arguments: [
        ("100", 100), ("100b", 100), ("64kb", 65536), ("64KB", 65536), ("64k", 64000), ("512mb", 512 << 20),
        ("1m", 1_000_000), ("1MB", 1 << 20), ("2g", 2_000_000_000), ("2gb", 2 << 30), ("0", 0),
    ])
    func sizeSuffixes(text: String, bytes: Int) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "mb", "-1", "1.5mb", "1 mb", "12tb", "0x10", "99999999999999999999", "9999999999999gb"])
    func notSizes(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test func sizesInTheFile() throws {
        let loaded = try load("proto-max-bulk-len: 2GB\nmax-inline-length: 1048576\n")
        #expect(loaded.requestLimits.maxBulkLength == 2 << 30)
        #expect(loaded.requestLimits.maxInlineLength == 1 << 20)
        #expect(try load("proto-max-bulk-len: 1mb").requestLimits.maxBulkLength == 1 << 20)
        #expect(try load("max-inline-length: 4k").requestLimits.maxInlineLength == 4000)
    }

    // MARK: seeds

    @Test func clusterAsCommaSeparatedString() throws {
        let loaded = try load("cluster: \"10.0.0.1:7000, 10.0.0.2:7001,redis-3.internal:7002\"\n")
        #expect(
            loaded.seeds == [
                NodeAddress(host: "10.0.0.1", port: 7000), NodeAddress(host: "10.0.0.2", port: 7001),
                NodeAddress(host: "redis-3.internal", port: 7002),
            ])
    }

    @Test func ipv6Seeds() throws {
        let loaded = try load(
            """
            cluster:
              - "[::1]:7000"
              - '[fe80::1]:7001'
              - ::1:7002
            bind: "::1"
            """)
        #expect(
            loaded.seeds == [
                NodeAddress(host: "::1", port: 7000), NodeAddress(host: "fe80::1", port: 7001),
                NodeAddress(host: "::1", port: 7002),
            ])
        #expect(loaded.seeds.first?.description == "[::1]:7000")
        #expect(loaded.bind == "::1")
        #expect(try load("cluster: \"[::1]:7000,[::2]:7001\"").seeds.map(\.port) == [7000, 7001])
        #expect(try load("bind: '[::]'").bind == "::")
    }

    @Test func unquotedIPv6SeedGetsAHint() {
        let error = loadError("port: 7777\ncluster:\n  - [::1]:7000\n")
        #expect(error?.line == 3)
        #expect(error?.message.hasSuffix("quote IPv6 addresses: \"[::1]:7000\"") == true)
    }
}
