import RESPWire

/// Finding a command's keys, as Redis 7.0 does for `COMMAND GETKEYS` and for its
/// own cluster slot check (`getKeysFromCommandWithSpecs` in `db.c`):
///
/// 1. If the command has a key spec that names real keys (not `not_key`) and
///    none of its specs has `variable_flags`, walk the key specs in order. Each
///    spec finds its first key (`begin_search`: an index, or a keyword searched
///    forwards from `startfrom`, or backwards from the end when it is negative)
///    and then the rest (`find_keys`: a range up to `lastkey`, every `keystep`,
///    or a key count at `keynumidx`). A spec whose keyword is absent finds
///    nothing. A spec that is `unknown`, `incomplete`, has an unparsable or
///    negative key count, or runs past the arguments fails the whole walk.
/// 2. When the walk fails, or was skipped, Redis asks the command's own
///    `get_keys_function` (`sortGetKeys`, `migrateGetKeys` ...); a command
///    without one has no keys.
///
/// The order and duplicates are Redis's: spec by spec, so `ZUNIONSTORE d 2 a b`
/// gives `d a b`, but when its key count is `+2` (which `string2ll` refuses and
/// `atoi` accepts) the fallback gives `a b d`.
extension CommandSpec {
    /// Appends to `keys` the index into `arguments` of every key of this command
    /// (index 0 is the command name; for a subcommand row, 1 is the subcommand).
    /// `frame` holds the bytes the spans point into. Call it on the row that
    /// routes: the subcommand's, not the container's, which has no keys.
    ///
    /// With `includeNotKeys`, arguments that are hashed like keys without being
    /// keys count too: the shard channels of `SPUBLISH`, `SSUBSCRIBE` and
    /// `SUNSUBSCRIBE`, which Redis routes by slot but `COMMAND GETKEYS` omits.
    ///
    /// Allocation-free while `keys` has spare capacity: arguments are compared
    /// byte-wise, never turned into `String`s.
    @inlinable
    public func extractKeys(
        frame: UnsafeRawBufferPointer, arguments: [ArgumentSpan], into keys: inout [Int],
        includeNotKeys: Bool = false
    ) {
        switch keyPlan {
        case .noKeys:
            return
        case .range(let first, let lastKey, let keyStep):
            // One `index` + `range` spec, the shape of most commands (`GET`,
            // `MSET`, `DEL` ...): no walk needed.
            let argc = arguments.count
            let last = lastKey >= 0 ? first + lastKey : argc + lastKey
            guard first < argc, last < argc, last >= first else { return }
            var i = first
            while i <= last {
                keys.append(i)
                i += keyStep
            }
        case .general:
            extractKeysGeneral(frame: frame, arguments: arguments, into: &keys, includeNotKeys: includeNotKeys)
        }
    }

    @usableFromInline
    func extractKeysGeneral(
        frame: UnsafeRawBufferPointer, arguments: [ArgumentSpan], into keys: inout [Int], includeNotKeys: Bool
    ) {
        let base = keys.count
        var hasKeySpec = false
        var hasVariableFlags = false
        for spec in keySpecs {
            if includeNotKeys || !spec.keyFlags.contains(.notKey) { hasKeySpec = true }
            if spec.keyFlags.contains(.variableFlags) { hasVariableFlags = true }
        }
        if hasKeySpec && !hasVariableFlags {
            if keysFromKeySpecs(frame: frame, arguments: arguments, into: &keys, includeNotKeys: includeNotKeys) {
                return
            }
            keys.removeLast(keys.count - base)
        }
        keysFromGetKeysFunction(frame: frame, arguments: arguments, into: &keys)
    }

