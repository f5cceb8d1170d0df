import EventLoop
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's notify protocol without libsystemd: datagrams such as `READY=1`
/// or `STATUS=...` to the unix socket named by `$NOTIFY_SOCKET` (a path, or
/// `@name` in the abstract namespace). Does nothing when the variable is
/// unset, so the proxy runs the same outside systemd. Thread-safe: the
/// refresher, the workers' watchdog and the main thread all send.
public final class ServiceNotifier: Sendable {
    private let socketFD: CInt
    private let address: Locked<sockaddr_un>
    private let addressLength: socklen_t
    /// Half of `$WATCHDOG_USEC` in milliseconds (0: no watchdog), as
    /// sd_watchdog_enabled() reads it: only for this process's pid.
    public let watchdogIntervalMs: Int
    private let ready = Atomic<Bool>(false)

    public init(environment: [String: String]) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var length: socklen_t = 0
        var fd: CInt = -1
        if let path = environment["NOTIFY_SOCKET"], !path.isEmpty,
            path.utf8.count < MemoryLayout.size(ofValue: address.sun_path)
        {
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, byte) in bytes.enumerated() { raw[i] = byte }
                if bytes.first == UInt8(ascii: "@") { raw[0] = 0 }  // abstract namespace
            }
            length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        socketFD = fd
        self.address = Locked(address)
        addressLength = length
        var interval = 0
        if let usec = environment["WATCHDOG_USEC"].flatMap({ Int($0) }), usec > 0 {
            let pidMatches = environment["WATCHDOG_PID"].map { Int($0) == Int(getpid()) } ?? true
            if pidMatches { interval = max(1, usec / 2000) }
        }
        watchdogIntervalMs = socketFD >= 0 ? interval : 0
    }

    deinit {
        if socketFD >= 0 { close(socketFD) }
    }

    public var isActive: Bool { socketFD >= 0 }

    /// Sends `lines` (`KEY=value` each) as one datagram.
    public func send(_ lines: String...) {
        guard socketFD >= 0 else { return }
        let message = Array(lines.joined(separator: "\n").utf8)
        address.withLock { address in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                    _ = message.withUnsafeBytes {
                        sendto(socketFD, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sockaddrPointer, addressLength)
                    }
                }
            }
        }
    }

    /// `READY=1` the first time the proxy can serve (it listens and holds a
    /// complete slot map); `STATUS=` every time.
    public func serving(status: String) {
        if ready.exchange(true, ordering: .relaxed) {
            send("STATUS=\(status)")
        } else {
            send("READY=1", "STATUS=\(status)")
        }
    }

    public func status(_ text: String) { send("STATUS=\(text)") }

    public func reloading() {
        send("RELOADING=1", "MONOTONIC_USEC=\(Self.monotonicMicroseconds())", "STATUS=reloading the configuration")
    }

    /// After a reload: `READY=1` again only if the proxy had been ready
    /// (a reload before the first complete slot map leaves that to `serving`).
    public func reloaded(status: String) {
        if ready.load(ordering: .relaxed) {
            send("READY=1", "STATUS=\(status)")
        } else {
            send("STATUS=\(status)")
        }
    }

    public func stopping() { send("STOPPING=1", "STATUS=draining clients before exit") }

    public func watchdog() { send("WATCHDOG=1") }

    private static func monotonicMicroseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1_000_000 + now.tv_nsec / 1000
    }
}
