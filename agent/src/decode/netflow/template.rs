//! Compiled templates and the bounded, expiring caches that hold what exporters
//! announce: templates, sampling rates and boot times.
//!
//! Everything an exporter sends us to keep is bounded, per exporter and in
//! total, so that a flood of templates (or a hostile sender) costs a known
//! amount of memory; entries not refreshed for longer than the expiry go away.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use super::NetflowError;
use super::fields::{Field, Record, Step, VARIABLE_LENGTH};
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

/// A template compiled for decoding: the steps to walk over each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub kind: TemplateKind,
    pub steps: Box<[Step]>,
    /// The length of the shortest possible record (variable-length fields count
    /// their 1-byte length): less than this at the end of a set is padding.
    pub min_record_length: usize,
    /// Whether records may state their own sampling rate (a sampling field is in the template).
    pub states_sampling: bool,
}

impl Template {
    /// Compiles the fields of a template, merging runs of unused fixed-length fields into one skip.
    /// Fields repeated in a template are used once, at their first occurrence.
    pub(crate) fn compile(
        kind: TemplateKind,
        fields: &[FieldSpec],
    ) -> Result<Template, NetflowError> {
        if fields.len() > MAX_TEMPLATE_FIELDS {
            return Err(NetflowError::BadTemplate("too many fields"));
        }
        // (field, length) pairs first: runs of skipped fields merge before the steps are chosen.
        let mut values: Vec<(Field, u16)> = Vec::with_capacity(fields.len());
        let mut min_record_length = 0usize;
        for spec in fields.iter().copied() {
            let field = match Field::for_element(spec.element, spec.length) {
                // The first occurrence wins: templates that describe a packet
                // twice (Huawei: outer header, then the tunnelled one) keep one
                // coherent view, the outer one, as tshark shows it.
                field
                    if !spec.standard
                        || (!field.repeatable()
                            && values.iter().any(|&(used, _)| used == field)) =>
                {
                    Field::Skip
                }
                field => field,
            };
            min_record_length += if spec.length == VARIABLE_LENGTH {
                1
            } else {
                usize::from(spec.length)
            };
            if spec.length == 0 {
                continue;
            }
            match values.last_mut() {
                Some((Field::Skip, length))
                    if field == Field::Skip
                        && *length != VARIABLE_LENGTH
                        && spec.length != VARIABLE_LENGTH
                        && u32::from(*length) + u32::from(spec.length)
                            < u32::from(VARIABLE_LENGTH) =>
                {
                    *length += spec.length;
                }
                _ => values.push((field, spec.length)),
            }
        }
        if min_record_length == 0 {
            return Err(NetflowError::BadTemplate("records of no length"));
        }
        Ok(Template {
            kind,
            states_sampling: values.iter().any(|(field, _)| field.states_sampling()),
            steps: values
                .into_iter()
                .map(|(field, length)| Step::new(field, length))
                .collect(),
            min_record_length,
        })
    }

    /// Walks one record at the start of `data` into `record`: the bytes it
    /// takes, or `None` when `data` ends inside the record. One `Record`, from
    /// `Record::default()`, serves all the records of this template in a set
    /// (see [`Record::next_of_same_template`]).
    #[inline]
    pub(crate) fn read_record<'a>(&self, data: &'a [u8], record: &mut Record<'a>) -> Option<usize> {
        record.next_of_same_template();
        let mut rest = data;
        for step in self.steps.iter() {
            match *step {
                Step::U8(scalar) => {
                    let (value, after) = rest.split_first()?;
                    record.set_scalar(scalar, u64::from(*value));
                    rest = after;
                }
                Step::U16(scalar) => {
                    let (value, after) = rest.split_first_chunk()?;
                    record.set_scalar(scalar, u64::from(u16::from_be_bytes(*value)));
                    rest = after;
                }
                Step::U32(scalar) => {
                    let (value, after) = rest.split_first_chunk()?;
                    record.set_scalar(scalar, u64::from(u32::from_be_bytes(*value)));
                    rest = after;
                }
                Step::U64(scalar) => {
                    let (value, after) = rest.split_first_chunk()?;
                    record.set_scalar(scalar, u64::from_be_bytes(*value));
                    rest = after;
                }
                Step::Skip(length) => rest = take_value(rest, length)?.1,
                Step::Value(field, length) => {
                    let (value, after) = take_value(rest, length)?;
                    record.set(field, value);
                    rest = after;
                }
            }
        }
        Some(data.len() - rest.len())
    }
}

