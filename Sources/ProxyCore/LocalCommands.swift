import ClusterTopology
import CommandTable
import EventLoop
import RESPWire

/// Commands the proxy answers itself, because they describe the client's own
/// connection (`HELLO`, `CLIENT SETNAME`, `SELECT`) or need no node (`PING`,
/// `ECHO`). Replies follow Redis's wording and the session's protocol.
enum LocalCommands {
    /// The version the proxy reports in `HELLO`: the Redis release whose
    /// command table it carries.
    static let reportedVersion = "7.0.15"
    /// Databases a standalone backend has (Redis's default `databases 16`).
    static let standaloneDatabases = 16

    /// `CLIENT SETINFO` arrived with Redis 7.2; clients send it on connect.
    static let clientSetInfo = CommandSpec(
        name: "client|setinfo", arity: 4, flags: [.noscript, .loading, .stale],
        aclCategories: ["slow", "connection"], requestPolicy: .local, responsePolicy: .passthrough,
        affinity: .multiplexed)

    /// `PROXY ...`: the proxy's admin commands (see `Worker+Admin`); not a
    /// Redis command, so not in the table, found when a name is unknown.
    static let proxy = CommandSpec(
        name: "proxy", arity: -2, flags: [.admin, .noscript, .loading, .stale],
        aclCategories: ["admin", "slow", "dangerous"], requestPolicy: .local, responsePolicy: .passthrough,
        affinity: .multiplexed)

    /// The rows the proxy adds to the table.
    static var ownRows: [CommandSpec] { [clientSetInfo, proxy] }

