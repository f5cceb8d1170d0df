import ClusterTopology

/// Groups a split command's keys by hash slot (see `Worker.split`): parts in
/// the order their first key comes, each part's keys in the client's order.
/// A worker keeps one and reuses its arrays, so grouping a cross-slot `MGET`
/// allocates nothing once warm (a dictionary and an array per part did).
struct SlotGrouping {
    /// The groups of one command; valid until the next `group`.
    struct Groups {
        /// Each part's slot.
        let slots: [Int]
        /// Argument indices of the keys, part after part.
        fileprivate let orderedKeys: [Int]
        /// Where each part's keys start in `orderedKeys` (one more entry: the end).
        fileprivate let partStart: [Int]
        /// For each key, in the client's order: its part and its index there.
        fileprivate let partOfKey: [Int]
        fileprivate let indexInPart: [Int]

        /// The argument indices of part `part`'s keys, in the client's order.
        func keys(ofPart part: Int) -> ArraySlice<Int> {
            orderedKeys[partStart[part]..<partStart[part + 1]]
        }

        /// For `MergeRule.keyOrder`: where each key's value is among the parts' replies.
        func positions() -> [(part: Int, index: Int)] {
            var positions: [(part: Int, index: Int)] = []
            positions.reserveCapacity(partOfKey.count)
            for key in partOfKey.indices { positions.append((partOfKey[key], indexInPart[key])) }
            return positions
        }
    }

    private var slots: [Int] = []
    private var orderedKeys: [Int] = []
    private var partStart: [Int] = []
    private var partOfKey: [Int] = []
    private var indexInPart: [Int] = []
    /// Where each part's next key goes in `orderedKeys`, while placing them.
    private var nextOfPart: [Int] = []
    /// Per slot: its part in the current command, valid where `stamp` equals
    /// `generation` (so nothing is cleared between commands).
    private var partOfSlot: [Int32] = []
    private var stamp: [UInt32] = []
    private var generation: UInt32 = 0

    /// Groups the keys at argument indices `keys` by `slotOf` (0 ..< 16384).
    mutating func group(_ keys: [Int], slotOf: (Int) -> Int) -> Groups {
        if stamp.isEmpty {
            partOfSlot = Array(repeating: 0, count: clusterSlotCount)
            stamp = Array(repeating: 0, count: clusterSlotCount)
        }
        generation &+= 1
        if generation == 0 {
            for slot in stamp.indices { stamp[slot] = 0 }
            generation = 1
        }
        slots.removeAll(keepingCapacity: true)
        partStart.removeAll(keepingCapacity: true)
        partOfKey.removeAll(keepingCapacity: true)
        // Parts, and how many keys each has (in partStart for now).
        for argument in keys {
            let slot = slotOf(argument)
            let part: Int
            if stamp[slot] == generation {
                part = Int(partOfSlot[slot])
            } else {
                stamp[slot] = generation
                part = slots.count
                partOfSlot[slot] = Int32(part)
                slots.append(slot)
                partStart.append(0)
            }
            partOfKey.append(part)
            partStart[part] += 1
        }
        // Counts to start offsets; the running offsets then place each key.
        var total = 0
        for part in partStart.indices {
            let count = partStart[part]
            partStart[part] = total
            total += count
        }
        partStart.append(total)
        orderedKeys.removeAll(keepingCapacity: true)
        orderedKeys.append(contentsOf: repeatElement(0, count: keys.count))
        indexInPart.removeAll(keepingCapacity: true)
        nextOfPart.removeAll(keepingCapacity: true)
        nextOfPart.append(contentsOf: partStart)
        for (key, argument) in keys.enumerated() {
            let part = partOfKey[key]
            orderedKeys[nextOfPart[part]] = argument
            indexInPart.append(nextOfPart[part] - partStart[part])
            nextOfPart[part] += 1
        }
        return Groups(
            slots: slots, orderedKeys: orderedKeys, partStart: partStart, partOfKey: partOfKey, indexInPart: indexInPart)
    }
}
