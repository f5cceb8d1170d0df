import Foundation
import ProxyCore
import Testing

@testable import slotproxy

@Suite struct RuntimeSettingsTests {
    @Test func environmentSitsBetweenTheFileAndTheFlags() throws {
        let path = try temporaryConfig("cluster: 10.0.0.1:7000\nport: 7001\nmaxclients: 5\n")
        let options = try SlotproxyOptions.parse(["--config", path, "--port", "7003"])
        let configuration = try options.resolveConfiguration(environment: [
            "SLOTPROXY_PORT": "7002", "SLOTPROXY_MAXCLIENTS": "6", "SLOTPROXY_REQUEST_TIMEOUT_MS": "250",
            "SLOTPROXY_BIN": "/not/a/setting",
        ])
        #expect(configuration.port == 7003)  // the flag wins
        #expect(configuration.maxClients == 6)  // the environment beats the file
        #expect(configuration.requestTimeoutMs == 250)
        #expect(EnvironmentSettings.unknownVariables(in: ["SLOTPROXY_BIN": "x", "SLOTPROXY_PORT": "1", "HOME": "/"]) == ["SLOTPROXY_BIN"])
    }

    @Test func aBadEnvironmentValueNamesItsVariable() throws {
        let options = try SlotproxyOptions.parse(["--cluster", "10.0.0.1:7000"])
        #expect(throws: ConfigError.self) {
            try options.resolveConfiguration(environment: ["SLOTPROXY_TIMEOUT": "later"])
        }
        do {
            _ = try options.resolveConfiguration(environment: ["SLOTPROXY_TIMEOUT": "later"])
        } catch {
            #expect(error.description.contains("SLOTPROXY_TIMEOUT"))
        }
    }

    @Test func everySettingHasAVariableAndAShownValue() {
        let configuration = ProxyConfiguration()
        for setting in ConfigSetting.allCases {
            #expect(EnvironmentSettings.variable(for: setting).hasPrefix("SLOTPROXY_"))
            #expect(!EnvironmentSettings.variable(for: setting).contains("-"))
            _ = setting.displayValue(in: configuration)
        }
        #expect(EnvironmentSettings.variable(for: .requestTimeoutMs) == "SLOTPROXY_REQUEST_TIMEOUT_MS")
        var secret = configuration
        secret.requirePass = "hunter2"
        #expect(ConfigSetting.requirePass.displayValue(in: secret) == "(set)")
        #expect(ConfigSetting.workers.displayValue(in: configuration) == "auto")
    }

    @Test func restartOnlySettingsAreKeptOnReload() {
        let running = ProxyConfiguration()
        var new = running
        new.port = 7100
        new.workers = 64
        new.requestTimeoutMs = 42
        new.requirePass = "new"
        #expect(running.settingsNeedingRestart(toBecome: new) == ["port", "workers"])
        let applied = running.applyingRuntimeSettings(of: new)
        #expect(applied.port == running.port && applied.workers == running.workers)
        #expect(applied.requestTimeoutMs == 42 && applied.requirePass == "new")
        #expect(running.settingsNeedingRestart(toBecome: applied).isEmpty)
    }
}
