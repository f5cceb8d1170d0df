/// Byte counts written the way redis.conf writes them.
///
/// A size is a decimal number of bytes, optionally followed by a unit, in any
/// case: `k` is 1000 bytes and `kb` 1024, `m` 1000*1000 and `mb` 1024*1024,
/// `g` 1000*1000*1000 and `gb` 1024*1024*1024, `b` just bytes. These are the
/// units of Redis's `memtoll()`, so a value copied from redis.conf means here
/// what it means there. Unlike `memtoll()`, a negative size is not a size.
enum ByteSize {
    static let units: [(suffix: String, multiplier: Int)] = [
        ("b", 1), ("k", 1000), ("kb", 1024), ("m", 1000 * 1000), ("mb", 1024 * 1024),
        ("g", 1000 * 1000 * 1000), ("gb", 1024 * 1024 * 1024),
    ]

    /// The byte count `text` stands for, or nil when it is not a size or does
    /// not fit in an `Int`.
    static func parse(_ text: String) -> Int? {
        let lowercased = text.lowercased()
        let digits = lowercased.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = Int(digits) else { return nil }
        let suffix = lowercased[digits.endIndex...]
        let multiplier: Int
        if suffix.isEmpty {
            multiplier = 1
        } else if let unit = units.first(where: { $0.suffix == suffix }) {
            multiplier = unit.multiplier
        } else {
            return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }

    /// `bytes` in the largest binary unit that divides it (`64kb`, `512mb`),
    /// for messages that quote a limit the way the file would write it.
    static func format(_ bytes: Int) -> String {
        for (suffix, multiplier) in [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)]
        where bytes != 0 && bytes % multiplier == 0 {
            return "\(bytes / multiplier)\(suffix)"
        }
        return "\(bytes)"
    }
}
