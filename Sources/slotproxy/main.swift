import Foundation
import Logging
import ProxyCore

#if canImport(Glibc)
    import Glibc
#endif

// Start-up: flags, environment and file into one configuration, logging to
// stderr, then the proxy threads. The main thread only handles signals:
// SIGHUP re-reads the configuration, SIGTERM/SIGINT drain and exit.
let options = SlotproxyOptions.parseOrExit()
if options.compatibilityTable {
    print(CompatibilityTable.markdown(), terminator: "")
    exit(0)
}
options.runCheckConfigIfRequested()
let environment = ProcessInfo.processInfo.environment
let configuration = options.resolveConfigurationOrExit()

ReloadableLevelLogHandler.level = Logger.Level(configuration.logLevel)
ReloadableLevelLogHandler.format = configuration.logFormat
LoggingSystem.bootstrap { label in ReloadableLevelLogHandler(label: label) }
let logger = Logger(label: "slotproxy")
if let exposure = configuration.unprotectedExposure {
    logger.warning("PROTECTED MODE IS OFF: \(exposure)")
}
for name in EnvironmentSettings.unknownVariables(in: environment) {
    logger.notice("environment variable \(name) names no setting; ignored")
}

// Block the signals in every thread (threads inherit the mask) and take them
// synchronously here; SIGPIPE is ignored: writes report EPIPE instead.
signal(SIGPIPE, SIG_IGN)
var handledSignals = sigset_t()
sigemptyset(&handledSignals)
for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&handledSignals, signal) }
pthread_sigmask(SIG_BLOCK, &handledSignals, nil)

let proxy = Proxy(configuration: configuration, logger: logger, environment: environment)
do {
    try proxy.start()
} catch {
    logger.critical("cannot start: \(error)")
    exit(1)
}

// SIGHUP and PROXY CONFIG SET change settings through one control, one at a time.
let control = RuntimeConfigControl(proxy: proxy, options: options, environment: environment, logger: logger)
proxy.setConfigControl(control)

var received: CInt = 0
while true {
    sigwait(&handledSignals, &received)
    guard received == SIGHUP else { break }
    proxy.notifier.reloading()
    let reloaded = control.reloadFromFile()
    proxy.notifier.reloaded(
        status: reloaded ? "serving; configuration reloaded" : "serving; configuration NOT reloaded (see the log)")
}

// SIGTERM/SIGINT: drain within shutdown-timeout; a second one stops at once.
logger.info("received signal \(received), shutting down")
proxy.notifier.stopping()
proxy.beginDrain()
var poll = timespec(tv_sec: 0, tv_nsec: 50_000_000)
while !proxy.workersFinished {
    let signal = sigtimedwait(&handledSignals, nil, &poll)
    if signal == SIGHUP { continue }
    if signal > 0 {
        logger.warning("received signal \(signal) while draining: stopping now")
        break
    }
}
proxy.stop()
exit(0)
