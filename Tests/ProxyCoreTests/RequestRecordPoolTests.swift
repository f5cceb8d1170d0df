import Testing

@testable import ProxyCore

@Suite struct RequestRecordPoolTests {
    /// Takes `count` records and gives them all back.
    func burst(_ pool: inout RequestRecordPool, _ count: Int) {
        let taken = (0..<count).map { _ in pool.acquire() }
        for record in taken { pool.release(record) }
    }

    @Test func keepsWhatTheBusiestMomentNeeded() {
        var pool = RequestRecordPool()
        burst(&pool, 500)
        // The burst happened since the last shrink: its records stay for now.
        #expect(pool.shrink(keeping: 64) == 0)
        #expect(pool.idleCount == 500)
        // A quiet interval after it: all but the floor go.
        #expect(pool.shrink(keeping: 64) == 436)
        #expect(pool.idleCount == 64)
    }

    @Test func steadyTrafficKeepsItsRecords() {
        var pool = RequestRecordPool()
        burst(&pool, 300)
        for _ in 0..<5 {
            // 300 in flight at the peak of every interval, 100 at the sweep.
            burst(&pool, 300)
            let inFlight = (0..<100).map { _ in pool.acquire() }
            #expect(pool.shrink(keeping: 64) == 0)
            for record in inFlight { pool.release(record) }
        }
        #expect(pool.idleCount == 300)
    }

    @Test func boundedByItsLimit() {
        var pool = RequestRecordPool(limit: 100)
        burst(&pool, 1000)
        #expect(pool.idleCount == 100)
        _ = pool.shrink(keeping: 10)
        #expect(pool.shrink(keeping: 10) == 90)
    }
}
