import CommandTable

#if canImport(Glibc)
    import Glibc
#endif

/// `/metrics` in Prometheus' text exposition format: the workers' published
/// counters summed at scrape time. Commands never called are left out.
enum MetricsExposition {
    static func text(_ shared: SharedState) -> String {
        let workers = shared.workerMetrics
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: String, _ value: String) {
            out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
        }
        func sample(_ name: String, _ labels: String, _ value: Int) { sample(name, labels, String(value)) }
        func sample(_ name: String, _ labels: String, _ value: Double) { sample(name, labels, String(value)) }
        func sample(_ name: String, _ value: Int) { sample(name, "", String(value)) }
        func total(_ field: KeyPath<WorkerCounters, Int>) -> Int { workers.reduce(0) { $0 + $1.counters[keyPath: field] } }

        family("slotproxy_connected_clients", "gauge", "Client connections open now.")
        sample("slotproxy_connected_clients", Int(shared.connectedClients))
        family("slotproxy_blocked_clients", "gauge", "Clients waiting on a blocking command (BLPOP, XREAD BLOCK ...).")
        sample("slotproxy_blocked_clients", workers.reduce(0) { $0 + $1.blockedClients })
        family("slotproxy_rejected_connections_total", "counter", "Clients turned away at maxclients.")
        sample("slotproxy_rejected_connections_total", total(\.rejectedConnections))
        family("slotproxy_workers", "gauge", "Event-loop threads.")
        sample("slotproxy_workers", workers.count)

        let names = CommandNames.bySlot
        let slotCount = workers.map(\.calls.count).max() ?? 0
        let bucketCount = WorkerMetrics.bucketCount
        var calls = [Int](repeating: 0, count: slotCount)
        var errors = calls
        var sums = calls
        var buckets = [Int](repeating: 0, count: slotCount * bucketCount)
        for worker in workers {
            for i in 0..<min(slotCount, worker.calls.count) {
                calls[i] += worker.calls[i]
                errors[i] += worker.errors[i]
                sums[i] += worker.latencySumMicros[i]
            }
            for i in 0..<min(buckets.count, worker.latencyBuckets.count) { buckets[i] += worker.latencyBuckets[i] }
        }
        let used = (0..<slotCount).filter { calls[$0] > 0 || errors[$0] > 0 }
        family("slotproxy_commands_total", "counter", "Commands received, by command and by whether the reply was an error.")
        for i in used {
            let command = label(names[i])
            sample("slotproxy_commands_total", "command=\"\(command)\",result=\"ok\"", max(0, calls[i] - errors[i]))
            sample("slotproxy_commands_total", "command=\"\(command)\",result=\"error\"", errors[i])
        }
        family(
            "slotproxy_command_duration_seconds", "histogram",
            "Time from reading a request to its reply being queued for the client, by command (requests sent to nodes).")
        for i in used {
            let command = label(names[i])
            var cumulative = 0
            for (b, bound) in WorkerMetrics.latencyBucketsMicros.enumerated() {
                cumulative += buckets[i * bucketCount + b]
                sample("slotproxy_command_duration_seconds_bucket", "command=\"\(command)\",le=\"\(Double(bound) / 1e6)\"", cumulative)
            }
            cumulative += buckets[i * bucketCount + bucketCount - 1]
            sample("slotproxy_command_duration_seconds_bucket", "command=\"\(command)\",le=\"+Inf\"", cumulative)
            sample("slotproxy_command_duration_seconds_sum", "command=\"\(command)\"", Double(sums[i]) / 1e6)
            sample("slotproxy_command_duration_seconds_count", "command=\"\(command)\"", cumulative)
        }

        family("slotproxy_client_bytes_received_total", "counter", "Bytes read from clients.")
        sample("slotproxy_client_bytes_received_total", total(\.bytesIn))
        family("slotproxy_client_bytes_sent_total", "counter", "Bytes written to clients.")
        sample("slotproxy_client_bytes_sent_total", total(\.bytesOut))

