/// A setting slotproxy cannot start with: a bad value in the config file or on
/// the command line, an unknown key, an unreadable file, or no seed nodes at all.
///
/// It names what was wrong the way the user wrote it, so the one line printed
/// is enough to find and fix it:
///
///     config error: slotproxy.yaml line 7: 'port' must be an integer between 1 and 65535, got 'abc'
///     slotproxy: '--port' must be an integer between 1 and 65535, got '0'
struct ConfigError: Error, Equatable, CustomStringConvertible {
    /// The setting at fault as named in the file (`port`, `log-level`), or the
    /// unknown key as written; nil when the fault is not one setting's (a YAML
    /// syntax error, an unreadable file).
    var key: String?
    /// The 1-based line of the config file where the fault is; nil for faults on
    /// the command line and for ones with no position (an unreadable file).
    var line: Int?
    /// What is wrong, naming the setting as the user spelled it (`'port'` in the
    /// file, `'--port'` on the command line).
    var message: String
    /// The config file's path as given, when the fault is in the file.
    var file: String?

    init(key: String?, line: Int? = nil, message: String, file: String? = nil) {
        self.key = key
        self.line = line
        self.message = message
        self.file = file
    }

    /// No seed nodes after the file and the flags are merged.
    static let noSeeds = ConfigError(
        key: ConfigSetting.cluster.rawValue,
        message:
            "no cluster seed nodes: pass --cluster host:port[,host:port...] or set 'cluster' in the config file"
    )

    var description: String {
        switch (file, line) {
        case (let file?, let line?): "config error: \(file) line \(line): \(message)"
        case (let file?, nil): "config error: \(file): \(message)"
        case (nil, _): "slotproxy: \(message)"
        }
    }
}
