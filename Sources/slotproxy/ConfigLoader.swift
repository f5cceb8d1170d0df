import Foundation
import ProxyCore
import Yams

/// Reads slotproxy's YAML config file into a `ProxyConfiguration`.
///
/// The file is one mapping from setting names to values, in redis.conf's
/// kebab-case (`port: 7777`, `proto-max-bulk-len: 512mb`); a setting left out
/// keeps its default. The file is composed into a Yams node tree instead of
/// being decoded, because each node keeps its line (`Node.mark`): every error
/// names the key and the line it is on, and an unknown key is an error with a
/// "did you mean" when a setting has a close name, rather than a silent no-op.
struct ConfigLoader {
    /// The config file's path as errors show it.
    var fileName: String

    /// Files larger than this are refused: a config file is a few hundred
    /// bytes, and a wrong path such as a log file or `/dev/zero` should fail fast.
    static let maxFileSize = 1 << 20

    /// Loads the file at `path` over `base` (the defaults unless given).
    static func load(
        file path: String, over base: ProxyConfiguration = ProxyConfiguration()
    ) throws(ConfigError) -> ProxyConfiguration {
        let loader = ConfigLoader(fileName: path)
        return try loader.load(yaml: loader.readFile(), over: base)
    }

    /// Applies the settings in `yaml` to `base`. An empty document (nothing but
    /// comments) leaves every setting at its value in `base`.
    func load(yaml: String, over base: ProxyConfiguration = ProxyConfiguration()) throws(ConfigError)
        -> ProxyConfiguration
    {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw syntaxError(error, in: yaml)
        }
        var configuration = base
        guard let root else { return configuration }
        guard case .mapping(let settings) = root else {
            throw located(
                ConfigError(
                    key: nil,
                    message: "the file must be a mapping of setting names to values, such as 'port: 7777', got "
                        + Self.describe(root)
                ),
                at: root
            )
        }
        for (keyNode, valueNode) in settings {
            guard case .scalar(let keyScalar) = keyNode else {
                throw located(
                    ConfigError(key: nil, message: "setting names must be words, got \(Self.describe(keyNode))"),
                    at: keyNode
                )
            }
            let key = keyScalar.string
            guard let setting = ConfigSetting(rawValue: key) else {
                throw located(Self.unknownKey(key), at: keyNode)
            }
            do {
                try apply(setting, key: key, value: valueNode, to: &configuration)
            } catch {
                // Errors from one entry of a list already carry its line; the
                // others are placed on the key's line, where a reader looks first.
                throw located(error, at: keyNode)
            }
        }
        return configuration
    }

    /// Stores one setting's value. Scalars are parsed by the setting itself;
    /// `cluster` may also be a list, one `host:port` per entry.
    private func apply(
        _ setting: ConfigSetting, key: String, value: Node, to configuration: inout ProxyConfiguration
    ) throws(ConfigError) {
        switch value {
        case .scalar(let scalar):
            try setting.apply(scalar.string, spelledAs: key, to: &configuration)
        case .sequence(let entries) where setting == .cluster:
            guard !entries.isEmpty else { throw setting.invalid(described: "an empty list", spelledAs: key) }
            var seeds: [NodeAddress] = []
            for entry in entries {
                guard case .scalar(let scalar) = entry else {
                    throw located(
                        ConfigError(
                            key: key,
                            message: "'\(key)' entries must be host:port strings, got \(Self.describe(entry));"
                                + " quote IPv6 seeds: - \"[::1]:7000\""
                        ),
                        at: entry
                    )
                }
                do {
                    seeds.append(try ConfigSetting.seed(scalar.string, spelledAs: key))
                } catch {
                    throw located(error, at: entry)
                }
            }
            configuration.seeds = seeds
        case .sequence(let entries) where setting == .denyCommands:
            var names: [String] = []
            for entry in entries {
                guard case .scalar(let scalar) = entry else {
                    throw located(setting.invalid(described: Self.describe(entry), spelledAs: key), at: entry)
                }
                do {
                    names.append(try ConfigSetting.commandName(scalar.string, spelledAs: key))
                } catch {
                    throw located(error, at: entry)
                }
            }
            configuration.deniedCommands = names
        case .mapping(let pairs) where setting == .userBackendCredentials || setting == .renameCommand:
            // Both are maps of scalar to scalar: proxy user to credentials,
            // command to its new name. The file's map replaces the default.
            if setting == .renameCommand { configuration.renamedCommands = [:] } else { configuration.userBackendCredentials = [:] }
            for (nameNode, valueNode) in pairs {
                guard case .scalar(let name) = nameNode, case .scalar(let value) = valueNode else {
                    throw located(setting.invalid(described: "a nested value", spelledAs: key), at: nameNode)
                }
                do {
                    if setting == .renameCommand {
                        try ConfigSetting.rename(name.string, to: value.string, spelledAs: key, in: &configuration)
                    } else {
                        try ConfigSetting.backendCredentials(for: name.string, value.string, spelledAs: key, in: &configuration)
                    }
                } catch {
                    throw located(error, at: nameNode)
                }
            }
        case .sequence(let entries) where setting == .users:
            configuration.users = []
            for entry in entries {
                guard case .scalar(let scalar) = entry else {
                    throw located(
                        ConfigError(key: key, message: "'\(key)' entries must be strings like \"alice on >secret ~app:* +@read\""),
                        at: entry)
                }
                do {
                    try setting.apply(scalar.string, spelledAs: key, to: &configuration)
                } catch {
                    throw located(error, at: entry)
                }
            }
        default:
            throw setting.invalid(described: Self.describe(value), spelledAs: key)
        }
    }

    /// The error for a key that is no setting, with the closest setting's name
    /// when there is one and the whole list otherwise.
    static func unknownKey(_ key: String) -> ConfigError {
        if let suggestion = ConfigSetting.suggestion(for: key) {
            return ConfigError(key: key, message: "unknown setting '\(key)' (did you mean '\(suggestion.rawValue)'?)")
        }
        let known = ConfigSetting.allCases.map(\.rawValue).joined(separator: ", ")
        return ConfigError(key: key, message: "unknown setting '\(key)'; the settings are: \(known)")
    }

    /// `error` with this file's name, and `node`'s line unless it has a line.
    private func located(_ error: ConfigError, at node: Node) -> ConfigError {
        var error = error
        error.file = fileName
        error.line = error.line ?? node.mark?.line
        return error
    }

    /// A Yams parse failure as a config error on the line libyaml stopped at.
    /// An unquoted `[::1]:7000` is the likely cause when that line holds `]:`,
    /// since YAML reads the `[` as the start of a list: the message says so.
    private func syntaxError(_ error: any Error, in yaml: String) -> ConfigError {
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _),
            .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            var detail = context.map { "\(problem) (\($0.text))" } ?? problem
            let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            if lines.indices.contains(mark.line - 1), lines[mark.line - 1].contains("]:") {
                detail += "; quote IPv6 addresses: \"[::1]:7000\""
            }
            return ConfigError(key: nil, line: mark.line, message: "invalid YAML: \(detail)", file: fileName)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let key = duplicates.first ?? ""
            return ConfigError(
                key: key, line: context.mark.line, message: "'\(key)' is set more than once", file: fileName)
        case .reader(let problem, _, _, _):
            return ConfigError(key: nil, message: "not readable as YAML text: \(problem)", file: fileName)
        default:
            return ConfigError(key: nil, message: "invalid YAML: \(error)", file: fileName)
        }
    }

    /// How a node that is not the expected scalar reads in an error.
    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): scalar.string.isEmpty ? "nothing" : "'\(scalar.string)'"
        case .sequence: "a list"
        case .mapping: "a mapping"
        case .alias: "an alias"
        }
    }

    /// The file's bytes as UTF-8 text, read with POSIX calls so that a missing
    /// or unreadable file is reported in the system's words ("No such file or
    /// directory", "Permission denied").
    func readFile() throws(ConfigError) -> String {
        func failure(_ message: String) -> ConfigError { ConfigError(key: nil, message: message, file: fileName) }
        func systemError() -> String { String(cString: strerror(errno)) }

        let fd = open(fileName, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("cannot open: \(systemError())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            // `read` writes into `chunk`'s storage, which this closure borrows
            // and which outlives the call.
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure("cannot read: \(systemError())")
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            guard bytes.count <= Self.maxFileSize else {
                throw failure("larger than \(ByteSize.format(Self.maxFileSize)); is this the config file?")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw failure("not UTF-8 text; is this the config file?")
        }
        return text
    }
}
