/// A FIFO over a power-of-two ring that keeps its storage: the in-flight
/// queues of backend connections and the reply-order queues of client
/// sessions push and pop on every request without allocating.
struct RingQueue<Element> {
    private var storage: [Element?]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int = 16) {
        var size = 1
        while size < capacity { size <<= 1 }
        storage = Array(repeating: nil, count: size)
    }

    var isEmpty: Bool { count == 0 }

    var first: Element? { count == 0 ? nil : storage[head] }

    /// The element `offset` places behind the oldest (0 is the oldest).
    subscript(offset: Int) -> Element {
        precondition(offset >= 0 && offset < count)
        return storage[(head + offset) & (storage.count - 1)]!
    }

    mutating func append(_ element: Element) {
        if count == storage.count { grow() }
        storage[(head + count) & (storage.count - 1)] = element
        count += 1
    }

    mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let element = storage[head]
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
        return element
    }

    /// Removes and returns everything, oldest first (failure paths only).
    mutating func removeAll() -> [Element] {
        var out: [Element] = []
        out.reserveCapacity(count)
        while let element = popFirst() { out.append(element) }
        head = 0
        return out
    }

    private mutating func grow() {
        var bigger = [Element?](repeating: nil, count: storage.count * 2)
        for i in 0..<count { bigger[i] = storage[(head + i) & (storage.count - 1)] }
        storage = bigger
        head = 0
    }
}
