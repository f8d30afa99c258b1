//! Compiled templates and the bounded, expiring caches that hold what exporters
//! announce: templates, sampling rates and boot times.
//!
//! Everything an exporter sends us to keep is bounded, per exporter and in
//! total, so that a flood of templates (or a hostile sender) costs a known
//! amount of memory; entries not refreshed for longer than the expiry go away.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use slab::Slab;

use super::NetflowError;
use super::fields::{Field, Presence, Record, Scalar, VARIABLE_LENGTH, read_unsigned};
use crate::decode::address_octets;

/// How much the decoder keeps of what exporters announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Templates (and, separately, sampling rates) kept per exporter address.
    pub per_exporter: usize,
    /// Templates (and, separately, sampling rates) kept in all.
    pub total: usize,
    /// Seconds after which an entry neither announced again nor used is dropped.
    pub expiry_seconds: u64,
}

impl Default for TemplateLimits {
    /// Generous for real routers (a Cisco with NBAR uses a few dozen templates per
    /// observation domain), small enough that the worst case stays within a few MB.
    fn default() -> Self {
        TemplateLimits {
            per_exporter: 512,
            total: 4096,
            expiry_seconds: 3600,
        }
    }
}

/// Fields allowed in one template: real ones have well under a hundred, and it bounds memory.
pub(crate) const MAX_TEMPLATE_FIELDS: usize = 512;

/// Whether a template describes flows or options (sampling parameters and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateKind {
    Data,
    Options,
}

/// A field as a template announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    pub element: u16,
    pub length: u16,
    /// False for what the agent must not interpret: enterprise-specific IPFIX
    /// elements, NetFlow v9 scope fields (their own number space) and v9 types
    /// beyond the IANA range.
    pub standard: bool,
}

/// A template compiled for decoding: where each value of a record lies.
///
/// A record is a run of fixed-length values, then a variable-length one (IPFIX),
/// then another fixed run, and so on: one [`Segment`] each. Within a segment
/// every value is at an offset known once the template is compiled, so reading
/// a record involves no walk over the fields: the plain unsigned values (most
/// of a flow) are loaded in a loop without any branch on the field or its width,
/// and only the few others are dispatched on. Unused fields cost nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub kind: TemplateKind,
    segments: Box<[Segment]>,
    /// The length of the shortest possible record (variable-length fields count
    /// their 1-byte length): less than this at the end of a set is padding.
    pub min_record_length: usize,
    /// Whether records may state their own sampling rate (a sampling field is in the template).
    pub states_sampling: bool,
    /// The scalars its records have.
    present: Presence,
    /// The fields as announced: an announcement that repeats them (exporters
    /// send their templates again every few datagrams) is not compiled again.
    announced: Box<[FieldSpec]>,
}

/// A fixed-length run of a record's values, and the variable-length value after it, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Segment {
    /// Bytes of the fixed-length values.
    length: usize,
    scalars: Vec<ScalarAt>,
    /// The values other than plain unsigned ones, in template order (the first
    /// specified of repeated address fields wins).
    values: Vec<ValueAt>,
    /// What the variable-length value that ends the segment feeds ([`Field::Skip`]
    /// when nothing); `None` for a record's last segment without one.
    variable: Option<Field>,
}

/// A plain unsigned value in a segment: its offset, and its width (1 to 8
/// bytes) as the shift that brings an 8-byte big-endian load down to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScalarAt {
    offset: u32,
    shift: u8,
    scalar: Scalar,
}

impl ScalarAt {
    fn new(offset: u32, width: u8, scalar: Scalar) -> ScalarAt {
        ScalarAt {
            offset,
            shift: 64 - 8 * width,
            scalar,
        }
    }

