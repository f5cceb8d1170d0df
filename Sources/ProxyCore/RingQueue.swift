/// A FIFO over a power-of-two ring that keeps its storage: the in-flight
/// queues of backend connections and the reply-order queues of client
/// sessions push and pop on every request without allocating.
///
/// The ring is raw memory that elements are moved into and out of, so a push
/// and a pop cost no reference counting beyond the element's own +1, where an
/// `[Element?]` ring retained, released and checked uniqueness on both.
/// Noncopyable: the queue owns its memory and frees it with the last element.
struct RingQueue<Element>: ~Copyable {
    private var storage: UnsafeMutablePointer<Element>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(capacity: Int = 16) {
        var size = 1
        while size < capacity { size <<= 1 }
        self.capacity = size
        storage = UnsafeMutablePointer<Element>.allocate(capacity: size)
    }

    deinit {
        for i in 0..<count { (storage + ((head + i) & (capacity - 1))).deinitialize(count: 1) }
        storage.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    var first: Element? { count == 0 ? nil : storage[head] }

    /// The element `offset` places behind the oldest (0 is the oldest).
    subscript(offset: Int) -> Element {
        precondition(offset >= 0 && offset < count)
        return storage[(head + offset) & (capacity - 1)]
    }

    mutating func append(_ element: consuming Element) {
        if count == capacity { grow() }
        (storage + ((head + count) & (capacity - 1))).initialize(to: element)
        count += 1
    }

    mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let element = (storage + head).move()
        head = (head + 1) & (capacity - 1)
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
        let bigger = UnsafeMutablePointer<Element>.allocate(capacity: capacity * 2)
        // The ring's two runs, oldest first, to the front of the new storage.
        let firstRun = min(count, capacity - head)
        bigger.moveInitialize(from: storage + head, count: firstRun)
        (bigger + firstRun).moveInitialize(from: storage, count: count - firstRun)
        storage.deallocate()
        storage = bigger
        capacity *= 2
        head = 0
    }
}
