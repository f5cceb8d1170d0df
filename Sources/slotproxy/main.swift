import Logging
import ProxyCore

#if canImport(Glibc)
    import Glibc
#endif

// Start-up: flags and file into one configuration, logging to stderr, then
// the proxy threads; the main thread only waits for SIGINT/SIGTERM (and
// SIGHUP, which re-reads the TLS certificates).
let options = SlotproxyOptions.parseOrExit()
if options.compatibilityTable {
    print(CompatibilityTable.markdown(), terminator: "")
    exit(0)
}
options.runCheckConfigIfRequested()
let configuration = options.resolveConfigurationOrExit()

let logLevel = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = logLevel
    return handler
}
let logger = Logger(label: "slotproxy")
if let exposure = configuration.unprotectedExposure {
    logger.warning("PROTECTED MODE IS OFF: \(exposure)")
}

// Block the stop signals in every thread (threads inherit the mask) and take
// them synchronously here; SIGPIPE is ignored: writes report EPIPE instead.
signal(SIGPIPE, SIG_IGN)
var stopSignals = sigset_t()
sigemptyset(&stopSignals)
sigaddset(&stopSignals, SIGINT)
sigaddset(&stopSignals, SIGTERM)
sigaddset(&stopSignals, SIGHUP)
pthread_sigmask(SIG_BLOCK, &stopSignals, nil)

let proxy = Proxy(configuration: configuration, logger: logger)
do {
    try proxy.start()
} catch {
    logger.critical("cannot start: \(error)")
    exit(1)
}

var received: CInt = 0
while true {
    sigwait(&stopSignals, &received)
    guard received == SIGHUP else { break }
    proxy.reloadTLS()
}
logger.info("received signal \(received), shutting down")
proxy.stop()
exit(0)
