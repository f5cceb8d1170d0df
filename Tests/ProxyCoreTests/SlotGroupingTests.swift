import Testing

@testable import ProxyCore

@Suite struct SlotGroupingTests {
    @Test func groupsKeysBySlotInTheClientsOrder() {
        var grouping = SlotGrouping()
        // Arguments 1...5 with slots 7, 3, 7, 9, 3.
        let slotOfArgument = [1: 7, 2: 3, 3: 7, 4: 9, 5: 3]
        let groups = grouping.group([1, 2, 3, 4, 5]) { slotOfArgument[$0]! }
        #expect(groups.slots == [7, 3, 9])
        #expect(Array(groups.keys(ofPart: 0)) == [1, 3])
        #expect(Array(groups.keys(ofPart: 1)) == [2, 5])
        #expect(Array(groups.keys(ofPart: 2)) == [4])
        #expect(groups.positions().map { [$0.part, $0.index] } == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1]])
    }

    @Test func aSecondCommandSeesNothingOfTheFirst() {
        var grouping = SlotGrouping()
        _ = grouping.group([1, 2]) { $0 == 1 ? 100 : 200 }
        // Slot 200 was part 1 before; now it comes first.
        let groups = grouping.group([4, 6, 8]) { $0 == 4 ? 200 : 16383 }
        #expect(groups.slots == [200, 16383])
        #expect(Array(groups.keys(ofPart: 0)) == [4])
        #expect(Array(groups.keys(ofPart: 1)) == [6, 8])
    }

    @Test func groupsStayValidWhileTheNextCommandIsGrouped() {
        var grouping = SlotGrouping()
        let first = grouping.group([1, 2]) { $0 == 1 ? 5 : 6 }
        let second = grouping.group([3]) { _ in 9 }
        #expect(first.slots == [5, 6])
        #expect(Array(first.keys(ofPart: 1)) == [2])
        #expect(second.slots == [9])
    }
}