    /// Reads the value from `bytes`, the record from this segment's start on.
    /// Most records are followed by others: a big-endian load of 8 bytes,
    /// shifted down to the width, is then one branch-free read whatever the
    /// width; within the last 7 bytes of a set the value is read byte by byte.
    #[inline]
    fn read(self, bytes: &[u8]) -> u64 {
        let offset = self.offset as usize;
        match bytes
            .get(offset..offset + 8)
            .and_then(|eight| <[u8; 8]>::try_from(eight).ok())
        {
            Some(eight) => u64::from_be_bytes(eight) >> self.shift,
            None => {
                let width = usize::from(8 - self.shift / 8);
                bytes.get(offset..offset + width).map_or(0, read_unsigned)
            }
        }
    }
}

/// Any other value in a segment: offset, length and what it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueAt {
    offset: u32,
    length: u16,
    field: Field,
}

impl Template {
    /// Compiles the fields of a template into segments.
    /// Fields repeated in a template are used once, at their first occurrence.
    pub(crate) fn compile(
        kind: TemplateKind,
        fields: &[FieldSpec],
    ) -> Result<Template, NetflowError> {
        if fields.len() > MAX_TEMPLATE_FIELDS {
            return Err(NetflowError::BadTemplate("too many fields"));
        }
        let mut used: Vec<Field> = Vec::with_capacity(fields.len());
        let mut segments = Vec::new();
        let mut segment = Segment::default();
        let mut min_record_length = 0usize;
        for spec in fields.iter().copied() {
            let field = match Field::for_element(spec.element, spec.length) {
                // The first occurrence wins: templates that describe a packet
                // twice (Huawei: outer header, then the tunnelled one) keep one
                // coherent view, the outer one, as tshark shows it.
                field if !spec.standard || (!field.repeatable() && used.contains(&field)) => {
                    Field::Skip
                }
                field => field,
            };
            if field != Field::Skip {
                used.push(field);
            }
            if spec.length == VARIABLE_LENGTH {
                min_record_length += 1;
                segment.variable = Some(field);
                segments.push(std::mem::take(&mut segment));
                continue;
            }
            // At most MAX_TEMPLATE_FIELDS values of under 64 KB: far within 32 bits.
            let offset = u32::try_from(segment.length)
                .map_err(|_| NetflowError::BadTemplate("records too long"))?;
            match field {
                Field::Skip => {}
                // Scalars' shapes accept 1 to 8 bytes only.
                Field::Unsigned(scalar) => {
                    segment
                        .scalars
                        .push(ScalarAt::new(offset, spec.length as u8, scalar))
                }
                field => segment.values.push(ValueAt {
                    offset,
                    length: spec.length,
                    field,
                }),
            }
            segment.length += usize::from(spec.length);
            min_record_length += usize::from(spec.length);
        }
        if min_record_length == 0 {
            return Err(NetflowError::BadTemplate("records of no length"));
        }
        if segment.length > 0 || segments.is_empty() {
            segments.push(segment);
        }
        let present = used.iter().fold(0, |present, field| match field {
            Field::Unsigned(scalar) => present | scalar.bit(),
            _ => present,
        });
        Ok(Template {
            kind,
            present,
            states_sampling: used.iter().any(|field| field.states_sampling()),
            segments: segments.into(),
            min_record_length,
            announced: fields.into(),
        })
    }

    /// Whether this template is the one `fields` announce as `kind`.
    pub(crate) fn is_announced_as(&self, kind: TemplateKind, fields: &[FieldSpec]) -> bool {
        self.kind == kind && *self.announced == *fields
    }

    /// Reads one record at the start of `data` into `record`: the bytes it
    /// takes, or `None` when `data` ends inside the record. One `Record`, from
    /// `Record::default()`, serves all the records of this template in a set
    /// (see [`Record::next_of_same_template`]). `data` runs to the end of the
    /// set: the bytes past the record make most reads a single load.
    #[inline]
    pub(crate) fn read_record<'a>(&self, data: &'a [u8], record: &mut Record<'a>) -> Option<usize> {
        record.next_of_same_template();
        record.set_present(self.present);
        let mut rest = data;
        for segment in &self.segments {
            let (fixed, after) = rest.split_at_checked(segment.length)?;
            for scalar in &segment.scalars {
                record.set_scalar(scalar.scalar, scalar.read(rest));
            }
            for value in &segment.values {
                let offset = value.offset as usize;
                if let Some(bytes) = fixed.get(offset..offset + usize::from(value.length)) {
                    record.set(value.field, bytes);
                }
            }
            rest = after;
            if let Some(field) = segment.variable {
                let (length, after) = read_variable_length(rest)?;
                let (value, after) = after.split_at_checked(length)?;
                record.set(field, value);
                rest = after;
            }
        }
        Some(data.len() - rest.len())
    }
}

