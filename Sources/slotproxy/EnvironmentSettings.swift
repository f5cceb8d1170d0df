import ProxyCore

/// Settings from environment variables, as sidecar containers are configured:
/// `SLOTPROXY_<NAME>` with the setting's config-file name in upper case and
/// `_` for `-` (`SLOTPROXY_REQUEST_TIMEOUT_MS=500`), the value written as for
/// `--set`. They override the file; flags override them.
enum EnvironmentSettings {
    static let prefix = "SLOTPROXY_"

    /// The variable that sets `setting`.
    static func variable(for setting: ConfigSetting) -> String {
        prefix + setting.rawValue.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The `SLOTPROXY_` variables of `environment` that name no setting.
    static func unknownVariables(in environment: [String: String]) -> [String] {
        let known = Set(ConfigSetting.allCases.map(variable(for:)))
        return environment.keys.filter { $0.hasPrefix(prefix) && !known.contains($0) }.sorted()
    }

    /// Applies every `SLOTPROXY_<NAME>` of `environment` naming a setting, in
    /// the settings' order. (Others with the prefix are tools' own variables:
    /// reported by `unknownVariables`, not refused.)
    static func apply(_ environment: [String: String], to configuration: inout ProxyConfiguration)
        throws(ConfigError)
    {
        for setting in ConfigSetting.allCases {
            let name = variable(for: setting)
            guard let value = environment[name] else { continue }
            try setting.apply(value, spelledAs: name, to: &configuration)
        }
    }
}
