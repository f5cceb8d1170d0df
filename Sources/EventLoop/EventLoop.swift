#if canImport(Glibc)
    import Glibc
#endif
import CLibevent

/// The signature of a libevent callback: the fd, the events that fired
/// (`EV_READ`, `EV_WRITE`, `EV_TIMEOUT`) and the context pointer given at
/// registration. Callbacks are capture-free; they recover their object from
/// the context with `Unmanaged`.
public typealias EventCallback = @convention(c) (CInt, CShort, UnsafeMutableRawPointer?) -> Void

public enum EventFlags {
    public static let timeout = CShort(EV_TIMEOUT)
    public static let read = CShort(EV_READ)
    public static let write = CShort(EV_WRITE)
    public static let persist = CShort(EV_PERSIST)
}

/// One libevent `event_base`, driven one turn at a time by its owning thread.
///
/// After each turn (all callbacks that were ready have run) the loop calls
/// `afterTurn`: the owner flushes coalesced output there, so each connection
/// gets at most one write per turn, and closes connections queued for closing
/// (never inside their own callback).
public final class EventLoop {
    /// The `event_base *`, owned by this object.
    public let base: OpaquePointer
    private var stopRequested = false
    private let ownerThread: pthread_t

    public init() {
        guard let config = event_config_new() else { fatalError("event_config_new failed") }
        // Fd-based events only; no signal handling inside workers.
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_NOLOCK.rawValue))
        // Not EVENT_BASE_FLAG_PRECISE_TIMER: with epoll it re-arms a timerfd
        // before every wait, one more syscall per turn. Latencies are read
        // off our own CLOCK_MONOTONIC reads (`updateTurnTime`) instead;
        // libevent's timers keep its coarse clock (4 ms steps), plenty for
        // a 100 ms tick.
        guard let base = event_base_new_with_config(config) else { fatalError("event_base_new failed") }
        event_config_free(config)
        self.base = base
        ownerThread = pthread_self()
    }

    deinit { event_base_free(base) }

    /// True on the thread that created the loop; loop-bound objects assert it.
    public var isOwnerThread: Bool { pthread_equal(ownerThread, pthread_self()) != 0 }

    /// Runs turns until `stop()` is called from a callback on this loop.
    public func run(afterTurn: () -> Void) {
        stopRequested = false
        updateTurnTime()
        while !stopRequested {
            let rc = event_base_loop(base, EVLOOP_ONCE)
            updateTurnTime()
            afterTurn()
            if rc < 0 { break }
            if rc == 1 { break }  // no events registered at all
        }
    }

    /// Ends `run` after the current turn. Call on the loop's thread.
    public func stop() { stopRequested = true }

    /// Time in milliseconds as of the end of the last turn: precise enough for
    /// timeouts checked every 100 ms, and free to read per request.
    public private(set) var turnTime: Int64 = 0
    /// The same instant in microseconds: request latencies for metrics and
    /// the slow log, at no cost per request.
    public private(set) var turnTimeMicros: Int64 = 0

    /// Sets the turn's time to now, from a read callback: latencies then
    /// count from when the bytes were read, which the time at the end of the
    /// last turn (before the wait) does not.
    @inline(__always) public func refreshTurnTime() { updateTurnTime() }

    private func updateTurnTime() {
        turnTimeMicros = EventLoop.monotonicMicros()
        turnTime = turnTimeMicros / 1000
    }

    /// Time in milliseconds now, on the turn time's clock (timer callbacks
    /// and slow paths, where the turn time may be a whole wait old).
    public var nowMilliseconds: Int64 { EventLoop.monotonicMicros() / 1000 }

    /// CLOCK_MONOTONIC in microseconds: a vDSO call, no syscall, with the
    /// usual TSC clock source.
    @inline(__always) static func monotonicMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}

/// A registered libevent `event`: fd readiness or a timer. Owned by one
/// object on the loop's thread, freed with it.
public final class LoopEvent {
    /// The `event *`, owned by this object.
    let event: OpaquePointer
    /// Asks libevent: a one-shot event stops being pending once it fires.
    public var isPending: Bool { event_pending(event, EventFlags.read | EventFlags.write | EventFlags.timeout, nil) != 0 }

    /// `fd` -1 makes a timer. `context` is passed unretained: the owner must
    /// outlive the event (it frees the event in its own teardown).
    public init(loop: EventLoop, fd: CInt, flags: CShort, callback: EventCallback, context: UnsafeMutableRawPointer) {
        guard let event = event_new(loop.base, fd, flags, callback, context) else { fatalError("event_new failed") }
        self.event = event
    }

    deinit { event_free(event) }

    /// Makes the event pending, optionally with a timeout in milliseconds.
    public func add(timeoutMilliseconds: Int? = nil) {
        if let ms = timeoutMilliseconds {
            add(timeoutMicroseconds: ms * 1000)
        } else {
            event_add(event, nil)
        }
    }

    /// Makes the event pending with a timeout in microseconds (libevent
    /// counts it from its cached coarse clock: it fires up to 4 ms late).
    public func add(timeoutMicroseconds us: Int) {
        var tv = timeval(tv_sec: us / 1_000_000, tv_usec: us % 1_000_000)
        event_add(event, &tv)
    }

    public func remove() {
        event_del(event)
    }
}