/// Reads the length before a variable-length IPFIX value (RFC 7011 §7): one
/// byte, or 255 then two bytes.
fn read_variable_length(data: &[u8]) -> Option<(usize, &[u8])> {
    match data {
        [255, high, low, rest @ ..] => Some((usize::from(u16::from_be_bytes([*high, *low])), rest)),
        [255, ..] => None,
        [length, rest @ ..] => Some((usize::from(*length), rest)),
        [] => None,
    }
}

/// Identifies a template: templates are scoped by exporter and observation domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TemplateKey {
    pub exporter: IpAddr,
    pub domain: u32,
    pub id: u16,
}

/// Identifies a sampling rate: per sampler of an exporter's observation domain,
/// `None` standing for "the latest rate announced in the domain", the fallback
/// for records that name no sampler (or one never announced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SamplerKey {
    pub exporter: IpAddr,
    pub domain: u32,
    pub sampler: Option<u64>,
}

/// Identifies what an exporter states once per observation domain (boot time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainKey {
    pub exporter: IpAddr,
    pub domain: u32,
}

/// The address as one 128-bit word, IPv4 mapped into IPv6, for the keys' `Hash`:
/// they are hashed (SipHash: exporters choose them) once or more per data set,
/// and derived `Hash` feeds the address's variant, length and bytes, and each
/// field, as separate writes; these write the same in two or three words. Equal
/// keys still hash alike (an IPv4 address and its IPv6 mapping collide, which
/// only costs a comparison).
fn address_word(address: IpAddr) -> u128 {
    u128::from_be_bytes(address_octets(address))
}

impl Hash for TemplateKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(address_word(self.exporter));
        state.write_u64((u64::from(self.domain) << 16) | u64::from(self.id));
    }
}

impl Hash for SamplerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(address_word(self.exporter));
        state.write_u64(u64::from(self.domain) | (u64::from(self.sampler.is_some()) << 32));
        state.write_u64(self.sampler.unwrap_or_default());
    }
}

impl Hash for DomainKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(address_word(self.exporter));
        state.write_u32(self.domain);
    }
}

/// A key that belongs to one exporter, for the per-exporter bound.
pub(crate) trait ExporterScoped: Copy + Eq + Hash {
    fn exporter(&self) -> IpAddr;

    /// Where [`BoundedCache`] remembers a lookup of this key (any number: it
    /// is taken modulo the memo's size). Keys looked up by turns should differ.
    fn memo_slot(&self) -> usize {
        0
    }
}

impl ExporterScoped for TemplateKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }

    /// Dual-stack exporters interleave the data sets of their IPv4 and IPv6
    /// templates, numbered in turn (256, 257) or in round steps (softflowd's
    /// 1024 and 2048, which the id modulo the memo's size would put in one
    /// slot). Fibonacci hashing spreads both kinds across the slots (two or
    /// three consecutive ids, and such round ones, never share one).
    fn memo_slot(&self) -> usize {
        (u32::from(self.id).wrapping_mul(0x9E37_79B9) >> (32 - MEMO.trailing_zeros())) as usize
    }
}

impl ExporterScoped for SamplerKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }

    /// A flow's sampler, then the domain's latest rate, may both be looked up
    /// for one set: the latter has a slot of its own.
    fn memo_slot(&self) -> usize {
        self.sampler
            .map_or(0, |id| 1 + (id % (MEMO as u64 - 1)) as usize)
    }
}

impl ExporterScoped for DomainKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }
}

