import CLibevent
#if canImport(Glibc)
    import Glibc
#endif

/// Thin wrappers over the POSIX socket calls the proxy needs, all non-blocking.
public enum Socket {
    public struct Failure: Error, CustomStringConvertible {
        public let operation: String
        public let code: CInt
        public init(operation: String, code: CInt) {
            self.operation = operation
            self.code = code
        }
        public var description: String { code == 0 ? operation : "\(operation): \(String(cString: strerror(code)))" }
        /// Nobody listens at the address: the peer, not this process, is at fault.
        public var isRefusal: Bool { Failure.isRefusal(code) }
        public static func isRefusal(_ code: CInt) -> Bool { code == ECONNREFUSED }
    }

    /// Resolves `host` (numeric address or name) for TCP; blocking, so call it
    /// off the worker loops, or with `numericOnly` (which never asks DNS and
    /// fails for names).
    public static func resolve(host: String, port: Int, numericOnly: Bool = false) throws -> [(
        family: CInt, address: [UInt8]
    )] {
        var hints = addrinfo()
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        if numericOnly { hints.ai_flags = AI_NUMERICHOST }
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw Failure(operation: "resolve \(host): \(String(cString: gai_strerror(rc)))", code: 0)
        }
        defer { freeaddrinfo(first) }
        var out: [(CInt, [UInt8])] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            let bytes = UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen))
            out.append((info.pointee.ai_family, Array(bytes)))
            cursor = info.pointee.ai_next
        }
        return out
    }

    /// A listening socket on `host:port` (SO_REUSEADDR, optional SO_REUSEPORT).
    /// With `exclusive`, fails with EADDRINUSE when anyone listens there
    /// already: SO_REUSEPORT would otherwise let a second proxy (same user)
    /// join the port silently and take half its clients.
    public static func listen(
        host: String, port: Int, reusePort: Bool, exclusive: Bool = false, backlog: CInt = 1024
    ) throws -> CInt {
        if exclusive && reusePort && port != 0 {
            // A probe without SO_REUSEPORT cannot bind next to a listener.
            let probe = try listen(host: host, port: port, reusePort: false, backlog: 1)
            close(probe)
        }
        let addresses = try resolve(host: host, port: port)
        guard let first = addresses.first else { throw Failure(operation: "resolve \(host)", code: EINVAL) }
        let fd = socket(first.family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(operation: "socket", code: errno) }
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        if reusePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<CInt>.size)) }
        let bound = first.address.withUnsafeBytes { raw in
            bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw Failure(operation: "bind \(host):\(port)", code: code)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let code = errno
            close(fd)
            throw Failure(operation: "listen", code: code)
        }
        return fd
    }

    /// Whether the last failed call ran out of file descriptors (EMFILE/ENFILE).
    public static var lastErrorIsOutOfDescriptors: Bool { errno == EMFILE || errno == ENFILE }

    /// Accepts one pending connection as a non-blocking socket; nil when none.
    public static func accept(listener: CInt) -> CInt? {
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        setNoDelay(fd)
        return fd
    }

    /// Starts a non-blocking connect to a resolved address. Returns the fd; the
    /// connection is established when it becomes writable with no SO_ERROR.
    public static func startConnect(family: CInt, address: [UInt8]) throws -> CInt {
        let fd = socket(family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(operation: "socket", code: errno) }
        setNoDelay(fd)
        let rc = address.withUnsafeBytes { raw in
            connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
        if rc != 0 && errno != EINPROGRESS {
            let code = errno
            close(fd)
            throw Failure(operation: "connect", code: code)
        }
        return fd
    }

    /// The pending error of a socket after a non-blocking connect (0: connected).
    public static func pendingError(_ fd: CInt) -> CInt {
        var code: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        return code
    }

    /// A pipe with both ends non-blocking and close-on-exec (wakeups).
    public static func makePipe() -> (read: CInt, write: CInt) {
        var fds: [CInt] = [0, 0]
        guard pipe(&fds) == 0 else { fatalError("pipe failed: \(errno)") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        return (fds[0], fds[1])
    }

    public static func setNoDelay(_ fd: CInt) {
        var one: CInt = 1
        setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
    }

    /// TCP keepalive probes after `idleSeconds` of silence, then every third
    /// of it, 3 unanswered probes dropping the connection (as Redis's
    /// `tcp-keepalive`); 0 leaves keepalive off.
    public static func setKeepAlive(_ fd: CInt, idleSeconds: Int) {
        guard idleSeconds > 0 else { return }
        let size = socklen_t(MemoryLayout<CInt>.size)
        var one: CInt = 1
        var idle = CInt(idleSeconds)
        var interval = CInt(max(1, idleSeconds / 3))
        var count: CInt = 3
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
        setsockopt(fd, CInt(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
        setsockopt(fd, CInt(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
        setsockopt(fd, CInt(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
    }

    /// `read(2)` into `buffer`; returns bytes read, 0 at end of stream, -1 when
    /// it would block, -2 on error.
    @inlinable public static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2
        }
    }

    /// `write(2)` from `bytes`; returns bytes written, -1 when it would block, -2 on error.
    @inlinable public static func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> Int {
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL))
            if n >= 0 { return n }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2
        }
    }

    /// One `sendmsg(2)` of `segments`, in order (a gathered write: one
    /// system call for bytes that live apart); returns bytes written, -1
    /// when it would block, -2 on error.
    public static func write(_ fd: CInt, gathering segments: UnsafeBufferPointer<UnsafeRawBufferPointer>) -> Int {
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: segments.count) { vectors in
            for (index, bytes) in segments.enumerated() {
                vectors[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
            }
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = segments.count
            while true {
                let n = Glibc.sendmsg(fd, &message, CInt(MSG_NOSIGNAL))
                if n >= 0 { return n }
                if errno == EINTR { continue }
                return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2
            }
        }
    }

    public static func close(_ fd: CInt) { _ = Glibc.close(fd) }

    /// The peer's `ip:port` (`[v6]:port`), or "?" (admin listings only).
    public static func peerAddress(_ fd: CInt) -> String {
        guard let (host, port) = numericName(fd, peer: true) else { return "?" }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The same for the local end (`CLIENT KILL LADDR`).
    public static func localAddress(_ fd: CInt) -> String {
        guard let (host, port) = numericName(fd, peer: false) else { return "?" }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The numeric local address of a socket (`0.0.0.0`, `127.0.0.1`, `::`),
    /// or nil when it has none.
    public static func localHost(_ fd: CInt) -> String? {
        numericName(fd, peer: false)?.host
    }

    /// The peer's (`getpeername`) or the local (`getsockname`) address of a
    /// socket as numeric host and port text.
    private static func numericName(_ fd: CInt, peer: Bool) -> (host: String, port: String)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
            }
        }
        guard rc == 0 else { return nil }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let ok = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard ok == 0 else { return nil }
        return (String(nulTerminated: host), String(nulTerminated: service))
    }

    /// The local port of a bound socket (after binding port 0).
    public static func localPort(_ fd: CInt) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        if storage.ss_family == sa_family_t(AF_INET6) {
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }
}

/// The C allocator's housekeeping.
public enum Allocator {
    /// Gives free heap pages back to the system (glibc keeps them after a
    /// burst of allocations, so RSS would stay at the burst's peak).
    public static func releaseFreePages() {
        #if canImport(Glibc)
        _ = CLibevent.malloc_trim(0)
        #endif
    }
}

extension String {
    /// The text in a C character buffer, up to its first NUL.
    public init(nulTerminated characters: [CChar]) {
        self.init(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
