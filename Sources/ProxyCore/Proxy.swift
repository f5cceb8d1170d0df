import EventLoop
import Logging
import TLS

#if canImport(Glibc)
    import Glibc
#endif

/// The running proxy: `workers` event-loop threads sharing one port through
/// SO_REUSEPORT, and the topology refresher thread.
public final class Proxy {
    /// The settings in force (a reload replaces the runtime-changeable ones).
    public private(set) var configuration: ProxyConfiguration
    private let logger: Logger
    private let shared: SharedState
    private var mailboxes: [Mailbox<WorkerMessage>] = []
    private var workerThreads: [pthread_t] = []
    private var refresherThread: pthread_t?
    private var adminThread: pthread_t?
    /// Listeners handed over by systemd (`slotproxy.socket`), if any.
    private let activation: SocketActivation
    /// The port actually bound (differs from the configured one when that is 0).
    public private(set) var boundPort = 0

    public init(configuration: ProxyConfiguration, logger: Logger, environment: [String: String] = [:]) {
        self.configuration = configuration
        self.logger = logger
        activation = SocketActivation(environment: environment)
        shared = SharedState(configuration: configuration, notifier: ServiceNotifier(environment: environment))
    }

    /// systemd's notify socket, for the main thread's STOPPING and RELOADING.
    public var notifier: ServiceNotifier { shared.notifier }

    /// What `PROXY CONFIG GET/SET` reads and changes settings through.
    public func setConfigControl(_ control: any ConfigControl) { shared.configControl = control }

    /// Binds the listeners (or takes systemd's) and starts every thread.
    /// Throws when the address cannot be bound.
    public func start() throws {
        shared.tls = try TLSContexts(configuration)
        var listeners: [CInt] = []
        var tlsListeners: [CInt?] = []
        var port = configuration.port
        var tlsPort = configuration.tlsPort
        if let inherited = activation.plainListener {
            for fd in activation.descriptors {
                try SocketActivation.checkProtectedMode(fd, configuration, logger: logger)
            }
            // One socket for every worker: they all accept from it.
            port = Socket.localPort(inherited)
            listeners = Array(repeating: inherited, count: configuration.effectiveWorkers)
            if shared.tls.server != nil {
                guard let tlsFD = activation.tlsListener else { throw SocketActivation.missingTLSListener }
                tlsPort = Socket.localPort(tlsFD)
                tlsListeners = Array(repeating: tlsFD, count: configuration.effectiveWorkers)
            } else {
                tlsListeners = Array(repeating: nil, count: configuration.effectiveWorkers)
            }
            logger.info("listening sockets from systemd (socket activation): \(activation.descriptors.count)")
        } else {
            for worker in 0..<configuration.effectiveWorkers {
                // The first socket of each port makes sure nobody else listens there.
                let fd = try Socket.listen(host: configuration.bind, port: port, reusePort: true, exclusive: worker == 0)
                if port == 0 { port = Socket.localPort(fd) }
                listeners.append(fd)
                if shared.tls.server != nil {
                    let tlsFD = try Socket.listen(
                        host: configuration.bind, port: tlsPort, reusePort: true, exclusive: worker == 0)
                    tlsPort = Socket.localPort(tlsFD)
                    tlsListeners.append(tlsFD)
                } else {
                    tlsListeners.append(nil)
                }
            }
        }
        boundPort = port
        let ownsListeners = activation.plainListener == nil
        // Bound before any thread starts, so a taken admin port fails start-up cleanly.
        let admin =
            configuration.adminPort > 0
            ? try AdminServer(shared: shared, configuration: configuration, logger: logger)
            : nil
        if shared.tls.server != nil {
            logger.info("TLS on \(configuration.bind):\(tlsPort)\(configuration.tlsAuthClients ? " (client certificates required)" : "")")
        }
        mailboxes = shared.mailboxes
        logger.info(
            "slotproxy listening on \(configuration.bind):\(port) with \(listeners.count) worker(s)\(configuration.workers == 0 ? " (auto: \(AvailableCores.atStart))" : ""); seeds: \(configuration.seeds.map(\.description).joined(separator: ","))"
        )
        shared.notifier.status("listening on port \(port); waiting for a complete slot map")
        let refresher = TopologyRefresher(shared: shared, mailboxes: mailboxes, logger: logger)
        for (index, fd) in listeners.enumerated() {
            let configuration = configuration
            let mailbox = mailboxes[index]
            let tlsFD = tlsListeners[index]
            let shared = shared
            var logger = logger
            logger[metadataKey: "worker"] = "\(index)"
            workerThreads.append(
                startThread { [logger] in
                    let worker = Worker(
                        index: index, configuration: configuration, listenerFD: fd, tlsListenerFD: tlsFD,
                        ownsListeners: ownsListeners, mailbox: mailbox, shared: shared, logger: logger)
                    worker.run()
                    shared.workerFinished()
                })
        }
        let box = UncheckedTransfer(refresher)
        refresherThread = startThread { box.value.run() }
        if let admin {
            logger.info("admin endpoint on http://\(configuration.adminBind):\(admin.port) (/metrics, /healthz, /readyz)")
            let adminBox = UncheckedTransfer(admin)
            adminThread = startThread { adminBox.value.run() }
        }
    }

