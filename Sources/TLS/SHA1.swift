import COpenSSL

/// SHA1 as Redis names scripts by it (`EVALSHA`, `SCRIPT LOAD`'s reply):
/// 40 lowercase hex digits. OpenSSL's, as it is linked for TLS anyway.
public func sha1Hex(_ bytes: UnsafeRawBufferPointer) -> String {
    var digest = [UInt8](repeating: 0, count: 20)
    var length: UInt32 = 0
    let ok = digest.withUnsafeMutableBufferPointer { out in
        EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress, &length, EVP_sha1(), nil)
    }
    precondition(ok == 1 && length == 20, "OpenSSL's SHA1 failed")
    let hex = Array("0123456789abcdef".utf8)
    var text = [UInt8]()
    text.reserveCapacity(40)
    for byte in digest {
        text.append(hex[Int(byte >> 4)])
        text.append(hex[Int(byte & 15)])
    }
    return String(decoding: text, as: UTF8.self)
}
