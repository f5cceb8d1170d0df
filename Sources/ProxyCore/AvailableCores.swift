#if canImport(Glibc)
    import Glibc
#endif

/// How many cores the proxy may actually use, for `workers: auto`: the
/// online cores, fewer when the process is pinned (taskset, systemd's
/// `CPUAffinity`, a cpuset) or capped by a cgroup CPU quota (Docker
/// `--cpus`, a Kubernetes CPU limit, systemd's `CPUQuota`). A sidecar limited
/// to one CPU on a 64-core host otherwise starts 64 workers, each with its
/// own connections to every node, that the quota then throttles.
public struct AvailableCores: Sendable, Equatable, CustomStringConvertible {
    public var online: Int
    /// CPUs in the affinity mask; nil if it could not be read.
    public var affinity: Int?
    /// The tightest cgroup CPU quota on the way to the root, in CPUs
    /// (quota / period); nil when there is none.
    public var quota: Double?

    /// The worker count `auto` means: the smallest bound, a partial CPU of
    /// quota rounded up (1.5 CPUs keeps two threads busy part of the time).
    public var workers: Int {
        var count = online
        if let affinity { count = min(count, affinity) }
        if let quota { count = min(count, Int(quota.rounded(.up))) }
        return max(1, count)
    }

    public var description: String {
        var parts = ["\(online) online cores"]
        if let affinity, affinity != online { parts.append("CPU affinity \(affinity)") }
        if let quota { parts.append("cgroup CPU quota \(quota)") }
        return parts.joined(separator: ", ")
    }

    /// Read once, when first asked: the worker count must not change under a
    /// running proxy (a reload compares it, threads are made once).
    public static let atStart = AvailableCores.ofThisProcess()

    public static func ofThisProcess() -> AvailableCores {
        AvailableCores(
            online: max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
            affinity: affinityCount(status: CgroupCPUQuota.contents(of: "/proc/self/status")),
            quota: CgroupCPUQuota.ofThisProcess())
    }

    /// The CPUs in the `Cpus_allowed:` mask of `/proc/self/status`
    /// (hexadecimal, in comma-separated 32-bit groups: "ff,ffffffff").
    static func affinityCount(status: String?) -> Int? {
        guard let status else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed:") {
            var count = 0
            for character in line.dropFirst("Cpus_allowed:".count) {
                guard let digit = character.hexDigitValue else { continue }
                count += digit.nonzeroBitCount
            }
            return count > 0 ? count : nil
        }
        return nil
    }
}

/// The CPU quota of the process's cgroup (v2 `cpu.max`, v1
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the tightest one from its own
/// cgroup up to the mount's root: a container's limit is often set on a
/// parent. Reads from `root` so tests can give it a made-up file system.
public enum CgroupCPUQuota {
    public static func ofThisProcess() -> Double? { read(root: "") }

    public static func read(root: String) -> Double? {
        guard let cgroups = contents(of: root + "/proc/self/cgroup"),
            let mounts = contents(of: root + "/proc/self/mountinfo")
        else { return nil }
        var tightest: Double?
        for mount in cpuMounts(mountinfo: mounts) {
            guard let path = cgroupPath(in: cgroups, version2: mount.isVersion2) else { continue }
            for directory in directories(from: path, mountRoot: mount.root, mountPoint: root + mount.point) {
                let quota =
                    mount.isVersion2
                    ? version2Quota(contents(of: directory + "/cpu.max"))
                    : version1Quota(
                        quota: contents(of: directory + "/cpu.cfs_quota_us"),
                        period: contents(of: directory + "/cpu.cfs_period_us"))
                if let quota { tightest = min(tightest ?? quota, quota) }
            }
        }
        return tightest
    }

    struct Mount: Equatable {
        var root: String
        var point: String
        var isVersion2: Bool
    }

    /// The cgroup2 mount and v1 mounts with the `cpu` controller, from
    /// `/proc/self/mountinfo` ("36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu").
    static func cpuMounts(mountinfo: String) -> [Mount] {
        var mounts: [Mount] = []
        for line in mountinfo.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash >= 5, fields.count > dash + 1 else { continue }
            let root = unescape(fields[3])
            let point = unescape(fields[4])
            switch fields[dash + 1] {
            case "cgroup2":
                mounts.append(Mount(root: root, point: point, isVersion2: true))
            case "cgroup" where fields.count > dash + 3:
                if fields[dash + 3].split(separator: ",").contains("cpu") {
                    mounts.append(Mount(root: root, point: point, isVersion2: false))
                }
            default:
                continue
            }
        }
        return mounts
    }

    /// The process's path in the v2 hierarchy ("0::/path") or the v1 one
    /// holding `cpu` ("4:cpu,cpuacct:/path").
    static func cgroupPath(in cgroups: String, version2: Bool) -> String? {
        for line in cgroups.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if version2 ? (fields[0] == "0" && fields[1].isEmpty) : fields[1].split(separator: ",").contains("cpu") {
                return String(fields[2])
            }
        }
        return nil
    }

    /// The cgroup's directory under the mount, then each parent up to the
    /// mount point. A path outside the mount's root (a container seeing its
    /// host's path) is read at the mount point only.
    static func directories(from path: String, mountRoot: String, mountPoint: String) -> [String] {
        var relative: Substring
        if path.split(separator: "/").contains("..") {
            relative = ""  // outside this cgroup namespace's view
        } else if mountRoot == "/" {
            relative = Substring(path)
        } else if path == mountRoot || path.hasPrefix(mountRoot + "/") {
            relative = path.dropFirst(mountRoot.count)
        } else {
            relative = ""
        }
        var parts = relative.split(separator: "/")
        var directories: [String] = []
        while true {
            directories.append(([mountPoint] + parts.map(String.init)).joined(separator: "/"))
            if parts.isEmpty { break }
            parts.removeLast()
        }
        return directories
    }

    /// "150000 100000" is 1.5 CPUs; "max 100000" is no limit.
    static func version2Quota(_ text: String?) -> Double? {
        guard let fields = text?.split(whereSeparator: { $0 == " " || $0 == "\n" }), fields.count >= 2,
            let quota = Double(fields[0]), let period = Double(fields[1]), quota > 0, period > 0
        else { return nil }
        return quota / period
    }

    /// v1: a quota of -1 is no limit.
    static func version1Quota(quota: String?, period: String?) -> Double? {
        guard let quota = quota?.split(separator: "\n").first.flatMap({ Double($0) }),
            let period = period?.split(separator: "\n").first.flatMap({ Double($0) }),
            quota > 0, period > 0
        else { return nil }
        return quota / period
    }

    /// A small file (proc and cgroup files are a few lines), or nil.
    static func contents(of path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// mountinfo escapes spaces and such as octal ("\040").
    private static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
                let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
