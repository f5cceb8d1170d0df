import Foundation
import Logging
import ProxyCore
import EventLoop

/// Changes to the running settings, from SIGHUP (the file again) and from
/// `PROXY CONFIG SET` (one setting): one at a time, each checked like the
/// file before anything changes, then handed to the proxy.
final class RuntimeConfigControl: ConfigControl, @unchecked Sendable {
    // (@unchecked: `proxy` and `options` are only touched under `lock`.)
    private let lock = Locked<Void>(())
    private let proxy: Proxy
    private let options: SlotproxyOptions
    private let environment: [String: String]
    private let logger: Logger

    init(proxy: Proxy, options: SlotproxyOptions, environment: [String: String], logger: Logger) {
        self.proxy = proxy
        self.options = options
        self.environment = environment
        self.logger = logger
    }

    /// SIGHUP: file, environment and flags again. Logs the outcome.
    /// Re-reads the file (SIGHUP); false when it was refused and the running
    /// configuration stays.
    @discardableResult
    func reloadFromFile() -> Bool {
        lock.withLock { _ in
            do {
                let new = try options.resolveConfiguration(environment: environment)
                let needRestart = try proxy.reload(new)
                ReloadableLevelLogHandler.level = Logger.Level(proxy.configuration.logLevel)
                ReloadableLevelLogHandler.format = proxy.configuration.logFormat
                logger.info(
                    "configuration re-read\(needRestart.isEmpty ? "" : "; needs a restart to change, kept as running: \(needRestart.joined(separator: ", "))")"
                )
                return true
            } catch {
                logger.error("configuration not re-read, the running one stays: \(String(describing: error))")
                return false
            }
        }
    }

    func get(matching pattern: String) -> [(String, String)] {
        let configuration = lock.withLock { _ in proxy.configuration }
        return ConfigSetting.allCases
            .filter { fnmatch(pattern.lowercased(), $0.rawValue, 0) == 0 }
            .map { ($0.rawValue, $0.displayValue(in: configuration)) }
    }

    func set(_ name: String, to value: String) -> String? {
        guard let setting = ConfigSetting(rawValue: name.lowercased()) else {
            return "ERR unknown setting '\(name)'; PROXY CONFIG GET * lists them"
        }
        return lock.withLock { _ -> String? in
            var new = proxy.configuration
            do {
                try setting.apply(value, spelledAs: setting.rawValue, to: &new)
                try SlotproxyOptions.validate(new)
            } catch {
                return "ERR \(String(describing: error))"
            }
            if !proxy.configuration.settingsNeedingRestart(toBecome: new).isEmpty {
                return "ERR '\(setting.rawValue)' cannot change while running: set it in the file and restart"
            }
            do {
                _ = try proxy.reload(new)
            } catch {
                return "ERR \(String(describing: error))"
            }
            ReloadableLevelLogHandler.level = Logger.Level(new.logLevel)
            ReloadableLevelLogHandler.format = new.logFormat
            logger.notice("\(setting.rawValue) changed by PROXY CONFIG SET")
            return nil
        }
    }
}

extension Logger.Level {
    init(_ setting: LogLevelSetting) { self = Logger.Level(rawValue: setting.rawValue) ?? .info }
}