/// Splits a value of a step's `length` off the start of `data`: that many
/// bytes, or for [`VARIABLE_LENGTH`] as many as the record says first.
#[inline]
fn take_value(data: &[u8], length: u16) -> Option<(&[u8], &[u8])> {
    if length == VARIABLE_LENGTH {
        let (length, rest) = read_variable_length(data)?;
        rest.split_at_checked(length)
    } else {
        data.split_at_checked(usize::from(length))
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
}

impl ExporterScoped for TemplateKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }
}

impl ExporterScoped for SamplerKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }
}

impl ExporterScoped for DomainKey {
    fn exporter(&self) -> IpAddr {
        self.exporter
    }
}

/// A map bounded per exporter and in total, whose entries expire when not refreshed.
#[derive(Debug)]
pub(crate) struct BoundedCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    per_exporter: HashMap<IpAddr, usize>,
    limits: TemplateLimits,
}

impl<K: ExporterScoped, V> BoundedCache<K, V> {
    pub(crate) fn new(limits: TemplateLimits) -> Self {
        BoundedCache {
            entries: HashMap::new(),
            per_exporter: HashMap::new(),
            limits,
        }
    }

    /// Inserts or replaces; a new key beyond a bound is refused.
    pub(crate) fn insert(&mut self, key: K, value: V, now: u64) -> Result<(), NetflowError> {
        if let Some(entry) = self.entries.get_mut(&key) {
            *entry = (value, now);
            return Ok(());
        }
        let count = self.per_exporter.get(&key.exporter()).copied().unwrap_or(0);
        if count >= self.limits.per_exporter || self.entries.len() >= self.limits.total {
            return Err(NetflowError::TemplateLimit);
        }
        self.entries.insert(key, (value, now));
        self.per_exporter.insert(key.exporter(), count + 1);
        Ok(())
    }

    /// Whether `key` is there (without marking it seen).
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The value, marked as seen at `now`.
    pub(crate) fn get(&mut self, key: &K, now: u64) -> Option<&V> {
        let (value, seen) = self.entries.get_mut(key)?;
        *seen = (*seen).max(now);
        Some(value)
    }

    /// Forgets one entry.
    pub(crate) fn remove(&mut self, key: &K) {
        if self.entries.remove(key).is_some() {
            forget_one(&mut self.per_exporter, key.exporter());
        }
    }

    /// Keeps only the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V, u64) -> bool) {
        let per_exporter = &mut self.per_exporter;
        self.entries.retain(|key, (value, seen)| {
            let kept = keep(key, value, *seen);
            if !kept {
                forget_one(per_exporter, key.exporter());
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
        self.entries.len()
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

    fn key(exporter: u8, id: u16) -> TemplateKey {
        TemplateKey {
            exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, exporter)),
            domain: 0,
            id,
        }
    }

    #[test]
    fn unused_fields_merge_into_one_skip() {
        let fields = [
            spec(8, 4),
            spec(999, 2),
            spec(998, 3),
            spec(1, 4),
            spec(997, 0),
        ];
        let template = Template::compile(TemplateKind::Data, &fields).unwrap();
        assert_eq!(
            &*template.steps,
            &[
                Step::Value(Field::SrcAddr, 4),
                Step::Skip(5),
                Step::U32(Scalar::Bytes),
            ]
        );
        assert_eq!(template.min_record_length, 13);
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
}
