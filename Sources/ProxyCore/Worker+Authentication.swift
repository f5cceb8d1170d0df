import CommandTable
import RESPWire

/// Client authentication and per-user permissions (`requirepass`, `users`),
/// with Redis's exact replies.
extension Worker {
    /// Before `AUTH`, only `AUTH`, `HELLO` and `QUIT` are served (and `PING`
    /// with `ping-before-auth`, for health checks); true when `command` may go on.
    func admitsUnauthenticated(_ command: Command, session: ClientSession) -> Bool {
        if command.argument(0, equals: "auth") || command.argument(0, equals: "hello")
            || command.argument(0, equals: "quit")
            || (configuration.pingBeforeAuth && command.argument(0, equals: "ping"))
        {
            return true
        }
        session.replyError("NOAUTH Authentication required.")
        return false
    }

    /// The user `name` (nil: the default user) if `password` opens it.
    func authenticate(user name: [UInt8]?, password: [UInt8]) -> ProxyUser? {
        let userName = name.map { String(decoding: $0, as: UTF8.self) } ?? "default"
        if let user = configuration.users.first(where: { $0.name == userName }) {
            return user.accepts(password: password) ? user : nil
        }
        guard userName == "default" else { return nil }
        if let requirePass = configuration.requirePass {
            var defaultUser = ProxyUser(name: "default")
            defaultUser.enabled = true
            defaultUser.passwordDigests = [SHA256.digest(Array(requirePass.utf8))]
            defaultUser.keyPatterns = ["*"]
            defaultUser.commandRules = [.all(allow: true)]
            return defaultUser.accepts(password: password) ? defaultUser : nil
        }
        return nil
    }

    /// Records a successful authentication on the session.
    func signIn(_ session: ClientSession, as user: ProxyUser) {
        session.authenticated = true
        session.userName = user.name
        session.restrictedUser = user.isUnrestricted ? nil : user
        session.backendIdentity = configuration.userBackendCredentials[user.name]
    }

    /// Settings re-read: a signed-in client follows its user's new rules
    /// and backend credentials at once, and is disconnected if its user was
    /// removed (as Redis's `ACL SETUSER` and `ACL DELUSER` act on open
    /// connections). A user turned `off` keeps its open connections, as in Redis.
    func refreshUser(of session: ClientSession) {
        guard session.authenticated, configuration.requiresAuthentication else { return }
        guard let user = configuration.users.first(where: { $0.name == session.userName }) else {
            // The default user of `requirepass` has no rules of its own.
            if session.userName == "default" {
                session.restrictedUser = nil
                session.backendIdentity = configuration.userBackendCredentials["default"]
                return
            }
            logger.info("closing client \(session.id): its user '\(session.userName)' was removed from the configuration")
            session.close()
            return
        }
        session.restrictedUser = user.isUnrestricted ? nil : user
        session.backendIdentity = configuration.userBackendCredentials[user.name]
    }

    /// Whether `user` may run the command on its keys; answers `NOPERM` if not.
    func permits(_ user: ProxyUser, _ spec: CommandSpec, _ command: Command, session: ClientSession) -> Bool {
        // Connection commands (AUTH, HELLO, PING ...) answer to everyone, as the proxy itself answers them.
        if spec.requestPolicy == .local && !user.mayRun(spec) && spec.aclCategories.contains("connection") {
            return true
        }
        guard user.mayRun(spec) else {
            // (A subcommand by its full name, `config|get`, as Redis 7 says it.)
            session.replyError("NOPERM this user has no permissions to run the '\(spec.name)' command")
            return false
        }
        session.keyIndices.clearKeepingCapacity()
        spec.extractKeys(frame: command.frame, arguments: command.arguments, into: &session.keyIndices)
        for index in session.keyIndices where !user.mayAccess(key: command.argument(index)) {
            session.replyError("NOPERM this user has no permissions to access one of the keys used as arguments")
            return false
        }
        return true
    }
}