/// A map bounded per exporter and in total, whose entries expire when not refreshed.
///
/// Entries live in a slab, where they keep their slot until removed, so that
/// recent lookups can be remembered by slot: an exporter's datagrams come one
/// after the other and each data set asks for its template and sampling rate,
/// so most lookups are recent ones again, and a hit then costs a key
/// comparison rather than hashing the key (SipHash: exporters choose the keys).
#[derive(Debug)]
pub(crate) struct BoundedCache<K, V> {
    entries: Slab<Entry<K, V>>,
    slots: HashMap<K, usize>,
    per_exporter: HashMap<IpAddr, usize>,
    /// Recent lookups, as the key and the slot of its entry (`None`: there is
    /// none, as for the sampling rates of an exporter that announces none), at
    /// the key's [`ExporterScoped::memo_slot`].
    memo: [Option<(K, Option<usize>)>; MEMO],
    limits: TemplateLimits,
}

/// Lookups a [`BoundedCache`] remembers: a few templates in use at once (a
/// power of two: template ids pick their slot by its top bits).
const MEMO: usize = 8;
const _: () = assert!(MEMO.is_power_of_two());

#[derive(Debug)]
struct Entry<K, V> {
    key: K,
    value: V,
    /// When the entry was last announced or used, in seconds since the Unix epoch.
    seen: u64,
}

impl<K: ExporterScoped, V> BoundedCache<K, V> {
    pub(crate) fn new(limits: TemplateLimits) -> Self {
        BoundedCache {
            entries: Slab::new(),
            slots: HashMap::new(),
            per_exporter: HashMap::new(),
            memo: [None; MEMO],
            limits,
        }
    }

    /// Inserts or replaces; a new key beyond a bound is refused.
    pub(crate) fn insert(&mut self, key: K, value: V, now: u64) -> Result<(), NetflowError> {
        // Exporters announce their templates again and again: a refresh of one
        // in use is found in the memo.
        if let Some(entry) = self
            .lookup(&key)
            .and_then(|slot| self.entries.get_mut(slot))
        {
            entry.value = value;
            entry.seen = now;
            return Ok(());
        }
        let count = self.per_exporter.get(&key.exporter()).copied().unwrap_or(0);
        if count >= self.limits.per_exporter || self.slots.len() >= self.limits.total {
            return Err(NetflowError::TemplateLimit);
        }
        let slot = self.entries.insert(Entry {
            key,
            value,
            seen: now,
        });
        self.slots.insert(key, slot);
        self.memo[key.memo_slot() % MEMO] = Some((key, Some(slot)));
        self.per_exporter.insert(key.exporter(), count + 1);
        Ok(())
    }

    /// Whether `key` is there (without marking it seen).
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// The value, marked as seen at `now`.
    pub(crate) fn get(&mut self, key: &K, now: u64) -> Option<&V> {
        let slot = self.lookup(key)?;
        let entry = self.entries.get_mut(slot)?;
        entry.seen = entry.seen.max(now);
        Some(&entry.value)
    }

    /// The slot of `key`'s entry, from the memo or else from the map; the
    /// answer, found or not, is remembered.
    fn lookup(&mut self, key: &K) -> Option<usize> {
        let memo = &mut self.memo[key.memo_slot() % MEMO];
        match *memo {
            Some((recent, slot)) if recent == *key => slot,
            _ => {
                let slot = self.slots.get(key).copied();
                *memo = Some((*key, slot));
                slot
            }
        }
    }

