import CLibevent
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The admin HTTP endpoint (`admin-port`, off by default), on its own thread
/// and libevent base with `evhttp`, away from the workers' loops:
///
/// - `/metrics`: Prometheus text format (see `MetricsExposition`),
/// - `/healthz`: 200 while the process runs,
/// - `/readyz`: 200 once every worker holds a complete slot map and worker 0
///   reaches at least one master; 503 before, whenever not, and while draining.
///
/// It reads only what the workers publish once per tick, so a scrape never
/// touches a worker's data path.
final class AdminServer {
    private let shared: SharedState
    private let logger: Logger
    private let base: OpaquePointer
    private let http: OpaquePointer
    private var stopTimer: OpaquePointer?
    /// The port bound (differs from the configured one when that is 0).
    let port: Int

    init(shared: SharedState, configuration: ProxyConfiguration, logger: Logger) throws {
        let bind = configuration.adminBind
        let port = configuration.adminPort
        self.shared = shared
        self.logger = logger
        base = event_base_new()
        http = evhttp_new(base)
        evhttp_set_allowed_methods(http, UInt16(EVHTTP_REQ_GET.rawValue | EVHTTP_REQ_HEAD.rawValue))
        // Too big: libevent answers 400 (headers) or 413 (body) and closes
        // the connection; too slow: it closes.
        evhttp_set_max_headers_size(http, configuration.adminMaxRequestBytes)
        evhttp_set_max_body_size(http, configuration.adminMaxRequestBytes)
        var timeout = timeval(
            tv_sec: configuration.adminTimeoutMs / 1000, tv_usec: (configuration.adminTimeoutMs % 1000) * 1000)
        evhttp_set_timeout_tv(http, &timeout)
        guard let handle = evhttp_bind_socket_with_handle(http, bind, UInt16(port)) else {
            evhttp_free(http)
            event_base_free(base)
            throw AdminServerError(message: "cannot listen on \(bind):\(port) for the admin endpoint (admin-port)")
        }
        let fd = evhttp_bound_socket_get_fd(handle)
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(
            http,
            { request, context in
                guard let request, let context else { return }
                Unmanaged<AdminServer>.fromOpaque(context).takeUnretainedValue().handle(request)
            }, context)
        // The loop checks every 100 ms whether the proxy is stopping.
        stopTimer = event_new(
            base, -1, Int16(EV_PERSIST),
            { _, _, context in
                let server = Unmanaged<AdminServer>.fromOpaque(context!).takeUnretainedValue()
                if server.shared.isStopping { event_base_loopexit(server.base, nil) }
            }, context)
        var interval = timeval(tv_sec: 0, tv_usec: 100_000)
        event_add(stopTimer, &interval)
    }

    deinit {
        if let stopTimer { event_free(stopTimer) }
        evhttp_free(http)
        event_base_free(base)
    }

    /// Serves until the proxy stops. Call on the admin thread.
    func run() { event_base_dispatch(base) }

    private func handle(_ request: OpaquePointer) {
        let path = evhttp_request_get_evhttp_uri(request).flatMap { evhttp_uri_get_path($0) }.map { String(cString: $0) }
        switch path {
        case "/metrics":
            reply(request, 200, MetricsExposition.text(shared), type: "text/plain; version=0.0.4; charset=utf-8")
        case "/healthz":
            reply(request, 200, "ok\n")
        case "/readyz":
            let (ready, reason) = readiness()
            reply(request, ready ? 200 : 503, ready ? "ready\n" : "not ready: \(reason)\n")
        default:
            reply(request, 404, "not found: /metrics, /healthz and /readyz are served here\n")
        }
    }

    private func readiness() -> (Bool, String) {
        if shared.isStopping || shared.isDraining { return (false, "shutting down") }
        let workers = shared.workerMetrics
        if workers.allSatisfy(\.ready) { return (true, "") }
        return (false, "no complete slot map yet, or no master reachable")
    }

    private func reply(_ request: OpaquePointer, _ code: Int32, _ body: String, type: String = "text/plain; charset=utf-8") {
        let headers = evhttp_request_get_output_headers(request)
        evhttp_add_header(headers, "Content-Type", type)
        let buffer = evbuffer_new()
        var body = body
        body.withUTF8 { _ = evbuffer_add(buffer, $0.baseAddress, $0.count) }
        let reason =
            switch code {
            case 200: "OK"
            case 503: "Service Unavailable"
            default: "Not Found"
            }
        evhttp_send_reply(request, code, reason, buffer)
        evbuffer_free(buffer)
    }
}

struct AdminServerError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
