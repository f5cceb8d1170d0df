import EventLoop

/// `CLIENT KILL`: closes the proxy's own clients, as Redis closes its own
/// (a node's connections are the proxy's, shared by many clients). The old
/// form `CLIENT KILL ip:port` answers `+OK`; the filter form `CLIENT KILL
/// ID id | ADDR ip:port | LADDR ip:port | USER name | TYPE t | SKIPME yes/no
/// ...` the number closed. As in Redis, the caller is spared unless
/// `SKIPME no`, and then closed once answered.
struct ClientKillFilter: Sendable {
    var id: Int?
    var address: String?
    var localAddress: String?
    var user: String?
    /// `TYPE pubsub` / `normal`; nil: any.
    var subscribers: Bool?
    /// `TYPE master` / `replica`: no client of the proxy is either.
    var nothing = false
    var skipMe = true
    /// The id of the client that asked.
    var requester: Int
    var oldStyle = false

    static func parse(_ command: Command, requester: Int) -> Result<ClientKillFilter, ClientListFilterError> {
        var filter = ClientKillFilter(requester: requester)
        if command.count == 3 {
            filter.oldStyle = true
            filter.skipMe = false
            filter.address = command.string(2)
            return .success(filter)
        }
        guard command.count >= 4, command.count % 2 == 0 else { return .failure(ClientListFilterError("ERR syntax error")) }
        for index in stride(from: 2, to: command.count, by: 2) {
            let value = command.string(index + 1)
            switch command.string(index).lowercased() {
            case "id":
                guard let id = Int(value), id > 0 else {
                    return .failure(ClientListFilterError("ERR client-id should be greater than 0"))
                }
                filter.id = id
            case "addr": filter.address = value
            case "laddr": filter.localAddress = value
            case "user": filter.user = value
            case "type":
                switch value.lowercased() {
                case "normal": filter.subscribers = false
                case "pubsub": filter.subscribers = true
                case "master", "replica", "slave": filter.nothing = true
                default: return .failure(ClientListFilterError("ERR Unknown client type '\(value)'"))
                }
            case "skipme":
                switch value.lowercased() {
                case "yes": filter.skipMe = true
                case "no": filter.skipMe = false
                default: return .failure(ClientListFilterError("ERR syntax error"))
                }
            default:
                return .failure(ClientListFilterError("ERR syntax error"))
            }
        }
        return .success(filter)
    }

    func admits(_ session: ClientSession) -> Bool {
        guard !nothing, !(skipMe && session.id == requester) else { return false }
        if let id, session.id != id { return false }
        if let subscribers, session.isSubscribed != subscribers { return false }
        if let user, session.userName != user { return false }
        if let address, Socket.peerAddress(session.fd) != address { return false }
        if let localAddress, Socket.localAddress(session.fd) != localAddress { return false }
        return true
    }
}
