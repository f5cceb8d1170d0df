import EventLoop
import RESPWire
import TLS

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking connection with timeouts, for the topology refresher's
/// occasional queries (never used on a worker loop).
final class BlockingConnection {
    private let fd: CInt
    private var tls: TLSStream?
    private var buffer: [UInt8] = []
    /// The address it connected to (of those the host name resolved to).
    let connectedTo: (family: CInt, address: [UInt8])

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// `tls`: speak TLS (`backend-tls`), the certificate checked against
    /// `serverName`, or `host` when nil.
    init(host: String, port: Int, timeoutMs: Int, tls context: TLSContext? = nil, serverName: String? = nil) throws {
        var lastError: Error = Failure(description: "no address for \(host)")
        for target in try Socket.resolve(host: host, port: port) {
            do {
                let fd = try Socket.startConnect(family: target.family, address: target.address)
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&poller, 1, Int32(timeoutMs))
                let error = ready == 1 ? Socket.pendingError(fd) : ETIMEDOUT
                guard error == 0 else {
                    Socket.close(fd)
                    throw Socket.Failure(operation: "connect \(host):\(port)", code: error)
                }
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
                var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                if let context {
                    do {
                        tls = try TLSStream(context: context, fd: fd, accepting: false, peerName: serverName ?? host)
                    } catch {
                        Socket.close(fd)
                        throw error
                    }
                }
                self.fd = fd
                connectedTo = target
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    deinit {
        tls?.shutdown()
        Socket.close(fd)
    }

    private var failure: String {
        if let tls { return tls.failure.isEmpty ? "TLS: timed out" : "TLS: \(tls.failure)" }
        return String(cString: strerror(errno))
    }

    /// Sends one command and waits for its decoded reply.
    func call(_ arguments: String...) throws -> RESPValue {
        let out = ByteBuffer(capacity: 256)
        out.appendCommand(arguments.map { Array($0.utf8) })
        var bytes = out.readableArray()[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { raw in
                tls.map { $0.write(raw) } ?? send(fd, raw.baseAddress, raw.count, CInt(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw Failure(description: "write failed: \(failure)") }
            bytes = bytes.dropFirst(n)
        }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            if let (value, length) = RESPValue.decode(buffer) {
                buffer.removeFirst(length)
                return value
            }
            let n = chunk.withUnsafeMutableBytes { raw in tls.map { $0.read(into: raw) } ?? recv(fd, raw.baseAddress, raw.count, 0) }
            guard n > 0 else {
                throw Failure(description: n == 0 ? "connection closed" : "read failed: \(failure)")
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}