    /// Forgets one entry.
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.entries.remove(slot);
            forget_one(&mut self.per_exporter, key.exporter());
            forget_slot(&mut self.memo, slot);
        }
    }

    /// Keeps only the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V, u64) -> bool) {
        let BoundedCache {
            entries,
            slots,
            per_exporter,
            memo,
            ..
        } = self;
        entries.retain(|slot, entry| {
            let kept = keep(&entry.key, &entry.value, entry.seen);
            if !kept {
                slots.remove(&entry.key);
                forget_one(per_exporter, entry.key.exporter());
                forget_slot(memo, slot);
            }
            kept
        });
    }

    /// Drops what was not seen for longer than the expiry.
    pub(crate) fn expire(&mut self, now: u64) {
        let expiry = self.limits.expiry_seconds;
        self.retain(|_, _, seen| now.saturating_sub(seen) <= expiry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Forgets the lookups remembered for a slot that no longer holds their entry.
fn forget_slot<K>(memo: &mut [Option<(K, Option<usize>)>], slot: usize) {
    for recent in memo {
        if recent.as_ref().is_some_and(|&(_, kept)| kept == Some(slot)) {
            *recent = None;
        }
    }
}

fn forget_one(per_exporter: &mut HashMap<IpAddr, usize>, exporter: IpAddr) {
    if let Some(count) = per_exporter.get_mut(&exporter) {
        *count -= 1;
        if *count == 0 {
            per_exporter.remove(&exporter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::Scalar;
    use super::*;
    use std::net::Ipv4Addr;

    fn spec(element: u16, length: u16) -> FieldSpec {
        FieldSpec {
            element,
            length,
            standard: true,
        }
    }

    fn key_exporter(exporter: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, exporter))
    }

    fn key(exporter: u8, id: u16) -> TemplateKey {
        TemplateKey {
            exporter: key_exporter(exporter),
            domain: 0,
            id,
        }
    }

    #[test]
    fn values_are_placed_at_their_offsets_and_unused_ones_cost_nothing() {
        let fields = [
            spec(8, 4),
            spec(999, 2),
            spec(998, 3),
            spec(1, 4),
            spec(56, 6),
            spec(997, 0),
        ];
        let template = Template::compile(TemplateKind::Data, &fields).unwrap();
        let segment = Segment {
            length: 19,
            scalars: vec![
                ScalarAt::new(9, 4, Scalar::Bytes),
                ScalarAt::new(13, 6, Scalar::SrcMac),
            ],
            values: vec![ValueAt {
                offset: 0,
                length: 4,
                field: Field::SrcAddr,
            }],
            variable: None,
        };
        assert_eq!(&*template.segments, &[segment]);
        assert_eq!(template.min_record_length, 19);
    }

    #[test]
    fn scalars_read_alike_with_or_without_bytes_after_the_record() {
        let fields = [spec(4, 1), spec(7, 2), spec(56, 6), spec(1, 8)];
        let template = Template::compile(TemplateKind::Data, &fields).unwrap();
        let record: Vec<u8> = (1..=17).collect();
        let mut followed = record.clone();
        followed.extend([0xff; 17]);
        for data in [&record[..], &followed[..]] {
            let mut read = Record::default();
            assert_eq!(template.read_record(data, &mut read), Some(17));
            let mut expected = Record::default();
            expected.set(Field::Unsigned(Scalar::Proto), &record[0..1]);
            expected.set(Field::Unsigned(Scalar::SrcPort), &record[1..3]);
            expected.set(Field::Unsigned(Scalar::SrcMac), &record[3..9]);
            expected.set(Field::Unsigned(Scalar::Bytes), &record[9..17]);
            assert_eq!(read, expected);
        }
    }

    #[test]
    fn templates_without_bytes_or_with_too_many_fields_are_refused() {
        let empty = [spec(8, 0)];
        assert!(Template::compile(TemplateKind::Data, &empty).is_err());
        let huge = vec![spec(1, 4); MAX_TEMPLATE_FIELDS + 1];
        assert!(Template::compile(TemplateKind::Data, &huge).is_err());
    }

    #[test]
    fn variable_length_values_have_one_or_three_length_bytes() {
        let fields = [spec(315, VARIABLE_LENGTH), spec(4, 1)];
        let template = Template::compile(TemplateKind::Data, &fields).unwrap();
        let short = [2, 0xaa, 0xbb, 6, 0xff];
        assert_eq!(
            template.read_record(&short, &mut Record::default()),
            Some(4)
        );
        let mut long = vec![255, 0, 3, 1, 2, 3, 17];
        assert_eq!(template.read_record(&long, &mut Record::default()), Some(7));
        long.truncate(5);
        assert_eq!(template.read_record(&long, &mut Record::default()), None);
        assert_eq!(
            template.read_record(&[255, 0], &mut Record::default()),
            None
        );
    }

    #[test]
    fn cache_is_bounded_per_exporter_and_in_total_and_expires() {
        let limits = TemplateLimits {
            per_exporter: 2,
            total: 3,
            expiry_seconds: 10,
        };
        let mut cache = BoundedCache::new(limits);
        cache.insert(key(1, 256), "a", 100).unwrap();
        cache.insert(key(1, 257), "b", 100).unwrap();
        assert!(cache.insert(key(1, 258), "c", 100).is_err());
        cache.insert(key(1, 257), "replaced", 100).unwrap();
        cache.insert(key(2, 256), "d", 100).unwrap();
        assert!(cache.insert(key(3, 256), "e", 100).is_err());
        assert_eq!(cache.get(&key(1, 257), 105), Some(&"replaced"));
        cache.expire(111);
        assert_eq!(cache.len(), 1, "only the one seen at 105 is left");
        cache.insert(key(1, 258), "c", 111).unwrap();
        cache.insert(key(3, 256), "e", 111).unwrap();
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn sampler_ids_of_any_value_are_remembered_apart_from_the_domain_rate() {
        let mut cache = BoundedCache::new(TemplateLimits::default());
        let sampler = |sampler| SamplerKey {
            exporter: key_exporter(1),
            domain: 0,
            sampler,
        };
        cache.insert(sampler(None), 100, 0).unwrap();
        for id in [0, 6, 7, u64::MAX] {
            assert_eq!(cache.get(&sampler(Some(id)), 0), None);
            assert_eq!(cache.get(&sampler(None), 0), Some(&100));
        }
    }

    #[test]
    fn template_ids_in_turn_or_in_round_steps_are_remembered_apart() {
        let slots = |ids: &[u16]| -> std::collections::HashSet<usize> {
            ids.iter()
                .map(|&id| key(1, id).memo_slot() % MEMO)
                .collect()
        };
        let consecutive: Vec<u16> = (256..256 + MEMO as u16).collect();
        assert_eq!(slots(&consecutive).len(), MEMO);
        assert_eq!(
            slots(&[1024, 2048]).len(),
            2,
            "softflowd's IPv4 and IPv6 templates"
        );
        assert_eq!(slots(&[1024, 1025, 2048, 2049]).len(), 4);
    }

    #[test]
    fn lookups_are_remembered_until_their_entry_goes() {
        let mut cache = BoundedCache::new(TemplateLimits::default());
        cache.insert(key(1, 256), "a", 100).unwrap();
        cache.insert(key(1, 257), "b", 100).unwrap();
        assert_eq!(cache.get(&key(1, 256), 100), Some(&"a"));
        assert_eq!(cache.get(&key(1, 258), 100), None);
        cache.insert(key(1, 258), "was missing", 100).unwrap();
        assert_eq!(cache.get(&key(1, 258), 100), Some(&"was missing"));
        cache.insert(key(1, 256), "replaced", 100).unwrap();
        assert_eq!(cache.get(&key(1, 256), 100), Some(&"replaced"));
        cache.remove(&key(1, 256));
        cache.insert(key(2, 256), "reuses the slot", 100).unwrap();
        assert_eq!(cache.get(&key(1, 256), 100), None);
        assert_eq!(cache.get(&key(2, 256), 100), Some(&"reuses the slot"));
        cache.retain(|key, _, _| key.exporter != key_exporter(2));
        cache.insert(key(3, 256), "again", 100).unwrap();
        assert_eq!(cache.get(&key(2, 256), 100), None);
        // Hits refresh the entry as lookups do: it outlives the one not used.
        assert_eq!(cache.get(&key(3, 256), 105), Some(&"again"));
        assert_eq!(cache.get(&key(3, 256), 108), Some(&"again"));
        cache.expire(100 + TemplateLimits::default().expiry_seconds + 1);
        assert_eq!(cache.get(&key(1, 257), 0), None);
        assert_eq!(cache.get(&key(3, 256), 0), Some(&"again"));
    }
}
