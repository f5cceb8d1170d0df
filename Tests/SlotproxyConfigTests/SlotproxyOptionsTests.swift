import Foundation
import ProxyCore
import Testing

@testable import slotproxy

/// Writes `yaml` to a fresh file in the temporary directory and returns its path.
func temporaryConfig(_ yaml: String) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("slotproxy-\(UUID().uuidString).yaml")
    try yaml.write(to: url, atomically: true, encoding: .utf8)
    return url.path
}

/// The message ArgumentParser would print for a command line that fails to parse.
func parseFailure(_ arguments: [String]) -> String? {
    do {
        _ = try SlotproxyOptions.parse(arguments)
        return nil
    } catch {
        return SlotproxyOptions.message(for: error)
    }
}

@Suite struct SlotproxyOptionsTests {
    static let missingSeeds =
        "slotproxy: no cluster seed nodes: pass --cluster host:port[,host:port...] or set 'cluster' in the config file"

    @Test func flagsOverrideTheFile() throws {
        let path = try temporaryConfig(
            """
            cluster: 10.0.0.1:7000
            port: 7000
            workers: 2
            log-level: warning
            proto-max-bulk-len: 1gb
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let options = try SlotproxyOptions.parse([
            "--config", path, "--port", "7001", "--cluster", "10.0.0.5:7005,10.0.0.6:7006", "--log-level", "debug",
        ])
        let configuration = try options.resolveConfiguration()
        #expect(configuration.port == 7001)
        #expect(
            configuration.seeds == [
                NodeAddress(host: "10.0.0.5", port: 7005), NodeAddress(host: "10.0.0.6", port: 7006),
            ])
        #expect(configuration.logLevel == .debug)
        // Settings with no flag given keep the file's values, or the defaults.
        #expect(configuration.workers == 2)
        #expect(configuration.requestLimits.maxBulkLength == 1 << 30)
        #expect(configuration.maxClients == ProxyConfiguration().maxClients)
    }

    @Test func everyFlagIsApplied() throws {
        let options = try SlotproxyOptions.parse([
            "--cluster", "a:1", "--bind", "0.0.0.0", "--port", "6000", "--workers", "3",
            "--backend-connections", "4", "--connect-timeout-ms", "50", "--request-timeout-ms", "60",
            "--max-redirects", "7", "--topology-refresh-ms", "70", "--maxclients", "80", "--log-level", "TRACE",
            "--allow-flush", "--allow-debug", "--cross-slot-transactions", "relaxed",
            "--failover-timeout-ms", "90", "--failover-queue-limit", "100", "--tracking-table-max-keys", "11",
            "--pubsub-output-limit", "1mb", "--no-protected-mode",
        ])
        var expected = ProxyConfiguration()
        expected.seeds = [NodeAddress(host: "a", port: 1)]
        expected.bind = "0.0.0.0"
        expected.port = 6000
        expected.workers = 3
        expected.backendConnections = 4
        expected.connectTimeoutMs = 50
        expected.requestTimeoutMs = 60
        expected.maxRedirects = 7
        expected.topologyRefreshMs = 70
        expected.maxClients = 80
        expected.logLevel = .trace
        expected.allowFlush = true
        expected.allowDebug = true
        expected.crossSlotTransactions = .relaxed
        expected.failoverTimeoutMs = 90
        expected.failoverQueueLimit = 100
        expected.trackingTableMaxKeys = 11
        expected.pubsubOutputLimit = 1 << 20
        expected.protectedMode = false
        #expect(try options.resolveConfiguration() == expected)
    }

    @Test func allowFlushFlagOverridesTheFileOnlyWhenGiven() throws {
        let off = try temporaryConfig("cluster: 10.0.0.1:7000\nallow-flush: no\n")
        let on = try temporaryConfig("cluster: 10.0.0.1:7000\nallow-flush: Yes\n")
        defer {
            try? FileManager.default.removeItem(atPath: off)
            try? FileManager.default.removeItem(atPath: on)
        }
        func allowFlush(_ arguments: [String]) throws -> Bool {
            try SlotproxyOptions.parse(arguments).resolveConfiguration().allowFlush
        }
        // No flag: the file's value.
        #expect(try allowFlush(["--config", off]) == false)
        #expect(try allowFlush(["--config", on]) == true)
        // A flag: its value, whatever the file says.
        #expect(try allowFlush(["--config", off, "--allow-flush"]) == true)
        #expect(try allowFlush(["--config", on, "--no-allow-flush"]) == false)
        #expect(try allowFlush(["--config", on, "--allow-flush"]) == true)
        // Neither: the default, off.
        #expect(try allowFlush(["--cluster", "h:1"]) == false)
        #expect(try allowFlush(["--cluster", "h:1", "--allow-flush"]) == true)
        // Both flags: the last one wins.
        #expect(try allowFlush(["--cluster", "h:1", "--allow-flush", "--no-allow-flush"]) == false)
        #expect(try SlotproxyOptions.parse([]).allowFlush == nil)
        #expect(parseFailure(["--allow-flush", "yes"]) != nil)
    }

    @Test func allowDebugFlagOverridesTheFileOnlyWhenGiven() throws {
        let off = try temporaryConfig("cluster: 10.0.0.1:7000\nallow-debug: no\n")
        let on = try temporaryConfig("cluster: 10.0.0.1:7000\nallow-debug: Yes\n")
        defer {
            try? FileManager.default.removeItem(atPath: off)
            try? FileManager.default.removeItem(atPath: on)
        }
        func allowDebug(_ arguments: [String]) throws -> Bool {
            try SlotproxyOptions.parse(arguments).resolveConfiguration().allowDebug
        }
        // No flag: the file's value.
        #expect(try allowDebug(["--config", off]) == false)
        #expect(try allowDebug(["--config", on]) == true)
        // A flag: its value, whatever the file says.
        #expect(try allowDebug(["--config", off, "--allow-debug"]) == true)
        #expect(try allowDebug(["--config", on, "--no-allow-debug"]) == false)
        #expect(try allowDebug(["--config", on, "--allow-debug"]) == true)
        // Neither: the default, off.
        #expect(try allowDebug(["--cluster", "h:1"]) == false)
        #expect(try allowDebug(["--cluster", "h:1", "--allow-debug"]) == true)
        // Both flags: the last one wins.
        #expect(try allowDebug(["--cluster", "h:1", "--allow-debug", "--no-allow-debug"]) == false)
        #expect(try SlotproxyOptions.parse([]).allowDebug == nil)
        #expect(parseFailure(["--allow-debug", "yes"]) != nil)
        // One flag leaves the other setting alone.
        let flushOnly = try SlotproxyOptions.parse(["--cluster", "h:1", "--allow-flush"]).resolveConfiguration()
        #expect(flushOnly.allowDebug == false)
        let debugOnly = try SlotproxyOptions.parse(["--cluster", "h:1", "--allow-debug"]).resolveConfiguration()
        #expect(debugOnly.allowFlush == false)
    }

    @Test func missingSeedsIsOneLine() throws {
        let options = try SlotproxyOptions.parse(["--port", "7000"])
        #expect(throws: ConfigError.noSeeds) { try options.resolveConfiguration() }
        #expect(ConfigError.noSeeds.description == Self.missingSeeds)
    }

    @Test func fileWithoutClusterNeedsTheFlag() throws {
        let path = try temporaryConfig("port: 7000\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ConfigError.noSeeds) { try SlotproxyOptions.parse(["--config", path]).resolveConfiguration() }
        let configuration = try SlotproxyOptions.parse(["--config", path, "--cluster", "h:1"]).resolveConfiguration()
        #expect(configuration.seeds == [NodeAddress(host: "h", port: 1)])
        #expect(configuration.port == 7000)
    }

    @Test func ipv6ClusterFlag() throws {
        let options = try SlotproxyOptions.parse([
            "--cluster", "[::1]:7000,[::1]:7001", "--bind", "::", "--requirepass", "pw",
        ])
        let configuration = try options.resolveConfiguration()
        #expect(configuration.seeds == [NodeAddress(host: "::1", port: 7000), NodeAddress(host: "::1", port: 7001)])
        #expect(configuration.seeds.map(\.description) == ["[::1]:7000", "[::1]:7001"])
        #expect(configuration.bind == "::")
    }

    @Test func protectedModeRefusesAnOpenBindWithoutAuthentication() throws {
        let open = try SlotproxyOptions.parse(["--cluster", "h:1", "--bind", "0.0.0.0"])
        #expect(throws: ConfigError.self) { try open.resolveConfiguration() }
        do {
            _ = try open.resolveConfiguration()
        } catch {
            #expect(error.description.contains("protected mode") && error.description.contains("--no-protected-mode"))
        }
        // Loopback, or authentication, or protected mode off: fine.
        for args in [
            ["--cluster", "h:1", "--bind", "127.0.0.1"], ["--cluster", "h:1", "--bind", "::1"],
            ["--cluster", "h:1", "--bind", "0.0.0.0", "--requirepass", "pw"],
            ["--cluster", "h:1", "--bind", "0.0.0.0", "--user", "a on >pw allkeys allcommands"],
            ["--cluster", "h:1", "--bind", "0.0.0.0", "--no-protected-mode"],
        ] {
            #expect(throws: Never.self) { try SlotproxyOptions.parse(args).resolveConfiguration() }
        }
    }

    @Test func loopbackAddressesAreTheOnlyOnesProtectedModeLetsThrough() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1", "::FFFF:127.0.0.1"] {
            #expect(ProxyConfiguration.isLoopback(host), "\(host)")
        }
        for host in ["0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1", "128.0.0.1", "an unknown address"] {
            #expect(!ProxyConfiguration.isLoopback(host), "\(host)")
        }
    }

    @Test func flagValuesAreCheckedLikeTheFile() {
        #expect(parseFailure(["--port", "0"]) == "'--port' must be an integer between 1 and 65535, got '0'")
        #expect(
            parseFailure(["--maxclients", "0"]) == "'--maxclients' must be an integer between 1 and 1000000, got '0'")
        #expect(
            parseFailure(["--log-level", "loud"])
                == "'--log-level' must be one of trace, debug, info, notice, warning, error, critical, got 'loud'")
        #expect(
            parseFailure(["--cluster", "a:1,b"])
                == "'--cluster' entries must be host:port with a port from 1 to 65535 (IPv6 as [::1]:7000), got 'b'")
        #expect(parseFailure(["--port", "abc"]) != nil)
        #expect(parseFailure(["--frobnicate"]) != nil)
    }

    @Test func configAndCheckConfigTogetherIsAUsageError() {
        #expect(parseFailure(["--config", "a.yaml", "--check-config", "b.yaml"])?.contains("pass one of them") == true)
    }

    // MARK: --check-config

    @Test func shippedConfigPassesCheckConfig() throws {
        let options = try SlotproxyOptions.parse(["--check-config", shippedConfigPath])
        #expect(options.checkConfigResult() == .success("configuration OK: \(shippedConfigPath)"))
    }

    @Test func checkConfigReportsKeyAndLine() throws {
        let path = try temporaryConfig("cluster: 127.0.0.1:7000\nworkers: 2\nmaxclient: 100\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try SlotproxyOptions.parse(["--check-config", path]).checkConfigResult()
        guard case .failure(let error) = result else {
            Issue.record("expected a failure, got \(String(describing: result))")
            return
        }
        #expect(error.key == "maxclient")
        #expect(error.line == 3)
        #expect(
            error.description
                == "config error: \(path) line 3: unknown setting 'maxclient' (did you mean 'maxclients'?)")
    }

    @Test func checkConfigWithoutSeedsFails() throws {
        let path = try temporaryConfig("port: 7000\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try SlotproxyOptions.parse(["--check-config", path]).checkConfigResult() == .failure(.noSeeds))
        #expect(
            try SlotproxyOptions.parse(["--check-config", path, "--cluster", "h:1"]).checkConfigResult()
                == .success("configuration OK: \(path)"))
    }

    @Test func noCheckConfigNoResult() throws {
        #expect(try SlotproxyOptions.parse(["--config", shippedConfigPath]).checkConfigResult() == nil)
    }
}
