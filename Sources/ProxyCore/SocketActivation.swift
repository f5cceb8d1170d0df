import EventLoop
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Listening sockets passed by systemd (`slotproxy.socket`): `$LISTEN_FDS`
/// descriptors from 3 on, meant for this process when `$LISTEN_PID` is its
/// pid. The first is the RESP port, a second the TLS port. With them the
/// port stays open while the service restarts: connections wait in the
/// backlog instead of being refused.
struct SocketActivation {
    let descriptors: [CInt]

    static let firstDescriptor: CInt = 3

    struct MissingTLSListener: Error, CustomStringConvertible {
        var description: String {
            "tls-port is set but systemd passed one listening socket: add a second ListenStream= for the TLS port to slotproxy.socket"
        }
    }
    static let missingTLSListener = MissingTLSListener()

    struct Unprotected: Error, CustomStringConvertible {
        let exposure: String
        var description: String { ProxyConfiguration.protectedModeRefusal(exposure) }
    }

    /// Protected mode for systemd's sockets: their address, not `bind`, is
    /// what clients reach. Throws `Unprotected` when protected mode is on;
    /// with it off, the same message is a warning.
    static func checkProtectedMode(_ fd: CInt, _ configuration: ProxyConfiguration, logger: Logger) throws {
        let host = Socket.localHost(fd) ?? "an unknown address"
        guard let exposure = configuration.unprotectedExposure(listeningOn: host, what: "the socket from systemd") else {
            return
        }
        guard configuration.protectedMode else {
            logger.warning("PROTECTED MODE IS OFF: \(exposure)")
            return
        }
        throw Unprotected(exposure: exposure)
    }

    init(environment: [String: String]) {
        guard let pid = environment["LISTEN_PID"].flatMap({ Int32($0) }), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap({ Int32($0) }), count > 0
        else {
            descriptors = []
            return
        }
        descriptors = (0..<count).map { SocketActivation.firstDescriptor + $0 }
        for fd in descriptors {
            // Workers accept until EAGAIN; systemd hands the sockets over blocking.
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
    }

    var plainListener: CInt? { descriptors.first }
    var tlsListener: CInt? { descriptors.count > 1 ? descriptors[1] : nil }
}