    static func answer(_ spec: CommandSpec, _ command: Command, session: ClientSession, worker: Worker) {
        switch spec.name {
        case "proxy":
            worker.proxyCommand(command, session: session)
        case "slowlog|get", "slowlog|len", "slowlog|reset", "slowlog|help":
            worker.slowlogCommand(spec, command, session: session)
        case "ping":
            if command.count > 2 {
                session.replyError("ERR wrong number of arguments for 'ping' command")
            } else if command.count == 2 {
                session.replyLocally { $0.appendBulk(command.argument(1)) }
            } else {
                session.replyLocally { $0.append("+PONG\r\n") }
            }
        case "echo":
            session.replyLocally { $0.appendBulk(command.argument(1)) }
        case "quit":
            session.replyLocally { $0.append("+OK\r\n") }
            session.closeWhenDrained()
        case "select":
            guard let index = Int(command.string(1)) else {
                session.replyError("ERR value is not an integer or out of range")
                return
            }
            if index == 0 {
                session.database = 0
                session.replyLocally { $0.append("+OK\r\n") }
            } else if worker.slotMap?.isStandalone == true {
                guard (0..<LocalCommands.standaloneDatabases).contains(index) else {
                    session.replyError("ERR DB index is out of range")
                    return
                }
                // The session's requests go over connections that selected it.
                session.database = index
                session.replyLocally { $0.append("+OK\r\n") }
            } else {
                session.replyError("ERR SELECT is not allowed in cluster mode")
            }
        case "hello":
            hello(command, session: session)
        case "reset":
            worker.abandonTransaction(session)
            worker.stopTracking(session)
            session.database = 0
            // RESET signs the client out, as on a server.
            if worker.configuration.requiresAuthentication {
                session.authenticated = false
                session.backendIdentity = nil
                session.restrictedUser = nil
            }
            session.resp3 = false
            session.clientName = nil
            session.replyLocally { $0.append("+RESET\r\n") }
        case "auth":
            guard worker.configuration.requiresAuthentication else {
                if command.count == 3 && command.argument(1).elementsEqual("default".utf8) {
                    // The default user has no password: any opens it (`redis://default:pw@host` URLs).
                    session.replyLocally { $0.append("+OK\r\n") }
                } else {
                    session.replyError(
                        command.count == 2
                            ? "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
                            : command.count == 3 ? "WRONGPASS invalid username-password pair or user is disabled." : "ERR syntax error")
                }
                return
            }
            guard command.count == 2 || command.count == 3 else {
                session.replyError("ERR syntax error")
                return
            }
            let name: [UInt8]? = command.count == 3 ? command.bytes(1) : nil
            if let user = worker.authenticate(user: name, password: command.bytes(command.count - 1)) {
                worker.signIn(session, as: user)
                session.replyLocally { $0.append("+OK\r\n") }
            } else {
                session.replyError("WRONGPASS invalid username-password pair or user is disabled.")
            }
        case "client|setname":
            let name = command.bytes(2)
            guard isValidClientName(name) else {
                session.replyError("ERR Client names cannot contain spaces, newlines or special characters.")
                return
            }
            session.clientName = name.isEmpty ? nil : name
            session.replyLocally { $0.append("+OK\r\n") }
        case "client|getname":
            let resp3 = session.resp3
            if let name = session.clientName {
                session.replyLocally { $0.appendBulk(name) }
            } else {
                session.replyLocally { $0.appendNull(resp3: resp3) }
            }
        case "client|id":
            let id = session.id
            session.replyLocally { $0.appendInteger(id) }
        case "client|setinfo":
            setInfo(command, session: session)
        case "client|info":
            let line = Array(worker.describe(session).utf8)
            let resp3 = session.resp3
            session.replyLocally { $0.appendVerbatimText(line, resp3: resp3) }
        case "client|list":
            // The proxy's clients (of every worker), not a node's connections.
            switch ClientListFilter.parse(command) {
            case .success(let filter): worker.gather(.clients(filter), session: session)
            case .failure(let error): session.replyError(error.message)
            }
        case "client|kill":
            // The proxy's clients (of every worker), as CLIENT LIST lists them.
            switch ClientKillFilter.parse(command, requester: session.id) {
            case .success(let filter): worker.gather(.kill(filter), session: session)
            case .failure(let error): session.replyError(error.message)
            }
        case "cluster|slots", "cluster|shards", "cluster|nodes", "cluster|myid":
            clusterAsOneNode(spec.name, session: session, worker: worker)
        case "role":
            session.replyLocally { $0.append("*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n") }
        case "acl|whoami":
            let user = Array(session.userName.utf8)
            session.replyLocally { $0.appendBulk(user) }
        case "asking", "readonly", "readwrite":
            // The proxy follows ASK itself and picks the node for each read,
            // so these describe nothing the client's connection could change.
            session.replyLocally { $0.append("+OK\r\n") }
        case "sync", "psync", "replconf":
            session.replyError(
                "ERR slotproxy does not support replication commands ('\(spec.name)'): connect replicas to the cluster nodes directly")
        case "client|tracking":
            worker.clientTracking(command, session: session)
        case "client|trackinginfo", "client|getredir", "client|caching":
            worker.trackingQuery(spec, command, session: session)
        default:
            session.replyError("ERR slotproxy cannot answer '\(spec.name)' locally")
        }
    }

    /// A client in cluster mode pointed at the proxy (`RedisCluster(...)`,
    /// ioredis `Cluster`, Jedis/Lettuce cluster clients) asks for the
    /// topology first: it is told of one node, the proxy, at the address it
    /// connected to, serving every slot, so all its traffic stays on the
    /// proxy (the real nodes' addresses would let it bypass the proxy's
    /// auth, ACLs and TLS, or fail where they are not reachable).
    static func clusterAsOneNode(_ name: String, session: ClientSession, worker: Worker) {
        let id = worker.shared.nodeId
        let host = Socket.localHost(session.fd) ?? worker.configuration.bind
        let port = Socket.localPort(session.fd)
        let resp3 = session.resp3
        session.replyLocally { out in
            switch name {
            case "cluster|myid":
                out.appendBulk(id)
            case "cluster|nodes":
                let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
                out.appendBulk("\(id) \(address)@0 myself,master - 0 0 0 connected 0-\(clusterSlotCount - 1)\n")
            case "cluster|slots":
                out.appendArrayHeader(1)
                out.appendArrayHeader(3)
                out.appendInteger(0)
                out.appendInteger(clusterSlotCount - 1)
                out.appendArrayHeader(3)
                out.appendBulk(host)
                out.appendInteger(port)
                out.appendBulk(id)
            default:  // cluster|shards
                out.appendArrayHeader(1)
                out.appendMapHeader(2, resp3: resp3)
                out.appendBulk("slots")
                out.appendArrayHeader(2)
                out.appendInteger(0)
                out.appendInteger(clusterSlotCount - 1)
                out.appendBulk("nodes")
                out.appendArrayHeader(1)
                out.appendMapHeader(7, resp3: resp3)
                for (key, value) in [("id", id), ("port", ""), ("ip", host), ("endpoint", host), ("role", "master")] {
                    out.appendBulk(key)
                    if key == "port" { out.appendInteger(port) } else { out.appendBulk(value) }
                }
                out.appendBulk("replication-offset")
                out.appendInteger(0)
                out.appendBulk("health")
                out.appendBulk("online")
            }
        }
    }

