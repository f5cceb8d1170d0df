import Logging
import Synchronization

/// The log level every logger of the process checks, changeable at run time
/// (a reload with another `log-level`). Loggers are copied into each worker;
/// this handler makes them all read one atomic instead of a level fixed at
/// bootstrap.
struct ReloadableLevelLogHandler: LogHandler {
    private static let levels = Logger.Level.allCases
    private static let current = Atomic<Int>(Logger.Level.allCases.firstIndex(of: .info)!)

    static var level: Logger.Level {
        get { levels[current.load(ordering: .relaxed)] }
        set { current.store(levels.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    private var inner: StreamLogHandler

    init(label: String) {
        inner = StreamLogHandler.standardError(label: label)
        inner.logLevel = .trace  // this handler's level decides
    }

    var logLevel: Logger.Level {
        get { Self.level }
        set { Self.level = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) { inner.log(event: event) }
}
