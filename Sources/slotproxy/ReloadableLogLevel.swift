import EventLoop
import Foundation
import Logging
import ProxyCore
import Synchronization

/// The one log handler of the process: its level and line format
/// (`log-level`, `log-format`) are read from atomics on every event, so a
/// reload changes them for every logger, though each worker holds a copy.
struct ReloadableLevelLogHandler: LogHandler {
    private static let levels = Logger.Level.allCases
    private static let currentLevel = Atomic<Int>(Logger.Level.allCases.firstIndex(of: .info)!)
    private static let formats = LogFormat.allCases
    private static let currentFormat = Atomic<Int>(0)

    static var level: Logger.Level {
        get { levels[currentLevel.load(ordering: .relaxed)] }
        set { currentLevel.store(levels.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    static var format: LogFormat {
        get { formats[currentFormat.load(ordering: .relaxed)] }
        set { currentFormat.store(formats.firstIndex(of: newValue)!, ordering: .relaxed) }
    }

    private var inner: StreamLogHandler
    private let label: String

    init(label: String) {
        self.label = label
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

    func log(event: LogEvent) {
        let format = Self.format
        guard format != .text else {
            inner.log(event: event)
            return
        }
        var fields: [(String, String)] = [
            ("time", Self.timestamp()), ("level", event.level.rawValue), ("source", event.source),
        ]
        let merged = inner.metadata.merging(event.metadata ?? [:]) { $1 }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        fields.append(("msg", "\(event.message)"))
        let line: String
        if format == .json {
            line = "{" + fields.map { "\(Self.jsonString($0.0)):\(Self.jsonString($0.1))" }.joined(separator: ",") + "}\n"
        } else {
            line = fields.map { "\($0.0)=\(Self.logfmtValue($0.1))" }.joined(separator: " ") + "\n"
        }
        // One write(2) per line: lines from several threads never interleave.
        var text = line
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let millis = now.tv_nsec / 1_000_000
        return String(nulTerminated: buffer) + "." + String(format: "%03d", millis) + "Z"
    }

    /// A logfmt value: bare when it is one word, else quoted with `"` and `\` escaped.
    private static func logfmtValue(_ text: String) -> String {
        let bare = !text.isEmpty && text.unicodeScalars.allSatisfy { $0.value > 32 && $0 != "\"" && $0 != "=" && $0.value != 127 }
        return bare ? text : jsonString(text)
    }

    private static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
