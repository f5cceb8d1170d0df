#if canImport(Glibc)
    import Glibc
#endif

/// Carries messages from any thread to one loop: a locked queue plus a pipe
/// whose read end the loop watches. Only `Sendable` messages cross; the
/// receiving side runs its handler on the loop's own thread.
///
/// This is the one `@unchecked Sendable` type: its mutable state is guarded by
/// `lock`, and `attach` (which touches the loop) asserts the loop's thread.
public final class Mailbox<Message: Sendable>: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var queue: [Message] = []
    private let wakeup = Wakeup()
    private var wakeupPending = false

    public init() {
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

    /// Starts delivering to `handler` on `loop`'s thread. Call on that thread.
    public func attach(to loop: EventLoop, handler: @escaping (Message) -> Void) {
        precondition(loop.isOwnerThread, "Mailbox.attach must run on the loop's thread")
        wakeup.attach(to: loop) { [unowned self] in
            for message in self.takeAll() { handler(message) }
        }
    }

    /// Stops delivering; call on the loop's thread before the loop goes away.
    public func detach() { wakeup.detach() }

    /// Queues a message and wakes the loop; callable from any thread.
    public func send(_ message: Message) {
        pthread_mutex_lock(&lock)
        queue.append(message)
        let needsWakeup = !wakeupPending
        wakeupPending = true
        pthread_mutex_unlock(&lock)
        if needsWakeup { wakeup.signal() }
    }

    private func takeAll() -> [Message] {
        pthread_mutex_lock(&lock)
        let messages = queue
        queue.removeAll()
        wakeupPending = false
        pthread_mutex_unlock(&lock)
        return messages
    }
}

/// A pipe whose read end a loop watches: `signal` from any thread makes the
/// loop run `handler` on its own thread.
final class Wakeup {
    private let readFD: CInt
    private let writeFD: CInt
    private var event: LoopEvent?
    private var handler: (() -> Void)?

    init() {
        (readFD, writeFD) = Socket.makePipe()
    }

    deinit {
        event = nil
        close(readFD)
        close(writeFD)
    }

    func attach(to loop: EventLoop, handler: @escaping () -> Void) {
        self.handler = handler
        let event = LoopEvent(
            loop: loop, fd: readFD, flags: EventFlags.read | EventFlags.persist,
            callback: { _, _, context in
                Unmanaged<Wakeup>.fromOpaque(context!).takeUnretainedValue().fire()
            }, context: Unmanaged.passUnretained(self).toOpaque())
        event.add()
        self.event = event
    }

    func detach() {
        event = nil
        handler = nil
    }

    func signal() {
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    private func fire() {
        var scratch: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        while withUnsafeMutableBytes(of: &scratch, { read(readFD, $0.baseAddress, $0.count) }) > 0 {}
        handler?()
    }
}