extension ConfigSetting {
    /// The value as `PROXY CONFIG GET` shows it: as it would be written in the
    /// file, except passwords, which are never shown.
    func displayValue(in c: ProxyConfiguration) -> String {
        func yesNo(_ flag: Bool) -> String { flag ? "yes" : "no" }
        func hidden(_ secret: String?) -> String { secret == nil ? "" : "(set)" }
        switch self {
        case .cluster: return c.seeds.map(\.description).joined(separator: ",")
        case .bind: return c.bind
        case .port: return "\(c.port)"
        case .workers: return c.workers == 0 ? "auto" : "\(c.workers)"
        case .backendConnections: return "\(c.backendConnections)"
        case .blockingConnectionsPerNode: return "\(c.blockingConnectionsPerNode)"
        case .pubsubOutputLimit: return "\(c.pubsubOutputLimit)"
        case .trackingTableMaxKeys: return "\(c.trackingTableMaxKeys)"
        case .connectTimeoutMs: return "\(c.connectTimeoutMs)"
        case .requestTimeoutMs: return "\(c.requestTimeoutMs)"
        case .maxRedirects: return "\(c.maxRedirects)"
        case .failoverTimeoutMs: return "\(c.failoverTimeoutMs)"
        case .failoverQueueLimit: return "\(c.failoverQueueLimit)"
        case .transactionReplayBytes: return "\(c.transactionReplayBytes)"
        case .topologyRefreshMs: return "\(c.topologyRefreshMs)"
        case .protoMaxBulkLen: return "\(c.requestLimits.maxBulkLength)"
        case .maxMultibulkLength: return "\(c.requestLimits.maxMultibulkLength)"
        case .maxInlineLength: return "\(c.requestLimits.maxInlineLength)"
        case .maxClients: return "\(c.maxClients)"
        case .clientOutputLimitHard: return "\(c.clientOutputLimitHard)"
        case .clientOutputLimitSoft: return "\(c.clientOutputLimitSoft)"
        case .clientOutputLimitSoftSeconds: return "\(c.clientOutputLimitSoftSeconds)"
        case .clientReadPauseReplies: return "\(c.clientReadPauseReplies)"
        case .clientReadPauseBytes: return "\(c.clientReadPauseBytes)"
        case .clientQueryBufferLimit: return "\(c.clientQueryBufferLimit)"
        case .replyCoalesceUs: return "\(c.replyCoalesceMicros)"
        case .timeout: return "\(c.idleTimeoutSeconds)"
        case .tcpKeepAlive: return "\(c.tcpKeepAliveSeconds)"
        case .shutdownTimeout: return "\(c.shutdownTimeoutSeconds)"
        case .slowlogLogSlowerThan: return "\(c.slowlogSlowerThanMicros)"
        case .slowlogMaxLen: return "\(c.slowlogMaxLength)"
        case .evalScriptCacheBytes: return "\(c.evalScriptCacheBytes)"
        case .auditMaxEntries: return "\(c.auditMaxEntries)"
        case .adminBind: return c.adminBind
        case .adminPort: return "\(c.adminPort)"
        case .adminMaxRequestBytes: return "\(c.adminMaxRequestBytes)"
        case .adminTimeoutMs: return "\(c.adminTimeoutMs)"
        case .denyCommands: return c.deniedCommands.joined(separator: ",")
        case .renameCommand: return c.renamedCommands.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        case .logLevel: return c.logLevel.rawValue
        case .logFormat: return c.logFormat.rawValue
        case .allowFlush: return yesNo(c.allowFlush)
        case .allowDebug: return yesNo(c.allowDebug)
        case .crossSlotTransactions: return c.crossSlotTransactions.rawValue
        case .readFrom: return c.readFrom.rawValue
        case .readYourWritesMs: return "\(c.readYourWritesMs)"
        case .requirePass: return hidden(c.requirePass)
        case .users: return c.users.map(\.name).joined(separator: ",")
        case .backendUser: return c.backendUser ?? ""
        case .backendPassword: return hidden(c.backendPassword)
        case .userBackendCredentials:
            return c.userBackendCredentials.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.user):(set)" }.joined(separator: ",")
        case .pingBeforeAuth: return yesNo(c.pingBeforeAuth)
        case .protectedMode: return yesNo(c.protectedMode)
        case .tlsPort: return "\(c.tlsPort)"
        case .tlsCertFile: return c.tlsCertFile ?? ""
        case .tlsKeyFile: return c.tlsKeyFile ?? ""
        case .tlsCACertFile: return c.tlsCACertFile ?? ""
        case .tlsAuthClients: return yesNo(c.tlsAuthClients)
        case .tlsMinVersion: return c.tlsMinVersion
        case .backendTLS: return yesNo(c.backendTLS)
        case .backendTLSCACertFile: return c.backendTLSCACertFile ?? ""
        case .backendTLSCertFile: return c.backendTLSCertFile ?? ""
        case .backendTLSKeyFile: return c.backendTLSKeyFile ?? ""
        case .backendTLSVerify: return yesNo(c.backendTLSVerify)
        case .backendTLSServerName: return c.backendTLSServerName ?? ""
        }
    }
}
