// commandtable-tool: shows the command table and its key extraction as JSON, so
// Tests/integration/test_command_table.py can compare both with a live server.
//
//   commandtable-tool dump     the whole table, in the shape of `COMMAND INFO`
//   commandtable-tool learn    a raw `COMMAND` reply on stdin, parsed into rows
//                              as the proxy learns commands it lacks, the same shape
//   commandtable-tool getkeys  for each stdin line, a JSON array of strings (one
//                              command), prints the keys found, as `COMMAND
//                              GETKEYS` would, or {"error": "..."}

import CommandTable
import Foundation
import RESPWire

/// One row in the shape of `COMMAND INFO` read with RESP2 maps as objects.
func describe(_ spec: CommandSpec) -> [String: Any] {
    var flags: [String] = []
    for (name, flag) in CommandFlags.names where spec.flags.contains(flag) { flags.append(name) }
    return [
        "name": spec.name,
        "arity": spec.arity,
        "flags": flags,
        "first_key": spec.firstKey,
        "last_key": spec.lastKey,
        "step": spec.keyStep,
        "acl_categories": spec.aclCategories.map { "@" + $0 },
        "tips": spec.tips,
        "key_specs": spec.keySpecs.map(describe),
        "subcommands": spec.subcommands.map(describe),
        "request_policy": "\(spec.requestPolicy)",
        "response_policy": "\(spec.responsePolicy)",
        "affinity": "\(spec.affinity)",
    ]
}

func describe(_ keySpec: KeySpec) -> [String: Any] {
    let beginSearch: [String: Any]
    switch keySpec.beginSearch {
    case .index(let index):
        beginSearch = ["type": "index", "spec": ["index": index]]
    case .keyword(let keyword, let startFrom):
        beginSearch = ["type": "keyword", "spec": ["keyword": keyword, "startfrom": startFrom]]
    case .unknown:
        beginSearch = ["type": "unknown", "spec": [String: Any]()]
    }
    let findKeys: [String: Any]
    switch keySpec.findKeys {
    case .range(let lastKey, let keyStep, let limit):
        findKeys = ["type": "range", "spec": ["lastkey": lastKey, "keystep": keyStep, "limit": limit]]
    case .keyNum(let keyNumIndex, let firstKey, let keyStep):
        findKeys = ["type": "keynum", "spec": ["keynumidx": keyNumIndex, "firstkey": firstKey, "keystep": keyStep]]
    case .unknown:
        findKeys = ["type": "unknown", "spec": [String: Any]()]
    }
    var flags = keySpec.flags
    if keySpec.incomplete && !flags.contains("incomplete") { flags.append("incomplete") }
    return ["flags": flags, "begin_search": beginSearch, "find_keys": findKeys]
}

func printJSON(_ value: Any) {
    let data = try! JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data([10]))
}

/// The keys of one command, found the way the proxy finds them: the command is
/// encoded as RESP, parsed by `RequestParser`, looked up by its name bytes.
func getKeys(_ words: [String]) -> Any {
    let buffer = ByteBuffer()
    buffer.appendCommand(words.map { Array($0.utf8) })
    var parser = RequestParser()
    let input = buffer.readable
    guard case .complete = parser.parse(input) else { return ["error": "could not parse the command"] }
    let arguments = parser.arguments
    guard let first = arguments.first else { return ["error": "empty command"] }
    func bytes(_ span: ArgumentSpan) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: input[span.offset..<(span.offset + span.length)])
    }
    guard var spec = CommandTable.lookup(bytes(first)) else { return ["error": "Invalid command specified"] }
    // As Redis's lookupCommand: a container with an argument names a subcommand.
    if spec.isContainer && arguments.count >= 2 {
        guard let sub = spec.subcommand(bytes(arguments[1])) else {
            return ["error": "Invalid command specified"]
        }
        spec = sub
    }
    guard spec.acceptsArgumentCount(arguments.count) else {
        return ["error": "Invalid number of arguments specified for command"]
    }
    var keys: [Int] = []
    spec.extractKeys(frame: input, arguments: arguments, into: &keys)
    return keys.map { String(decoding: bytes(arguments[$0]), as: UTF8.self) }
}

let commandLine = CommandLine.arguments
switch commandLine.count > 1 ? commandLine[1] : "" {
case "dump":
    printJSON(CommandTable.all.map(describe))
case "learn":
    // A raw `COMMAND` reply on stdin, read into rows as the proxy learns
    // the commands its table lacks (`CommandInfoParser`).
    let input = Array(FileHandle.standardInput.readDataToEndOfFile())
    guard let reply = RESPValue.decode(input)?.value else {
        FileHandle.standardError.write(Data("learn: stdin is not one RESP reply\n".utf8))
        exit(1)
    }
    printJSON(CommandInfoParser.specs(fromCommandReply: reply).map(describe))
case "getkeys":
    while let line = readLine(strippingNewline: true) {
        if line.isEmpty { continue }
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)),
            let words = object as? [String]
        else {
            printJSON(["error": "expected a JSON array of strings"])
            continue
        }
        printJSON(getKeys(words))
    }
default:
    FileHandle.standardError.write(Data("usage: commandtable-tool dump | learn | getkeys\n".utf8))
    exit(2)
}