        let nodes = NodeTotals.sum(workers)
        let addresses = nodes.keys.sorted()
        family("slotproxy_backend_requests_total", "counter", "Requests sent to each cluster node over shared connections.")
        for address in addresses { sample("slotproxy_backend_requests_total", "node=\"\(label(address))\"", nodes[address]!.requests) }
        family("slotproxy_backend_errors_total", "counter", "Error replies from each cluster node.")
        for address in addresses { sample("slotproxy_backend_errors_total", "node=\"\(label(address))\"", nodes[address]!.errors) }
        family(
            "slotproxy_backend_latency_seconds_total", "counter",
            "Sum of the time each node took to reply (loop clock, millisecond resolution).")
        for address in addresses {
            sample("slotproxy_backend_latency_seconds_total", "node=\"\(label(address))\"", Double(nodes[address]!.latencyMsTotal) / 1000)
        }

        // Worker 0 keeps a connection to every master: its view of who is
        // down is the one kept current; other workers add nodes it has none to.
        var health: [String: (isMaster: Bool, isDown: Bool)] = [:]
        for worker in workers {
            for node in worker.nodes where health[node.address] == nil {
                health[node.address] = (node.isMaster, node.isDown)
            }
        }
        family(
            "slotproxy_node_up", "gauge",
            "1 while the proxy reaches the node, 0 while it is marked down (its last connection failed).")
        for address in health.keys.sorted() {
            let node = health[address]!
            sample(
                "slotproxy_node_up", "node=\"\(label(address))\",role=\"\(node.isMaster ? "master" : "replica")\"",
                node.isDown ? 0 : 1)
        }
        family("slotproxy_cluster_masters", "gauge", "Masters in the proxy's slot map.")
        sample("slotproxy_cluster_masters", workers.first?.masters ?? 0)
        family("slotproxy_cluster_slots_covered", "gauge", "Hash slots (of 16384) the proxy's slot map assigns to a master.")
        sample("slotproxy_cluster_slots_covered", workers.first?.slotsCovered ?? 0)
        family("slotproxy_requests_held", "gauge", "Requests waiting now for a reachable master (failover-timeout-ms).")
        sample("slotproxy_requests_held", workers.reduce(0) { $0 + $1.heldRequests })

        family("slotproxy_redirects_total", "counter", "MOVED and ASK redirects followed.")
        sample("slotproxy_redirects_total", "kind=\"moved\"", total(\.redirectsMoved))
        sample("slotproxy_redirects_total", "kind=\"ask\"", total(\.redirectsAsk))
        family("slotproxy_retries_total", "counter", "Requests retried after TRYAGAIN, LOADING, CLUSTERDOWN or MASTERDOWN.")
        sample("slotproxy_retries_total", total(\.retries))
        family("slotproxy_failover_waits_total", "counter", "Requests held for want of a reachable master.")
        sample("slotproxy_failover_waits_total", total(\.failoverWaits))
        family("slotproxy_topology_refreshes_total", "counter", "Slot map refreshes run.")
        sample("slotproxy_topology_refreshes_total", shared.topologyRefreshes)
        family("slotproxy_topology_epoch", "gauge", "Slot maps published to the workers so far.")
        sample("slotproxy_topology_epoch", shared.topologyEpoch)
        family("slotproxy_ready", "gauge", "1 when /readyz answers 200.")
        sample("slotproxy_ready", workers.allSatisfy(\.ready) ? 1 : 0)
        family("slotproxy_resident_memory_bytes", "gauge", "Resident set size of the process.")
        sample("slotproxy_resident_memory_bytes", residentBytes())
        return out
    }

    /// A label value with `\`, `"` and newlines escaped.
    private static func label(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }

    /// RSS from /proc/self/statm (pages).
    private static func residentBytes() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var size = 0
        var resident = 0
        guard withUnsafeMutablePointer(to: &size, { s in
            withUnsafeMutablePointer(to: &resident) { r in
                withVaList([s, r]) { vfscanf(file, "%ld %ld", $0) }
            }
        }) == 2 else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
