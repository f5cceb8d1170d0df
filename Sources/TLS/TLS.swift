import COpenSSL

#if canImport(Glibc)
    import Glibc
#endif

/// A TLS configuration: certificates, trust and protocol floor, for one side
/// (the proxy's listener, or its connections to the cluster nodes). Shared
/// by every connection made from it, on any thread (OpenSSL's `SSL_CTX` is
/// reference counted and safe to create connections from concurrently).
public final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    /// Client side: check the node's certificate against the CA and its name.
    let verifiesPeer: Bool

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The listener's context. `caFile` with `requireClientCertificate`:
    /// clients without a certificate signed by that CA are refused (mTLS).
    public static func server(
        certificateFile: String, keyFile: String, caFile: String?, requireClientCertificate: Bool,
        minimumVersion: String
    ) throws(Failure) -> TLSContext {
        let context = try TLSContext(method: TLS_server_method(), minimumVersion: minimumVersion, verifiesPeer: false)
        try context.loadCertificate(certificateFile, keyFile: keyFile)
        if let caFile { try context.loadTrust(caFile) }
        if requireClientCertificate {
            guard caFile != nil else { throw Failure(description: "client certificates need a CA file to check them against") }
            SSL_CTX_set_verify(context.context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        return context
    }

    /// The context of connections to the nodes. Without `caFile` the system's
    /// trust store is used; `verifyPeer` false skips every check (tests, or
    /// self-signed certificates an operator chose not to pin).
    public static func client(
        caFile: String?, certificateFile: String?, keyFile: String?, verifyPeer: Bool, minimumVersion: String
    ) throws(Failure) -> TLSContext {
        let context = try TLSContext(method: TLS_client_method(), minimumVersion: minimumVersion, verifiesPeer: verifyPeer)
        if let certificateFile { try context.loadCertificate(certificateFile, keyFile: keyFile ?? certificateFile) }
        if let caFile {
            try context.loadTrust(caFile)
        } else if SSL_CTX_set_default_verify_paths(context.context) != 1 {
            throw Failure(description: "cannot load the system's CA certificates: \(lastError())")
        }
        if verifyPeer { SSL_CTX_set_verify(context.context, SSL_VERIFY_PEER, nil) }
        return context
    }

    private init(method: OpaquePointer?, minimumVersion: String, verifiesPeer: Bool) throws(Failure) {
        guard let context = SSL_CTX_new(method) else { throw Failure(description: "SSL_CTX_new: \(lastError())") }
        self.context = context
        self.verifiesPeer = verifiesPeer
        let version: CInt
        switch minimumVersion {
        case "1.2": version = slotproxy_tls1_2_version()
        case "1.3": version = slotproxy_tls1_3_version()
        default: throw Failure(description: "unknown TLS version '\(minimumVersion)' (1.2 or 1.3)")
        }
        _ = slotproxy_ssl_ctx_set_min_version(context, version)
        _ = slotproxy_ssl_ctx_set_modes(context)
    }

    deinit { SSL_CTX_free(context) }

    private func loadCertificate(_ certificateFile: String, keyFile: String) throws(Failure) {
        guard SSL_CTX_use_certificate_chain_file(context, certificateFile) == 1 else {
            throw Failure(description: "cannot load certificate \(certificateFile): \(lastError())")
        }
        guard SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) == 1 else {
            throw Failure(description: "cannot load private key \(keyFile): \(lastError())")
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw Failure(description: "private key \(keyFile) does not match certificate \(certificateFile)")
        }
    }

    private func loadTrust(_ caFile: String) throws(Failure) {
        guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
            throw Failure(description: "cannot load CA certificates \(caFile): \(lastError())")
        }
        // Also what a server asks clients for: certificates from these CAs.
        if let names = SSL_load_client_CA_file(caFile) { SSL_CTX_set_client_CA_list(context, names) }
    }
}

/// OpenSSL's oldest queued error as text (and the queue cleared).
func lastError() -> String {
    let code = ERR_get_error()
    ERR_clear_error()
    guard code != 0 else { return "unknown error" }
    var text = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &text, text.count)
    return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// One TLS connection over a non-blocking socket, with `Socket.read` and
/// `Socket.write`'s conventions: bytes done, 0 at end of stream, -1 when it
/// would block, -2 on error.
///
/// TLS can need the other direction to make progress (a handshake step, a
/// key update): `readWantsWrite` / `writeWantsRead` say so, and the owner
/// retries once the socket is writable / readable. Decrypted bytes may sit in
/// OpenSSL past what a read asked for, where the socket shows nothing:
/// `hasBufferedPlaintext` says to read again without waiting for an event.
public final class TLSStream {
    private let ssl: OpaquePointer
    public private(set) var readWantsWrite = false
    public private(set) var writeWantsRead = false
    /// Why the last call failed, for the log.
    public private(set) var failure = ""

    /// `peerName`: for a connection to a node, the name or IP address its
    /// certificate must carry (checked when the context verifies peers).
    public init(context: TLSContext, fd: CInt, accepting: Bool, peerName: String? = nil) throws(TLSContext.Failure) {
        guard let ssl = SSL_new(context.context) else { throw TLSContext.Failure(description: "SSL_new: \(lastError())") }
        self.ssl = ssl
        SSL_set_fd(ssl, fd)
        if accepting {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let peerName {
                let isAddress = peerName.contains(":") || peerName.allSatisfy { $0.isNumber || $0 == "." }
                if isAddress {
                    if context.verifiesPeer { _ = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), peerName) }
                } else {
                    _ = slotproxy_ssl_set_server_name(ssl, peerName)
                    if context.verifiesPeer { _ = SSL_set1_host(ssl, peerName) }
                }
            }
        }
    }

    deinit { SSL_free(ssl) }  // (the socket is its owner's to close)

    /// Sends a close_notify if it fits in the socket, never waiting for the
    /// peer's. Call before closing the socket: its number may be reused.
    public func shutdown() {
        if SSL_is_init_finished(ssl) == 1 { _ = SSL_shutdown(ssl) }
        ERR_clear_error()
    }

    public var hasBufferedPlaintext: Bool { SSL_pending(ssl) > 0 }

    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        readWantsWrite = false
        // SSL_get_error reads the thread's error queue: it must start empty.
        ERR_clear_error()
        let n = SSL_read(ssl, buffer.baseAddress, CInt(clamping: buffer.count))
        if n > 0 { return Int(n) }
        return outcome(of: n, wantsOtherDirection: &readWantsWrite, other: SSL_ERROR_WANT_WRITE)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) -> Int {
        writeWantsRead = false
        ERR_clear_error()
        let n = SSL_write(ssl, bytes.baseAddress, CInt(clamping: bytes.count))
        if n > 0 { return Int(n) }
        return outcome(of: n, wantsOtherDirection: &writeWantsRead, other: SSL_ERROR_WANT_READ)
    }

    private func outcome(of result: CInt, wantsOtherDirection: inout Bool, other: CInt) -> Int {
        let error = SSL_get_error(ssl, result)
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            wantsOtherDirection = error == other
            return -1
        case SSL_ERROR_ZERO_RETURN:
            return 0
        case SSL_ERROR_SYSCALL:
            let code = errno
            ERR_clear_error()
            if code == EAGAIN || code == EINTR { return -1 }
            failure = code == 0 ? "connection closed without a TLS close_notify" : String(cString: strerror(code))
            return code == 0 ? 0 : -2
        default:
            failure = lastError()
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                failure += " (certificate: " + String(cString: X509_verify_cert_error_string(verify)) + ")"
            }
            return -2
        }
    }
}