    /// Re-read settings (SIGHUP): the runtime-changeable ones go to every
    /// worker and the refresher at once; returns the changed settings that
    /// need a restart, which keep their running values.
    public func reload(_ new: ProxyConfiguration) throws -> [String] {
        let needRestart = configuration.settingsNeedingRestart(toBecome: new)
        let applied = configuration.applyingRuntimeSettings(of: new)
        try checkProtectedMode(applied)
        configuration = applied
        shared.configuration = applied
        shared.keepEvaluatedScripts(within: applied.evalScriptCacheBytes)
        reloadTLS()
        for mailbox in mailboxes { mailbox.send(.reconfigure(applied)) }
        shared.requestTopologyRefresh()  // new seeds, credentials
        return needRestart
    }

    /// Protected mode against what the proxy really listens on (systemd's
    /// sockets, or the `bind` it started with, which a reload cannot change),
    /// not the re-read file's `bind`: a reload must not open the port to
    /// everyone by removing `requirepass` and `users`.
    private func checkProtectedMode(_ candidate: ProxyConfiguration) throws {
        if activation.plainListener != nil {
            for fd in activation.descriptors { try SocketActivation.checkProtectedMode(fd, candidate, logger: logger) }
        } else if candidate.protectedMode, let exposure = candidate.unprotectedExposure(listeningOn: configuration.bind, what: "'bind'") {
            throw SocketActivation.Unprotected(exposure: exposure)
        }
    }

    /// SIGTERM: every worker stops accepting and closes its clients once
    /// their replies are written, within `shutdown-timeout`. Returns at
    /// once; `workersFinished` tells when they are done.
    public func beginDrain() {
        logger.info("draining: not accepting clients; closing each once answered (shutdown-timeout \(configuration.shutdownTimeoutSeconds) s)")
        shared.beginDraining()
        for mailbox in mailboxes { mailbox.send(.drain(timeoutMs: configuration.shutdownTimeoutSeconds * 1000)) }
    }

    /// Whether every worker has stopped (after `beginDrain`).
    public var workersFinished: Bool { shared.finishedWorkers >= workerThreads.count }

    /// Re-reads the TLS certificates, keys and CAs (SIGHUP): new connections
    /// use them, open ones keep theirs. On an error the old ones stay.
    private func reloadTLS() {
        guard configuration.tlsPort > 0 || configuration.backendTLS else { return }
        do {
            shared.tls = try TLSContexts(configuration)
            logger.info("TLS certificates re-read")
        } catch {
            logger.error("TLS certificates not re-read, the old ones stay: \(error)")
        }
    }

    /// Stops every thread (workers at once, whatever they still owe) and
    /// waits for them.
    public func stop() {
        shared.beginStopping()
        shared.requestTopologyRefresh()
        for mailbox in mailboxes { mailbox.send(.stop) }
        for thread in workerThreads { pthread_join(thread, nil) }
        workerThreads.removeAll()
        if let refresherThread { pthread_join(refresherThread, nil) }
        refresherThread = nil
        if let adminThread { pthread_join(adminThread, nil) }
        adminThread = nil
        logger.info("slotproxy stopped")
    }
}

/// Hands an object to the one thread that will own it from then on.
private struct UncheckedTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Starts a joinable POSIX thread running `body`. (Event loops never run
/// inside Swift concurrency tasks.)
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { context in
            let body = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
            body.body()
            return nil
        }, context)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}
