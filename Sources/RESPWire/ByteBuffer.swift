#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A growable byte buffer with separate read and write indices, used for every
/// socket's input and output. One allocation per connection; bytes are consumed
/// from the front and appended at the back, and the readable region is kept
/// contiguous so parsers can work on it in place.
///
/// Storage is owned by the buffer; pointers handed out by `withReadable` and
/// `writableTail` are valid only until the next mutating call. It comes from
/// malloc, so growing a big buffer is a realloc: for the big allocations
/// glibc serves with mmap that is mremap, no copy and no moment with the
/// old and the new storage both resident.
public final class ByteBuffer {
    @usableFromInline var storage: UnsafeMutableRawPointer
    @usableFromInline var capacity: Int
    @usableFromInline var readIndex = 0
    @usableFromInline var writeIndex = 0

    public init(capacity: Int = 16 * 1024) {
        self.capacity = max(capacity, 64)
        storage = ByteBuffer.allocate(self.capacity)
    }

    deinit { free(storage) }

    @usableFromInline static func allocate(_ count: Int) -> UnsafeMutableRawPointer {
        guard let storage = malloc(count) else { fatalError("out of memory allocating \(count) bytes") }
        return storage
    }

    @inlinable public var readableBytes: Int { writeIndex - readIndex }
    @inlinable public var isEmpty: Bool { writeIndex == readIndex }
    public var allocatedCapacity: Int { capacity }

    /// The readable bytes, valid until the next mutation.
    @inlinable public var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + readIndex, count: writeIndex - readIndex)
    }

    @inlinable public func consume(_ count: Int) {
        readIndex += count
        if readIndex == writeIndex {
            readIndex = 0
            writeIndex = 0
        }
    }

    public func clear() {
        readIndex = 0
        writeIndex = 0
    }

    /// Makes room for at least `count` more bytes at the tail: first by moving
    /// the readable bytes to the front, then by doubling the allocation.
    @inlinable @inline(__always)
    public func reserveWritable(_ count: Int) {
        if capacity - writeIndex >= count { return }
        makeRoom(count)
    }

    @usableFromInline func makeRoom(_ count: Int) {
        let live = writeIndex - readIndex
        if readIndex > 0 && capacity - live >= count && readIndex >= live {
            storage.copyMemory(from: storage + readIndex, byteCount: live)
            readIndex = 0
            writeIndex = live
            return
        }
        var newCapacity = capacity
        while newCapacity - live < count { newCapacity *= 2 }
        if readIndex == 0 {
            guard let grown = realloc(storage, newCapacity) else {
                fatalError("out of memory growing a buffer to \(newCapacity) bytes")
            }
            storage = grown
            capacity = newCapacity
            return
        }
        let newStorage = ByteBuffer.allocate(newCapacity)
        newStorage.copyMemory(from: storage + readIndex, byteCount: live)
        free(storage)
        storage = newStorage
        capacity = newCapacity
        readIndex = 0
        writeIndex = live
    }

    /// Releases a large allocation once the buffer is drained, so one big value
    /// does not pin memory for the connection's whole life.
    public func shrinkIfIdle(above limit: Int, to size: Int) {
        guard capacity > limit, readIndex == writeIndex else { return }
        free(storage)
        capacity = size
        storage = ByteBuffer.allocate(size)
        readIndex = 0
        writeIndex = 0
    }

    /// The free tail for a `read(2)`; call `commitWritten` with what was filled.
    @inlinable public var writableTail: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: storage + writeIndex, count: capacity - writeIndex)
    }

    @inlinable public func commitWritten(_ count: Int) { writeIndex += count }

    @inlinable public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserveWritable(bytes.count)
        (storage + writeIndex).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writeIndex += bytes.count
    }

    @inlinable public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    @inlinable public func append(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { append($0) }
    }

    @inlinable public func append(_ string: StaticString) {
        append(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    @inlinable public func append(byte: UInt8) {
        reserveWritable(1)
        storage.storeBytes(of: byte, toByteOffset: writeIndex, as: UInt8.self)
        writeIndex += 1
    }

    /// Appends the decimal digits of `value` without going through `String`.
    public func appendDecimal(_ value: Int) {
        reserveWritable(20)
        if value >= 0 && value < 100 {
            // Most lengths and counts in RESP: one or two digits, written directly.
            if value >= 10 {
                storage.storeBytes(of: UInt8(truncatingIfNeeded: value / 10) + 48, toByteOffset: writeIndex, as: UInt8.self)
                writeIndex += 1
            }
            storage.storeBytes(of: UInt8(truncatingIfNeeded: value % 10) + 48, toByteOffset: writeIndex, as: UInt8.self)
            writeIndex += 1
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch
        var magnitude = value.magnitude
        var count = 0
        withUnsafeMutableBytes(of: &digits) { scratch in
            repeat {
                scratch[23 - count] = UInt8(truncatingIfNeeded: magnitude % 10) + 48
                magnitude /= 10
                count += 1
            } while magnitude > 0
            if value < 0 {
                scratch[23 - count] = UInt8(ascii: "-")
                count += 1
            }
            (storage + writeIndex).copyMemory(from: scratch.baseAddress! + 24 - count, byteCount: count)
        }
        writeIndex += count
    }

    /// Trades storage and contents with `other`: a big buffer changes hands
    /// without a copy.
    public func swapContents(with other: ByteBuffer) {
        guard other !== self else { return }
        swap(&storage, &other.storage)
        swap(&capacity, &other.capacity)
        swap(&readIndex, &other.readIndex)
        swap(&writeIndex, &other.writeIndex)
    }

    /// Keeps the first `count` readable bytes and drops the rest.
    public func keepReadable(_ count: Int) {
        precondition(count >= 0 && count <= readableBytes)
        writeIndex = readIndex + count
    }

    /// A copy of the readable bytes (tests and slow paths only).
    public func readableArray() -> [UInt8] { Array(readable) }
}

extension Array {
    /// Empties the array and keeps its storage. `removeAll(keepingCapacity:)`
    /// goes through the generic `replaceSubrange`, about 60 instructions even
    /// for one element; the hot path clears a few short arrays per request.
    @inlinable @inline(__always)
    public mutating func clearKeepingCapacity() {
        while !isEmpty { removeLast() }
    }
}
