/// A `-MOVED <slot> <endpoint>` or `-ASK <slot> <endpoint>` error.
///
/// The endpoint is `host:port` where the host may be an IPv4 address, a
/// hostname (`cluster-announce-hostname`), an IPv6 address written without
/// brackets (`::1:7001`, so the port follows the last colon), or empty / `?`
/// when the node does not know its own address (then the host is the one the
/// request was sent to).
public struct Redirect: Equatable, Sendable {
    public enum Kind: Equatable, Sendable { case moved, ask }
    public var kind: Kind
    public var slot: Int
    public var host: String
    public var port: Int

    public init(kind: Kind, slot: Int, host: String, port: Int) {
        self.kind = kind
        self.slot = slot
        self.host = host
        self.port = port
    }

    /// Parses the error text after the `-` (e.g. `MOVED 3999 127.0.0.1:6381`).
    public init?(errorText: UnsafeRawBufferPointer, defaultHost: String) {
        var end = errorText.count
        while end > 0 && (errorText[end - 1] == 13 || errorText[end - 1] == 10) { end -= 1 }
        let text = String(decoding: errorText[0..<end], as: UTF8.self)
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3 else { return nil }
        switch parts[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        guard let slot = Int(parts[1]), (0..<clusterSlotCount).contains(slot) else { return nil }
        let endpoint = parts[2]
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(endpoint[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty || host == "?" { host = defaultHost }
        self.slot = slot
        self.host = host
        self.port = port
    }

    public init?(errorText: String, defaultHost: String) {
        var bytes = Array(errorText.utf8)
        if bytes.first == UInt8(ascii: "-") { bytes.removeFirst() }
        guard let parsed = bytes.withUnsafeBytes({ Redirect(errorText: $0, defaultHost: defaultHost) }) else { return nil }
        self = parsed
    }
}