    /// Redis's `getKeysUsingKeySpecs`; false when a spec fails (the caller then
    /// drops what was appended and falls back to the key function).
    func keysFromKeySpecs(
        frame: UnsafeRawBufferPointer, arguments: [ArgumentSpan], into keys: inout [Int], includeNotKeys: Bool
    ) -> Bool {
        let argc = arguments.count
        for spec in keySpecs {
            if spec.keyFlags.contains(.notKey) && !includeNotKeys { continue }

            var first = 0
            switch spec.beginSearch {
            case .index(let position):
                first = position
            case .keyword(let keyword, let startFrom):
                // Forwards from `startFrom` up to (not including) the last
                // argument, or backwards from `argc + startFrom` down to (not
                // including) argument 1: a keyword is never the last argument
                // and never the command name.
                let start = startFrom > 0 ? startFrom : argc + startFrom
                let end = startFrom > 0 ? argc - 1 : 1
                var i = start
                while i != end {
                    if i >= argc || i < 1 { break }
                    if argumentEquals(frame, arguments[i], keyword) {
                        first = i + 1
                        break
                    }
                    i = start <= end ? i + 1 : i - 1
                }
                if first == 0 { continue }  // keyword absent: this spec has no keys
            case .unknown:
                return false
            }

            var last: Int
            var step: Int
            switch spec.findKeys {
            case .range(let lastKey, let keyStep, let limit):
                step = keyStep
                if lastKey >= 0 {
                    last = first + lastKey
                } else if limit == 0 {
                    last = argc + lastKey
                } else {
                    // `XREAD ... STREAMS k1 k2 id1 id2`: keys are the first
                    // 1/limit of what follows the keyword.
                    last = first + ((argc - first) / limit + lastKey)
                }
            case .keyNum(let keyNumIndex, let firstKey, let keyStep):
                step = keyStep
                let countIndex = first + keyNumIndex
                guard keyNumIndex < argc, countIndex >= 0, countIndex < argc,
                    let count = parseStrictInteger(argumentBytes(frame, arguments[countIndex])), count >= 0
                else { return false }
                first += firstKey
                // Redis narrows the count to a C `int`.
                last = first + Int(Int32(truncatingIfNeeded: count)) - 1
            case .unknown:
                return false
            }

            // Out of bounds: a syntax error the command itself will report.
            if last >= argc || last < first || first >= argc { return false }
            var i = first
            while i <= last {
                keys.append(i)
                i += max(step, 1)
            }
            // An incomplete spec adds its keys, then fails the walk.
            if spec.incomplete || spec.keyFlags.contains(.incomplete) { return false }
        }
        return true
    }

