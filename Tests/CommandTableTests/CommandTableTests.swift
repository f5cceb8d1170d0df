import CommandTable
import Testing

/// Runs `body` with the UTF-8 bytes of `name`, as the data path sees a name.
func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    Array(name.utf8).withUnsafeBytes(body)
}

@Suite("CommandTable lookup")
struct CommandTableLookupTests {
    @Test("lookup ignores case", arguments: ["get", "GET", "Get", "gEt"])
    func lookupIgnoresCase(name: String) {
        let spec = withBytes(name) { CommandTable.lookup($0) }
        #expect(spec?.name == "get")
        #expect(CommandTable.lookup(name: name)?.name == "get")
    }

    @Test func unknownNamesAreNil() {
        for name in ["", "gett", "ge", "nosuchcommand", "get ", "a-very-long-name-longer-than-any-command-in-redis"] {
            #expect(withBytes(name) { CommandTable.lookup($0) } == nil, "\(name)")
        }
    }

    @Test func everyCommandFindsItselfByIndex() {
        #expect(CommandTable.all.count >= 200)
        for (index, spec) in CommandTable.all.enumerated() {
            #expect(withBytes(spec.name.uppercased()) { CommandTable.lookupIndex($0) } == index)
            #expect(CommandTable[index].name == spec.name)
        }
    }

    @Test func rowsAreSortedByName() {
        let names = CommandTable.all.map(\.name)
        #expect(names == names.sorted())
    }

    @Test func subcommandsAreFoundByTheirOwnName() {
        let object = try! #require(CommandTable.lookup(name: "object"))
        #expect(object.isContainer)
        #expect(withBytes("ENCODING") { object.subcommand($0) }?.name == "object|encoding")
        #expect(withBytes("freq") { object.subcommand($0) }?.name == "object|freq")
        #expect(withBytes("encodin") { object.subcommand($0) } == nil)
        #expect(withBytes("object|encoding") { object.subcommand($0) } == nil)

        #expect(CommandTable.lookup(name: "CLIENT|SetName")?.name == "client|setname")
        #expect(CommandTable.lookup(name: "config|nope") == nil)
        #expect(CommandTable.lookup(name: "get")?.isContainer == false)

        for container in CommandTable.all where container.isContainer {
            for sub in container.subcommands {
                let short = String(sub.name.split(separator: "|")[1])
                #expect(withBytes(short.uppercased()) { container.subcommand($0) }?.name == sub.name)
            }
        }
    }

    @Test func arity() {
        let get = CommandTable.lookup(name: "get")!
        #expect(!get.acceptsArgumentCount(1))
        #expect(get.acceptsArgumentCount(2))
        #expect(!get.acceptsArgumentCount(3))

        // -3: at least 3; Redis does not check that MSET's pairs are whole.
        let mset = CommandTable.lookup(name: "mset")!
        #expect(!mset.acceptsArgumentCount(2))
        #expect(mset.acceptsArgumentCount(3))
        #expect(mset.acceptsArgumentCount(4))
        #expect(mset.acceptsArgumentCount(101))

        // A subcommand's arity counts the container's name and its own.
        let encoding = CommandTable.lookup(name: "object|encoding")!
        #expect(encoding.acceptsArgumentCount(3))
        #expect(!encoding.acceptsArgumentCount(2))
    }

    @Test func policies() {
        let mget = CommandTable.lookup(name: "mget")!
        #expect(mget.requestPolicy == .splitByKey)
        #expect(mget.responsePolicy == .concatenateInKeyOrder)
        #expect(CommandTable.lookup(name: "del")?.responsePolicy == .sum)
        #expect(CommandTable.lookup(name: "mset")?.responsePolicy == .allSucceeded)
        #expect(CommandTable.lookup(name: "get")?.requestPolicy == .singleSlot)
        #expect(CommandTable.lookup(name: "time")?.requestPolicy == .anyNode)
        #expect(CommandTable.lookup(name: "dbsize")?.requestPolicy == .allMasters)
        #expect(CommandTable.lookup(name: "config|set")?.requestPolicy == .allNodes)
        #expect(CommandTable.lookup(name: "script|exists")?.responsePolicy == .logicalAnd)
        #expect(CommandTable.lookup(name: "script|kill")?.responsePolicy == .firstSuccess)
        for name in [
            "ping", "echo", "quit", "select", "hello", "reset", "client|setname", "client|getname", "client|id",
            "client|tracking", "client|trackinginfo",
        ] {
            #expect(CommandTable.lookup(name: name)?.requestPolicy == .local, "\(name)")
        }
        for name in ["blpop", "bzmpop", "multi", "watch", "subscribe", "ssubscribe", "monitor", "client|reply", "xread"] {
            #expect(CommandTable.lookup(name: name)?.affinity == .pinned, "\(name)")
        }
        #expect(CommandTable.lookup(name: "get")?.affinity == .multiplexed)
        for spec in CommandTable.all where spec.flags.contains(.blocking) {
            #expect(spec.affinity == .pinned, "\(spec.name)")
        }
    }
}
