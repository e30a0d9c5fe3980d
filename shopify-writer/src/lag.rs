//! The consumer's context: turns librdkafka's statistics into the writer's lag gauge.

use prometheus::IntGaugeVec;
use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;

/// Exports, per partition of the commands topic, how many commands wait for the writer.
pub struct LagContext {
    /// The topic read (`topics.shopify_commands`).
    pub topic: String,
    /// `tillstream_shopify_writer_consumer_lag{partition}`.
    pub gauge: IntGaugeVec,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, p) in &topic.partitions {
            // Partition -1 is librdkafka's internal bucket; negative offsets are "not known".
            // The end is the last stable offset (what read_committed can reach); the position
            // is the next offset the writer will see (librdkafka moves it past the transaction
            // markers the processor's commits leave, which a committed offset would count as
            // a command forever), else the committed offset, else the log start (a new group
            // starts at the earliest record, so its whole backlog counts).
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            let from = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|o| *o >= 0);
            if let (true, Some(from)) = (*partition >= 0 && end >= 0, from) {
                self.gauge
                    .with_label_values(&[&partition.to_string()])
                    .set((end - from).max(0));
            }
        }
    }
}

impl ConsumerContext for LagContext {}