    /// The command's own key function, `get_keys_function` in Redis.
    func keysFromGetKeysFunction(frame: UnsafeRawBufferPointer, arguments: [ArgumentSpan], into keys: inout [Int]) {
        let argc = arguments.count
        func arg(_ i: Int) -> UnsafeRawBufferPointer { argumentBytes(frame, arguments[i]) }

        switch getKeysFunction {
        case .none:
            return

        case .firstArgument, .sortReadOnly:
            if argc > 1 { keys.append(1) }

        case .keyCount(let storeKeyIndex, let keyCountIndex, let firstKeyIndex, let keyStep):
            // `genericGetKeys`: no keys at all unless the count (read with
            // `atoi`) is at least 1 and fits in the arguments.
            guard keyCountIndex < argc else { return }
            let count = parseAtoi(arg(keyCountIndex))
            let step = max(keyStep, 1)
            if count < 1 || count > (argc - firstKeyIndex) / step { return }
            for i in 0..<count { keys.append(firstKeyIndex + i * step) }
            if storeKeyIndex != 0 { keys.append(storeKeyIndex) }

        case .sort:
            // `sortGetKeys`: the sorted key, then the destination of the last
            // `STORE`. `LIMIT offset count`, `GET pattern` and `BY pattern` are
            // skipped so their arguments are not taken for `STORE`; every other
            // word is read as an option. `STORE` itself does not skip its
            // argument, so the destination is read as an option too.
            guard argc > 1 else { return }
            keys.append(1)
            var store = 0
            var i = 2
            while i < argc {
                let word = arg(i)
                if cStringEqualsIgnoringCase(word, "limit") {
                    i += 2
                } else if cStringEqualsIgnoringCase(word, "store") && i + 1 < argc {
                    store = i + 1
                } else if cStringEqualsIgnoringCase(word, "get") || cStringEqualsIgnoringCase(word, "by") {
                    i += 1
                }
                i += 1
            }
            if store != 0 { keys.append(store) }

        case .migrate:
            // `migrateGetKeys`: `MIGRATE host port key db timeout [COPY]
            // [REPLACE] [AUTH pw] [AUTH2 user pw] [KEYS k ...]`. With `KEYS`
            // the key argument must be empty, else no keys (a syntax error).
            var first = 3
            var count = 1
            if argc > 6 {
                var i = 6
                while i < argc {
                    let word = arg(i)
                    if cStringEqualsIgnoringCase(word, "keys") {
                        if arguments[3].length > 0 {
                            count = 0
                        } else {
                            first = i + 1
                            count = argc - first
                        }
                        break
                    }
                    if cStringEqualsIgnoringCase(word, "auth") {
                        i += 1
                    } else if cStringEqualsIgnoringCase(word, "auth2") {
                        i += 2
                    }
                    i += 1
                }
            }
            guard first + count <= argc else { return }
            for i in 0..<count { keys.append(first + i) }

        case .georadius:
            // `georadiusGetKeys`: the key, then the last `STORE`/`STOREDIST`
            // destination after the five fixed arguments.
            guard argc > 1 else { return }
            var stored = -1
            var i = 5
            while i < argc {
                let word = arg(i)
                if (cStringEqualsIgnoringCase(word, "store") || cStringEqualsIgnoringCase(word, "storedist"))
                    && i + 1 < argc
                {
                    stored = i + 1
                    i += 1
                }
                i += 1
            }
            keys.append(1)
            if stored >= 0 { keys.append(stored) }

        case .xread:
            // `xreadGetKeys`: skip `BLOCK ms`, `COUNT n`, `GROUP g c`, `NOACK`
            // up to `STREAMS`; the first half of the rest are the keys.
            var streams = -1
            var i = 1
            while i < argc {
                let word = arg(i)
                if cStringEqualsIgnoringCase(word, "block") || cStringEqualsIgnoringCase(word, "count") {
                    i += 1
                } else if cStringEqualsIgnoringCase(word, "group") {
                    i += 2
                } else if cStringEqualsIgnoringCase(word, "noack") {
                    // no argument
                } else if cStringEqualsIgnoringCase(word, "streams") {
                    streams = i
                    break
                } else {
                    break
                }
                i += 1
            }
            guard streams >= 0 else { return }
            let rest = argc - streams - 1
            guard rest > 0, rest % 2 == 0 else { return }
            for i in (streams + 1)..<(streams + 1 + rest / 2) { keys.append(i) }
        }
    }
}

/// The shape of a command's key specs, decided once per row.
@usableFromInline
enum KeyPlan: Sendable {
    /// No key specs and no key function.
    case noKeys
    /// A single plain `index` + `range` spec (no `limit`, no `incomplete`,
    /// `not_key` or `variable_flags`), so `COMMAND GETKEYS` is a plain loop.
    case range(first: Int, lastKey: Int, keyStep: Int)
    /// Anything else: the full walk of `extractKeysGeneral`.
    case general

    init(keySpecs: [KeySpec], getKeysFunction: GetKeysFunction) {
        if keySpecs.isEmpty && getKeysFunction == .none {
            self = .noKeys
            return
        }
        if keySpecs.count == 1, getKeysFunction == .none, let spec = keySpecs.first,
            !spec.incomplete,
            spec.keyFlags.isDisjoint(with: [.notKey, .incomplete, .variableFlags]),
            case .index(let first) = spec.beginSearch, first > 0,
            case .range(let lastKey, let keyStep, let limit) = spec.findKeys, limit == 0, keyStep > 0
        {
            self = .range(first: first, lastKey: lastKey, keyStep: keyStep)
            return
        }
        self = .general
    }
}

