import EventLoop
import Logging
import TLS

#if canImport(Glibc)
    import Glibc
#endif

/// The running proxy: `workers` event-loop threads sharing one port through
/// SO_REUSEPORT, and the topology refresher thread.
public final class Proxy {
    private let configuration: ProxyConfiguration
    private let logger: Logger
    private let shared: SharedState
    private var mailboxes: [Mailbox<WorkerMessage>] = []
    private var threads: [pthread_t] = []
    /// The port actually bound (differs from the configured one when that is 0).
    public private(set) var boundPort = 0

    public init(configuration: ProxyConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        shared = SharedState(workers: configuration.effectiveWorkers)
    }

    /// Binds the listeners and starts every thread. Throws when the address
    /// cannot be bound.
    public func start() throws {
        shared.tls = try TLSContexts(configuration)
        var listeners: [CInt] = []
        var tlsListeners: [CInt?] = []
        var port = configuration.port
        var tlsPort = configuration.tlsPort
        for _ in 0..<configuration.effectiveWorkers {
            let fd = try Socket.listen(host: configuration.bind, port: port, reusePort: true)
            if port == 0 { port = Socket.localPort(fd) }
            listeners.append(fd)
            if shared.tls.server != nil {
                let tlsFD = try Socket.listen(host: configuration.bind, port: tlsPort, reusePort: true)
                tlsPort = Socket.localPort(tlsFD)
                tlsListeners.append(tlsFD)
            } else {
                tlsListeners.append(nil)
            }
        }
        boundPort = port
        if shared.tls.server != nil {
            logger.info("TLS on \(configuration.bind):\(tlsPort)\(configuration.tlsAuthClients ? " (client certificates required)" : "")")
        }
        mailboxes = listeners.map { _ in Mailbox<WorkerMessage>() }
        logger.info(
            "slotproxy listening on \(configuration.bind):\(port) with \(listeners.count) worker(s); seeds: \(configuration.seeds.map(\.description).joined(separator: ","))"
        )
        let refresher = TopologyRefresher(
            configuration: configuration, shared: shared, mailboxes: mailboxes, logger: logger)
        for (index, fd) in listeners.enumerated() {
            let configuration = configuration
            let mailbox = mailboxes[index]
            let tlsFD = tlsListeners[index]
            let shared = shared
            var logger = logger
            logger[metadataKey: "worker"] = "\(index)"
            threads.append(
                startThread { [logger] in
                    let worker = Worker(
                        index: index, configuration: configuration, listenerFD: fd, tlsListenerFD: tlsFD, mailbox: mailbox,
                        shared: shared, logger: logger)
                    worker.run()
                    Socket.close(fd)
                    if let tlsFD { Socket.close(tlsFD) }
                })
        }
        let box = UncheckedTransfer(refresher)
        threads.append(startThread { box.value.run() })
    }

    /// Re-reads the TLS certificates, keys and CAs (SIGHUP): new connections
    /// use them, open ones keep theirs. On an error the old ones stay.
    public func reloadTLS() {
        guard configuration.tlsPort > 0 || configuration.backendTLS else { return }
        do {
            shared.tls = try TLSContexts(configuration)
            logger.info("TLS certificates re-read")
        } catch {
            logger.error("TLS certificates not re-read, the old ones stay: \(error)")
        }
    }

    /// Stops every thread and waits for them.
    public func stop() {
        shared.beginStopping()
        shared.requestTopologyRefresh()
        for mailbox in mailboxes { mailbox.send(.stop) }
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
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
