#if canImport(Glibc)
    import Glibc
#endif

/// A value behind a pthread mutex, for the little state threads share off
/// the data path (slow log, published metrics, settings). Not Swift's
/// `Mutex`: on Linux that is a bare futex, which ThreadSanitizer cannot see,
/// so every contended use would be reported as a race.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
