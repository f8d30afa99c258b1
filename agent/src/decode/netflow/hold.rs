//! Data sets that arrive before their template, held briefly (optional).
//!
//! An exporter that has just started, or whose template datagram was reordered
//! or sent after its data, loses those records unless something waits for the
//! template. With `hold_early_data_seconds` set, a data set whose template is
//! unknown is copied here, and decoded as soon as a template set of the same
//! exporter makes it known (with the context of the datagram it came in: its
//! export time, sequence number, receive time). What waits is bounded per
//! exporter and in bytes overall; a set beyond either bound, or still waiting
//! after the hold time, is dropped. Every step is counted: held, decoded
//! late, dropped.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::fields::ExportContext;
use super::template::TemplateKey;
use crate::decode::DecodeCounters;

/// Sets one exporter may have waiting: a router sends a handful of data sets
/// per template period, so a few dozen cover a restart.
pub(crate) const MAX_HELD_PER_EXPORTER: usize = 32;
/// Bytes of sets waiting in all, across exporters.
pub(crate) const MAX_HELD_BYTES: usize = 4 << 20;

/// One data set waiting for its template.
#[derive(Debug)]
pub(crate) struct HeldSet {
    pub key: TemplateKey,
    pub records: Vec<u8>,
    pub export: ExportContext,
    /// When it was received (seconds): the hold time counts from here.
    pub received: u64,
}

/// The waiting sets, oldest first.
#[derive(Debug, Default)]
pub(crate) struct EarlyData {
    sets: VecDeque<HeldSet>,
    bytes: usize,
}

impl EarlyData {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Holds a copy of a set whose template is unknown, unless a bound is reached.
    pub fn hold(
        &mut self,
        key: TemplateKey,
        records: &[u8],
        export: &ExportContext,
        received: u64,
        counters: &mut DecodeCounters,
    ) {
        let waiting = self.waiting_for(key.exporter);
        if waiting >= MAX_HELD_PER_EXPORTER || self.bytes + records.len() > MAX_HELD_BYTES {
            counters.early_sets_dropped += 1;
            return;
        }
        self.bytes += records.len();
        self.sets.push_back(HeldSet {
            key,
            records: records.to_vec(),
            export: *export,
            received,
        });
        counters.early_sets_held += 1;
    }

    fn waiting_for(&self, exporter: IpAddr) -> usize {
        self.sets
            .iter()
            .filter(|set| set.key.exporter == exporter)
            .count()
    }

    /// Drops the sets that waited longer than `hold_seconds` at `now`.
    pub fn expire(&mut self, now: u64, hold_seconds: u64, counters: &mut DecodeCounters) {
        let mut dropped = 0;
        let mut bytes = 0;
        self.sets.retain(|set| {
            let keep = now <= set.received.saturating_add(hold_seconds);
            if !keep {
                dropped += 1;
                bytes += set.records.len();
            }
            keep
        });
        self.bytes -= bytes;
        counters.early_sets_dropped += dropped;
    }

    /// Takes out, oldest first, the sets whose template `known` now says is there.
    pub fn take_ready(&mut self, mut known: impl FnMut(&TemplateKey) -> bool) -> Vec<HeldSet> {
        let mut ready = Vec::new();
        let mut waiting = VecDeque::with_capacity(self.sets.len());
        for set in self.sets.drain(..) {
            if known(&set.key) {
                self.bytes -= set.records.len();
                ready.push(set);
            } else {
                waiting.push_back(set);
            }
        }
        self.sets = waiting;
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(exporter: u8, id: u16) -> TemplateKey {
        TemplateKey {
            exporter: IpAddr::from([192, 0, 2, exporter]),
            domain: 0,
            id,
        }
    }

    fn export() -> ExportContext {
        ExportContext {
            exporter: [0; 16],
            observation_domain: 0,
            sequence_number: 7,
            export_millis: 0,
            boot_millis: None,
            received: 100,
        }
    }

    #[test]
    fn sets_wait_until_their_template_is_known() {
        let mut early = EarlyData::default();
        let mut counters = DecodeCounters::default();
        early.hold(key(1, 256), &[1, 2], &export(), 100, &mut counters);
        early.hold(key(1, 257), &[3], &export(), 100, &mut counters);
        early.hold(key(1, 256), &[4], &export(), 101, &mut counters);
        assert_eq!(counters.early_sets_held, 3);
        let ready = early.take_ready(|k| k.id == 256);
        let records: Vec<&[u8]> = ready.iter().map(|s| s.records.as_slice()).collect();
        assert_eq!(records, [&[1u8, 2][..], &[4][..]], "oldest first");
        assert_eq!(early.bytes, 1);
        assert!(early.take_ready(|k| k.id == 256).is_empty());
        assert_eq!(early.take_ready(|_| true).len(), 1);
        assert!(early.is_empty());
        assert_eq!(early.bytes, 0);
    }

    #[test]
    fn holding_is_bounded_per_exporter_and_in_bytes() {
        let mut early = EarlyData::default();
        let mut counters = DecodeCounters::default();
        for _ in 0..MAX_HELD_PER_EXPORTER + 3 {
            early.hold(key(1, 256), &[0; 10], &export(), 100, &mut counters);
        }
        assert_eq!(counters.early_sets_held, MAX_HELD_PER_EXPORTER as u64);
        assert_eq!(counters.early_sets_dropped, 3);
        early.hold(key(2, 256), &[0; 10], &export(), 100, &mut counters);
        assert_eq!(counters.early_sets_held, MAX_HELD_PER_EXPORTER as u64 + 1);

        let big = vec![0u8; MAX_HELD_BYTES];
        early.hold(key(3, 256), &big, &export(), 100, &mut counters);
        assert_eq!(counters.early_sets_dropped, 4, "over the byte bound");
    }

    #[test]
    fn sets_expire_after_the_hold_time() {
        let mut early = EarlyData::default();
        let mut counters = DecodeCounters::default();
        early.hold(key(1, 256), &[1], &export(), 100, &mut counters);
        early.hold(key(1, 256), &[2], &export(), 103, &mut counters);
        early.expire(102, 2, &mut counters);
        assert_eq!(counters.early_sets_dropped, 0);
        early.expire(103, 2, &mut counters);
        assert_eq!(counters.early_sets_dropped, 1);
        let ready = early.take_ready(|_| true);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].records, [2]);
    }
}
