import RESPWire

#if canImport(Glibc)
    import Glibc
#endif

/// A `host:port` address of a cluster node or seed.
public struct NodeAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`, `[v6]:port` or `v6:port` (split at the last colon).
    public init?(parsing text: String) {
        var text = Substring(text)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        text = text[..<colon]
        if text.hasPrefix("[") && text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        guard !text.isEmpty else { return nil }
        self.init(host: String(text), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum LogLevelSetting: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// How log lines look (`log-format`): `text` (timestamp, level, message),
/// `logfmt` (key=value pairs) or `json` (one object per line).
public enum LogFormat: String, Sendable, CaseIterable {
    case text, logfmt, json
}

/// What a transaction whose keys span several slots gets (`cross-slot-transactions`).
public enum CrossSlotTransactions: String, Sendable, CaseIterable {
    /// `-CROSSSLOT`, then `-EXECABORT`, exactly as a cluster node answers.
    case refuse
    /// Run as one `MULTI`/`EXEC` per slot: atomic per slot, not across slots
    /// (see `Worker+RelaxedTransactions.swift`).
    case relaxed
}

/// An ACL user of the cluster nodes the proxy connects as.
public struct BackendIdentity: Hashable, Sendable {
    public var user: String
    public var password: String
    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }
}

/// Where read-only commands go (`read-from`).
public enum ReadFrom: String, Sendable, CaseIterable {
    /// Always the slot's master (Redis Cluster's own default).
    case master
    /// A healthy replica of the slot's master, round robin; the master when none is.
    case preferReplica = "prefer-replica"
    /// A healthy replica; an error when the master has none.
    case replica
    /// The master or replica with the lowest round-trip time the health checks measured.
    case nearest
}

/// Every setting of the proxy, with its default. The executable fills it from
/// the YAML file and the command line; the core only reads it.
public struct ProxyConfiguration: Sendable, Equatable {
    /// Whether clients must authenticate (`requirepass` or `users` set).
    public var requiresAuthentication: Bool { requirePass != nil || !users.isEmpty }

    /// Seed nodes to learn the topology from (`cluster` in the file, `--cluster`).
    public var seeds: [NodeAddress] = []
    /// Address to listen on (`bind`).
    public var bind: String = "127.0.0.1"
    /// Port to listen on (`port`).
    public var port: Int = 7777
    /// Worker threads, each with its own event loop (`workers`); 0 (`auto`):
    /// one per core the process may use (`AvailableCores`).
    public var workers: Int = 0

    /// The number of workers started: `workers`, or the cores available.
    public var effectiveWorkers: Int {
        if workers > 0 { return workers }
        return AvailableCores.atStart.workers
    }
    /// Multiplexed connections per worker per node and protocol (`backend-connections`).
    public var backendConnections: Int = 1
    /// Backend connect timeout in milliseconds (`connect-timeout-ms`).
    public var connectTimeoutMs: Int = 1000
    /// How long a request may wait for its reply, in milliseconds (`request-timeout-ms`).
    public var requestTimeoutMs: Int = 5000
    /// MOVED/ASK redirects followed per request before the error goes to the client (`max-redirects`).
    public var maxRedirects: Int = 5
    /// How long a request for a slot whose master cannot be reached waits for
    /// a new master (a failover) before the client gets `CLUSTERDOWN` (`failover-timeout-ms`).
    /// Redis promotes a replica about `cluster-node-timeout` (15 s by
    /// default) plus an election of a second or two after its master dies:
    /// the default outlasts that, so a default cluster's failover loses nothing.
    public var failoverTimeoutMs: Int = 20000
    /// Requests a worker holds at most while masters are unreachable; past
    /// it new ones get an error at once (`failover-queue-limit`).
    public var failoverQueueLimit: Int = 100_000
    /// Periodic topology refresh interval in milliseconds (`topology-refresh-ms`).
    public var topologyRefreshMs: Int = 5000
    /// Client stream limits (`proto-max-bulk-len`, `max-multibulk-length`, `max-inline-length`).
    public var requestLimits = RequestLimits()
    /// Most clients connected at once; past it new connections get `-ERR max number of clients reached` (`maxclients`).
    public var maxClients: Int = 10000
    /// Dedicated connections per worker per node for blocking commands
    /// (`BLPOP` ...): at most this many clients blocked on one node at once
    /// (`blocking-connections-per-node`).
    public var blockingConnectionsPerNode: Int = 128
    /// A subscriber whose unread messages pass this many bytes is
    /// disconnected, as Redis's `client-output-buffer-limit pubsub` does
    /// (`pubsub-output-limit`).
    public var pubsubOutputLimit: Int = 32 * 1024 * 1024
    /// A transaction refused before it ran (its master failing over) is
    /// sent again when its commands so far are at most this many bytes,
    /// which the proxy keeps for it; 0: never (`transaction-replay-bytes`).
    public var transactionReplayBytes: Int = 1024 * 1024
    /// Transactions over several slots: refused as by Redis, or run per slot (`cross-slot-transactions`).
    public var crossSlotTransactions: CrossSlotTransactions = .refuse
    /// Keys remembered for clients' `CLIENT TRACKING`, per worker; past it
    /// the oldest are invalidated early, as Redis's `tracking-table-max-keys` does.
    public var trackingTableMaxKeys: Int = 1_000_000
    /// Where read-only commands go (`read-from`); see `Worker+ReplicaReads`.
    public var readFrom: ReadFrom = .master
    /// After a write, the client's reads go to the master for this long, so it
    /// reads its own writes (`read-your-writes-ms`; 0: off).
    public var readYourWritesMs: Int = 0
    /// The default user's password (`requirepass`); nil: no password.
    public var requirePass: String?
    /// Users with their rules (`users`; see `ProxyUser`).
    public var users: [ProxyUser] = []
    /// Credentials sent to every cluster node on connect (`backend-user`, `backend-password`).
    public var backendUser: String?
    public var backendPassword: String?
    /// Proxy users whose requests reach the nodes as another backend ACL
    /// user than `backend-user` (`user-backend-credentials`): each such user
    /// gets connections of its own, still multiplexed among its clients.
    public var userBackendCredentials: [String: BackendIdentity] = [:]
    /// `PING` is answered before `AUTH` too (`ping-before-auth`), for health checks.
    public var pingBeforeAuth = false
    /// Refuse to listen on a non-loopback address with no authentication (`protected-mode`).
    public var protectedMode = true
    /// A client with more unread reply bytes than this is disconnected at
    /// once (`client-output-limit-hard`; 0: no limit).
    public var clientOutputLimitHard: Int = 1 << 30
    /// ... or above this for `clientOutputLimitSoftSeconds` (`client-output-limit-soft`,
    /// `client-output-limit-soft-seconds`), like Redis's `client-output-buffer-limit`.
    public var clientOutputLimitSoft: Int = 256 << 20
    public var clientOutputLimitSoftSeconds: Int = 60
    /// Reading from a client pauses while this many of its requests await
    /// replies (`client-read-pause-replies`) ...
    public var clientReadPauseReplies: Int = 10_000
    /// ... or while this many reply bytes are unread (`client-read-pause-bytes`).
    public var clientReadPauseBytes: Int = 8 << 20
    /// Request bytes buffered per client, unparsed, before it is disconnected
    /// (`client-query-buffer-limit`, as Redis's).
    public var clientQueryBufferLimit: Int = 1 << 30
    /// How long a client's first replies may wait for the rest of its
    /// pipeline, which other masters answer, to go out in one write
    /// (`reply-coalesce-us`, microseconds; 0: every turn writes).
    public var replyCoalesceMicros: Int = 200
    /// The query buffer limit applied: never below what one request with an
    /// argument of `proto-max-bulk-len` needs.
    public var effectiveQueryBufferLimit: Int {
        max(clientQueryBufferLimit, requestLimits.maxBulkLength + 2 * requestLimits.maxInlineLength)
    }
    /// Clients silent for this many seconds are closed (`timeout`; 0: never).
    public var idleTimeoutSeconds: Int = 0
    /// TCP keepalive on client and node connections, in seconds (`tcp-keepalive`; 0: off).
    public var tcpKeepAliveSeconds: Int = 300
    /// On SIGTERM, how long clients get to collect the replies to what they
    /// sent before the proxy closes them and exits (`shutdown-timeout`, seconds).
    public var shutdownTimeoutSeconds: Int = 10
    /// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`): its
    /// address and port (`admin-bind`, `admin-port`; 0: off).
    /// Requests slower than this many microseconds, from read to reply, go
    /// to the slow log (`slowlog-log-slower-than`; negative: none, 0: all),
    /// which keeps the last `slowlog-max-len`, as Redis's.
    public var slowlogSlowerThanMicros: Int = 10_000
    public var slowlogMaxLength: Int = 128
    /// Bytes of scripts run with `EVAL` the proxy keeps by SHA1 (the oldest
    /// dropped first), so an `EVALSHA` of one works on every master; 0:
    /// none (`eval-script-cache-bytes`).
    public var evalScriptCacheBytes: Int = 4 << 20
    /// Distinct (kind, command, client name) rows `PROXY AUDIT` keeps per
    /// worker (`audit-max-entries`); past it new ones count under `(other)`,
    /// so random command names or client names cannot grow it without bound.
    public var auditMaxEntries: Int = 10_000
    public var adminBind: String = "127.0.0.1"
    public var adminPort: Int = 0
    /// Caps on one admin request: its header lines (and any body) in bytes
    /// (`admin-max-request-bytes`), and how long a connection may take to
    /// send it or sit idle (`admin-timeout-ms`). Scrapes and probes send a
    /// few hundred bytes at once; without caps libevent buffers headers
    /// without bound.
    public var adminMaxRequestBytes: Int = 8192
    public var adminTimeoutMs: Int = 10_000
    /// Commands refused by the proxy (`deny-commands`): names as `COMMAND
    /// INFO` gives them, `container|sub` for a subcommand.
    public var deniedCommands: [String] = ["config|set", "config|rewrite", "config|resetstat", "monitor"]
    /// Commands clients must call by another name, "" for none (`rename-command`), as in redis.conf.
    public var renamedCommands: [String: String] = [:]
    /// TLS port for clients, next to the plain one (`tls-port`; 0: none).
    public var tlsPort: Int = 0
    /// The proxy's certificate chain and key, PEM (`tls-cert-file`, `tls-key-file`).
    public var tlsCertFile: String?
    public var tlsKeyFile: String?
    /// CAs client certificates are checked against (`tls-ca-cert-file`).
    public var tlsCACertFile: String?
    /// Clients must present a certificate from those CAs (`tls-auth-clients`).
    public var tlsAuthClients = false
    /// Oldest TLS version accepted, client and node side (`tls-min-version`: 1.2 or 1.3).
    public var tlsMinVersion = "1.2"
    /// Connect to the cluster nodes over TLS, at their `tls-port` (`backend-tls`).
    public var backendTLS = false
    /// CAs the nodes' certificates are checked against; the system's when unset (`backend-tls-ca-cert-file`).
    public var backendTLSCACertFile: String?
    /// A client certificate for nodes that ask for one (`backend-tls-cert-file`, `backend-tls-key-file`).
    public var backendTLSCertFile: String?
    public var backendTLSKeyFile: String?
    /// Check the nodes' certificates and that they name the address connected
    /// to (`backend-tls-verify`; no: encryption without authentication).
    public var backendTLSVerify = true
    /// The name the nodes' certificates must carry, and the SNI sent, when
    /// not the node's announced address (`backend-tls-server-name`).
    public var backendTLSServerName: String?
    /// Log level (`log-level`).
    public var logLevel: LogLevelSetting = .info
    /// Log line format (`log-format`).
    public var logFormat: LogFormat = .text
    /// FLUSHALL/FLUSHDB through the proxy wipe every master; refused unless this is true (`allow-flush`).
    public var allowFlush: Bool = false
    /// DEBUG through the proxy reaches a cluster node (DEBUG SLEEP stalls it, DEBUG SEGFAULT kills it); refused unless this is true.
    public var allowDebug: Bool = false

    public init() {}

    /// Whether an address only reaches this machine (127.0.0.0/8, ::1,
    /// localhost, 127.0.0.0/8 mapped into IPv6).
    public static func isLoopback(_ host: String) -> Bool {
        host.hasPrefix("127.") || host == "::1" || host == "localhost" || host.lowercased().hasPrefix("::ffff:127.")
    }

    /// Why this configuration exposes the cluster to anyone who can reach the
    /// proxy (a non-loopback `bind` and no authentication), or nil.
    public var unprotectedExposure: String? { unprotectedExposure(listeningOn: bind, what: "'bind'") }

    /// What protected mode answers an exposure with, refusing to start.
    public static func protectedModeRefusal(_ exposure: String) -> String {
        "protected mode: \(exposure); set requirepass or users, or protected-mode: no (--no-protected-mode) to allow it"
    }

    /// The same for an address the proxy listens on whatever `bind` says (a
    /// socket from systemd): `what` names it in the message.
    public func unprotectedExposure(listeningOn host: String, what: String) -> String? {
        guard !ProxyConfiguration.isLoopback(host), !requiresAuthentication else { return nil }
        return "\(what) is \(host), which other machines can reach, and neither requirepass nor users is set: anyone who can connect gets the whole cluster"
    }
}