    /// Names are printable ASCII without spaces, as Redis requires.
    static func isValidClientName(_ name: [UInt8]) -> Bool {
        name.allSatisfy { $0 > 32 && $0 < 127 }
    }

    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`:
    /// switches the session's protocol and answers with the server map.
    static func hello(_ command: Command, session: ClientSession) {
        var protocolVersion = session.resp3 ? 3 : 2
        var index = 1
        if command.count >= 2 {
            guard let requested = Int(command.string(1)) else {
                session.replyError("ERR Protocol version is not an integer or out of range")
                return
            }
            guard requested == 2 || requested == 3 else {
                session.replyError("NOPROTO unsupported protocol version")
                return
            }
            protocolVersion = requested
            index = 2
        }
        var newName: [UInt8]?
        while index < command.count {
            let remaining = command.count - index - 1
            if command.argument(index, equals: "auth") && remaining >= 2 {
                if session.worker.configuration.requiresAuthentication {
                    guard
                        let user = session.worker.authenticate(
                            user: command.bytes(index + 1), password: command.bytes(index + 2))
                    else {
                        session.replyError("WRONGPASS invalid username-password pair or user is disabled.")
                        return
                    }
                    session.worker.signIn(session, as: user)
                } else if !command.argument(index + 1, equals: "default") {
                    // No authentication configured: like a server without
                    // requirepass, the default user accepts any password.
                    session.replyError("WRONGPASS invalid username-password pair or user is disabled.")
                    return
                }
                index += 3
            } else if command.argument(index, equals: "setname") && remaining >= 1 {
                let name = command.bytes(index + 1)
                guard isValidClientName(name) else {
                    session.replyError("ERR Client names cannot contain spaces, newlines or special characters.")
                    return
                }
                newName = name
                index += 2
            } else {
                session.replyError("ERR Syntax error in HELLO option '\(command.string(index))'")
                return
            }
        }
        guard session.authenticated else {
            session.replyError(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
            )
            return
        }
        if let newName { session.clientName = newName.isEmpty ? nil : newName }
        session.resp3 = protocolVersion == 3
        // Invalidations are pushes: a client back on RESP2 stops tracking.
        if !session.resp3 && session.tracking { session.worker.stopTracking(session) }
        let resp3 = session.resp3
        let id = session.id
        session.replyLocally { out in
            out.appendMapHeader(7, resp3: resp3)
            out.appendBulk("server")
            out.appendBulk("redis")
            out.appendBulk("version")
            out.appendBulk(reportedVersion)
            out.appendBulk("proto")
            out.appendInteger(protocolVersion)
            out.appendBulk("id")
            out.appendInteger(id)
            out.appendBulk("mode")
            out.appendBulk("standalone")
            out.appendBulk("role")
            out.appendBulk("master")
            out.appendBulk("modules")
            out.appendArrayHeader(0)
        }
    }

    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`, validated as Redis 7.2 does.
    static func setInfo(_ command: Command, session: ClientSession) {
        guard command.argument(2, equals: "lib-name") || command.argument(2, equals: "lib-ver") else {
            session.replyError("ERR Unrecognized option '\(command.string(2))'")
            return
        }
        let value = command.bytes(3)
        guard value.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            session.replyError("ERR \(command.string(2)) cannot contain spaces, newlines or special characters.")
            return
        }
        session.replyLocally { $0.append("+OK\r\n") }
    }
}
