import Foundation
import XCTest

@testable import ProxyCore

/// `workers: auto` from made-up /proc and cgroup trees (the integration
/// tests run the real thing: taskset, and a v1 or v2 cgroup when they may).
final class AvailableCoresTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "available-cores-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root + "/proc/self", withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    private func write(_ path: String, _ text: String) throws {
        let full = root + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: true, encoding: .utf8)
    }

    func testV2ContainerWithItsOwnNamespaceReadsTheMountPoint() throws {
        try write("/proc/self/cgroup", "0::/\n")
        try write("/proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n")
        try write("/sys/fs/cgroup/cpu.max", "150000 100000\n")
        XCTAssertEqual(CgroupCPUQuota.read(root: root), 1.5)
    }

    func testV2TakesTheTightestQuotaUpToTheRoot() throws {
        // A Kubernetes pod: the limit on the pod's cgroup, none on the container's.
        try write("/proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
        try write("/proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
        try write("/sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n")
        try write("/sys/fs/cgroup/kubepods/pod1/cpu.max", "200000 100000\n")
        try write("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n")
        XCTAssertEqual(CgroupCPUQuota.read(root: root), 2)
    }

    func testNoLimitIsNil() throws {
        try write("/proc/self/cgroup", "0::/system.slice/slotproxy.service\n")
        try write("/proc/self/mountinfo", "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
        try write("/sys/fs/cgroup/system.slice/slotproxy.service/cpu.max", "max 100000\n")
        XCTAssertNil(CgroupCPUQuota.read(root: root))
        XCTAssertNil(CgroupCPUQuota.read(root: root + "/nowhere"))
    }

    func testV1CpuControllerSharedWithCpuacct() throws {
        try write(
            "/proc/self/cgroup",
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
        try write(
            "/proc/self/mountinfo",
            """
            31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
            32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
            33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory

            """)
        try write("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
        try write("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
        try write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
        try write("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
        XCTAssertEqual(CgroupCPUQuota.read(root: root), 0.5)
    }

    func testMountRootOfAContainerIsStrippedFromThePath() throws {
        // Docker without a cgroup namespace: the mount shows the container's
        // own cgroup, /proc/self/cgroup the host's full path.
        try write("/proc/self/cgroup", "0::/docker/abc\n")
        try write("/proc/self/mountinfo", "30 25 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n")
        try write("/sys/fs/cgroup/cpu.max", "100000 100000\n")
        XCTAssertEqual(CgroupCPUQuota.read(root: root), 1)
        // A path outside the mount's view is read at the mount point only.
        try write("/proc/self/cgroup", "0::/../../other\n")
        XCTAssertEqual(CgroupCPUQuota.read(root: root), 1)
    }

    func testEscapedMountPoint() {
        let mounts = CgroupCPUQuota.cpuMounts(
            mountinfo: "30 25 0:26 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\nbroken line\n")
        XCTAssertEqual(mounts, [CgroupCPUQuota.Mount(root: "/", point: "/sys/fs/my cgroup", isVersion2: true)])
    }

    func testAffinityMask() {
        XCTAssertEqual(AvailableCores.affinityCount(status: "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"), 2)
        XCTAssertEqual(AvailableCores.affinityCount(status: "Cpus_allowed:\tff,ffffffff\n"), 40)
        XCTAssertEqual(AvailableCores.affinityCount(status: "Cpus_allowed:\t00000000,00000004\n"), 1)
        XCTAssertNil(AvailableCores.affinityCount(status: "Name:\tx\n"))
        XCTAssertNil(AvailableCores.affinityCount(status: nil))
    }

    func testWorkersTakeTheSmallestBoundRoundingAPartialCpuUp() {
        XCTAssertEqual(AvailableCores(online: 64, affinity: nil, quota: nil).workers, 64)
        XCTAssertEqual(AvailableCores(online: 64, affinity: 8, quota: nil).workers, 8)
        XCTAssertEqual(AvailableCores(online: 64, affinity: 8, quota: 1.5).workers, 2)
        XCTAssertEqual(AvailableCores(online: 64, affinity: nil, quota: 0.25).workers, 1)
        XCTAssertEqual(AvailableCores(online: 2, affinity: 2, quota: 16).workers, 2)
    }
}