extension ProxyConfiguration {
    /// The settings a running proxy cannot take over from a re-read file
    /// (SIGHUP): listening sockets, threads and per-node connection counts
    /// are made once. By config-file name.
    public func settingsNeedingRestart(toBecome new: ProxyConfiguration) -> [String] {
        var changed: [String] = []
        if new.bind != bind { changed.append("bind") }
        if new.port != port { changed.append("port") }
        if new.effectiveWorkers != effectiveWorkers { changed.append("workers") }
        if new.tlsPort != tlsPort { changed.append("tls-port") }
        if new.backendConnections != backendConnections { changed.append("backend-connections") }
        if new.blockingConnectionsPerNode != blockingConnectionsPerNode { changed.append("blocking-connections-per-node") }
        if new.renamedCommands != renamedCommands { changed.append("rename-command") }
        if new.backendTLS != backendTLS { changed.append("backend-tls") }
        if new.trackingTableMaxKeys != trackingTableMaxKeys { changed.append("tracking-table-max-keys") }
        if new.adminBind != adminBind { changed.append("admin-bind") }
        if new.adminPort != adminPort { changed.append("admin-port") }
        if new.adminMaxRequestBytes != adminMaxRequestBytes { changed.append("admin-max-request-bytes") }
        if new.adminTimeoutMs != adminTimeoutMs { changed.append("admin-timeout-ms") }
        return changed
    }

    /// `new` with the settings that need a restart kept as they are now: what
    /// a reload applies.
    public func applyingRuntimeSettings(of new: ProxyConfiguration) -> ProxyConfiguration {
        var applied = new
        applied.bind = bind
        applied.port = port
        applied.workers = workers
        applied.tlsPort = tlsPort
        applied.backendConnections = backendConnections
        applied.blockingConnectionsPerNode = blockingConnectionsPerNode
        applied.renamedCommands = renamedCommands
        applied.backendTLS = backendTLS
        applied.trackingTableMaxKeys = trackingTableMaxKeys
        applied.adminBind = adminBind
        applied.adminPort = adminPort
        return applied
    }
}
