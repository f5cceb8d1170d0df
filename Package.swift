// swift-tools-version: 6.0
import PackageDescription

// Dynamic exclusivity checks cost about a third of the instructions per
// proxied request (class properties accessed inout on every call). Debug
// builds, which run the test suite, keep them; release builds rely on the
// tests having found any violation.
let hotPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "slotproxy",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "slotproxy", targets: ["slotproxy"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent",
            providers: [.apt(["libevent-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "TLS", dependencies: ["COpenSSL"], swiftSettings: hotPathSettings),
        .target(name: "RESPWire", swiftSettings: hotPathSettings),
        .target(name: "CommandTable", dependencies: ["RESPWire"], swiftSettings: hotPathSettings),
        .target(name: "ClusterTopology", dependencies: ["RESPWire"], swiftSettings: hotPathSettings),
        .target(name: "EventLoop", dependencies: ["CLibevent"], swiftSettings: hotPathSettings),
        .target(
            name: "ProxyCore",
            dependencies: [
                "RESPWire", "CommandTable", "ClusterTopology", "EventLoop", "TLS",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPathSettings
        ),
        .executableTarget(
            name: "slotproxy",
            dependencies: [
                "ProxyCore", "CommandTable", "EventLoop",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Prints the command table as JSON and the keys it finds in given
        // commands, so the integration suite can compare both with a live server.
        .executableTarget(name: "commandtable-tool", dependencies: ["CommandTable", "RESPWire"]),
        // The parser and scanner properties, for `make fuzz` (libFuzzer) and a
        // seeded generator in the unit tests.
        .target(name: "RESPFuzzing", dependencies: ["RESPWire"]),
        .testTarget(name: "RESPWireTests", dependencies: ["RESPWire", "RESPFuzzing"]),
        .testTarget(name: "CommandTableTests", dependencies: ["CommandTable", "RESPWire"]),
        .testTarget(name: "ClusterTopologyTests", dependencies: ["ClusterTopology", "RESPWire"]),
        .testTarget(name: "SlotproxyConfigTests", dependencies: ["slotproxy", "ProxyCore"]),
        .testTarget(name: "ProxyCoreTests", dependencies: ["ProxyCore", "RESPWire", "ClusterTopology"]),
    ],
    swiftLanguageModes: [.v6]
)