// MARK: byte helpers

/// The bytes of one argument. `frame` is owned by the caller and outlives the call.
@inline(__always)
func argumentBytes(_ frame: UnsafeRawBufferPointer, _ span: ArgumentSpan) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: frame[span.offset..<(span.offset + span.length)])
}

/// Redis compares keywords with `strcasecmp`, which stops at a NUL byte: an
/// argument `STORE\0x` is `STORE` to it. `word` is ASCII and NUL-free.
@inline(__always)
func cStringEqualsIgnoringCase(_ argument: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
    let count = word.utf8CodeUnitCount
    let ends = argument.count == count || (argument.count > count && argument[count] == 0)
    guard ends else { return false }
    let start = word.utf8Start
    for i in 0..<count where asciiLowercase(argument[i]) != asciiLowercase(start[i]) { return false }
    return true
}

/// `cStringEqualsIgnoringCase` for a key spec keyword held in a `String`.
@inline(__always)
func argumentEquals(_ frame: UnsafeRawBufferPointer, _ span: ArgumentSpan, _ keyword: String) -> Bool {
    let argument = argumentBytes(frame, span)
    var i = 0
    for byte in keyword.utf8 {
        guard i < argument.count, asciiLowercase(argument[i]) == asciiLowercase(byte) else { return false }
        i += 1
    }
    return i == argument.count || argument[i] == 0
}

/// Redis's `string2ll`: an optional `-` and digits without a leading zero (or
/// just `0`), in the range of a 64-bit integer; nothing else, no spaces, no `+`.
public func parseStrictInteger(_ bytes: UnsafeRawBufferPointer) -> Int64? {
    let count = bytes.count
    guard count > 0 else { return nil }
    if count == 1 && bytes[0] == UInt8(ascii: "0") { return 0 }
    var i = 0
    var negative = false
    if bytes[0] == UInt8(ascii: "-") {
        negative = true
        i = 1
        guard count > 1 else { return nil }
    }
    guard bytes[i] >= UInt8(ascii: "1") && bytes[i] <= UInt8(ascii: "9") else { return nil }
    var magnitude: UInt64 = 0
    while i < count {
        let digit = bytes[i] &- UInt8(ascii: "0")
        guard digit <= 9 else { return nil }
        let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
        guard !overflow1 && !overflow2 else { return nil }
        magnitude = sum
        i += 1
    }
    if negative {
        guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
        return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
    }
    guard magnitude <= UInt64(Int64.max) else { return nil }
    return Int64(magnitude)
}

/// C's `atoi` as glibc does it (`(int)strtol(s, NULL, 10)`): leading white
/// space, an optional sign, then digits up to the first other byte; 0 when
/// there are none. `strtol` saturates at the `long` range and the cast then
/// keeps the low 32 bits.
func parseAtoi(_ bytes: UnsafeRawBufferPointer) -> Int {
    var i = 0
    let count = bytes.count
    while i < count, bytes[i] == 32 || (bytes[i] >= 9 && bytes[i] <= 13) { i += 1 }
    var negative = false
    if i < count, bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: "+") {
        negative = bytes[i] == UInt8(ascii: "-")
        i += 1
    }
    var magnitude: UInt64 = 0
    var saturated = false
    while i < count {
        let digit = bytes[i] &- UInt8(ascii: "0")
        guard digit <= 9 else { break }
        if !saturated {
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
            if overflow1 || overflow2 || sum > UInt64(Int64.max) + 1 {
                saturated = true
            } else {
                magnitude = sum
            }
        }
        i += 1
    }
    let long: Int64
    if negative {
        long = saturated || magnitude > UInt64(Int64.max) ? Int64.min : -Int64(magnitude)
    } else {
        long = saturated || magnitude > UInt64(Int64.max) ? Int64.max : Int64(magnitude)
    }
    return Int(Int32(truncatingIfNeeded: long))
}
